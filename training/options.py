"""train.py's options turned into the training loop's kwargs, checked before anything is written.

`build(**options)` returns (run description, kwargs of `training.training_loop.training_loop`) or
raises `dnnlib.util.UserError` with one line. Everything that can be checked up front is: option
ranges and combinations, the dataset (readable, square, its CRCs when --verify), the preset (its
classes importable, the dataset's resolution within its limits) and the --resume pickle (loadable,
and its networks fit the ones this run builds). So a start that fails leaves nothing behind.
"""

import os

import torch

import dnnlib
from training import dataset as dataset_module
from training import presets

UserError = dnnlib.util.UserError

#----------------------------------------------------------------------------

def _metric_module():
    try:
        from metrics import metric_main
    except ImportError:
        return None
    return metric_main if hasattr(metric_main, 'is_valid_metric') else None


def _require(condition, message):
    if not condition:
        raise UserError(message)


def _set_path(row, dotted, value):
    """row['G']['synthesis_kwargs']['channel_base'] = value for dotted = 'G.synthesis_kwargs.channel_base'."""
    *parents, leaf = dotted.split('.')
    node = row
    for key in parents:
        node = node.setdefault(key, dnnlib.EasyDict())
    node[leaf] = value

#----------------------------------------------------------------------------

def _general(o, args):
    gpus = 1 if o.gpus is None else o.gpus
    _require(gpus >= 1 and (gpus & (gpus - 1)) == 0, '--gpus must be a power of two')
    snap = 50 if o.snap is None else o.snap
    _require(snap >= 1, '--snap must be at least 1')
    metric_main = _metric_module()
    metrics = o.metrics
    if metrics is None:  # FID costs minutes on a GPU and hours on a CPU
        metrics = ['fid50k_full'] if metric_main is not None and torch.cuda.is_available() else []
    if metrics:
        _require(metric_main is not None, '--metrics: the metrics package is not available; use --metrics=none')
        for name in metrics:
            _require(metric_main.is_valid_metric(name),
                     f'--metrics: unknown metric {name}; valid: {", ".join(metric_main.list_valid_metrics())}')
    args.update(num_gpus=gpus, image_snapshot_ticks=snap, network_snapshot_ticks=snap, metrics=list(metrics),
                random_seed=0 if o.seed is None else o.seed)


def _dataset(o, args):
    """The dataset kwargs, with resolution, labels and size made explicit; returns the run description's start."""
    _require(o.data is not None, '--data is required')
    kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=o.data, use_labels=True, max_size=None, xflip=False)
    try:
        if o.verify is not False and os.path.isfile(o.data):
            dataset_module.verify_zip(o.data)  # every CRC now, so that a damaged member cannot stop a run on day three
        dataset = dnnlib.util.construct_class_by_name(**kwargs)
        kwargs.update(resolution=dataset.resolution, use_labels=dataset.has_labels, max_size=len(dataset))
        o.label_dim, o.num_channels = dataset.label_dim, dataset.num_channels
        desc, height, width = dataset.name, dataset.image_shape[1], dataset.image_shape[2]
        dataset.close()
    except (IOError, UserError) as err:
        raise UserError(f'--data: {err}') from None
    _require(height == width and width >= 4 and (width & (width - 1)) == 0,
             f'--data: images must be square with a power-of-two side of at least 4; {o.data} has {width}x{height}')
    if o.cond:
        _require(kwargs.use_labels, '--cond=True requires labels in dataset.json')
        desc += '-cond'
    else:
        kwargs.use_labels = False
    if o.subset is not None:
        _require(1 <= o.subset <= kwargs.max_size, f'--subset must be between 1 and {kwargs.max_size}')
        desc += f'-subset{o.subset}'
        if o.subset < kwargs.max_size:
            kwargs.update(max_size=o.subset, random_seed=args.random_seed)
    if o.mirror:
        kwargs.xflip = True
        desc += '-mirror'
    workers = 3 if o.workers is None else o.workers
    _require(workers >= 0, '--workers must be non-negative')
    args.training_set_kwargs = kwargs
    args.data_loader_kwargs = dnnlib.EasyDict(pin_memory=True, num_workers=workers, prefetch_factor=2)
    return desc

