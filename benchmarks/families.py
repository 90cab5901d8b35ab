"""Equal CPU-time comparison of the GAN families on real 64x64 H&E patches (the paper's Table 1 setting, in miniature).

Cuts 64x64 tissue patches (>= 90 % tissue) from the CMU-1-Small-Region slide with the dataset tool's slide
pipeline, then trains every family with its --cfg preset in the one training loop until the training
process has used --seconds of CPU time (process time: both torch threads count, other jobs on a shared
machine do not), and scores each final G (not G_ema: the EMA half-lives outlast a run this short) against the patches with SWD (and FID with --fid). Widths
are cut down by --width so that a CPU budget of minutes trains every family for more than a few steps;
the relative ordering, not the absolute numbers, is what this can show. The families run one after
another, in the order given; the CPU-time budget makes them comparable under contention.

    python benchmarks/families.py                                    # all five, 120 s each, width 1/8
    python benchmarks/families.py --families=dcgan,wgan --seconds=30 # quicker
"""

import json
import os
import sys
import tempfile
import time

import click
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dnnlib  # noqa: E402

FAMILIES = ('dcgan', 'wgan', 'pgan', 'stylegan', 'config-e')

#----------------------------------------------------------------------------

def cut_patches(dest, patch_size, stride):
    """64x64 tissue patches of the sample slide into a dataset zip; returns how many were kept."""
    from dnnlib import assets
    from tools.histology import slide_dataset
    opts = slide_dataset.default_options(patch_size=patch_size, stride=stride)
    summary = slide_dataset.convert_slides(assets.fetch('cmu-small-region'), dest, opts)
    return summary


def narrow(cfg, kwargs, width):
    """Scale the preset's network widths by `width` (1 = as published) so a short CPU budget trains them.

    DCGAN and WGAN scale their base width; the others share StyleGAN2's channel_base meaning (channels at
    resolution r = min(channel_base / r, channel_max), 16384 and 512 at 64x64 for all three) and their
    latent sizes shrink alike.
    """
    G, D = kwargs.G_kwargs, kwargs.D_kwargs
    base, cap, latent = max(int(16384 * width), 64), max(int(512 * width), 4), max(int(512 * width), 16)
    if cfg == 'dcgan':
        G.width = D.width = max(int(64 * width), 4)
    elif cfg == 'wgan':
        G.dim = D.dim = max(int(64 * width), 4)
    elif cfg == 'pgan':
        G.channel_base = D.channel_base = base
        G.channel_max = D.channel_max = cap
        G.z_dim = latent
    else:  # stylegan, config-e: a mapping and synthesis network
        G.synthesis_kwargs = dict(G.get('synthesis_kwargs', {}), channel_base=base, channel_max=cap)
        D.channel_base, D.channel_max = base, cap
        G.z_dim = G.w_dim = latent


def train_for(cfg, data, run_dir, seconds, width, batch, phase_kimg):
    """Train one family in the shared loop until `seconds` of this process's CPU time have passed."""
    from training import options, training_loop
    opts = dict(data=data, cfg=cfg, kimg=1e6, batch=batch, tick=batch / 1000, snap=None, metrics=[],
                workers=0, aug='noaug' if cfg == 'config-e' else None, verify=False)
    if cfg in ('pgan', 'stylegan'):
        opts['phase_kimg'] = phase_kimg
    _desc, kwargs = options.build(**opts)
    narrow(cfg, kwargs, width)
    start = time.process_time()
    kwargs.update(run_dir=run_dir, network_snapshot_ticks=10**9, image_snapshot_ticks=None,  # a snapshot at the end
                  abort_fn=lambda: time.process_time() - start >= seconds)
    training_loop.training_loop(**kwargs)
    cpu_s = time.process_time() - start
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        kimg = json.loads(f.readlines()[-1])['Progress/kimg']['mean']
    return kimg, cpu_s


