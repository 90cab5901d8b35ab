"""One config-e StyleGAN2 training step on the CPU: HistoSynth's default path versus the official computation.

A step runs the four phases of StyleGAN2-ADA training, Gmain, Greg (path length), Dmain and Dreg (R1),
each followed by its Adam update, through training.loss.StyleGAN2Loss. Every variant has its own copy
of the same networks and optimizers and gets the same batch and RNG seed per repetition; variants run
interleaved (benchmarks/interleaved.py). Besides the time of the full step the script prints seconds
per kimg of lazily regularised training (Greg every 4th and Dreg every 16th step, as train.py does).

    python benchmarks/train_step.py                        # 32x32, batch 8, baseline vs fast
    python benchmarks/train_step.py --res=64 --repeats=5
    python benchmarks/train_step.py --variants=baseline,fast,fast-no-matmul_demod,fast-no-channels_last
    python benchmarks/train_step.py --profile=fast         # operator table of one step
    python benchmarks/train_step.py --res=64 --cbase=2048 --cmax=128 --map=2 --gamma=1   # the README's CPU example
"""

import copy
import inspect
import os
import sys
import time

import click
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dnnlib  # noqa: E402
import interleaved  # noqa: E402
from networks import stylegan2  # noqa: E402
from training.loss import StyleGAN2Loss  # noqa: E402
from training.training_loop import fused_on_cpu  # noqa: E402

PHASES = [('Gmain', 'G', 1), ('Greg', 'G', 4), ('Dmain', 'D', 1), ('Dreg', 'D', 16)]  # phase, network, lazy interval

#----------------------------------------------------------------------------

def config_e_networks(res, c_dim, cbase=16384, cmax=512, map_layers=8):
    """Config-e G and D as train.py builds them (fp16 settings have no effect on the CPU, the clamp does)."""
    torch.manual_seed(0)
    common = dict(c_dim=c_dim, img_resolution=res, img_channels=3)
    G = stylegan2.Generator(z_dim=512, w_dim=512, mapping_kwargs=dict(num_layers=map_layers),
        synthesis_kwargs=dict(channel_base=cbase, channel_max=cmax, num_fp16_res=4, conv_clamp=256), **common)
    D = stylegan2.Discriminator(channel_base=cbase, channel_max=cmax, num_fp16_res=4, conv_clamp=256,
        epilogue_kwargs=dict(mbstd_group_size=4), **common)
    return G.train().requires_grad_(False), D.train().requires_grad_(False)

def make_loss(G, D, gamma):
    """StyleGAN2Loss through its public constructor, old (G_mapping, G_synthesis) or new (G) spelling."""
    params = inspect.signature(StyleGAN2Loss).parameters
    nets = dict(G_mapping=G.mapping, G_synthesis=G.synthesis) if 'G_mapping' in params else dict(G=G)
    return StyleGAN2Loss(device=torch.device('cpu'), D=D, r1_gamma=gamma, **nets)

class Trainer:
    """The networks, optimizers and loss of one variant."""

    def __init__(self, G, D, gamma, official=False):
        self.nets = dict(G=copy.deepcopy(G), D=copy.deepcopy(D))
        # The official code builds a plain Adam; the training loop's own settings (fused on CPUs) otherwise.
        adam = dnnlib.EasyDict(class_name='torch.optim.Adam', lr=0.002, betas=[0.0, 0.99], eps=1e-8)
        self.opts = {key: dnnlib.util.construct_class_by_name(net.parameters(),
                                                              **(adam if official else fused_on_cpu(adam, net)))
                     for key, net in self.nets.items()}
        self.loss = make_loss(self.nets['G'], self.nets['D'], gamma)
        params = inspect.signature(self.loss.accumulate_gradients).parameters
        self.extra = {key: value for key, value in (('sync', True), ('cur_nimg', 0)) if key in params}
        self.phase_seconds = {phase: [] for phase, _, _ in PHASES}

    def step(self, real, c, z, seed):
        for phase, key, _ in PHASES:
            start = time.perf_counter()
            torch.manual_seed(seed)
            net, opt = self.nets[key], self.opts[key]
            opt.zero_grad(set_to_none=True)
            net.requires_grad_(True)
            self.loss.accumulate_gradients(phase=phase, real_img=real, real_c=c, gen_z=z, gen_c=c, gain=1, **self.extra)
            net.requires_grad_(False)
            opt.step()
            self.phase_seconds[phase].append(time.perf_counter() - start)

