"""Calculate quality metrics for a network snapshot, or between two patch datasets.

Examples:

\b
# FID of a snapshot against its training data (appends metric-fid50k_full.jsonl to the run dir):
python calc_metrics.py --metrics=fid50k_full,pr50k3_full --network=training-runs/00000-x/network-snapshot-000200.pkl

\b
# Compare two patch sets (scanners, stainings, sites) without a network:
python calc_metrics.py --metrics=fid5k_full,kid5k_full,swd --data=scanner_a.zip --data2=scanner_b.zip
"""

import copy
import json
import os
import tempfile

import click
import torch

import dnnlib
from metrics import metric_main, metric_utils

# ----------------------------------------------------------------------------


def subprocess_fn(rank, args, temp_dir):
    """One process per GPU; rank 0 reports."""
    if args.num_gpus > 1:
        init_file = os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
        torch.distributed.init_process_group(backend='nccl', init_method=f'file://{init_file}', rank=rank,
                                             world_size=args.num_gpus)
    device = torch.device('cuda', rank) if torch.cuda.is_available() else torch.device('cpu')
    if device.type == 'cuda':
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = False  # FID needs full float32 features.
        torch.backends.cudnn.allow_tf32 = False

    G = copy.deepcopy(args.G).eval().requires_grad_(False).to(device) if args.G is not None else None
    if rank == 0 and args.verbose:
        print(f'Calculating metrics on {device} ...')
    for metric in args.metrics:
        if rank == 0 and args.verbose:
            print(f'Calculating {metric}...')
        result_dict = metric_main.calc_metric(metric=metric, G=G, dataset_kwargs=args.dataset_kwargs,
                                              dataset2_kwargs=args.dataset2_kwargs, num_gpus=args.num_gpus, rank=rank,
                                              device=device, progress=args.verbose, detector_dir=args.detector_dir)
        if rank == 0:
            metric_main.report_metric(result_dict, run_dir=args.run_dir, snapshot_pkl=args.network_pkl)


def dataset_kwargs_for(path, mirror, resolution=None):
    """Dataset options for a zip or folder of patches; checks now that it can be read."""
    kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=path, use_labels=False,
                             max_size=None, xflip=bool(mirror))
    if resolution is not None:
        kwargs.resolution = resolution
    kwargs.resolution = metric_utils.open_dataset(kwargs).resolution
    return kwargs


def calc_metrics(network_pkl, metrics, data, data2, mirror, gpus, verbose, detector_dir):
    """Validate the options, load what is needed and run every metric (library entry of the CLI)."""
    args = dnnlib.EasyDict(metrics=metrics, num_gpus=gpus, verbose=verbose, detector_dir=detector_dir,
                           network_pkl=network_pkl, G=None, run_dir=None, dataset2_kwargs=None)
    for metric in metrics:
        if not metric_main.is_valid_metric(metric):
            raise dnnlib.util.UserError(f"Unknown metric '{metric}'; valid: {', '.join(metric_main.list_valid_metrics())} "
                                        f"(any count works too, e.g. fid5k_full)")
    if gpus < 1:
        raise dnnlib.util.UserError('--gpus must be at least 1')
    if gpus > 1 and torch.cuda.device_count() < gpus:
        raise dnnlib.util.UserError(f'--gpus={gpus} but only {torch.cuda.device_count()} CUDA devices are visible')
    if network_pkl is None and data2 is None:
        raise dnnlib.util.UserError('Give --network (a snapshot to evaluate) or --data and --data2 (two datasets to compare)')
    if detector_dir is not None and not os.path.isdir(detector_dir):
        raise dnnlib.util.UserError(f'--detector-dir {detector_dir} is not a folder')

    # The generator and its training set.
    if network_pkl is not None:
        import legacy
        if verbose:
            print(f'Loading network from "{network_pkl}"...')
        snapshot = legacy.load_network(network_pkl)
        args.G = snapshot.get('G_ema') if snapshot.get('G_ema') is not None else snapshot.get('G')
        if args.G is None:
            raise dnnlib.util.UserError(f'{network_pkl} holds no generator (G_ema or G)')
        if data is None:
            training_set_kwargs = snapshot.get('training_set_kwargs')
            if not training_set_kwargs:
                raise dnnlib.util.UserError('The snapshot does not name its training set; pass --data')
            args.dataset_kwargs = dnnlib.EasyDict(training_set_kwargs)
            if mirror is not None:
                args.dataset_kwargs.xflip = mirror
            dataset_kwargs_for(args.dataset_kwargs.path, args.dataset_kwargs.get('xflip', False))  # Readable?
        else:
            args.dataset_kwargs = dataset_kwargs_for(data, mirror, resolution=args.G.img_resolution)
            args.dataset_kwargs.use_labels = args.G.c_dim != 0
        pkl_dir = os.path.dirname(os.path.abspath(network_pkl)) if os.path.exists(network_pkl) else None
        if pkl_dir is not None and os.path.isfile(os.path.join(pkl_dir, 'training_options.json')):
            args.run_dir = pkl_dir
    else:
        if data is None:
            raise dnnlib.util.UserError('--data2 needs --data: the reference patch set')
        args.dataset_kwargs = dataset_kwargs_for(data, mirror)

    if data2 is not None:
        args.dataset2_kwargs = dataset_kwargs_for(data2, mirror)
        if args.dataset2_kwargs.resolution != args.dataset_kwargs.resolution:
            raise dnnlib.util.UserError(f'--data is {args.dataset_kwargs.resolution} px but --data2 is '
                                        f'{args.dataset2_kwargs.resolution} px; compare patches of one size')
        args.dataset2_kwargs.use_labels = False
        args.G = None  # Dataset-vs-dataset mode: the second dataset takes the generator's place.
        args.run_dir = None
        args.network_pkl = None

    if verbose:
        print('Dataset options:')
        print(json.dumps(args.dataset_kwargs, indent=2))
        if args.dataset2_kwargs is not None:
            print('Second dataset options:')
            print(json.dumps(args.dataset2_kwargs, indent=2))

    if args.num_gpus == 1:
        subprocess_fn(rank=0, args=args, temp_dir=None)
    else:
        torch.multiprocessing.set_start_method('spawn', force=True)
        with tempfile.TemporaryDirectory() as temp_dir:
            torch.multiprocessing.spawn(fn=subprocess_fn, args=(args, temp_dir), nprocs=args.num_gpus)

