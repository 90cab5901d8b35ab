"""Images/s of the config-e StyleGAN2 generator on the CPU: compiled C++ ops versus the plain-PyTorch 'ref' ops.

Config E = config F at half width (channel_base 16384, channel_max 512), z = w = 512, 8 mapping layers.
Baseline, measured in the same run on the same network and latents: every op forced to impl='ref'.

    python benchmarks/generator.py [--res 256] [--batch 16] [--repeats 3]
"""

import os
import sys
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from networks import stylegan2  # noqa: E402
from torch_utils import custom_ops  # noqa: E402

#----------------------------------------------------------------------------

def config_e_generator(res):
    return stylegan2.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
        mapping_kwargs=dict(num_layers=8), synthesis_kwargs=dict(channel_base=16384, channel_max=512)).eval().requires_grad_(False)

def time_generator(G, z, impl, repeats):
    """Best wall time of one batch over `repeats` runs after a warm-up (plugin build/load is not timed)."""
    with custom_ops.force_impl(impl), torch.no_grad():
        img = G(z, None, noise_mode='const')
        best = float('inf')
        for _ in range(repeats):
            start = time.perf_counter()
            G(z, None, noise_mode='const')
            best = min(best, time.perf_counter() - start)
    return best, img

#----------------------------------------------------------------------------

@click.command()
@click.option('--res', help='Output resolution', type=int, default=256, show_default=True)
@click.option('--batch', help='Images per forward pass', type=int, default=16, show_default=True)
@click.option('--repeats', help='Timed forward passes per implementation (best is reported)', type=int, default=3, show_default=True)
def main(res, batch, repeats):
    """Print images/s of config-e G with 'ref' and compiled CPU ops, and their ratio."""
    torch.manual_seed(0)
    G = config_e_generator(res)
    z = torch.randn([batch, G.z_dim])
    params = sum(p.numel() for p in G.parameters())
    print(f'config-e G, {res}x{res}, batch {batch}, {params / 1e6:.1f}M parameters, CPU, {torch.get_num_threads()} threads')

    ref_s, ref_img = time_generator(G, z, 'ref', repeats)
    cpu_s, cpu_img = time_generator(G, z, 'cpu', repeats)
    diff = (ref_img - cpu_img).abs().max().item()
    print(f'{"ops":<16} {"s/batch":>8} {"images/s":>9} {"vs ref":>7}')
    print(f'{"ref (PyTorch)":<16} {ref_s:>8.2f} {batch / ref_s:>9.2f} {1.0:>6.2f}x')
    print(f'{"cpu (compiled)":<16} {cpu_s:>8.2f} {batch / cpu_s:>9.2f} {ref_s / cpu_s:>6.2f}x')
    print(f'max |ref - cpu| over the batch: {diff:.2e}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
