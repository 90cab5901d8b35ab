"""Projector steps/s and encoder images/s on the CPU for a config-e StyleGAN2, with the time split of one step.

One `lpips` projection step = synthesis forward + backward (G), LPIPS-VGG16 embedding forward + backward (VGG16),
and the rest (Adam, noise regularisation and renormalisation, schedule, Python). G and VGG16 are timed on their
own with the same shapes, interleaved with whole steps; "other" = step - G - VGG16. The goal: other << G + VGG16.

    python benchmarks/projection.py [--res 64,256] [--steps 5] [--batch 1]
"""

import os
import statistics
import sys
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from networks import encoder as encoder_lib  # noqa: E402
from networks import stylegan2  # noqa: E402
from tools import lpips as lpips_lib  # noqa: E402
from tools import projection  # noqa: E402

#----------------------------------------------------------------------------

def config_e_generator(res):
    torch.manual_seed(0)
    return stylegan2.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
        mapping_kwargs=dict(num_layers=8), synthesis_kwargs=dict(channel_base=16384, channel_max=512)).eval().requires_grad_(False)

def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start

def time_split(G, lpips, batch, steps):
    """Median seconds of (whole step, G fwd+bwd, VGG16 fwd+bwd), measured interleaved."""
    target = torch.rand([batch, 3, G.img_resolution, G.img_resolution]) * 2 - 1
    stats = projection.w_statistics(G, num_samples=1000)
    w = stats[0].expand(batch, G.num_ws, -1).clone()
    small = lpips_lib.area_downsample(target, projection.LPIPS_MAX_SIZE)

    def g_only():
        ws = w.clone().requires_grad_(True)
        projection.synthesize(G, ws).square().sum().backward()

    def vgg_only():
        img = small.clone().requires_grad_(True)
        lpips.embed(img).square().sum().backward()

    def whole():
        projection.project(G, target, num_steps=1, lpips=lpips, w_stats=stats, progress=False)

    whole(), g_only(), vgg_only()  # warm-up: plugin loads, allocator
    rows = [(_seconds(whole), _seconds(g_only), _seconds(vgg_only)) for _ in range(steps)]
    # project(num_steps=1) also embeds the target and renders the final image: take those out of "whole".
    setup = [_seconds(lambda: (lpips.embed(small), projection.synthesize(G, w[:, :1]))) for _ in range(steps)]
    step = [r[0] - s for r, s in zip(rows, setup)]
    return statistics.median(step), statistics.median(r[1] for r in rows), statistics.median(r[2] for r in rows), \
        max(step) - min(step)

def encoder_rate(G, batch, repeats):
    """Images/s of --method encoder (encoder forward + synthesis forward) for a residual encoder of config-e width."""
    E = encoder_lib.ResidualEncoder(img_resolution=G.img_resolution, w_dim=G.w_dim, num_ws=G.num_ws).eval()
    img = torch.rand([batch, 3, G.img_resolution, G.img_resolution]) * 2 - 1
    with torch.no_grad():
        run = lambda: projection.synthesize(G, E(img))
        run()
        times = [_seconds(run) for _ in range(repeats)]
    return batch / statistics.median(times)

#----------------------------------------------------------------------------

@click.command()
@click.option('--res', default='64,256', show_default=True, help='Comma-separated resolutions')
@click.option('--steps', type=int, default=5, show_default=True, help='Timed steps per resolution (median reported)')
@click.option('--batch', type=int, default=1, show_default=True, help='Targets projected together')
@click.option('--encoder-batch', type=int, default=8, show_default=True, help='Images per encoder pass')
def main(res, steps, batch, encoder_batch):
    """Print projector steps/s with the G / VGG16 / other split, and encoder images/s, per resolution."""
    lpips = lpips_lib.load_lpips()
    print(f'CPU, {torch.get_num_threads()} threads, config-e G, batch {batch}, median of {steps} steps')
    print(f'{"res":>5} {"steps/s":>8} {"s/step":>7} {"spread":>7} {"G":>6} {"VGG16":>6} {"other":>6} {"enc img/s":>10}')
    for r in [int(x) for x in res.split(',')]:
        G = config_e_generator(r)
        step, g, vgg, spread = time_split(G, lpips, batch, steps)
        other = max(step - g - vgg, 0.0)
        rate = encoder_rate(G, encoder_batch, max(steps // 2, 2))
        print(f'{r:>5} {1 / step:>8.2f} {step:>7.2f} {spread:>7.2f} {g / step:>6.0%} {vgg / step:>6.0%} {other / step:>6.0%} '
              f'{rate:>10.1f}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
