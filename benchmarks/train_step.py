"""Seconds per kimg of StyleGAN2 config-e training on CPU: 'ref' ops versus the compiled CPU ops.

One training step = Gmain + Dmain every step, Greg every 4th and Dreg every 16th step (lazy
regularisation), so s/step = t(Gmain) + t(Dmain) + t(Greg)/4 + t(Dreg)/16. Each phase is timed
(median of --repeats, after one warm-up) with the same networks, inputs and RNG for both
implementations; the ratio is what this script reports.

    python benchmarks/train_step.py                      # config-e, 64x64, batch 8
    python benchmarks/train_step.py --res=32 --repeats=1 # quicker
"""

import copy
import os
import sys
import time

import click
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dnnlib  # noqa: E402
from torch_utils import custom_ops  # noqa: E402
from training import presets  # noqa: E402
from training.augment import AugmentPipe  # noqa: E402
from training.loss import StyleGAN2Loss  # noqa: E402

PHASES = [('Gmain', 1), ('Greg', 4), ('Dmain', 1), ('Dreg', 16)] # name, lazy interval


def build(res, cfg):
    spec = presets.resolve_cfg(cfg, res, 1)
    torch.manual_seed(0)
    common = dict(c_dim=0, img_resolution=res, img_channels=3)
    G = dnnlib.util.construct_class_by_name(class_name='networks.stylegan2.Generator', z_dim=512, w_dim=512,
        mapping_kwargs=dict(num_layers=spec.map), synthesis_kwargs=dict(channel_base=int(spec.fmaps * 32768), channel_max=512, num_fp16_res=4, conv_clamp=256), **common)
    D = dnnlib.util.construct_class_by_name(class_name='networks.stylegan2.Discriminator', channel_base=int(spec.fmaps * 32768),
        channel_max=512, num_fp16_res=4, conv_clamp=256, epilogue_kwargs=dict(mbstd_group_size=spec.mbstd), **common)
    return G.train().requires_grad_(False), D.train().requires_grad_(False), spec


def time_phases(G, D, spec, batch, repeats, impl):
    pipe = AugmentPipe(**presets.augpipe_specs['bgc'])
    pipe.p.fill_(0.2)
    loss = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, augment_pipe=pipe, r1_gamma=spec.gamma)
    gen = torch.Generator().manual_seed(1)
    real = torch.rand([batch, 3, G.img_resolution, G.img_resolution], generator=gen) * 2 - 1
    z = torch.randn([batch, G.z_dim], generator=gen)
    c = torch.zeros([batch, 0])
    times = {}
    with custom_ops.force_impl(impl):
        for name, _interval in PHASES:
            module = G if name.startswith('G') else D
            samples = []
            for i in range(repeats + 1):
                torch.manual_seed(i)
                module.requires_grad_(True)
                t0 = time.perf_counter()
                loss.accumulate_gradients(name, real, c, z, c, sync=True, gain=1)
                samples.append(time.perf_counter() - t0)
                module.requires_grad_(False)
                for p in module.parameters():
                    p.grad = None
            times[name] = float(np.median(samples[1:]))
    return times


@click.command()
@click.option('--cfg', help='Preset from training/presets.py', default='config-e', show_default=True)
@click.option('--res', help='Image resolution', type=int, default=64, show_default=True)
@click.option('--batch', help='Batch size', type=int, default=8, show_default=True)
@click.option('--repeats', help='Timed repetitions per phase (median)', type=int, default=2, show_default=True)
@click.option('--threads', help='torch CPU threads (0 = torch default)', type=int, default=0, show_default=True)
def main(cfg, res, batch, repeats, threads):
    """Print s/kimg for 'ref' and 'cpu' ops and their ratio."""
    if threads > 0:
        torch.set_num_threads(threads)
    G, D, spec = build(res, cfg)
    print(f'{cfg} at {res}x{res}, batch {batch}, {torch.get_num_threads()} thread(s)')
    results = {}
    for impl in ['ref', 'cpu']:
        times = time_phases(copy.deepcopy(G), copy.deepcopy(D), spec, batch, repeats, impl)
        sec_per_step = sum(times[name] / interval for name, interval in PHASES)
        results[impl] = sec_per_step * 1000 / batch
        print(f'{impl:4s}: ' + '  '.join(f'{name} {t:.3f}s' for name, t in times.items())
              + f'  => {sec_per_step:.3f} s/step, {results[impl]:.1f} s/kimg')
    print(f'speed-up cpu vs ref: {results["ref"] / results["cpu"]:.2f}x')


if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter
