"""Train a GAN of any HistoSynth family (StyleGAN2 by default, with adaptive discriminator augmentation).

A thin shell: `training.options.build` checks every option and returns the training loop's kwargs;
this file picks the run directory and starts one process per GPU (or per CPU worker), or joins the
processes torchrun started. Options and run-directory names follow the official StyleGAN2-ADA train.py.
"""

import json
import os
import sys
import tempfile

import click
import torch

import dnnlib
from training import options, presets, run_dirs, training_loop

UserError = dnnlib.util.UserError

#----------------------------------------------------------------------------
# Processes.

def torchrun_env():
    """(rank, world size, local rank) when torchrun started more than one process, else None."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    if 'RANK' not in os.environ or world_size <= 1:
        return None
    return int(os.environ['RANK']), world_size, int(os.environ.get('LOCAL_RANK', '0'))


def init_distributed(rank, world_size, local_rank, init_method):
    from torch_utils import custom_ops, training_stats
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    else:  # CPU processes share the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    if world_size > 1:
        torch.distributed.init_process_group('nccl' if use_cuda else 'gloo', init_method=init_method, rank=rank, world_size=world_size)
    sync_device = None
    if world_size > 1:
        sync_device = torch.device('cuda', local_rank) if use_cuda else torch.device('cpu')
    training_stats.init_multiprocessing(rank=rank, sync_device=sync_device)
    if rank != 0 and hasattr(custom_ops, 'verbosity'):
        custom_ops.verbosity = 'none'


def run_process(rank, args, init_method, error_file, local_rank=None):
    """One training process; a UserError is also written to `error_file` for the launcher to report."""
    logger = dnnlib.util.Logger(file_name=os.path.join(args.run_dir, 'log.txt'), file_mode='a', should_flush=True)
    try:
        init_distributed(rank, args.num_gpus, rank if local_rank is None else local_rank, init_method)
        training_loop.training_loop(rank=rank, local_rank=local_rank, **args)
    except UserError as err:
        if error_file is not None:
            with open(error_file, 'w') as f:
                f.write(str(err))
        if args.num_gpus == 1:
            raise
        print(f'Error: {err}', file=sys.stderr)
        sys.exit(1)
    finally:
        logger.close()


def _spawned(rank, args, temp_dir):
    init_file = os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
    run_process(rank, args, f'file://{init_file}', os.path.join(temp_dir, f'error-{rank}.txt'))


def launch_processes(args):
    """Run training in this process (one GPU) or in num_gpus spawned ones; a failure becomes one UserError."""
    if args.num_gpus == 1:
        run_process(0, args, init_method=None, error_file=None)
        return
    import torch.multiprocessing as mp
    with tempfile.TemporaryDirectory() as temp_dir:
        try:
            mp.start_processes(_spawned, args=(args, temp_dir), nprocs=args.num_gpus, start_method='spawn')
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as err:
            reports = [os.path.join(temp_dir, f'error-{rank}.txt') for rank in range(args.num_gpus)]
            for report in filter(os.path.isfile, reports):
                with open(report) as f:
                    raise UserError(f.read().strip()) from None
            raise UserError(f'A training process failed ({type(err).__name__}); see {os.path.join(args.run_dir, "log.txt")}') from None

#----------------------------------------------------------------------------

def print_summary(args):
    data = args.training_set_kwargs
    processes = f'{args.num_gpus}' + ('' if torch.cuda.is_available() else ' (CPU processes)')
    print(f'\nTraining options:\n{json.dumps(args, indent=2)}\n\nOutput directory:   {args.run_dir}\n'
          f'Training data:      {data.path}, {data.max_size} images of {data.resolution}x{data.resolution}, '
          f'labels {data.use_labels}, x-flips {data.xflip}\nTraining duration:  {args.total_kimg} kimg on {processes}\n')


class CommaSeparatedList(click.ParamType):
    name = 'list'

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        return [] if value is None or value in ('', 'none', 'None', 'NONE') else value.split(',')


def _cfg_help():
    """Every preset with the paper its values come from (rows that share a paper share an entry)."""
    by_source = {}
    for name in presets.PRESETS:
        by_source.setdefault(presets.resolve(name, 256, 1).source, []).append(name)
    cited = '; '.join(f'{", ".join(names)}: {source}' for source, names in by_source.items())
    return f'Preset: network family and published hyperparameters [default: auto, a StyleGAN2 sized to the data]. {cited}'

#----------------------------------------------------------------------------

@click.command()
@click.option('--outdir', help='Folder that receives the run directory', required=True, metavar='DIR')
@click.option('--gpus', help='Processes to train with: GPUs, or CPU processes without CUDA; a power of two [default: 1]', type=int, metavar='INT')
@click.option('--snap', help='Ticks between network snapshots and fake-image grids [default: 50]', type=int, metavar='INT')
@click.option('--metrics', help='Metrics computed at each snapshot, comma-separated, or none [default: fid50k_full with CUDA, none on CPU]', type=CommaSeparatedList())
@click.option('--seed', help='Seed of weights, latents and data order [default: 0]', type=int, metavar='INT')
@click.option('-n', '--dry-run', help='Check the options, print them and stop without writing anything', is_flag=True)
@click.option('--data', help='Dataset: a zip or folder of square PNG patches (dataset_tool.py writes them)', metavar='PATH', required=True)
@click.option('--cond', help='Condition G and D on the labels in dataset.json [default: false]', type=bool, metavar='BOOL')
@click.option('--subset', help='Use a fixed random subset of N images [default: all]', type=int, metavar='INT')
@click.option('--mirror', help='Add left-right mirrored copies of every image [default: false]', type=bool, metavar='BOOL')
@click.option('--verify/--no-verify', default=True, help='Read the whole dataset zip and check its CRCs before training [default: verify]')
@click.option('--cfg', help=_cfg_help(), metavar='NAME')
@click.option('--gamma', help='R1 regularisation weight, replacing the preset\'s', type=float)
@click.option('--glr', help='Generator learning rate, replacing the preset\'s (Adam) [default: from --cfg]', type=float, metavar='FLOAT')
@click.option('--dlr', help='Discriminator learning rate, replacing the preset\'s (Adam) [default: from --cfg]', type=float, metavar='FLOAT')
@click.option('--kimg', help='Training length in thousands of real images shown to D [default: from --cfg]', type=float, metavar='FLOAT')
@click.option('--batch', help='Global batch size [default: from --cfg]', type=int, metavar='INT')
@click.option('--ema', help='G_ema half-life in kimg; short runs need a short one [default: from --cfg]', type=float, metavar='FLOAT')
@click.option('--cbase', help='StyleGAN2 width: channels are cbase / resolution, capped by --cmax [default: from --cfg]', type=int, metavar='INT')
@click.option('--cmax', help='StyleGAN2 cap on channels per layer [default: 512]', type=int, metavar='INT')
@click.option('--map', help='StyleGAN2 mapping network depth [default: from --cfg]', type=int, metavar='INT')
@click.option('--tick', help='kimg between status lines; snapshots count ticks [default: 4]', type=float, metavar='FLOAT')
@click.option('--phase-kimg', help='Progressive presets (pgan, stylegan): kimg per stable phase and per fade-in [default: 600]', type=float, metavar='FLOAT')
@click.option('--allow-highres', help='Let progressive presets train above their default cap of 256x256', is_flag=True)
@click.option('--aug', help='Discriminator augmentation: ada adapts p to overfitting, fixed uses --p, noaug none [default: ada]', type=click.Choice(['noaug', 'ada', 'fixed']))
@click.option('--p', help='Augmentation probability with --aug=fixed', type=float)
@click.option('--target', help='ADA target for the mean sign of D on reals [default: 0.6]', type=float)
@click.option('--augpipe', help='Augmentations to use; histo = flips, 90-degree turns, shifts and stain-sized colour changes [default: bgc]', type=click.Choice(list(presets.augpipe_specs)))
@click.option('--resume', help='auto: continue the newest unfinished run in --outdir with the same options, or start one '
                               '(same options: all but --metrics, --snap, --workers, --nobench, --allow-tf32). A run dir: '
                               'continue it in place, exactly, from its latest snapshot (--kimg may change). A pickle: '
                               'start a new run from it, exactly when its training-state file is beside it, else '
                               'its weights only [default: noresume]', metavar='auto|DIR|PKL')
@click.option('--freezed', help='Freeze this many of D\'s highest-resolution layers (transfer learning) [default: 0]', type=int, metavar='INT')
@click.option('--fp32', help='Compute in float32 everywhere instead of float16 in the high-resolution layers', type=bool, metavar='BOOL')
@click.option('--nhwc', help='Channels-last memory layout for the float16 layers', type=bool, metavar='BOOL')
@click.option('--nobench', help='Turn off cuDNN autotuning', type=bool, metavar='BOOL')
@click.option('--allow-tf32', help='Let PyTorch use TF32 for matrix products and convolutions', type=bool, metavar='BOOL')
@click.option('--workers', help='DataLoader worker processes; 0 loads in the training process [default: 3]', type=int, metavar='INT')
def main(outdir, dry_run, **config):
    """Train a GAN on tissue patches: StyleGAN2 with ADA ("Training Generative Adversarial Networks with
    Limited Data"), or a baseline family chosen by --cfg.

    \b
    # Short CPU run of a narrow StyleGAN2 on H&E patches:
    python train.py --outdir=training-runs --data=patches.zip --cfg=config-e --cbase=256 --cmax=64 --map=2 \\
        --batch=4 --kimg=0.2 --tick=0.04 --snap=1 --augpipe=histo

    \b
    # Continue that run in place, exactly, from its latest snapshot (after a crash; repeat as often as needed):
    python train.py --outdir=training-runs --data=patches.zip --cfg=config-e ... --resume=training-runs/00000-patches-config-e-...

    \b
    # A job script for a cluster that preempts jobs: the same line starts the run, continues it, or says it is done:
    python train.py --outdir=training-runs --data=patches.zip --cfg=config-e ... --resume=auto
    """
    try:
        env = torchrun_env()
        if env is not None:
            if config['gpus'] not in (None, env[1]):
                raise UserError(f'--gpus={config["gpus"]} but torchrun started {env[1]} processes')
            config['gpus'] = env[1]
        resume = config['resume']
        if resume == 'auto' or (resume is not None and run_dirs.is_train_run(resume)):
            config['resume'] = None  # the run to continue is chosen below, once the options are known
        else:
            resume = None
        desc, args = options.build(**config)
        start(outdir, desc, args, env, dry_run, resume)
    except UserError as err:
        raise click.ClickException(str(err)) from None


def _planned(outdir, desc, args, env, resume):
    """run_dirs.plan_train_run on rank 0, shared with every rank under torchrun (a refusal too)."""
    if env is None:
        return run_dirs.plan_train_run(outdir, desc, args, resume)
    init_distributed(*env, init_method='env://')
    result = [None]
    if env[0] == 0:
        try:
            result = [run_dirs.plan_train_run(outdir, desc, args, resume)]
        except UserError as err:
            result = [str(err)]
    torch.distributed.broadcast_object_list(result, src=0)
    if isinstance(result[0], str):
        raise UserError(result[0])
    return result[0]


def start(outdir, desc, args, env, dry_run, resume=None):
    """Pick the run directory (a new one, or the unfinished run that --resume continues; rank 0 decides under
    torchrun), write the options, train."""
    rank = 0 if env is None else env[0]
    plan = _planned(outdir, desc, args, env, resume)
    args = plan.args
    if rank == 0:
        for note in plan.notes:
            print(note)
    if plan.finished:
        return
    args.run_dir = plan.run_dir
    if rank == 0:
        print_summary(args)
    if dry_run:
        print('Dry run; exiting.')
        return
    if rank == 0:
        if plan.restart is None:
            if os.path.exists(args.run_dir):
                raise UserError(f'Run directory already exists: {args.run_dir}')
            os.makedirs(args.run_dir)
        else:
            for line in [plan.restart] + run_dirs.tidy_train_run(args.run_dir, plan.first_tick):
                print(line)
                run_dirs.append_line(os.path.join(args.run_dir, 'log.txt'), line)
        with dnnlib.util.atomic_write(os.path.join(args.run_dir, run_dirs.TRAINING_OPTIONS)) as tmp, open(tmp, 'wt') as f:
            json.dump(dict(args, resume_pkl=plan.origin), f, indent=2)
    if env is None:
        launch_processes(args)
        return
    torch.distributed.barrier()  # the run directory exists before any rank logs into it
    logger = dnnlib.util.Logger(file_name=os.path.join(args.run_dir, 'log.txt'), file_mode='a', should_flush=True)
    try:
        training_loop.training_loop(rank=rank, local_rank=env[2], **args)
    finally:
        logger.close()

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