def profile(trainer, inputs, name):
    with interleaved.variant(name):
        trainer.step(*inputs, seed=0)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            trainer.step(*inputs, seed=1)
    print(f'profile of variant {name}:')
    print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=20))

#----------------------------------------------------------------------------

@click.command()
@click.option('--res', help='Image resolution.', type=int, default=32, show_default=True)
@click.option('--batch', help='Batch size.', type=int, default=8, show_default=True)
@click.option('--cond', help='Conditional networks with this many classes (0 = unconditional).', type=int, default=0,
              show_default=True)
@click.option('--gamma', help='R1 weight (config-e uses 100).', type=float, default=100, show_default=True)
@click.option('--cbase', help='Channel base, as train.py --cbase.', type=int, default=16384, show_default=True)
@click.option('--cmax', help='Channel maximum, as train.py --cmax.', type=int, default=512, show_default=True)
@click.option('--map', 'map_layers', help='Mapping layers, as train.py --map.', type=int, default=8, show_default=True)
@click.option('--repeats', help='Timed steps per variant (median reported).', type=int, default=3, show_default=True)
@click.option('--variants', help='Comma-separated variants (see benchmarks/interleaved.py).', default='baseline,fast',
              show_default=True)
@click.option('--threads', help='torch CPU threads, 0 = torch default.', type=int, default=0, show_default=True)
@click.option('--profile', 'profile_variant', help='Print a torch.profiler table of one step of this variant instead.',
              default=None)
def main(res, batch, cond, gamma, cbase, cmax, map_layers, repeats, variants, threads, profile_variant):
    """Time a config-e training step (Gmain, Greg, Dmain, Dreg, each with Adam) per computation variant."""
    if threads > 0:
        torch.set_num_threads(threads)
    G, D = config_e_networks(res, cond, cbase, cmax, map_layers)
    gen = torch.Generator().manual_seed(1)
    real = torch.rand([batch, 3, res, res], generator=gen) * 2 - 1
    z = torch.randn([batch, G.z_dim], generator=gen)
    c = torch.eye(max(cond, 1))[torch.randint(max(cond, 1), [batch], generator=gen)][:, :cond]
    print(f'config-e training step at {res}x{res}, batch {batch}, c_dim {cond}, channel base {cbase}, max {cmax}, '
          f'{map_layers} mapping layers, {torch.get_num_threads()} CPU threads')
    if profile_variant:
        profile(Trainer(G, D, gamma, official=(profile_variant == 'baseline')), (real, c, z), profile_variant)
        return

    names = variants.split(',')
    trainers = {name: Trainer(G, D, gamma, official=(name == 'baseline')) for name in names}
    # Step k of every variant uses seed k: the same style mixing, noise and path-length directions.
    runners = {name: (lambda t=trainers[name]: t.step(real, c, z, seed=len(t.phase_seconds['Gmain'])))
               for name in names}
    wall, cpu = interleaved.time_interleaved(runners, repeats)
    interleaved.print_report('wall time per step', wall)
    interleaved.print_report('process CPU time per step', cpu)

    print(f'{"per phase (median s)":<26} ' + ' '.join(f'{phase:>8}' for phase, _, _ in PHASES) + f' {"s/kimg":>8}')
    for name, trainer in trainers.items():
        medians = {phase: float(np.median(times[1:])) for phase, times in trainer.phase_seconds.items()}  # not warm-up
        lazy_step = sum(medians[phase] / interval for phase, _, interval in PHASES)
        print(f'{name:<26} ' + ' '.join(f'{medians[phase]:>8.3f}' for phase, _, _ in PHASES)
              + f' {lazy_step * 1000 / batch:>8.1f}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
