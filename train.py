"""Train a GAN (StyleGAN2 by default) with adaptive discriminator augmentation.

Same options and run-directory naming as the official StyleGAN2-ADA train.py, plus --cbase/--cmax/
--map/--tick (network width, channel cap, mapping depth, kimg per tick) and exact resume.
Runs on CPU when CUDA is absent; there --gpus=N means N processes (gloo).
"""

import json
import os
import re
import sys
import tempfile

import click
import torch

import dnnlib
from training import presets, training_loop

UserError = dnnlib.util.UserError

#----------------------------------------------------------------------------

def _metric_main():
    try:
        from metrics import metric_main
    except ImportError:
        return None
    return metric_main if hasattr(metric_main, 'is_valid_metric') else None

def setup_training_loop_kwargs(
    gpus=None, snap=None, metrics=None, seed=None,          # general (not in desc)
    data=None, cond=None, subset=None, mirror=None,         # dataset
    cfg=None, gamma=None, kimg=None, batch=None, ema=None,  # base config
    aug=None, p=None, target=None, augpipe=None,            # discriminator augmentation
    resume=None, freezed=None,                              # transfer learning / resume
    cbase=None, cmax=None, map=None, tick=None,             # network size and tick length overrides
    fp32=None, nhwc=None, allow_tf32=None, nobench=None, workers=None, # performance (not in desc)
):
    """Validate options; return (run description, training_loop kwargs). Raises UserError."""
    args = dnnlib.EasyDict()

    # General options.
    gpus = 1 if gpus is None else gpus
    if not (gpus >= 1 and gpus & (gpus - 1) == 0):
        raise UserError('--gpus must be a power of two')
    args.num_gpus = gpus

    snap = 50 if snap is None else snap
    if snap < 1:
        raise UserError('--snap must be at least 1')
    args.image_snapshot_ticks = args.network_snapshot_ticks = snap

    metric_main = _metric_main()
    if metrics is None:
        metrics = ['fid50k_full'] if (torch.cuda.is_available() and metric_main is not None) else [] # CPU default: none
    if len(metrics) > 0:
        if metric_main is None:
            raise UserError('--metrics: the metrics package is not available; use --metrics=none')
        bad = [m for m in metrics if not metric_main.is_valid_metric(m)]
        if bad:
            raise UserError(f'--metrics: unknown metric {bad[0]}; valid: {", ".join(metric_main.list_valid_metrics())}')
    args.metrics = metrics

    args.random_seed = 0 if seed is None else seed

    # Dataset.
    if data is None:
        raise UserError('--data is required')
    args.training_set_kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=True, max_size=None, xflip=False)
    args.data_loader_kwargs = dnnlib.EasyDict(pin_memory=True, num_workers=3, prefetch_factor=2)
    try:
        training_set = dnnlib.util.construct_class_by_name(**args.training_set_kwargs)
        args.training_set_kwargs.resolution = training_set.resolution # be explicit about resolution
        args.training_set_kwargs.use_labels = training_set.has_labels # be explicit about labels
        args.training_set_kwargs.max_size = len(training_set) # be explicit about dataset size
        desc = training_set.name
        del training_set
    except IOError as err:
        raise UserError(f'--data: {err}') from None

    if cond:
        if not args.training_set_kwargs.use_labels:
            raise UserError('--cond=True requires labels in dataset.json')
        desc += '-cond'
    else:
        args.training_set_kwargs.use_labels = False

    if subset is not None:
        if not 1 <= subset <= args.training_set_kwargs.max_size:
            raise UserError(f'--subset must be between 1 and {args.training_set_kwargs.max_size}')
        desc += f'-subset{subset}'
        if subset < args.training_set_kwargs.max_size:
            args.training_set_kwargs.max_size = subset
            args.training_set_kwargs.random_seed = args.random_seed

    if mirror:
        desc += '-mirror'
        args.training_set_kwargs.xflip = True

    # Base config.
    cfg = 'auto' if cfg is None else cfg
    desc += f'-{cfg}'
    spec = presets.resolve_cfg(cfg, args.training_set_kwargs.resolution, gpus)
    if cfg == 'auto':
        desc += f'{gpus:d}'

    args.G_kwargs = dnnlib.EasyDict(class_name='networks.stylegan2.Generator', z_dim=512, w_dim=512, mapping_kwargs=dnnlib.EasyDict(), synthesis_kwargs=dnnlib.EasyDict())
    args.D_kwargs = dnnlib.EasyDict(class_name='networks.stylegan2.Discriminator', block_kwargs=dnnlib.EasyDict(), mapping_kwargs=dnnlib.EasyDict(), epilogue_kwargs=dnnlib.EasyDict())
    args.G_kwargs.synthesis_kwargs.channel_base = args.D_kwargs.channel_base = int(spec.fmaps * 32768)
    args.G_kwargs.synthesis_kwargs.channel_max = args.D_kwargs.channel_max = 512
    args.G_kwargs.mapping_kwargs.num_layers = spec.map
    args.G_kwargs.synthesis_kwargs.num_fp16_res = args.D_kwargs.num_fp16_res = 4 # mixed precision (CUDA only)
    args.G_kwargs.synthesis_kwargs.conv_clamp = args.D_kwargs.conv_clamp = 256 # keeps float16 activations finite
    args.D_kwargs.epilogue_kwargs.mbstd_group_size = spec.mbstd

    args.G_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', lr=spec.lrate, betas=[0, 0.99], eps=1e-8)
    args.D_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', lr=spec.lrate, betas=[0, 0.99], eps=1e-8)
    args.loss_kwargs = dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss', r1_gamma=spec.gamma)

    args.total_kimg = spec.kimg
    args.batch_size = spec.mb
    args.batch_gpu = max(spec.mb // spec.ref_gpus, 1)
    args.ema_kimg = spec.ema
    args.ema_rampup = spec.ramp

    if cfg == 'cifar':
        args.loss_kwargs.pl_weight = 0 # disable path length regularization
        args.loss_kwargs.style_mixing_prob = 0 # disable style mixing
        args.D_kwargs.architecture = 'orig' # disable residual skip connections

    if gamma is not None:
        if not gamma >= 0:
            raise UserError('--gamma must be non-negative')
        desc += f'-gamma{gamma:g}'
        args.loss_kwargs.r1_gamma = gamma

    if kimg is not None:
        if not kimg > 0:
            raise UserError('--kimg must be positive')
        desc += f'-kimg{kimg:g}'
        args.total_kimg = kimg

    if batch is not None:
        if not (batch >= 1 and batch % gpus == 0):
            raise UserError('--batch must be at least 1 and divisible by --gpus')
        desc += f'-batch{batch}'
        args.batch_size = batch
        args.batch_gpu = batch // gpus
    if ema is not None:
        if not ema > 0:
            raise UserError('--ema must be positive')
        desc += f'-ema{ema:g}'
        args.ema_kimg = ema
    if args.batch_size % (args.batch_gpu * gpus) != 0:
        args.batch_gpu = args.batch_size // gpus
    mbstd = args.D_kwargs.epilogue_kwargs.mbstd_group_size
    if mbstd is not None and args.batch_gpu % min(mbstd, args.batch_gpu) != 0:
        raise UserError(f'batch per GPU ({args.batch_gpu}) must be a multiple of the minibatch-stddev group size ({mbstd})')

    # Network size overrides (as in the StyleGAN3 train.py).
    if cbase is not None:
        if cbase < 1:
            raise UserError('--cbase must be at least 1')
        desc += f'-cbase{cbase}'
        args.G_kwargs.synthesis_kwargs.channel_base = args.D_kwargs.channel_base = cbase
    if cmax is not None:
        if cmax < 1:
            raise UserError('--cmax must be at least 1')
        desc += f'-cmax{cmax}'
        args.G_kwargs.synthesis_kwargs.channel_max = args.D_kwargs.channel_max = cmax
    if map is not None:
        if map < 1:
            raise UserError('--map must be at least 1')
        desc += f'-map{map}'
        args.G_kwargs.mapping_kwargs.num_layers = map
    args.kimg_per_tick = 4
    if tick is not None:
        if not tick > 0:
            raise UserError('--tick must be positive')
        args.kimg_per_tick = tick

    # Discriminator augmentation.
    if aug is None:
        aug = 'ada'
    else:
        desc += f'-{aug}'
    if aug == 'ada':
        args.ada_target = 0.6
    elif aug == 'fixed':
        if p is None:
            raise UserError(f'--aug={aug} requires specifying --p')
    elif aug != 'noaug':
        raise UserError(f'--aug={aug} not supported')

    if p is not None:
        if aug != 'fixed':
            raise UserError('--p can only be specified with --aug=fixed')
        if not 0 <= p <= 1:
            raise UserError('--p must be between 0 and 1')
        desc += f'-p{p:g}'
        args.augment_p = p

    if target is not None:
        if aug != 'ada':
            raise UserError('--target can only be specified with --aug=ada')
        if not 0 <= target <= 1:
            raise UserError('--target must be between 0 and 1')
        desc += f'-target{target:g}'
        args.ada_target = target

    if augpipe is None:
        augpipe = 'bgc'
    else:
        if aug == 'noaug':
            raise UserError('--augpipe cannot be specified with --aug=noaug')
        desc += f'-{augpipe}'
    if augpipe not in presets.augpipe_specs:
        raise UserError(f'--augpipe={augpipe} is not one of: {", ".join(presets.augpipe_specs)}')
    if aug != 'noaug':
        args.augment_kwargs = dnnlib.EasyDict(class_name='training.augment.AugmentPipe', **presets.augpipe_specs[augpipe])

    # Resume: a run dir (its latest snapshot) or a pickle. With a training-state file beside the
    # pickle the run continues exactly; without one it is transfer learning (weights only).
    if resume is not None and resume != 'noresume':
        if os.path.isdir(resume):
            resume = training_loop.find_latest_snapshot(resume)
        elif not dnnlib.util.is_url(resume, allow_file_urls=True) and not os.path.isfile(resume):
            raise UserError(f'--resume: no such file or directory: {resume}')
        desc += '-resumecustom'
        args.resume_pkl = resume
        state_path = training_loop.state_path_for(resume) if os.path.isfile(resume) else None
        if state_path is None or not os.path.isfile(state_path):
            args.ada_kimg = 100 # transfer learning: let ADA react faster at the beginning
            args.ema_rampup = None # and disable EMA ramp-up
    elif resume == 'noresume':
        desc += '-noresume'

    if freezed is not None:
        if not freezed >= 0:
            raise UserError('--freezed must be non-negative')
        desc += f'-freezed{freezed:d}'
        args.D_kwargs.block_kwargs.freeze_layers = freezed

    # Performance options.
    if fp32:
        args.G_kwargs.synthesis_kwargs.num_fp16_res = args.D_kwargs.num_fp16_res = 0
        args.G_kwargs.synthesis_kwargs.conv_clamp = args.D_kwargs.conv_clamp = None
    if nhwc:
        args.G_kwargs.synthesis_kwargs.fp16_channels_last = args.D_kwargs.block_kwargs.fp16_channels_last = True
    if nobench:
        args.cudnn_benchmark = False
    if allow_tf32:
        args.allow_tf32 = True
    if workers is not None:
        if not workers >= 0:
            raise UserError('--workers must be non-negative')
        args.data_loader_kwargs.num_workers = workers

    return desc, args

#----------------------------------------------------------------------------
# Processes: one per GPU (or per CPU worker); under torchrun the environment says who we are.

def torchrun_env():
    """(rank, world_size, local_rank) when launched by torchrun with more than one process, else None."""
    if 'RANK' in os.environ and 'WORLD_SIZE' in os.environ and int(os.environ['WORLD_SIZE']) > 1:
        return int(os.environ['RANK']), int(os.environ['WORLD_SIZE']), int(os.environ.get('LOCAL_RANK', 0))
    return None

def init_distributed(rank, world_size, local_rank, init_method):
    from torch_utils import custom_ops, training_stats
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        backend = 'nccl'
    else:
        backend = 'gloo'
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(world_size, 1))) # processes share the cores
    if world_size > 1:
        torch.distributed.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world_size)
    sync_device = (torch.device('cuda', local_rank) if torch.cuda.is_available() else torch.device('cpu')) if world_size > 1 else None
    training_stats.init_multiprocessing(rank=rank, sync_device=sync_device)
    if rank != 0 and hasattr(custom_ops, 'verbosity'):
        custom_ops.verbosity = 'none'