#----------------------------------------------------------------------------

def _check_importable(cfg, row):
    for part in ('G', 'D', 'loss', 'schedule', 'G_opt', 'D_opt'):
        name = row[part].class_name
        try:
            dnnlib.util.get_obj_by_name(name)
        except Exception as err:  # ImportError, AttributeError, or an error inside the module
            raise UserError(f'--cfg={cfg} needs {name}, which cannot be imported ({type(err).__name__}: {err})') from None


def _check_resolution(cfg, row, resolution, allow_highres):
    low, high = row.res_min, row.res_max
    if low is not None and high is not None and low == high:
        _require(resolution == low, f'--cfg={cfg} trains {low}x{low} patches only; this dataset is {resolution}x{resolution}')
    _require(low is None or resolution >= low, f'--cfg={cfg} needs at least {low}x{low} images; this dataset is {resolution}x{resolution}')
    _require(high is None or resolution <= high, f'--cfg={cfg} trains at most {high}x{high}; this dataset is {resolution}x{resolution}')
    soft = row.res_default_max
    if soft is not None and resolution > soft and not allow_highres:
        raise UserError(f'--cfg={cfg} trains up to {soft}x{soft} by default; this dataset is {resolution}x{resolution} '
                        '(add --allow-highres to train it anyway)')


def _apply_knob(cfg, row, option, value):
    """Put an option's value where the preset's knob says (refused when the preset has no such knob)."""
    knob = row.knobs.get(option)
    _require(knob is not None, f'--{option.replace("_", "-")} does not apply to --cfg={cfg}')
    for dotted, setting in knob.items():
        _set_path(row, dotted, value if setting == presets.VALUE else setting)


def _preset(o, args, desc):
    """The preset row for this dataset with the network and loss overrides applied; returns the description."""
    cfg = 'auto' if o.cfg is None else o.cfg
    resolution = args.training_set_kwargs.resolution
    row = presets.resolve(cfg, resolution, args.num_gpus)
    _check_importable(cfg, row)
    _check_resolution(cfg, row, resolution, o.allow_highres)
    desc += f'-{cfg}' + (f'{args.num_gpus:d}' if cfg == 'auto' else '')
    if o.gamma is not None:
        _require(o.gamma >= 0, '--gamma must be non-negative')
        _apply_knob(cfg, row, 'gamma', o.gamma)
        desc += f'-gamma{o.gamma:g}'
    for option, value, optimizer in (('glr', o.glr, 'G_opt'), ('dlr', o.dlr, 'D_opt')):
        if value is not None:
            _require(value > 0, f'--{option} must be positive')
            row[optimizer].lr = value
            desc += f'-{option}{value:g}'
    args.total_kimg, args.batch_size, args.batch_gpu = row.kimg, row.batch, row.batch_gpu
    args.ema_kimg, args.ema_beta, args.ema_rampup = row.ema_kimg, row.ema_beta, row.ema_rampup
    desc = _duration_and_batch(o, args, desc)
    for option, value, check, message in [
        ('cbase', o.cbase, lambda v: v >= 1, 'at least 1'), ('cmax', o.cmax, lambda v: v >= 1, 'at least 1'),
        ('map', o.map, lambda v: v >= 1, 'at least 1'), ('phase_kimg', o.phase_kimg, lambda v: v > 0, 'positive'),
    ]:
        if value is not None:
            _require(check(value), f'--{option.replace("_", "-")} must be {message}')
            _apply_knob(cfg, row, option, value)
            desc += f'-{option.replace("_", "")}{value:g}'
    if o.freezed is not None:
        _require(o.freezed >= 0, '--freezed must be non-negative')
        _apply_knob(cfg, row, 'freezed', o.freezed)
    for flag in ('fp32', 'nhwc'):
        if getattr(o, flag):
            _apply_knob(cfg, row, flag, True)
    if row.mbstd is not None and args.batch_gpu % min(row.mbstd, args.batch_gpu) != 0:
        raise UserError(f'batch per GPU ({args.batch_gpu}) must be a multiple of the minibatch-stddev group size ({row.mbstd})')
    args.update(G_kwargs=row.G, D_kwargs=row.D, loss_kwargs=row.loss, schedule_kwargs=row.schedule,
                G_opt_kwargs=row.G_opt, D_opt_kwargs=row.D_opt)
    return row, desc


