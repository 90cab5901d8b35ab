"""The one training loop of every GAN family.

The loop knows a family only through the objects the preset names: G and D (built with the dataset's
c_dim / img_resolution / img_channels), a `training.loss.Loss` that declares its phases, a schedule
with `apply(cur_nimg, G, D)`, and one optimiser per network. Per step it applies the schedule, runs the
loss's due phases, steps the optimisers, and moves G_ema (an exponential moving average of G's
parameters; buffers are copied).

Exact resume: beside every `network-snapshot-<tag>.pkl` rank 0 writes `training-state-<tag>.pt`, which
holds what the weights do not: optimiser states, counters, the data position, ADA's p, the loss's
running tensors and every rank's RNG states. Everything random in a step is a function of that state
(the real-image order of (seed, position), the latents of (seed, step, execution), the global RNGs
restored), and work done at tick ends runs with the training RNG state set aside; so a run killed
at any point and resumed from its last snapshot continues with the numbers of an uninterrupted run.

With N processes each takes every N-th item of the global batch and the loop averages gradients over
processes after each phase (no DDP wrapper): together they compute what one process with the whole
batch would.
"""

import copy
import glob
import json
import os
import pickle
import random
import re
import time

import numpy as np
import psutil
import torch

import dnnlib
from dnnlib.images import make_image_grid, save_image
from torch_utils import misc, training_stats
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
from training.dataset import ResumableSampler

STATE_VERSION = 2

#----------------------------------------------------------------------------
# Snapshot files.

def snapshot_tag(cur_nimg, kimg_per_tick):
    """'<kimg, 6 digits>', plus '.<images, 3 digits>' when ticks are shorter than 1 kimg (names stay unique)."""
    whole_kimg, rest = divmod(cur_nimg, 1000)
    return f'{whole_kimg:06d}' if kimg_per_tick >= 1 else f'{whole_kimg:06d}.{rest:03d}'


def state_path_for(snapshot_pkl):
    """The training-state file that belongs to a network-snapshot pickle (None for other file names)."""
    match = re.fullmatch(r'network-snapshot-(.+)\.pkl', os.path.basename(snapshot_pkl))
    if match is None:
        return None
    return os.path.join(os.path.dirname(snapshot_pkl), f'training-state-{match.group(1)}.pt')


def find_latest_snapshot(run_dir):
    """The run's newest snapshot that has its training state (the newest snapshot if none has)."""
    found = []
    for path in glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')):
        match = re.fullmatch(r'network-snapshot-(\d+)(?:\.(\d+))?\.pkl', os.path.basename(path))
        if match is not None:
            nimg = int(match.group(1)) * 1000 + int(match.group(2) or 0)
            found.append((os.path.isfile(state_path_for(path)), nimg, path))
    if not found:
        raise dnnlib.util.UserError(f'No network-snapshot-*.pkl in {run_dir}')
    return max(found)[2]


def load_network_pickle(path):
    """A snapshot dict; official StyleGAN2-ADA pickles go through legacy.py when it is importable."""
    with dnnlib.util.open_url(path, verbose=False) as f:
        try:
            import legacy
        except ImportError:
            return pickle.load(f)
        return legacy.load_network_pkl(f)

#----------------------------------------------------------------------------
# Image grids written at the start and at image-snapshot ticks.