def run_process(rank, args, init_method, error_file, local_rank=None):
    """Body of one training process; a UserError is written to `error_file` for the launcher to report."""
    local_rank = rank if local_rank is None else local_rank
    logger = dnnlib.util.Logger(file_name=os.path.join(args.run_dir, 'log.txt'), file_mode='a', should_flush=True)
    try:
        init_distributed(rank, args.num_gpus, local_rank, init_method)
        training_loop.training_loop(rank=rank, local_rank=local_rank, **args)
    except UserError as err:
        if error_file is not None:
            with open(error_file, 'w') as f:
                f.write(str(err))
        if args.num_gpus > 1:
            print(f'Error: {err}', file=sys.stderr)
            sys.exit(1)
        raise
    finally:
        logger.close()

def _spawned_process(rank, args, temp_dir):
    run_process(rank, args, init_method=f'file://{os.path.abspath(os.path.join(temp_dir, ".torch_distributed_init"))}',
                error_file=os.path.join(temp_dir, f'error-{rank}.txt'))

def launch_processes(args):
    if args.num_gpus == 1:
        run_process(0, args, init_method=None, error_file=None)
        return
    import torch.multiprocessing as mp
    with tempfile.TemporaryDirectory() as temp_dir:
        try:
            mp.start_processes(_spawned_process, args=(args, temp_dir), nprocs=args.num_gpus, start_method='spawn')
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as err:
            for rank in range(args.num_gpus):
                path = os.path.join(temp_dir, f'error-{rank}.txt')
                if os.path.isfile(path):
                    with open(path) as f:
                        raise UserError(f.read().strip()) from None
            raise UserError(f'A training process failed ({type(err).__name__}); see {os.path.join(args.run_dir, "log.txt")}') from None