def _duration_and_batch(o, args, desc):
    gpus = args.num_gpus
    if o.kimg is not None:
        _require(o.kimg > 0, '--kimg must be positive')
        args.total_kimg = o.kimg
        desc += f'-kimg{o.kimg:g}'
    if o.batch is not None:
        _require(o.batch >= 1 and o.batch % gpus == 0, '--batch must be at least 1 and divisible by --gpus')
        args.batch_size, args.batch_gpu = o.batch, o.batch // gpus
        desc += f'-batch{o.batch}'
    if o.ema is not None:
        _require(o.ema > 0, '--ema must be positive')
        args.ema_kimg, args.ema_beta = o.ema, None
        desc += f'-ema{o.ema:g}'
    if args.batch_size % (args.batch_gpu * gpus) != 0:  # the published split does not fit this GPU count
        args.batch_gpu = args.batch_size // gpus
    args.kimg_per_tick = 4
    if o.tick is not None:
        _require(o.tick > 0, '--tick must be positive')
        args.kimg_per_tick = o.tick
    return desc

#----------------------------------------------------------------------------

def _augmentation(o, args, row, cfg, desc):
    if not row.augment:
        _require(o.aug in (None, 'noaug') and o.p is None and o.target is None and o.augpipe is None,
                 f'--cfg={cfg} trains without augmentation, as published; drop --aug/--p/--target/--augpipe')
        return desc
    aug = 'ada' if o.aug is None else o.aug
    _require(aug in ('noaug', 'ada', 'fixed'), f'--aug={aug} not supported')
    if o.aug is not None:
        desc += f'-{aug}'
    if aug == 'ada':
        args.ada_target = 0.6
    _require(aug != 'fixed' or o.p is not None, '--aug=fixed requires specifying --p')
    if o.p is not None:
        _require(aug == 'fixed', '--p can only be specified with --aug=fixed')
        _require(0 <= o.p <= 1, '--p must be between 0 and 1')
        args.augment_p = o.p
        desc += f'-p{o.p:g}'
    if o.target is not None:
        _require(aug == 'ada', '--target can only be specified with --aug=ada')
        _require(0 <= o.target <= 1, '--target must be between 0 and 1')
        args.ada_target = o.target
        desc += f'-target{o.target:g}'
    if o.augpipe is not None:
        _require(aug != 'noaug', '--augpipe cannot be specified with --aug=noaug')
        desc += f'-{o.augpipe}'
    pipe = 'bgc' if o.augpipe is None else o.augpipe
    _require(pipe in presets.augpipe_specs, f'--augpipe={pipe} is not one of: {", ".join(presets.augpipe_specs)}')
    if aug != 'noaug':
        args.augment_kwargs = dnnlib.EasyDict(class_name='training.augment.AugmentPipe', **presets.augpipe_specs[pipe])
    return desc


