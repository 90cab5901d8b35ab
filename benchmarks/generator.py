"""Config-e StyleGAN2 generator inference on the CPU: HistoSynth's default path versus the official computation.

Config E is config F at half width (channel_base 16384, channel_max 512), z = w = 512, 8 mapping layers.
Both variants run the same network on the same latents with noise_mode='const', interleaved, in one run
(see benchmarks/interleaved.py); the images must agree to float tolerance, and the script checks that.

    python benchmarks/generator.py                                   # 256x256, batch 16, baseline vs fast
    python benchmarks/generator.py --variants=baseline,fast,fast-no-channels_last --repeats=5
    python benchmarks/generator.py --profile=fast                    # operator table of one pass
"""

import os
import sys

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import interleaved  # noqa: E402
from networks import stylegan2  # noqa: E402

#----------------------------------------------------------------------------

def config_e_generator(res):
    torch.manual_seed(0)
    G = stylegan2.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
        mapping_kwargs=dict(num_layers=8), synthesis_kwargs=dict(channel_base=16384, channel_max=512))
    with torch.no_grad():  # non-zero noise strengths so the noise inputs cost what they cost in a trained G
        for name, param in G.named_parameters():
            if name.endswith('noise_strength'):
                param.fill_(0.1)
    return G.eval().requires_grad_(False)

def profile(G, z, name):
    with interleaved.variant(name), torch.no_grad():
        G(z, None, noise_mode='const')
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            G(z, None, noise_mode='const')
    print(f'profile of variant {name}:')
    print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=15))

#----------------------------------------------------------------------------

@click.command()
@click.option('--res', help='Output resolution.', type=int, default=256, show_default=True)
@click.option('--batch', help='Images per forward pass.', type=int, default=16, show_default=True)
@click.option('--repeats', help='Timed passes per variant (median reported).', type=int, default=3, show_default=True)
@click.option('--variants', help='Comma-separated variants (see benchmarks/interleaved.py).', default='baseline,fast',
              show_default=True)
@click.option('--threads', help='torch CPU threads, 0 = torch default.', type=int, default=0, show_default=True)
@click.option('--profile', 'profile_variant', help='Print a torch.profiler table of one pass of this variant instead.',
              default=None)
def main(res, batch, repeats, variants, threads, profile_variant):
    """Time config-e G inference (noise_mode='const') per computation variant and print ratios to the baseline."""
    if threads > 0:
        torch.set_num_threads(threads)
    G = config_e_generator(res)
    z = torch.randn([batch, G.z_dim], generator=torch.Generator().manual_seed(1))
    print(f'config-e G, {res}x{res}, batch {batch}, {sum(p.numel() for p in G.parameters()) / 1e6:.1f}M parameters, '
          f'{torch.get_num_threads()} CPU threads')
    if profile_variant:
        profile(G, z, profile_variant)
        return

    images = {}
    def runner(name):
        def run():
            with torch.no_grad():
                images[name] = G(z, None, noise_mode='const')
        return run
    names = variants.split(',')
    wall, cpu = interleaved.time_interleaved({name: runner(name) for name in names}, repeats)
    interleaved.print_report('wall time per batch', wall, per=1 / batch, per_label='s/image')
    interleaved.print_report('process CPU time per batch', cpu, per=1 / batch, per_label='s/image')
    for name in names[1:]:
        print(f'max |{names[0]} - {name}| = {(images[names[0]] - images[name]).abs().max().item():.2e}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