#----------------------------------------------------------------------------

def make_run_dir(outdir, desc):
    """<outdir>/<next 5-digit id>-<desc>, as the official code."""
    prev_run_dirs = [x for x in os.listdir(outdir) if os.path.isdir(os.path.join(outdir, x))] if os.path.isdir(outdir) else []
    prev_run_ids = [re.match(r'^\d+', x) for x in prev_run_dirs]
    prev_run_ids = [int(x.group()) for x in prev_run_ids if x is not None]
    cur_run_id = max(prev_run_ids, default=-1) + 1
    return os.path.join(outdir, f'{cur_run_id:05d}-{desc}')

class CommaSeparatedList(click.ParamType):
    name = 'list'

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        if value is None or value.lower() == 'none' or value == '':
            return []
        return value.split(',')

#----------------------------------------------------------------------------

@click.command()
@click.pass_context
# General options.
@click.option('--outdir', help='Where to save the results', required=True, metavar='DIR')
@click.option('--gpus', help='Number of GPUs (CPU processes without CUDA) [default: 1]', type=int, metavar='INT')
@click.option('--snap', help='Snapshot interval [default: 50 ticks]', type=int, metavar='INT')
@click.option('--metrics', help='Comma-separated list or "none" [default: fid50k_full on CUDA, none on CPU]', type=CommaSeparatedList())
@click.option('--seed', help='Random seed [default: 0]', type=int, metavar='INT')
@click.option('-n', '--dry-run', help='Print training options and exit', is_flag=True)
# Dataset.
@click.option('--data', help='Training data (directory or zip)', metavar='PATH', required=True)
@click.option('--cond', help='Train conditional model based on dataset labels [default: false]', type=bool, metavar='BOOL')
@click.option('--subset', help='Train with only N images [default: all]', type=int, metavar='INT')
@click.option('--mirror', help='Enable dataset x-flips [default: false]', type=bool, metavar='BOOL')
# Base config.
@click.option('--cfg', help='Base config [default: auto]', type=click.Choice(list(presets.cfg_specs)))
@click.option('--gamma', help='Override R1 gamma', type=float)
@click.option('--kimg', help='Override training duration (thousands of real images)', type=float, metavar='FLOAT')
@click.option('--batch', help='Override batch size', type=int, metavar='INT')
@click.option('--ema', help='Override the G_ema half-life in kimg (short runs need a short one) [default: from --cfg]', type=float, metavar='FLOAT')
@click.option('--cbase', help='Override network width (channel_base) [default: from --cfg]', type=int, metavar='INT')
@click.option('--cmax', help='Override max channels per layer [default: 512]', type=int, metavar='INT')
@click.option('--map', help='Override mapping network depth [default: from --cfg]', type=int, metavar='INT')
@click.option('--tick', help='Progress interval in kimg [default: 4]', type=float, metavar='FLOAT')
# Discriminator augmentation.
@click.option('--aug', help='Augmentation mode [default: ada]', type=click.Choice(['noaug', 'ada', 'fixed']))
@click.option('--p', help='Augmentation probability for --aug=fixed', type=float)
@click.option('--target', help='ADA target value for --aug=ada [default: 0.6]', type=float)
@click.option('--augpipe', help='Augmentation pipeline [default: bgc]', type=click.Choice(list(presets.augpipe_specs)))
# Transfer learning and resume.
@click.option('--resume', help='Resume from a run dir (latest snapshot, exact) or a pickle (exact if its training-state file is beside it, else weights only) [default: noresume]', metavar='DIR|PKL')
@click.option('--freezed', help='Freeze-D [default: 0 layers]', type=int, metavar='INT')
# Performance options.
@click.option('--fp32', help='Disable mixed-precision training', type=bool, metavar='BOOL')
@click.option('--nhwc', help='Use NHWC memory format with FP16', type=bool, metavar='BOOL')
@click.option('--nobench', help='Disable cuDNN benchmarking', type=bool, metavar='BOOL')
@click.option('--allow-tf32', help='Allow PyTorch to use TF32 internally', type=bool, metavar='BOOL')
@click.option('--workers', help='Override number of DataLoader workers (0 = load in the training process) [default: 3]', type=int, metavar='INT')
def main(ctx, outdir, dry_run, **config_kwargs):
    """Train a GAN using the techniques described in the paper
    "Training Generative Adversarial Networks with Limited Data".

    \b
    # Tiny CPU run on H&E patches (narrow networks, short ticks):
    python train.py --outdir=training-runs --data=patches.zip --cfg=config-e --cbase=256 --cmax=64 --map=2 \\
        --batch=4 --kimg=0.2 --tick=0.04 --snap=1 --augpipe=histo --workers=0

    \b
    # Resume a run exactly from its latest snapshot:
    python train.py --outdir=training-runs --data=patches.zip --cfg=config-e ... --resume=training-runs/00000-patches-config-e-...
    """
    try:
        env = torchrun_env()
        if env is not None:
            if config_kwargs['gpus'] not in (None, env[1]):
                raise UserError(f'--gpus={config_kwargs["gpus"]} but torchrun started {env[1]} processes')
            config_kwargs['gpus'] = env[1]
        desc, args = setup_training_loop_kwargs(**config_kwargs)

        # Pick the run dir; under torchrun rank 0 decides and tells the others.
        if env is None:
            args.run_dir = make_run_dir(outdir, desc)
        else:
            rank, world_size, local_rank = env
            init_distributed(rank, world_size, local_rank, init_method='env://')
            run_dir = [make_run_dir(outdir, desc) if rank == 0 else None]
            if rank == 0 and not dry_run:
                os.makedirs(run_dir[0])
            torch.distributed.broadcast_object_list(run_dir, src=0)
            args.run_dir = run_dir[0]
        if env is None or env[0] == 0:
            print()
            print('Training options:')
            print(json.dumps(args, indent=2))
            print()
            print(f'Output directory:   {args.run_dir}')
            print(f'Training data:      {args.training_set_kwargs.path}')
            print(f'Training duration:  {args.total_kimg} kimg')
            print(f'Number of GPUs:     {args.num_gpus}' + ('' if torch.cuda.is_available() else ' (CPU processes)'))
            print(f'Number of images:   {args.training_set_kwargs.max_size}')
            print(f'Image resolution:   {args.training_set_kwargs.resolution}')
            print(f'Conditional model:  {args.training_set_kwargs.use_labels}')
            print(f'Dataset x-flips:    {args.training_set_kwargs.xflip}')
            print()
        if dry_run:
            print('Dry run; exiting.')
            return

        if env is None:
            if os.path.exists(args.run_dir):
                raise UserError(f'Run directory already exists: {args.run_dir}')
            os.makedirs(args.run_dir)
        if env is None or env[0] == 0:
            with dnnlib.util.atomic_write(os.path.join(args.run_dir, 'training_options.json')) as tmp:
                with open(tmp, 'wt') as f:
                    json.dump(args, f, indent=2)

        if env is None:
            launch_processes(args)
        else:
            rank, world_size, local_rank = env
            logger = dnnlib.util.Logger(file_name=os.path.join(args.run_dir, 'log.txt'), file_mode='a', should_flush=True)
            try:
                training_loop.training_loop(rank=rank, local_rank=local_rank, **args)
            finally:
                logger.close()
    except UserError as err:
        raise click.ClickException(str(err)) from None

#----------------------------------------------------------------------------

if __name__ == "__main__":
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