# ----------------------------------------------------------------------------


def _comma_list(_ctx, _param, value):
    if value is None:
        return []
    items = [x.strip() for x in value.split(',') if x.strip()]
    return [] if items == ['none'] else items


@click.command()
@click.option('network_pkl', '--network', help='Network pickle (or .safetensors) filename or URL', metavar='PATH')
@click.option('--metrics', help='Comma-separated list or "none"', default='fid50k_full', show_default=True,
              callback=_comma_list)
@click.option('--data', help='Dataset to evaluate against (directory or zip) [default: the snapshot\'s training data]', metavar='PATH')
@click.option('--data2', help='Second dataset: compare --data with it instead of with a network', metavar='PATH')
@click.option('--mirror', help='Whether the dataset was augmented with x-flips during training [default: look up]', type=bool, metavar='BOOL')
@click.option('--gpus', help='Number of GPUs to use', type=int, default=1, metavar='INT', show_default=True)
@click.option('--verbose', help='Print options and progress', type=bool, default=True, metavar='BOOL', show_default=True)
@click.option('--detector-dir', help='Folder with local detector files (inception-2015-12-05.pt, default_1.pt, vgg16.pt, vgg16.ckpt)', metavar='DIR')
def main(network_pkl, metrics, data, data2, mirror, gpus, verbose, detector_dir):
    """Calculate quality metrics for a network snapshot or between two datasets.

    \b
    Metrics (official StyleGAN2-ADA names, plus swd; any count, e.g. fid5k_full, swd2k, also works):
      fid50k_full  Frechet inception distance against the full dataset.
      kid50k_full  Kernel inception distance against the full dataset.
      pr50k3_full  Precision and recall against the full dataset.
      ppl2_wend    Perceptual path length in W at path endpoints, full image (network only).
      is50k        Inception score (needs the official inception-2015-12-05.pt via --detector-dir).
      fid50k, kid50k, pr50k3  Same against 50k real images.
      ppl_zfull, ppl_wfull, ppl_zend, ppl_wend  PPL in Z or W, full paths or endpoints, cropped.
      swd          Sliced Wasserstein distance x1e3 per Laplacian level and average, 16384 images.
    """
    try:
        calc_metrics(network_pkl=network_pkl, metrics=metrics, data=data, data2=data2, mirror=mirror, gpus=gpus,
                     verbose=verbose, detector_dir=detector_dir)
    except dnnlib.util.UserError as err:
        raise click.ClickException(str(err))


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
