"""Main training loop: one loop for every GAN family, with exact resume and multi-process training.

Exact resume: next to every `network-snapshot-<kimg>.pkl` (weights, as the official code) rank 0
writes `training-state-<kimg>.pt` with everything else the run depends on: optimiser states,
counters, ADA p and its pending statistic, the path-length mean, every rank's RNG states and the
data position. Everything random in training is a function of restorable state: the real-image
order is a pure function of (seed, position) (training.dataset.ResumableSampler), z and c are drawn
from a generator seeded by (seed, step), and the global RNGs (noise inputs, style mixing,
augmentation) are restored; maintenance work at tick ends (image grids, metrics) runs with the
training RNG state set aside. A run killed at any point and resumed from its last snapshot
therefore continues with the same numbers as a run never interrupted.

Gradients are all-reduced by the loop after each phase (no DDP wrapper), averaged over ranks; the
N ranks of a step together see the same reals and latents as one process with the whole batch.
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
from tools import cli_utils
from torch_utils import misc, training_stats
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
from training.dataset import ResumableSampler

#----------------------------------------------------------------------------
# Snapshot names and discovery.

def snapshot_tag(cur_nimg, kimg_per_tick):
    """'<kimg:06d>' as the official code; ticks shorter than 1 kimg add '.<images:03d>' so names stay unique."""
    tag = f'{cur_nimg // 1000:06d}'
    if kimg_per_tick < 1:
        tag += f'.{cur_nimg % 1000:03d}'
    return tag

def state_path_for(snapshot_pkl):
    """training-state-<kimg>.pt beside network-snapshot-<kimg>.pkl."""
    folder, fname = os.path.split(snapshot_pkl)
    m = re.fullmatch(r'network-snapshot-(.+)\.pkl', fname)
    return os.path.join(folder, f'training-state-{m.group(1)}.pt') if m else None

def find_latest_snapshot(run_dir):
    """Newest network snapshot of a run dir that has its training state beside it (else the newest pkl)."""
    pkls = []
    for path in glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')):
        m = re.fullmatch(r'network-snapshot-(\d+)(?:\.(\d+))?\.pkl', os.path.basename(path))
        if m:
            pkls.append((int(m.group(1)) * 1000 + int(m.group(2) or 0), path))
    if not pkls:
        raise dnnlib.util.UserError(f'No network-snapshot-*.pkl in {run_dir}')
    pkls.sort()
    with_state = [path for _nimg, path in pkls if os.path.isfile(state_path_for(path))]
    return with_state[-1] if with_state else pkls[-1][1]

#----------------------------------------------------------------------------
# Image grids.

def setup_snapshot_image_grid(training_set, random_seed=0, max_size=None):
    """Grid of training images: random ones, or rows of one label each for labelled data."""
    rnd = np.random.RandomState(random_seed)
    gw = np.clip(7680 // training_set.image_shape[2], 7, 32)
    gh = np.clip(4320 // training_set.image_shape[1], 4, 32)
    if max_size is not None:
        gw, gh = min(gw, max_size), min(gh, max_size)

    if not training_set.has_labels:
        all_indices = list(range(len(training_set)))
        rnd.shuffle(all_indices)
        grid_indices = [all_indices[i % len(all_indices)] for i in range(gw * gh)]
    else:
        by_label = {}
        for idx in range(len(training_set)):
            by_label.setdefault(tuple(training_set.get_details(idx).raw_label.flat[::-1]), []).append(idx)
        labels = sorted(by_label.keys())
        for label in labels:
            rnd.shuffle(by_label[label])
        grid_indices = []
        for y in range(gh):
            members = by_label[labels[y % len(labels)]]
            grid_indices += [members[x % len(members)] for x in range(gw)]

    images, labels = zip(*[training_set[i] for i in grid_indices])
    return (gw, gh), np.stack(images), np.stack(labels)

def save_image_grid(img, fname, drange, grid_size):
    """Tile NCHW images (values in drange) into one PNG, written atomically."""
    lo, hi = drange
    img = np.asarray(img, dtype=np.float32)
    img = np.rint((img - lo) * (255 / (hi - lo))).clip(0, 255).astype(np.uint8)
    cli_utils.save_image(cli_utils.make_image_grid(img.transpose(0, 2, 3, 1), grid_w=grid_size[0]), fname)

@torch.no_grad()
def save_fakes_grid(G_ema, grid_z, grid_c, fname, grid_size):
    """G_ema's images for the fixed grid latents (noise_mode='const', so grids compare across ticks)."""
    images = torch.cat([G_ema(z=z, c=c, noise_mode='const').cpu() for z, c in zip(grid_z, grid_c)]).numpy()
    save_image_grid(images, fname, drange=[-1, 1], grid_size=grid_size)