def _resume(o, args, desc):
    """A pickle (or a folder of snapshots that is not a run dir: its latest one) to start a new run from; exact
    when the pickle's training state is beside it. train.py continues run dirs and --resume=auto in place
    (training.run_dirs) and passes resume=None here for them."""
    from training import training_loop
    if o.resume is None:
        return desc
    if o.resume == 'noresume':
        return desc + '-noresume'
    path = o.resume
    if os.path.isdir(path):
        path = training_loop.find_latest_snapshot(path)
    elif not dnnlib.util.is_url(path, allow_file_urls=True) and not os.path.isfile(path):
        raise UserError(f'--resume: no such file or directory: {path}')
    state_file = training_loop.state_path_for(path) if os.path.isfile(path) else None
    exact = state_file is not None and os.path.isfile(state_file)
    check_resume(path, state_file if exact else None, args, o.label_dim if args.training_set_kwargs.use_labels else 0, o.num_channels)
    args.resume_pkl = path
    if not exact:  # transfer learning, as the ADA paper does it: faster ADA, no EMA ramp-up
        args.ada_kimg = 100
        args.ema_rampup = None
    return desc + '-resumecustom'


def check_resume(path, state_file, args, c_dim, img_channels):
    """The pickle loads, holds G, D and G_ema that fit this run's networks, and its state fits the batch split."""
    from torch_utils import misc
    from training import training_loop
    try:
        snapshot = training_loop.load_network_pickle(path)
    except UserError as err:
        raise UserError(f'--resume: cannot load {path}: {err}') from None
    except Exception as err:
        raise UserError(f'--resume: cannot load {path} as a network pickle ({type(err).__name__}: {err})') from None
    _require(isinstance(snapshot, dict), f'--resume: {path} is not a network snapshot')
    dims = dict(c_dim=c_dim, img_resolution=args.training_set_kwargs.resolution, img_channels=img_channels)
    built = dict(G=dnnlib.util.construct_class_by_name(**args.G_kwargs, **dims),
                 D=dnnlib.util.construct_class_by_name(**args.D_kwargs, **dims))
    built['G_ema'] = built['G']
    for name, module in built.items():
        _require(isinstance(snapshot.get(name), torch.nn.Module), f'{path} has no {name}')
        try:
            misc.copy_params_and_buffers(snapshot[name], module, require_all=state_file is not None)
        except UserError as err:
            raise UserError(f'Cannot resume from {path}: {name} has a different architecture. {err}') from None
    if state_file is not None:
        state = torch.load(state_file, map_location='cpu', weights_only=False)
        written = (state.get('num_gpus'), state.get('batch_size'))
        _require(written == (args.num_gpus, args.batch_size),
                 f'{state_file} was written with {written[0]} process(es) and batch {written[1]}; an exact resume '
                 f'needs the same (got {args.num_gpus} and {args.batch_size})')


def _performance(o, args):
    if o.nobench:
        args.cudnn_benchmark = False
    if o.allow_tf32:
        args.allow_tf32 = True

#----------------------------------------------------------------------------

OPTION_NAMES = ['gpus', 'snap', 'metrics', 'seed', 'data', 'cond', 'subset', 'mirror', 'cfg', 'gamma', 'glr', 'dlr',
                'kimg', 'batch', 'ema', 'cbase', 'cmax', 'map', 'tick', 'phase_kimg', 'allow_highres', 'aug', 'p', 'target', 'augpipe',
                'resume', 'freezed', 'fp32', 'nhwc', 'allow_tf32', 'nobench', 'workers', 'verify']


def build(**options):
    """(run description, training_loop kwargs) from train.py's options (None = the default)."""
    unknown = set(options) - set(OPTION_NAMES)
    assert not unknown, f'unknown options {sorted(unknown)}'
    o = dnnlib.EasyDict({name: options.get(name) for name in OPTION_NAMES})
    args = dnnlib.EasyDict()
    _general(o, args)
    desc = _dataset(o, args)
    cfg = 'auto' if o.cfg is None else o.cfg
    row, desc = _preset(o, args, desc)
    desc = _augmentation(o, args, row, cfg, desc)
    desc = _resume(o, args, desc)
    if o.freezed is not None:
        desc += f'-freezed{o.freezed:d}'
    _performance(o, args)
    return desc, args

#----------------------------------------------------------------------------
