"""Scored patches/s of tools.slide_map on the CPU (encoder path), where the time goes, and one CAMELYON16 slide.

The network is config E (channel_base 16384, channel_max 512, z = w = 512) with its discriminator and a
default-width encoder, all untrained: speed does not depend on the weights. The slide is CMU-1-Small-Region;
its level 0 is read through the worker processes as a gigapixel slide would be (the in-memory shortcut off).

Baseline, measured in the same run and interleaved with the pipeline: tools.anomaly.score_patches on the same
patches already in memory. The ratio pipeline / baseline is the share of scoring speed the slide tool keeps
after reading regions, writing the CSV and drawing the map. `+LPIPS/s` is bare scoring with the LPIPS term measured
(--score=lpips), as the encoder path always did before it learnt to skip VGG16 (interleaved in the same run).

    python benchmarks/slide_map.py [--res 64 --res 256] [--patches 64] [--repeats 3] [--workers 2]
"""

import os
import statistics
import sys
import tempfile
import time

import click
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dnnlib import EasyDict  # noqa: E402
from networks import stylegan2  # noqa: E402
from tools import anomaly, assets, projection, slide_map  # noqa: E402
from tools.train_encoder import build_encoder  # noqa: E402

CAMELYON16_PATCHES = 100_000  # tissue patches of 64 px at level 0 on a typical CAMELYON16 slide

#----------------------------------------------------------------------------

def config_e_models(res, device):
    synthesis = dict(channel_base=16384, channel_max=512)
    G = stylegan2.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
                            mapping_kwargs=dict(num_layers=8), synthesis_kwargs=synthesis)
    D = stylegan2.Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=16384, channel_max=512)
    G, D = (m.eval().requires_grad_(False).to(device) for m in (G, D))
    E = build_encoder(G, D).eval().requires_grad_(False).to(device)
    return EasyDict(G=G, D=D, E=E, lpips=projection.lpips_lib.load_lpips(device), w_stats=None, device=device, score='fanogan')


def limited_plan(path, res, count):
    """The slide's plan at level 0 with only its first `count` tissue patches."""
    plan = slide_map.plan_map(path, slide_map.map_options(res, level=0))
    plan.kept, plan.labels = plan.kept[:count], plan.labels[:count]
    return plan


def time_pipeline(path, plan, models, batch, workers, outdir):
    """(seconds, split) of one slide: read + score + CSV, then raster and overlay."""
    partial = os.path.join(outdir, 'bench.csv.partial')
    if os.path.exists(partial):
        os.remove(partial)
    start = time.perf_counter()
    split = slide_map.score_slide(path, plan, models, partial, batch=batch, workers=workers, progress=False)
    t0 = time.perf_counter()
    slide_map.draw_map(outdir, 'bench', plan, slide_map.read_scores(partial))
    split.write += time.perf_counter() - t0
    return time.perf_counter() - start, split


def time_baseline(patches, models, batch, score='fanogan'):
    start = time.perf_counter()
    anomaly.score_patches(models.G, patches, method='encoder', E=models.E, D=models.D, batch_size=batch,
                          lpips=models.lpips, progress=False, score=score)
    return time.perf_counter() - start


def patches_in_memory(path, plan, res):
    """The same patches as uint8 [N, R, R, 3], read once, for the baseline."""
    from tools.histology import patches as pt
    with pt.PatchReader(1) as reader:
        return np.stack(list(slide_map.decode_patches(reader, path, plan.xy[plan.kept], plan.geom, res, None)))

#----------------------------------------------------------------------------

@click.command()
@click.option('--res', 'resolutions', type=int, multiple=True, default=(64, 256), show_default=True,
              help='Patch / network resolutions to measure')
@click.option('--patches', type=int, default=64, show_default=True, help='Patches scored per run at 64 px '
              '(scaled down by the pixel count at larger sizes, at least 8)')
@click.option('--batch', type=int, default=32, show_default=True, help='Patches scored together')
@click.option('--workers', type=int, default=2, show_default=True, help='Reader processes')
@click.option('--repeats', type=int, default=3, show_default=True, help='Interleaved timed runs (median reported)')
@click.option('--device', default='cpu', show_default=True, help='torch device')
def main(resolutions, patches, batch, workers, repeats, device):
    """Print patches/s of the slide pipeline and of bare scoring, the time split, and one CAMELYON16 slide."""
    slide_map.IN_MEMORY_MAX_PIXELS = 0  # read through worker processes, as for a CAMELYON16 slide
    path = assets.fetch('cmu-small-region', verbose=False)
    print(f'device {device}, torch threads {torch.get_num_threads()}, reader workers {workers}, batch {batch}')
    print(f'{"res":>4} {"patches":>7} {"pipeline/s":>11} {"scoring/s":>10} {"ratio":>12} '
          f'{"read":>6} {"score":>6} {"write":>6} {"+LPIPS/s":>9}  one CAMELYON16 slide')
    for res in resolutions:
        models = config_e_models(res, torch.device(device))
        count = max(8, patches * 64 * 64 // (res * res))
        plan = limited_plan(path, res, count)
        images = patches_in_memory(path, plan, res)
        n = len(plan.kept)
        time_baseline(images[:min(n, batch)], models, batch)  # warm-up: plugin load, allocator
        pipe, base, old, splits = [], [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(repeats):
                secs, split = time_pipeline(path, plan, models, batch, workers, tmp)
                pipe.append(n / secs)
                splits.append(split)
                base.append(n / time_baseline(images, models, batch))
                old.append(n / time_baseline(images, models, batch, score='lpips'))
        ratios = [p / b for p, b in zip(pipe, base)]
        total = {k: statistics.median(s[k] for s in splits) for k in ('read', 'score', 'write')}
        share = {k: 100 * v / sum(total.values()) for k, v in total.items()}
        rate = statistics.median(pipe)
        hours = CAMELYON16_PATCHES / rate / 3600 if res == 64 else None
        print(f'{res:>4} {n:>7} {rate:>11.2f} {statistics.median(base):>10.2f} '
              f'{statistics.median(ratios):>6.2f}±{(max(ratios) - min(ratios)) / 2:.2f} '
              f'{share["read"]:>5.1f}% {share["score"]:>5.1f}% {share["write"]:>5.1f}% {statistics.median(old):>9.2f}  '
              + (f'{hours:.1f} h for {CAMELYON16_PATCHES} patches' if hours is not None else '-'))


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