def score(G, data, metrics):
    """{metric: value} of generator G against the dataset zip."""
    from metrics import metric_main
    dataset_kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=False,
                                     max_size=None, xflip=False)
    out = {}
    for metric in metrics:
        result = metric_main.calc_metric(metric=metric, G=G, dataset_kwargs=dataset_kwargs, device=torch.device('cpu'))
        out.update(result.results)
    return out

#----------------------------------------------------------------------------

@click.command()
@click.option('--families', help='Comma-separated --cfg names', default=','.join(FAMILIES), show_default=True)
@click.option('--seconds', help='CPU seconds of training per family', type=float, default=120, show_default=True)
@click.option('--width', help='Network width relative to the published one', type=float, default=0.125, show_default=True)
@click.option('--batch', help='Batch size for every family (equal images per step)', type=int, default=16, show_default=True)
@click.option('--phase-kimg', help='Progressive families: kimg per stable phase and per fade', type=float, default=0.5, show_default=True)
@click.option('--swd', 'swd_metric', help='SWD metric name (image count after "swd")', default='swd1k', show_default=True)
@click.option('--fid', 'fid_metric', help='Also compute this FID metric (e.g. fid1k_full); needs the Inception detector', default=None)
@click.option('--threads', help='torch CPU threads (default: torch decides)', type=int, default=None)
@click.option('--workdir', help='Keep runs and the patch zip here (default: a temporary folder)', type=str, default=None)
def main(families, seconds, width, batch, phase_kimg, swd_metric, fid_metric, threads, workdir):
    """Train every family for the same CPU time on real 64x64 H&E patches and print SWD (and FID)."""
    families = [f.strip() for f in families.split(',') if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise click.ClickException(f'unknown families {unknown}; choose from {", ".join(FAMILIES)}')
    if threads is not None:
        torch.set_num_threads(threads)
    metrics = [swd_metric] + ([fid_metric] if fid_metric else [])
    with tempfile.TemporaryDirectory() as tmp:
        root = workdir or tmp
        os.makedirs(root, exist_ok=True)
        data = os.path.join(root, 'he64.zip')
        if not os.path.exists(data):
            cut_patches(data, patch_size=64, stride=32)
        import zipfile
        with zipfile.ZipFile(data) as z:
            num_patches = sum(name.endswith('.png') for name in z.namelist())
        print(f'{num_patches} real 64x64 H&E patches (CMU-1-Small-Region, level 0, >= 90 % tissue); '
              f'{seconds:g} CPU s per family, width x{width:g}, batch {batch}, torch threads {torch.get_num_threads()}')
        rows = []
        for cfg in families:
            run_dir = os.path.join(root, cfg)
            os.makedirs(run_dir, exist_ok=True)
            kimg, cpu_s = train_for(cfg, data, run_dir, seconds, width, batch, phase_kimg)
            import legacy
            snapshots = sorted(f for f in os.listdir(run_dir) if f.startswith('network-snapshot-') and f.endswith('.pkl'))
            # The trained G, not G_ema: the published EMA half-lives (PGAN 0.999 per step, StyleGAN 10 kimg) are
            # longer than a run this short and would score the EMA's lag, not the family.
            G = legacy.load_network(os.path.join(run_dir, snapshots[-1]))['G']
            lod = float(G.lod) if hasattr(G, 'lod') else 0.0
            values = score(G, data, metrics)
            rows.append((cfg, kimg, cpu_s, lod, values))
            print(f'  {cfg:9s} {kimg * 1000:7.0f} images in {cpu_s:6.1f} CPU s (lod {lod:.2f})  ' +
                  '  '.join(f'{k} {v:.3f}' for k, v in values.items()), flush=True)
        key = f'{swd_metric}_avg'
        order = sorted(rows, key=lambda r: r[4].get(key, np.inf))
        print(f'ordering by {key} (lower is better): ' + ' < '.join(r[0] for r in order))
        print('paper (FID at 64x64): stylegan2 < stylegan < wgan < pgan < dcgan')


if __name__ == '__main__':
    main()