#----------------------------------------------------------------------------
# ADA: move p so that E[sign(D(real))] approaches the target.

class AdaController:
    """Adjusts augment_pipe.p every `interval` steps by sign(E[sign(D(real))] - target) * batch*interval/(kimg*1000)."""

    def __init__(self, target=0.6, interval=4, kimg=500, batch_size=64):
        self.target = target
        self.interval = interval
        self.speed = batch_size * interval / (kimg * 1000) # p can go 0 -> 1 in `kimg` thousand images
        self.last_rt = None

    def update(self, augment_pipe, sign_stats):
        """sign_stats: [sum of signs, count] since the last update (summed over ranks here, then cleared)."""
        stats = sign_stats.detach().clone()
        sign_stats.zero_()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)
        total, count = stats.tolist()
        if count == 0:
            return
        self.last_rt = total / count
        adjust = np.sign(self.last_rt - self.target) * self.speed
        augment_pipe.p.copy_((augment_pipe.p + adjust).clamp(0, 1))

#----------------------------------------------------------------------------
# RNG state: captured per rank, restored on resume.

def capture_rng_state(device):
    state = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), python=random.getstate())
    if device.type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    return state

def restore_rng_state(state, device):
    torch.set_rng_state(state['torch'])
    np.random.set_state(state['numpy'])
    random.setstate(state['python'])
    if device.type == 'cuda' and 'cuda' in state:
        torch.cuda.set_rng_state(state['cuda'], device)

def step_latents(random_seed, batch_idx, num_phases, batch_size, z_dim, training_set, rank, num_gpus):
    """z and c of every phase of one step: [num_phases, batch_size // num_gpus, ...], a pure function of (seed, step).

    Rank r takes global batch items r, r + num_gpus, ... (the same interleaving as the reals)."""
    seeds = np.random.SeedSequence([random_seed, batch_idx]).generate_state(2, np.uint32)
    gen = torch.Generator().manual_seed(int(seeds[0]))
    z = torch.randn([num_phases, batch_size, z_dim], generator=gen)[:, rank::num_gpus]
    idx = np.random.RandomState(int(seeds[1])).randint(len(training_set), size=[num_phases, batch_size])[:, rank::num_gpus]
    c = np.stack([training_set.get_label(int(i)) for i in idx.flat]).reshape(list(idx.shape) + [-1])
    return z, torch.from_numpy(c).to(torch.float32)

#----------------------------------------------------------------------------

def _load_pickle(path):
    with dnnlib.util.open_url(path, verbose=False) as f:
        try:
            import legacy
        except ImportError: # our own pickles need only torch_utils.persistence
            return pickle.load(f)
        return legacy.load_network_pkl(f)

def _build_loss(loss_kwargs, device, G, D, augment_pipe):
    """Losses take G_mapping/G_synthesis when G is mapping+synthesis (StyleGAN family), else G."""
    if hasattr(G, 'mapping') and hasattr(G, 'synthesis'):
        return dnnlib.util.construct_class_by_name(device=device, G_mapping=G.mapping, G_synthesis=G.synthesis, D=D, augment_pipe=augment_pipe, **loss_kwargs)
    return dnnlib.util.construct_class_by_name(device=device, G=G, D=D, augment_pipe=augment_pipe, **loss_kwargs)