def setup_snapshot_image_grid(training_set, random_seed=0, max_size=None):
    """(grid_w, grid_h), images, labels: random training images, or one label per row when labelled."""
    _channels, height, width = training_set.image_shape
    grid_w = int(np.clip(7680 // width, 7, 32))
    grid_h = int(np.clip(4320 // height, 4, 32))
    if max_size is not None:
        grid_w, grid_h = min(grid_w, max_size), min(grid_h, max_size)
    rnd = np.random.RandomState(random_seed)
    if training_set.has_labels:
        groups = {}
        for idx in range(len(training_set)):
            key = tuple(training_set.get_details(idx).raw_label.flat[::-1])
            groups.setdefault(key, []).append(idx)
        keys = sorted(groups)
        for key in keys:
            rnd.shuffle(groups[key])
        rows = [groups[keys[row % len(keys)]] for row in range(grid_h)]
        picks = [members[col % len(members)] for members in rows for col in range(grid_w)]
    else:
        order = rnd.permutation(len(training_set))
        picks = [order[i % len(order)] for i in range(grid_w * grid_h)]
    images, labels = zip(*(training_set[int(i)] for i in picks))
    return (grid_w, grid_h), np.stack(images), np.stack(labels)


def save_image_grid(img, fname, drange, grid_size):
    """NCHW images with values in `drange` tiled into one PNG (written atomically)."""
    low, high = drange
    scaled = (np.asarray(img, dtype=np.float32) - low) * (255 / (high - low))
    pixels = np.rint(scaled).clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    save_image(make_image_grid(pixels, grid_w=grid_size[0]), fname)


@torch.no_grad()
def save_fakes_grid(G_ema, grid_z, grid_c, fname, grid_size):
    """G_ema's images of the fixed grid latents; noise_mode='const' so that grids compare across ticks."""
    chunks = [G_ema(z=z, c=c, noise_mode='const').cpu() for z, c in zip(grid_z, grid_c)]
    save_image_grid(torch.cat(chunks).numpy(), fname, drange=[-1, 1], grid_size=grid_size)

#----------------------------------------------------------------------------
# ADA and randomness.

class AdaController:
    """Moves augment_pipe.p every `interval` steps towards E[sign(D(real))] == target.

    Each update moves p by batch_size * interval / (kimg * 1000) in the direction of the error, so p can
    cross [0, 1] in `kimg` thousand images.
    """

    def __init__(self, target=0.6, interval=4, kimg=500, batch_size=64):
        self.target = target
        self.interval = interval
        self.step = batch_size * interval / (kimg * 1000)
        self.last_rt = None

    def update(self, augment_pipe, sign_stats):
        """sign_stats: the loss's [sum of signs, count] since the last update; summed over ranks, then cleared."""
        totals = sign_stats.detach().clone()
        sign_stats.zero_()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        sign_sum, count = totals.tolist()
        if count > 0:
            self.last_rt = sign_sum / count
            new_p = augment_pipe.p + np.sign(self.last_rt - self.target) * self.step
            augment_pipe.p.copy_(new_p.clamp(0, 1))


def capture_rng_state(device):
    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if device.type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state, device):
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and device.type == 'cuda':
        torch.cuda.set_rng_state(state['cuda'], device)


def draw_latents(random_seed, batch_idx, execution, batch_size, z_dim, training_set, rank, num_gpus):
    """(z, c) of this rank for one phase execution: a pure function of (seed, step, execution index).

    z and c are drawn for the whole global batch; rank r keeps items r, r + num_gpus, ... like the reals."""
    z_seed, c_seed = np.random.SeedSequence([random_seed, batch_idx, execution]).generate_state(2)
    z = torch.randn([batch_size, z_dim], generator=torch.Generator().manual_seed(int(z_seed)))[rank::num_gpus]
    label_idx = np.random.RandomState(int(c_seed)).randint(len(training_set), size=batch_size)[rank::num_gpus]
    c = np.stack([training_set.get_label(int(i)) for i in label_idx])
    return z, torch.from_numpy(c).to(torch.float32)

#----------------------------------------------------------------------------
# Setup.

def setup_process(random_seed, num_gpus, rank, local_rank, cudnn_benchmark, allow_tf32):
    """The device of this process; seeds and backend switches."""
    if torch.cuda.is_available():
        device = torch.device('cuda', rank if local_rank is None else local_rank)
    else:
        device = torch.device('cpu')
    process_seed = random_seed * num_gpus + rank
    random.seed(process_seed)
    np.random.seed(process_seed)
    torch.manual_seed(process_seed)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    conv2d_gradfix.enabled = True       # double backward of conv for R1 / path length
    grid_sample_gradfix.enabled = True  # double backward of grid_sample for R1 through augmentation
    return device


def load_resume(resume_pkl, num_gpus, batch_size, rank):
    """(snapshot dict or None, training state or None). A state makes the resume exact."""
    if resume_pkl is None:
        return None, None
    if rank == 0:
        print(f'Resuming from "{resume_pkl}"')
    snapshot = load_network_pickle(resume_pkl)
    state_file = state_path_for(resume_pkl) if os.path.isfile(resume_pkl) else None
    if state_file is None or not os.path.isfile(state_file):
        if rank == 0:
            print('No training state beside the pickle: transferring weights only')
        return snapshot, None
    state = upgrade_state(torch.load(state_file, map_location='cpu', weights_only=False))
    if (state['num_gpus'], state['batch_size']) != (num_gpus, batch_size):
        raise dnnlib.util.UserError(
            f'{state_file} was written with {state["num_gpus"]} process(es) and batch {state["batch_size"]}; '
            f'an exact resume needs the same (got {num_gpus} and {batch_size})')
    if rank == 0:
        print(f'Exact resume from "{state_file}" at kimg {state["cur_nimg"] / 1000:.3f}')
    return snapshot, state


def upgrade_state(state):
    """Training states of version 1 (one optimiser entry per network, loss tensors at top level)."""
    if state.get('version', 1) >= 2:
        return state
    upgraded = dict(state, version=STATE_VERSION, optimizers=dict(G=state['G_opt'], D=state['D_opt']))
    upgraded['loss'] = {name: state.get(name) for name in ('real_sign_stats', 'pl_mean') if state.get(name) is not None}
    upgraded.setdefault('data_position', state['batch_idx'] * state['batch_size'])
    return upgraded


def open_training_data(training_set_kwargs, data_loader_kwargs, random_seed, rank, num_gpus, batch_size, start, device):
    """(dataset, endless iterator of this rank's share of global batches from global position `start`)."""
    training_set = dnnlib.util.construct_class_by_name(**training_set_kwargs)
    sampler = ResumableSampler(len(training_set), rank=rank, num_replicas=num_gpus, seed=random_seed, start=start)
    loader_kwargs = dict(data_loader_kwargs)
    if loader_kwargs.get('num_workers', 0) == 0:
        loader_kwargs.pop('prefetch_factor', None)  # only valid with worker processes
    if device.type != 'cuda':
        loader_kwargs['pin_memory'] = False
    # The loader's own generator keeps the global RNG (restored on resume) untouched by data loading.
    loader = torch.utils.data.DataLoader(training_set, sampler=sampler, batch_size=batch_size // num_gpus,
                                         generator=torch.Generator(), **loader_kwargs)
    if rank == 0:
        print(f'Training set: {len(training_set)} images of shape {training_set.image_shape}, labels {training_set.label_shape}')
    return training_set, iter(loader)


def build_networks(G_kwargs, D_kwargs, training_set, random_seed, device):
    """G, D and G_ema with frozen gradients; the initial weights depend on the seed only, not on the process count."""
    dims = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution, img_channels=training_set.num_channels)
    rng_before = torch.get_rng_state()
    torch.manual_seed(random_seed)
    G = dnnlib.util.construct_class_by_name(**G_kwargs, **dims)
    D = dnnlib.util.construct_class_by_name(**D_kwargs, **dims)
    torch.set_rng_state(rng_before)
    G = G.train().requires_grad_(False).to(device)
    D = D.train().requires_grad_(False).to(device)
    return G, D, copy.deepcopy(G).eval()


def print_summaries(G, D, batch_gpu, device):
    z = torch.zeros([batch_gpu, G.z_dim], device=device)
    c = torch.zeros([batch_gpu, G.c_dim], device=device)
    img = misc.print_module_summary(G, [z, c])
    misc.print_module_summary(D, [img, c])


def copy_resumed_weights(snapshot, resume_pkl, nets, exact):
    """Weights from the resume pickle; an exact resume requires every tensor to be there."""
    for name in ('G', 'D', 'G_ema'):
        if snapshot.get(name) is None:
            raise dnnlib.util.UserError(f'{resume_pkl} has no {name}')
        try:
            misc.copy_params_and_buffers(snapshot[name], nets[name], require_all=exact)
        except dnnlib.util.UserError as err:
            raise dnnlib.util.UserError(f'Cannot resume from {resume_pkl}: {name} has a different architecture. {err}') from None


def build_augment(augment_kwargs, augment_p, ada_target, ada_interval, ada_kimg, batch_size, state, device):
    """(augment pipe or None, ADA controller or None)."""
    if augment_kwargs is None or (augment_p == 0 and ada_target is None):
        return None, None
    pipe = dnnlib.util.construct_class_by_name(**augment_kwargs).train().requires_grad_(False).to(device)
    resumed_p = None if state is None else state.get('augment_p')
    pipe.p.copy_(torch.as_tensor(augment_p if resumed_p is None else resumed_p))
    ada = None if ada_target is None else AdaController(ada_target, ada_interval, ada_kimg, batch_size)
    return pipe, ada


def broadcast_from_rank0(modules):
    """Every rank starts from rank 0's parameters and buffers."""
    for module in modules:
        if module is not None:
            for tensor in misc.params_and_buffers(module):
                torch.distributed.broadcast(tensor, src=0)


def build_optimizers(loss, nets, opt_kwargs):
    """One optimiser per network that some phase of the loss trains, built from the (loss-adjusted) preset settings."""
    adjust = getattr(loss, 'optimizer_kwargs', lambda _module, settings: settings)  # optional part of the contract
    optimizers = {}
    for name in dict.fromkeys(phase.module for phase in loss.phases):
        settings = fused_on_cpu(adjust(name, dnnlib.EasyDict(opt_kwargs[name])), nets[name])
        optimizers[name] = dnnlib.util.construct_class_by_name(nets[name].parameters(), **settings)
    return optimizers


def fused_on_cpu(settings, net):
    """Adam/AdamW on a network held on the CPU: one fused kernel per parameter instead of a chain of elementwise
    ops (the same update to float rounding), unless the preset chooses an implementation itself."""
    fusable = settings.get('class_name') in ('torch.optim.Adam', 'torch.optim.AdamW')
    on_cpu = all(param.device.type == 'cpu' for param in net.parameters())
    if not fusable or not on_cpu or 'fused' in settings or 'foreach' in settings:
        return settings
    return dnnlib.EasyDict(settings, fused=True)


def grid_latents(G, labels, random_seed, batch_gpu, device):
    z = torch.randn([len(labels), G.z_dim], generator=torch.Generator().manual_seed(random_seed))
    return z.to(device).split(batch_gpu), torch.from_numpy(labels).to(device).split(batch_gpu)


def open_logs(run_dir, purge_step=None):
    """stats.jsonl and (when tensorboard imports) a TensorBoard writer; with purge_step, TensorBoard drops the
    events an earlier, killed process of the run wrote from that step on."""
    jsonl = open(os.path.join(run_dir, 'stats.jsonl'), 'at')
    try:
        import torch.utils.tensorboard as tensorboard
        return jsonl, tensorboard.SummaryWriter(run_dir, purge_step=purge_step)
    except ImportError as err:
        print('Skipping tfevents export:', err)
        return jsonl, None


def close_logs(run):
    for log in (run.stats_jsonl, run.stats_tfevents):
        if log is not None:
            log.close()

#----------------------------------------------------------------------------
# One training step.

def next_reals(run):
    """A fresh real batch: this rank's images as floats in [-1, 1] and labels, in chunks of batch_gpu."""
    img, c = next(run.data_iter)
    run.data_position += run.batch_size
    img = img.to(run.device).to(torch.float32) / 127.5 - 1
    return img.split(run.batch_gpu), c.to(run.device).split(run.batch_gpu)


def average_and_check_gradients(run, phase, module):
    """Average gradients over ranks; refuse to step on NaN/Inf (one line naming the phase and the last good snapshot)."""
    params = [param for param in module.parameters() if param.grad is not None]
    if not params:
        return
    flat = torch.cat([param.grad.flatten() for param in params])
    if run.num_gpus > 1:
        torch.distributed.all_reduce(flat)
        flat /= run.num_gpus
    if not bool(torch.isfinite(flat).all()):
        close_logs(run)
        raise dnnlib.util.UserError(
            f'Training diverged: NaN/Inf in the {phase.name} loss gradients at kimg {run.cur_nimg / 1000:.3f} '
            f'(tick {run.cur_tick}); last good snapshot: {run.last_snapshot_pkl or "none"}')
    for param, grad in zip(params, flat.split([param.numel() for param in params])):
        param.grad = grad.view_as(param)


def run_phase(run, phase, execution):
    """One execution of a phase: gradients of the phase's loss over this rank's batch, then an optimiser step."""
    module, optimizer = run.nets[phase.module], run.optimizers[phase.module]
    num_rounds = run.batch_size // (run.batch_gpu * run.num_gpus)
    if phase.get('uses_reals', True):
        real_img, real_c = next_reals(run)
    else:
        real_img, real_c = [None] * num_rounds, [None] * num_rounds
    z, c = draw_latents(run.random_seed, run.batch_idx, execution, run.batch_size, run.G.z_dim,
                        run.training_set, run.rank, run.num_gpus)
    optimizer.zero_grad(set_to_none=True)
    module.requires_grad_(True)
    for chunk in zip(real_img, real_c, z.to(run.device).split(run.batch_gpu), c.to(run.device).split(run.batch_gpu)):
        run.loss.accumulate_gradients(phase.name, *chunk, gain=phase.interval / num_rounds, cur_nimg=run.cur_nimg)
    module.requires_grad_(False)
    average_and_check_gradients(run, phase, module)
    optimizer.step()


def ema_beta_now(run):
    """G_ema's decay for this step: a fixed per-step beta, or from the half-life in images (ramped up early)."""
    if run.ema_beta is not None:
        return run.ema_beta
    if run.ema_kimg is None:
        return 0.0
    half_life = run.ema_kimg * 1000
    if run.ema_rampup is not None:
        half_life = min(half_life, run.cur_nimg * run.ema_rampup)
    return 0.5 ** (run.batch_size / max(half_life, 1e-8))


@torch.no_grad()
def update_ema(G_ema, G, beta):
    for param_ema, param in zip(G_ema.parameters(), G.parameters()):
        param_ema.copy_(param.lerp(param_ema, beta))
    for buffer_ema, buffer in zip(G_ema.buffers(), G.buffers()):
        buffer_ema.copy_(buffer)


def training_step(run):
    """Schedule, every due phase (each repeat a fresh execution), G_ema, counters, ADA."""
    run.schedule.apply(run.cur_nimg, run.G, run.D)
    execution = 0
    for phase in run.loss.phases:
        if run.batch_idx % phase.interval != 0:
            continue
        timer = PhaseTimer(run, phase.name)
        for _ in range(phase.repeats):
            run_phase(run, phase, execution)
            execution += 1
        timer.stop()
    update_ema(run.G_ema, run.G, ema_beta_now(run))
    run.cur_nimg += run.batch_size
    run.batch_idx += 1
    if run.ada is not None and run.batch_idx % run.ada.interval == 0:
        run.ada.update(run.augment_pipe, run.loss.real_sign_stats)


class PhaseTimer:
    """CUDA events around a phase on rank 0 (reported as Timing/<phase> in ms); nothing on CPU."""

    def __init__(self, run, name):
        self.events = None
        if run.rank == 0 and run.device.type == 'cuda':
            self.events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self.events[0].record(torch.cuda.current_stream(run.device))
            run.phase_events[name] = self.events

    def stop(self):
        if self.events is not None:
            self.events[1].record()

#----------------------------------------------------------------------------
# Tick ends: report, snapshots, metrics, logs.

def report_tick(run, now):
    """Print the status line; the same values go to training_stats."""
    tick_sec = now - run.tick_start_time
    peak_gpu = torch.cuda.max_memory_allocated(run.device) / 2**30 if run.device.type == 'cuda' else 0
    values = [
        ('tick', 'Progress/tick', run.cur_tick, '<5d'),
        ('kimg', 'Progress/kimg', run.cur_nimg / 1e3, '<8.3f'),
        ('time', 'Timing/total_sec', now - run.start_time, None),
        ('sec/tick', 'Timing/sec_per_tick', tick_sec, '<7.1f'),
        ('sec/kimg', 'Timing/sec_per_kimg', tick_sec / max(run.cur_nimg - run.tick_start_nimg, 1) * 1e3, '<7.2f'),
        ('maintenance', 'Timing/maintenance_sec', run.maintenance_time, '<6.1f'),
        ('cpumem', 'Resources/cpu_mem_gb', psutil.Process(os.getpid()).memory_info().rss / 2**30, '<6.2f'),
        ('gpumem', 'Resources/peak_gpu_mem_gb', peak_gpu, '<6.2f'),
        ('augment', 'Progress/augment', float(run.augment_pipe.p.cpu()) if run.augment_pipe is not None else 0.0, '.3f'),
    ]
    parts = []
    for label, stat, value, fmt in values:
        training_stats.report0(stat, value)
        shown = f'{dnnlib.util.format_time(value):<12s}' if fmt is None else format(value, fmt)
        parts.append(f'{label} {shown}')
    training_stats.report0('Timing/total_hours', (now - run.start_time) / 3600)
    training_stats.report0('Timing/total_days', (now - run.start_time) / 86400)
    if run.device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    if run.rank == 0:
        print(' '.join(parts))


def gather_from_ranks(obj, num_gpus):
    """[obj of rank 0, obj of rank 1, ...] (a collective call when there are several processes)."""
    if num_gpus == 1:
        return [obj]
    gathered = [None] * num_gpus
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def save_snapshot(run, tag, train_rng):
    """The network pickle and, first, its training state; returns the snapshot dict (CPU copies)."""
    snapshot = dict(training_set_kwargs=dict(run.training_set_kwargs))
    for name in ('G', 'D', 'G_ema', 'augment_pipe'):
        module = run.nets.get(name)
        if module is not None:
            if run.num_gpus > 1:
                misc.check_ddp_consistency(module, ignore_regex=r'.*\.w_avg')  # w_avg follows each rank's own batches
            module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
        snapshot[name] = module
    state = dict(
        version=STATE_VERSION, cur_nimg=run.cur_nimg, cur_tick=run.cur_tick + 1, batch_idx=run.batch_idx,
        data_position=run.data_position, num_gpus=run.num_gpus, batch_size=run.batch_size, random_seed=run.random_seed,
        optimizers={name: opt.state_dict() for name, opt in run.optimizers.items()},
        augment_p=float(run.augment_pipe.p.cpu()) if run.augment_pipe is not None else None,
        loss=run.loss.state_dict() if hasattr(run.loss, 'state_dict') else {}, rng=gather_from_ranks(train_rng, run.num_gpus))
    pkl_path = os.path.join(run.run_dir, f'network-snapshot-{tag}.pkl')
    if run.rank == 0:
        # The state goes first: a pickle whose state file exists is always a complete snapshot.
        with dnnlib.util.atomic_write(state_path_for(pkl_path)) as tmp:
            torch.save(state, tmp)
        with dnnlib.util.atomic_write(pkl_path) as tmp, open(tmp, 'wb') as f:
            pickle.dump(snapshot, f)
    run.last_snapshot_pkl = pkl_path
    return snapshot


def evaluate_metrics(run, snapshot):
    try:
        from metrics import metric_main
    except ImportError:
        return
    if run.rank == 0:
        print('Evaluating metrics...')
    for metric in run.metrics:
        result = metric_main.calc_metric(metric=metric, G=snapshot['G_ema'], num_gpus=run.num_gpus, rank=run.rank,
                                         device=run.device, dataset_kwargs=dnnlib.EasyDict(run.training_set_kwargs))
        if run.rank == 0:
            metric_main.report_metric(result, run_dir=run.run_dir, snapshot_pkl=run.last_snapshot_pkl)
        run.metric_values.update(result.results)


def write_stats(run, now):
    """Collect this tick's statistics (phase timings included) into stats.jsonl and TensorBoard.

    Called before the tick's snapshot: a run killed after the snapshot has the tick's line, and one killed
    before it redoes the tick, whose earlier line is dropped when the run continues (training.run_dirs)."""
    for name, (start, end) in run.phase_events.items():
        end.synchronize()
        training_stats.report0('Timing/' + name, start.elapsed_time(end))
    run.stats_collector.update()
    stats = run.stats_collector.as_dict()
    if run.stats_jsonl is not None:
        run.stats_jsonl.write(json.dumps(dict(stats, timestamp=now)) + '\n')
        run.stats_jsonl.flush()
    if run.stats_tfevents is not None:
        step, walltime = int(run.cur_nimg / 1e3), now - run.start_time
        for name, value in stats.items():
            run.stats_tfevents.add_scalar(name, value.mean, global_step=step, walltime=walltime)
        run.stats_tfevents.flush()


def write_metric_events(run, now):
    """The latest metric values into TensorBoard, at the tick's step."""
    if run.stats_tfevents is not None and run.metric_values:
        step, walltime = int(run.cur_nimg / 1e3), now - run.start_time
        for name, value in run.metric_values.items():
            run.stats_tfevents.add_scalar(f'Metrics/{name}', value, global_step=step, walltime=walltime)
        run.stats_tfevents.flush()


def finish_tick(run, done):
    """Everything done once per tick; returns whether training is over. Runs with the training RNGs set aside."""
    train_rng = capture_rng_state(run.device)
    tick_end = time.time()
    report_tick(run, tick_end)
    if not done and run.abort_fn is not None and run.abort_fn():
        done = True
        if run.rank == 0:
            print('\nAborting...')
    tag = snapshot_tag(run.cur_nimg, run.kimg_per_tick)
    due = lambda every: every is not None and (done or run.cur_tick % every == 0)
    if run.rank == 0 and due(run.image_snapshot_ticks):
        save_fakes_grid(run.G_ema, run.grid_z, run.grid_c, os.path.join(run.run_dir, f'fakes{tag}.png'), run.grid_size)
    write_stats(run, time.time())
    if due(run.network_snapshot_ticks):
        snapshot = save_snapshot(run, tag, train_rng)
        if run.metrics:
            evaluate_metrics(run, snapshot)
            write_metric_events(run, time.time())
        del snapshot
    if run.progress_fn is not None:
        run.progress_fn(run.cur_nimg // 1000, run.total_kimg)
    restore_rng_state(train_rng, run.device)
    run.cur_tick += 1
    run.tick_start_nimg = run.cur_nimg
    run.tick_start_time = time.time()
    run.maintenance_time = run.tick_start_time - tick_end
    return done

#----------------------------------------------------------------------------

def setup(run):
    """Build everything a run needs into `run` (an EasyDict of the loop's options)."""
    run.device = setup_process(run.random_seed, run.num_gpus, run.rank, run.local_rank, run.cudnn_benchmark, run.allow_tf32)
    assert run.batch_size % (run.batch_gpu * run.num_gpus) == 0, 'batch_size must be a multiple of batch_gpu * num_gpus'
    snapshot, state = load_resume(run.resume_pkl, run.num_gpus, run.batch_size, run.rank)
    run.data_position = 0 if state is None else state['data_position']
    run.training_set, run.data_iter = open_training_data(run.training_set_kwargs, run.data_loader_kwargs, run.random_seed,
                                                         run.rank, run.num_gpus, run.batch_size, run.data_position, run.device)
    run.G, run.D, run.G_ema = build_networks(run.G_kwargs, run.D_kwargs, run.training_set, run.random_seed, run.device)
    if run.rank == 0:
        print_summaries(run.G, run.D, run.batch_gpu, run.device)  # before resuming: its forward pass moves w_avg
    run.nets = dict(G=run.G, D=run.D, G_ema=run.G_ema)
    if snapshot is not None:
        copy_resumed_weights(snapshot, run.resume_pkl, run.nets, exact=state is not None)
    run.augment_pipe, run.ada = build_augment(run.augment_kwargs, run.augment_p, run.ada_target, run.ada_interval,
                                              run.ada_kimg, run.batch_size, state, run.device)
    run.nets['augment_pipe'] = run.augment_pipe
    if run.num_gpus > 1:
        broadcast_from_rank0([run.G, run.D, run.G_ema, run.augment_pipe])
    run.loss = dnnlib.util.construct_class_by_name(device=run.device, G=run.G, D=run.D, augment_pipe=run.augment_pipe, **run.loss_kwargs)
    if run.ada is not None and not hasattr(run.loss, 'real_sign_stats'):
        raise dnnlib.util.UserError(f'{run.loss_kwargs["class_name"]} keeps no real_sign_stats, which ADA needs; use --aug=noaug or --aug=fixed')
    run.optimizers = build_optimizers(run.loss, run.nets, dict(G=run.G_opt_kwargs, D=run.D_opt_kwargs))
    run.schedule = dnnlib.util.construct_class_by_name(**run.schedule_kwargs, img_resolution=run.training_set.resolution)
    restore_counters(run, state)
    run.schedule.apply(run.cur_nimg, run.G, run.D, run.G_ema)
    if run.rank == 0:
        export_start_grids(run, resumed=state is not None)
        run.stats_jsonl, run.stats_tfevents = open_logs(run.run_dir, None if state is None else run.cur_nimg // 1000 + 1)
    if state is not None:
        restore_rng_state(state['rng'][run.rank], run.device)


def restore_counters(run, state):
    run.cur_nimg = run.cur_tick = run.batch_idx = 0
    run.last_snapshot_pkl = None
    if state is not None:
        run.cur_nimg, run.cur_tick, run.batch_idx = state['cur_nimg'], state['cur_tick'], state['batch_idx']
        for name, opt_state in state['optimizers'].items():
            run.optimizers[name].load_state_dict(opt_state)
        if hasattr(run.loss, 'load_state_dict'):
            run.loss.load_state_dict(state['loss'])
        run.last_snapshot_pkl = run.resume_pkl


def export_start_grids(run, resumed):
    """reals.png and fakes_init.png (a resumed run keeps those its run dir has: they show the run's start) and
    the fixed latents of the fake grids."""
    grid_max = run.snapshot_grid_max if run.snapshot_grid_max is not None else (None if run.device.type == 'cuda' else 4)
    run.grid_size, images, labels = setup_snapshot_image_grid(run.training_set, run.random_seed, grid_max)
    reals, fakes_init = os.path.join(run.run_dir, 'reals.png'), os.path.join(run.run_dir, 'fakes_init.png')
    if not (resumed and os.path.isfile(reals)):
        save_image_grid(images, reals, drange=[0, 255], grid_size=run.grid_size)
    run.grid_z, run.grid_c = grid_latents(run.G, labels, run.random_seed, run.batch_gpu, run.device)
    if not (resumed and os.path.isfile(fakes_init)):
        save_fakes_grid(run.G_ema, run.grid_z, run.grid_c, fakes_init, run.grid_size)


def training_loop(
    run_dir='.',                  # where snapshots, grids and logs go
    training_set_kwargs={},       # dataset, built by class_name
    data_loader_kwargs={},        # torch.utils.data.DataLoader options
    G_kwargs={}, D_kwargs={},     # networks, built by class_name with c_dim, img_resolution, img_channels
    G_opt_kwargs={}, D_opt_kwargs={},  # optimisers, built by class_name (the loss may adjust them)
    loss_kwargs={},               # a training.loss.Loss subclass, built by class_name
    schedule_kwargs={'class_name': 'training.schedules.FixedResolution'},  # resolution schedule
    augment_kwargs=None,          # augmentation pipe; None: no augmentation
    metrics=[],                   # metric names evaluated at network snapshots
    random_seed=0,
    num_gpus=1, rank=0, local_rank=None,  # processes in training, this one's rank, its CUDA device (None: rank)
    batch_size=4,                 # global batch per step
    batch_gpu=4,                  # images per process per forward pass (the rest accumulates)
    ema_kimg=10,                  # G_ema half-life in kimg; None: G_ema follows G
    ema_beta=None,                # fixed G_ema decay per step (overrides ema_kimg)
    ema_rampup=None,              # half-life limited to cur_nimg * ema_rampup early on; None: off
    augment_p=0,                  # initial augmentation probability
    ada_target=None,              # ADA's target for E[sign(D(real))]; None: p stays fixed
    ada_interval=4,               # steps between ADA updates
    ada_kimg=500,                 # kimg for ADA to move p by 1
    total_kimg=25000,             # training length
    kimg_per_tick=4,              # kimg between status lines
    image_snapshot_ticks=50,      # ticks between fake grids; None: never
    network_snapshot_ticks=50,    # ticks between network snapshots (and training states); None: never
    resume_pkl=None,              # pickle to start from; exact when its training-state file is beside it
    cudnn_benchmark=True,
    allow_tf32=False,
    abort_fn=None,                # callable; True ends training at the next tick (same answer on all ranks)
    progress_fn=None,             # called with (kimg done, total kimg) at every tick on every rank
    snapshot_grid_max=None,       # cap on grid rows/columns; None: full size on CUDA, 4 on CPU
):
    run = dnnlib.EasyDict(locals())
    run.start_time = time.time()
    run.stats_jsonl = run.stats_tfevents = None
    run.phase_events, run.metric_values = {}, {}
    setup(run)
    run.stats_collector = training_stats.Collector(regex='.*')
    run.tick_start_nimg, run.tick_start_time = run.cur_nimg, time.time()
    run.maintenance_time = run.tick_start_time - run.start_time
    if progress_fn is not None:
        progress_fn(run.cur_nimg // 1000, total_kimg)
    if rank == 0:
        print(f'Training for {total_kimg} kimg...\n')
    while True:
        training_step(run)
        done = run.cur_nimg >= total_kimg * 1000
        tick_over = run.cur_tick == 0 or run.cur_nimg >= run.tick_start_nimg + kimg_per_tick * 1000
        if (done or tick_over) and finish_tick(run, done):
            break
    close_logs(run)
    if rank == 0:
        print('\nExiting...')

#----------------------------------------------------------------------------