def _metric_main():
    try:
        from metrics import metric_main
    except ImportError:
        return None
    return metric_main if hasattr(metric_main, 'calc_metric') else None

#----------------------------------------------------------------------------

def training_loop(
    run_dir                 = '.',      # Output directory.
    training_set_kwargs     = {},       # Options for training set.
    data_loader_kwargs      = {},       # Options for torch.utils.data.DataLoader.
    G_kwargs                = {},       # Options for generator network.
    D_kwargs                = {},       # Options for discriminator network.
    G_opt_kwargs            = {},       # Options for generator optimizer.
    D_opt_kwargs            = {},       # Options for discriminator optimizer.
    augment_kwargs          = None,     # Options for augmentation pipeline. None = disable.
    loss_kwargs             = {},       # Options for loss function.
    metrics                 = [],       # Metrics to evaluate during training.
    random_seed             = 0,        # Global random seed.
    num_gpus                = 1,        # Number of processes (GPUs, or CPU processes without CUDA) participating in training.
    rank                    = 0,        # Rank of the current process in [0, num_gpus[.
    batch_size              = 4,        # Total batch size for one training iteration. Can be larger than batch_gpu * num_gpus.
    batch_gpu               = 4,        # Number of samples processed at a time by one process.
    ema_kimg                = 10,       # Half-life of the exponential moving average (EMA) of generator weights.
    ema_rampup              = None,     # EMA ramp-up coefficient.
    G_reg_interval          = 4,        # How often to perform regularization for G? None = disable lazy regularization.
    D_reg_interval          = 16,       # How often to perform regularization for D? None = disable lazy regularization.
    augment_p               = 0,        # Initial value of augmentation probability.
    ada_target              = None,     # ADA target value. None = fixed p.
    ada_interval            = 4,        # How often to perform ADA adjustment?
    ada_kimg                = 500,      # ADA adjustment speed, measured in how many kimg it takes for p to increase/decrease by one unit.
    total_kimg              = 25000,    # Total length of the training, measured in thousands of real images.
    kimg_per_tick           = 4,        # Progress snapshot interval.
    image_snapshot_ticks    = 50,       # How often to save image snapshots? None = disable.
    network_snapshot_ticks  = 50,       # How often to save network snapshots? None = disable.
    resume_pkl              = None,     # Network pickle to resume from; its training-state file, if present, makes the resume exact.
    cudnn_benchmark         = True,     # Enable torch.backends.cudnn.benchmark?
    allow_tf32              = False,    # Enable torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32?
    abort_fn                = None,     # Callback that determines whether to abort training. Must return consistent results across ranks.
    progress_fn             = None,     # Callback function for updating training progress. Called for all ranks.
    snapshot_grid_max       = None,     # Cap on image grid rows/columns. None = official size on CUDA, 4 on CPU (G_ema is slow there).
    local_rank              = None,     # CUDA device index of this process on its machine. None = rank.
):
    # Initialize.
    start_time = time.time()
    device = torch.device('cuda', rank if local_rank is None else local_rank) if torch.cuda.is_available() else torch.device('cpu')
    np.random.seed(random_seed * num_gpus + rank)
    torch.manual_seed(random_seed * num_gpus + rank)
    random.seed(random_seed * num_gpus + rank)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    conv2d_gradfix.enabled = True       # faster double backward for R1/path length
    grid_sample_gradfix.enabled = True  # double backward of grid_sample for R1 through augmentation
    distributed = num_gpus > 1
    assert batch_size % (batch_gpu * num_gpus) == 0, 'batch_size must be a multiple of batch_gpu * num_gpus'
    num_rounds = batch_size // (batch_gpu * num_gpus)

    # What to resume from.
    resume_data = None
    state = None
    if resume_pkl is not None:
        if rank == 0:
            print(f'Resuming from "{resume_pkl}"')
        resume_data = _load_pickle(resume_pkl)
        spath = state_path_for(resume_pkl) if os.path.isfile(resume_pkl) else None
        if spath is not None and os.path.isfile(spath):
            state = torch.load(spath, map_location='cpu', weights_only=False)
            if state['num_gpus'] != num_gpus or state['batch_size'] != batch_size:
                raise dnnlib.util.UserError(f'{spath} was written with {state["num_gpus"]} process(es) and batch {state["batch_size"]}; '
                                            f'an exact resume needs the same (got {num_gpus} and {batch_size})')
            if rank == 0:
                print(f'Exact resume from "{spath}" at kimg {state["cur_nimg"] / 1000:.3f}')
        elif rank == 0:
            print('No training state beside the pickle: transferring weights only')

    # Load training set.
    if rank == 0:
        print('Loading training set...')
    training_set = dnnlib.util.construct_class_by_name(**training_set_kwargs) # subclass of training.dataset.Dataset
    batch_idx = 0 if state is None else state['batch_idx']
    sampler = ResumableSampler(len(training_set), rank=rank, num_replicas=num_gpus, seed=random_seed, start=batch_idx * batch_size)
    loader_kwargs = dict(data_loader_kwargs)
    if loader_kwargs.get('num_workers', 0) == 0:
        loader_kwargs.pop('prefetch_factor', None)
    if device.type != 'cuda':
        loader_kwargs['pin_memory'] = False
    loader = torch.utils.data.DataLoader(dataset=training_set, sampler=sampler, batch_size=batch_size // num_gpus,
                                         generator=torch.Generator(), **loader_kwargs) # own generator: keeps the global RNG untouched
    training_set_iterator = iter(loader)
    if rank == 0:
        print()
        print('Num images: ', len(training_set))
        print('Image shape:', training_set.image_shape)
        print('Label shape:', training_set.label_shape)
        print()

    # Construct networks.
    if rank == 0:
        print('Constructing networks...')
    common_kwargs = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution, img_channels=training_set.num_channels)
    torch.manual_seed(random_seed) # initial weights do not depend on the number of processes
    G = dnnlib.util.construct_class_by_name(**G_kwargs, **common_kwargs).train().requires_grad_(False).to(device) # subclass of torch.nn.Module
    D = dnnlib.util.construct_class_by_name(**D_kwargs, **common_kwargs).train().requires_grad_(False).to(device) # subclass of torch.nn.Module
    torch.manual_seed(random_seed * num_gpus + rank)
    G_ema = copy.deepcopy(G).eval()

    # Summary before resuming: its forward pass moves G.mapping.w_avg, which the resumed weights then overwrite.
    if rank == 0:
        z = torch.zeros([batch_gpu, G.z_dim], device=device)
        c = torch.zeros([batch_gpu, G.c_dim], device=device)
        img = misc.print_module_summary(G, [z, c])
        misc.print_module_summary(D, [img, c])

    if resume_data is not None:
        for name, module in [('G', G), ('D', D), ('G_ema', G_ema)]:
            if resume_data.get(name) is None:
                raise dnnlib.util.UserError(f'{resume_pkl} has no {name}')
            try:
                misc.copy_params_and_buffers(resume_data[name], module, require_all=(state is not None))
            except dnnlib.util.UserError as err:
                raise dnnlib.util.UserError(f'Cannot resume from {resume_pkl}: {name} has a different architecture. {err}') from None

    # Augmentation.
    augment_pipe = None
    ada = None
    if (augment_kwargs is not None) and (augment_p > 0 or ada_target is not None):
        augment_pipe = dnnlib.util.construct_class_by_name(**augment_kwargs).train().requires_grad_(False).to(device)
        augment_pipe.p.copy_(torch.as_tensor(state['augment_p'] if state is not None and state['augment_p'] is not None else augment_p))
        if ada_target is not None:
            ada = AdaController(target=ada_target, interval=ada_interval, kimg=ada_kimg, batch_size=batch_size)

    # Every rank starts from rank 0's weights.
    if distributed:
        for module in [G, D, G_ema, augment_pipe]:
            if module is not None:
                for tensor in misc.params_and_buffers(module):
                    torch.distributed.broadcast(tensor, src=0)

    # Loss and training phases.
    if rank == 0:
        print('Setting up training phases...')
    loss = _build_loss(loss_kwargs, device, G, D, augment_pipe)
    if ada is not None and not hasattr(loss, 'real_sign_stats'):
        raise dnnlib.util.UserError(f'{loss_kwargs.get("class_name")} does not report real_sign_stats, which ADA needs; use --aug=noaug or --aug=fixed')
    phases = []
    for name, module, opt_kwargs, reg_interval in [('G', G, G_opt_kwargs, G_reg_interval), ('D', D, D_opt_kwargs, D_reg_interval)]:
        if reg_interval is None:
            opt = dnnlib.util.construct_class_by_name(params=module.parameters(), **opt_kwargs) # subclass of torch.optim.Optimizer
            phases += [dnnlib.EasyDict(name=name + 'both', module=module, opt=opt, interval=1)]
        else: # Lazy regularization: the main phase runs interval/(interval+1) of the updates, so scale lr and betas.
            mb_ratio = reg_interval / (reg_interval + 1)
            opt_kwargs = dnnlib.EasyDict(opt_kwargs)
            opt_kwargs.lr = opt_kwargs.lr * mb_ratio
            if 'betas' in opt_kwargs: # Adam-style momentum decays per update as well
                opt_kwargs.betas = [beta ** mb_ratio for beta in opt_kwargs.betas]
            opt = dnnlib.util.construct_class_by_name(module.parameters(), **opt_kwargs) # subclass of torch.optim.Optimizer
            phases += [dnnlib.EasyDict(name=name + 'main', module=module, opt=opt, interval=1)]
            phases += [dnnlib.EasyDict(name=name + 'reg', module=module, opt=opt, interval=reg_interval)]
    opts = {'G': phases[0].opt, 'D': phases[-1].opt}
    for phase in phases:
        phase.start_event = None
        phase.end_event = None
        if rank == 0 and device.type == 'cuda':
            phase.start_event = torch.cuda.Event(enable_timing=True)
            phase.end_event = torch.cuda.Event(enable_timing=True)

    # Export sample images.
    grid_size = grid_z = grid_c = None
    grid_max = snapshot_grid_max if snapshot_grid_max is not None else (None if device.type == 'cuda' else 4)
    if rank == 0:
        print('Exporting sample images...')
        grid_size, images, labels = setup_snapshot_image_grid(training_set=training_set, random_seed=random_seed, max_size=grid_max)
        save_image_grid(images, os.path.join(run_dir, 'reals.png'), drange=[0, 255], grid_size=grid_size)
        grid_gen = torch.Generator().manual_seed(random_seed)
        grid_z = torch.randn([labels.shape[0], G.z_dim], generator=grid_gen).to(device).split(batch_gpu)
        grid_c = torch.from_numpy(labels).to(device).split(batch_gpu)
        save_fakes_grid(G_ema, grid_z, grid_c, os.path.join(run_dir, 'fakes_init.png'), grid_size)

    # Initialize logs.
    if rank == 0:
        print('Initializing logs...')
    stats_collector = training_stats.Collector(regex='.*')
    stats_metrics = dict()
    stats_jsonl = None
    stats_tfevents = None
    if rank == 0:
        stats_jsonl = open(os.path.join(run_dir, 'stats.jsonl'), 'at')
        try:
            import torch.utils.tensorboard as tensorboard
            stats_tfevents = tensorboard.SummaryWriter(run_dir)
        except ImportError as err:
            print('Skipping tfevents export:', err)

    # Counters, and the rest of the state when resuming exactly.
    cur_nimg = 0
    cur_tick = 0
    if state is not None:
        cur_nimg = state['cur_nimg']
        cur_tick = state['cur_tick']
        opts['G'].load_state_dict(state['G_opt'])
        opts['D'].load_state_dict(state['D_opt'])
        if hasattr(loss, 'pl_mean') and state.get('pl_mean') is not None:
            loss.pl_mean.copy_(state['pl_mean'])
        if hasattr(loss, 'real_sign_stats') and state.get('real_sign_stats') is not None:
            loss.real_sign_stats.copy_(state['real_sign_stats'])
        restore_rng_state(state['rng'][rank], device)
    last_snapshot_pkl = resume_pkl if state is not None else None
    tick_start_nimg = cur_nimg
    tick_start_time = time.time()
    maintenance_time = tick_start_time - start_time
    if progress_fn is not None:
        progress_fn(cur_nimg // 1000, total_kimg)

    # Train.
    if rank == 0:
        print(f'Training for {total_kimg} kimg...')
        print()
    while True:

        # Fetch training data.
        with torch.autograd.profiler.record_function('data_fetch'):
            phase_real_img, phase_real_c = next(training_set_iterator)
            phase_real_img = (phase_real_img.to(device).to(torch.float32) / 127.5 - 1).split(batch_gpu)
            phase_real_c = phase_real_c.to(device).split(batch_gpu)
            all_gen_z, all_gen_c = step_latents(random_seed, batch_idx, len(phases), batch_size, G.z_dim, training_set, rank, num_gpus)
            all_gen_z = [phase_gen_z.to(device).split(batch_gpu) for phase_gen_z in all_gen_z]
            all_gen_c = [phase_gen_c.to(device).split(batch_gpu) for phase_gen_c in all_gen_c]

        # Execute training phases.
        for phase, phase_gen_z, phase_gen_c in zip(phases, all_gen_z, all_gen_c):
            if batch_idx % phase.interval != 0:
                continue
            if phase.start_event is not None:
                phase.start_event.record(torch.cuda.current_stream(device))

            # Accumulate gradients over rounds; each round is one slice of this rank's batch.
            phase.opt.zero_grad(set_to_none=True)
            phase.module.requires_grad_(True)
            for round_idx, (real_img, real_c, gen_z, gen_c) in enumerate(zip(phase_real_img, phase_real_c, phase_gen_z, phase_gen_c)):
                loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=real_c, gen_z=gen_z, gen_c=gen_c,
                                          sync=(round_idx == num_rounds - 1), gain=phase.interval / num_rounds)
            phase.module.requires_grad_(False)

            # Average gradients over ranks, refuse to step on non-finite ones, update weights.
            with torch.autograd.profiler.record_function(phase.name + '_opt'):
                params = [param for param in phase.module.parameters() if param.grad is not None]
                if len(params) > 0:
                    flat = torch.cat([param.grad.flatten() for param in params])
                    if distributed:
                        torch.distributed.all_reduce(flat)
                        flat /= num_gpus
                    if not bool(torch.isfinite(flat).all()):
                        _close_logs(stats_jsonl, stats_tfevents)
                        raise dnnlib.util.UserError(f'Training diverged: NaN/Inf in the {phase.name} loss gradients at kimg {cur_nimg / 1000:.3f} '
                                                    f'(tick {cur_tick}); last good snapshot: {last_snapshot_pkl or "none"}')
                    for param, grad in zip(params, flat.split([param.numel() for param in params])):
                        param.grad = grad.reshape(param.shape)
                phase.opt.step()
            if phase.end_event is not None:
                phase.end_event.record(torch.cuda.current_stream(device))

        # Update G_ema.
        with torch.autograd.profiler.record_function('Gema'):
            ema_nimg = ema_kimg * 1000
            if ema_rampup is not None:
                ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
            ema_beta = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
            with torch.no_grad():
                for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                    p_ema.copy_(p.lerp(p_ema, ema_beta))
                for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                    b_ema.copy_(b)

        # Update state.
        cur_nimg += batch_size
        batch_idx += 1

        # Execute ADA heuristic.
        if (ada is not None) and (batch_idx % ada_interval == 0):
            ada.update(augment_pipe, loss.real_sign_stats)

        # Perform maintenance tasks once per tick.
        done = (cur_nimg >= total_kimg * 1000)
        if (not done) and (cur_tick != 0) and (cur_nimg < tick_start_nimg + kimg_per_tick * 1000):
            continue

        # Maintenance must not disturb training randomness: set the RNG state aside until the next step.
        train_rng = capture_rng_state(device)

        # Print status line, accumulating the same information in training_stats.
        tick_end_time = time.time()
        fields = []
        fields += [f"tick {training_stats.report0('Progress/tick', cur_tick):<5d}"]
        fields += [f"kimg {training_stats.report0('Progress/kimg', cur_nimg / 1e3):<8.3f}"]
        fields += [f"time {dnnlib.util.format_time(training_stats.report0('Timing/total_sec', tick_end_time - start_time)):<12s}"]
        fields += [f"sec/tick {training_stats.report0('Timing/sec_per_tick', tick_end_time - tick_start_time):<7.1f}"]
        fields += [f"sec/kimg {training_stats.report0('Timing/sec_per_kimg', (tick_end_time - tick_start_time) / (cur_nimg - tick_start_nimg) * 1e3):<7.2f}"]
        fields += [f"maintenance {training_stats.report0('Timing/maintenance_sec', maintenance_time):<6.1f}"]
        fields += [f"cpumem {training_stats.report0('Resources/cpu_mem_gb', psutil.Process(os.getpid()).memory_info().rss / 2**30):<6.2f}"]
        gpu_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else 0
        fields += [f"gpumem {training_stats.report0('Resources/peak_gpu_mem_gb', gpu_mem):<6.2f}"]
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats()
        fields += [f"augment {training_stats.report0('Progress/augment', float(augment_pipe.p.cpu()) if augment_pipe is not None else 0):.3f}"]
        training_stats.report0('Timing/total_hours', (tick_end_time - start_time) / (60 * 60))
        training_stats.report0('Timing/total_days', (tick_end_time - start_time) / (24 * 60 * 60))
        if rank == 0:
            print(' '.join(fields))

        # Check for abort.
        if (not done) and (abort_fn is not None) and abort_fn():
            done = True
            if rank == 0:
                print()
                print('Aborting...')

        tag = snapshot_tag(cur_nimg, kimg_per_tick)

        # Save image snapshot.
        if (rank == 0) and (image_snapshot_ticks is not None) and (done or cur_tick % image_snapshot_ticks == 0):
            save_fakes_grid(G_ema, grid_z, grid_c, os.path.join(run_dir, f'fakes{tag}.png'), grid_size)

        # Save network snapshot, and the training state beside it.
        snapshot_pkl = None
        snapshot_data = None
        if (network_snapshot_ticks is not None) and (done or cur_tick % network_snapshot_ticks == 0):
            snapshot_data = dict(training_set_kwargs=dict(training_set_kwargs))
            for name, module in [('G', G), ('D', D), ('G_ema', G_ema), ('augment_pipe', augment_pipe)]:
                if module is not None:
                    if distributed:
                        misc.check_ddp_consistency(module, ignore_regex=r'.*\.w_avg') # w_avg tracks each rank's own batches
                    module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
                snapshot_data[name] = module
                del module # conserve memory
            snapshot_pkl = os.path.join(run_dir, f'network-snapshot-{tag}.pkl')
            training_state = dict(
                version=1, cur_nimg=cur_nimg, cur_tick=cur_tick + 1, batch_idx=batch_idx, data_position=batch_idx * batch_size,
                num_gpus=num_gpus, batch_size=batch_size, random_seed=random_seed,
                G_opt=opts['G'].state_dict(), D_opt=opts['D'].state_dict(),
                augment_p=float(augment_pipe.p.cpu()) if augment_pipe is not None else None,
                real_sign_stats=loss.real_sign_stats.cpu().clone() if hasattr(loss, 'real_sign_stats') else None,
                pl_mean=loss.pl_mean.cpu().clone() if hasattr(loss, 'pl_mean') else None,
                rng=_gather_objects(train_rng, distributed),
            )
            if rank == 0:
                # State first, then the pickle: a snapshot pkl whose state exists is always complete.
                with dnnlib.util.atomic_write(state_path_for(snapshot_pkl)) as tmp:
                    torch.save(training_state, tmp)
                with dnnlib.util.atomic_write(snapshot_pkl) as tmp:
                    with open(tmp, 'wb') as f:
                        pickle.dump(snapshot_data, f)
            last_snapshot_pkl = snapshot_pkl

        # Evaluate metrics.
        metric_main = _metric_main() if len(metrics) > 0 else None
        if (snapshot_data is not None) and (metric_main is not None):
            if rank == 0:
                print('Evaluating metrics...')
            for metric in metrics:
                result_dict = metric_main.calc_metric(metric=metric, G=snapshot_data['G_ema'],
                    dataset_kwargs=dnnlib.EasyDict(training_set_kwargs), num_gpus=num_gpus, rank=rank, device=device) # a copy: metrics adjust it
                if rank == 0:
                    metric_main.report_metric(result_dict, run_dir=run_dir, snapshot_pkl=snapshot_pkl)
                stats_metrics.update(result_dict.results)
        del snapshot_data # conserve memory

        # Collect statistics.
        for phase in phases:
            value = []
            if (phase.start_event is not None) and (phase.end_event is not None):
                phase.end_event.synchronize()
                value = phase.start_event.elapsed_time(phase.end_event)
            training_stats.report0('Timing/' + phase.name, value)
        stats_collector.update()
        stats_dict = stats_collector.as_dict()

        # Update logs.
        timestamp = time.time()
        if stats_jsonl is not None:
            fields = dict(stats_dict, timestamp=timestamp)
            stats_jsonl.write(json.dumps(fields) + '\n')
            stats_jsonl.flush()
        if stats_tfevents is not None:
            global_step = int(cur_nimg / 1e3)
            walltime = timestamp - start_time
            for name, value in stats_dict.items():
                stats_tfevents.add_scalar(name, value.mean, global_step=global_step, walltime=walltime)
            for name, value in stats_metrics.items():
                stats_tfevents.add_scalar(f'Metrics/{name}', value, global_step=global_step, walltime=walltime)
            stats_tfevents.flush()
        if progress_fn is not None:
            progress_fn(cur_nimg // 1000, total_kimg)

        # Update state.
        restore_rng_state(train_rng, device)
        cur_tick += 1
        tick_start_nimg = cur_nimg
        tick_start_time = time.time()
        maintenance_time = tick_start_time - tick_end_time
        if done:
            break

    # Done.
    _close_logs(stats_jsonl, stats_tfevents)
    if rank == 0:
        print()
        print('Exiting...')

#----------------------------------------------------------------------------

def _gather_objects(obj, distributed):
    """List of `obj` from every rank, in rank order (collective when distributed)."""
    if not distributed:
        return [obj]
    objs = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(objs, obj)
    return objs

def _close_logs(stats_jsonl, stats_tfevents):
    if stats_jsonl is not None:
        stats_jsonl.close()
    if stats_tfevents is not None:
        stats_tfevents.close()

#----------------------------------------------------------------------------
