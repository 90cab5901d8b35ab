"""Quality metrics for a trained network, or between two sets of patches (run with --help for examples)."""

import copy
import json
import os
import tempfile

import click
import torch

import dnnlib
from metrics import metric_main, metric_utils

# ----------------------------------------------------------------------------
# Checking the request before any work starts


def _check_metric_names(metrics):
    unknown = [name for name in metrics if not metric_main.is_valid_metric(name)]
    if unknown:
        raise dnnlib.util.UserError(f"Unknown metric '{unknown[0]}'; valid: {', '.join(metric_main.list_valid_metrics())} "
                                    f"(any count works too, e.g. fid5k_full)")


def _check_gpus(gpus):
    if gpus < 1:
        raise dnnlib.util.UserError('--gpus must be at least 1')
    visible = torch.cuda.device_count()
    if gpus > 1 and visible < gpus:
        raise dnnlib.util.UserError(f'--gpus={gpus} but only {visible} CUDA devices are visible')


def _check_generator(G, source, metrics):
    """G must be callable as G(z, c, ...) with z_dim, c_dim, img_resolution; W-space metrics need more."""
    missing = [attr for attr in ('z_dim', 'c_dim', 'img_resolution') if not hasattr(G, attr)]
    if missing:
        raise dnnlib.util.UserError(f"the generator in '{source}' ({type(G).__name__}) lacks {', '.join(missing)}; "
                                    f"it cannot be evaluated")
    for name in metrics:
        if metric_main.requires_w_space(name):
            metric_utils.require_w_space(G, name)


def dataset_kwargs_for(path, mirror, resolution=None):
    """Dataset options for a zip or folder of patches, after checking that it opens."""
    kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=path, use_labels=False,
                             max_size=None, xflip=bool(mirror))
    if resolution is not None:
        kwargs.resolution = resolution
    kwargs.resolution = metric_utils.open_dataset(kwargs).resolution
    return kwargs


def _load_generator(network_pkl, verbose):
    """(G_ema, or G when the snapshot has no EMA copy; the snapshot's training_set_kwargs)."""
    import legacy  # a root module: imported on demand so this file stays importable from anywhere
    if verbose:
        print(f"Loading network '{network_pkl}'...")
    snapshot = legacy.load_network(network_pkl)
    G = snapshot.get('G_ema')
    if G is None:
        G = snapshot.get('G')
    if G is None:
        raise dnnlib.util.UserError(f'{network_pkl} holds no generator (G_ema or G)')
    return G, snapshot.get('training_set_kwargs')


def _reference_data(G, training_set_kwargs, data, mirror):
    """Dataset options of the real images to compare G with: --data, else the snapshot's training set."""
    if data is not None:
        kwargs = dataset_kwargs_for(data, mirror, resolution=G.img_resolution)
        kwargs.use_labels = G.c_dim != 0
        return kwargs
    if not training_set_kwargs:
        raise dnnlib.util.UserError('The snapshot does not name its training set; pass --data')
    kwargs = dnnlib.EasyDict(training_set_kwargs)
    if mirror is not None:
        kwargs.xflip = mirror
    dataset_kwargs_for(kwargs.path, kwargs.get('xflip', False))  # fails now, in one line, if it is unreadable
    return kwargs


def _run_dir_of(network_pkl):
    """The training run folder holding the snapshot (it has training_options.json), else None."""
    if not os.path.exists(network_pkl):
        return None  # a URL
    folder = os.path.dirname(os.path.abspath(network_pkl))
    return folder if os.path.isfile(os.path.join(folder, 'training_options.json')) else None

# ----------------------------------------------------------------------------
# Running


def _process_device(rank):
    if not torch.cuda.is_available():
        return torch.device('cpu')
    device = torch.device('cuda', rank)
    torch.cuda.set_device(device)
    # TF32 would perturb the detector features that FID and KID are sensitive to.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return device


def _metric_worker(rank, job, temp_dir):
    """Body of one process (one per GPU); only rank 0 prints and writes results."""
    if job.num_gpus > 1:
        rendezvous = 'file://' + os.path.abspath(os.path.join(temp_dir, 'dist_init'))
        torch.distributed.init_process_group('nccl', init_method=rendezvous, rank=rank, world_size=job.num_gpus)
    device = _process_device(rank)
    talk = rank == 0 and job.verbose
    G = None if job.G is None else copy.deepcopy(job.G).eval().requires_grad_(False).to(device)
    if talk:
        print(f'Computing on {device}')
    for name in job.metrics:
        if talk:
            print(f'{name}...')
        result = metric_main.calc_metric(metric=name, G=G, dataset_kwargs=job.dataset_kwargs,
                                         dataset2_kwargs=job.dataset2_kwargs, num_gpus=job.num_gpus, rank=rank,
                                         device=device, progress=job.verbose, detector_dir=job.detector_dir)
        if rank == 0:
            metric_main.report_metric(result, run_dir=job.run_dir, snapshot_pkl=job.network_pkl)


def calc_metrics(network_pkl, metrics, data, data2, mirror, gpus, verbose, detector_dir):
    """Library form of the command: check everything, load what is needed, compute and report each metric."""
    _check_metric_names(metrics)
    _check_gpus(gpus)
    if network_pkl is None and data2 is None:
        raise dnnlib.util.UserError('Give --network (a snapshot to evaluate) or --data and --data2 (two datasets to compare)')
    if data2 is not None and data is None:
        raise dnnlib.util.UserError('--data2 needs --data: the reference patch set')
    if detector_dir is not None and not os.path.isdir(detector_dir):
        raise dnnlib.util.UserError(f'--detector-dir {detector_dir} is not a folder')

    job = dnnlib.EasyDict(metrics=metrics, num_gpus=gpus, verbose=verbose, detector_dir=detector_dir,
                          G=None, network_pkl=None, run_dir=None, dataset_kwargs=None, dataset2_kwargs=None)
    if data2 is not None:
        # Two datasets: the second one stands where a generator would (a --network is then ignored).
        job.dataset_kwargs = dataset_kwargs_for(data, mirror)
        job.dataset2_kwargs = dataset_kwargs_for(data2, mirror)
        job.dataset2_kwargs.use_labels = False
        sizes = (job.dataset_kwargs.resolution, job.dataset2_kwargs.resolution)
        if sizes[0] != sizes[1]:
            raise dnnlib.util.UserError(f'--data is {sizes[0]} px but --data2 is {sizes[1]} px; compare patches of one size')
    else:
        job.G, training_set_kwargs = _load_generator(network_pkl, verbose)
        _check_generator(job.G, network_pkl, metrics)
        job.dataset_kwargs = _reference_data(job.G, training_set_kwargs, data, mirror)
        job.network_pkl = network_pkl
        job.run_dir = _run_dir_of(network_pkl)

    if verbose:
        print('Reference data:', json.dumps(job.dataset_kwargs, indent=2))
        if job.dataset2_kwargs is not None:
            print('Compared data:', json.dumps(job.dataset2_kwargs, indent=2))
    if gpus == 1:
        _metric_worker(0, job, None)
        return
    torch.multiprocessing.set_start_method('spawn', force=True)
    with tempfile.TemporaryDirectory() as temp_dir:
        torch.multiprocessing.spawn(fn=_metric_worker, args=(job, temp_dir), nprocs=gpus)

# ----------------------------------------------------------------------------


def _comma_list(_ctx, _param, value):
    if value is None:
        return []
    names = [part.strip() for part in value.split(',') if part.strip()]
    return [] if names == ['none'] else names


@click.command()
@click.option('network_pkl', '--network', metavar='PATH',
              help='Snapshot to evaluate (.pkl or .safetensors; a path or URL).')
@click.option('--metrics', callback=_comma_list, default='fid50k_full', show_default=True,
              help='Metrics to compute, separated by commas; "none" computes nothing. The names are listed above.')
@click.option('--data', metavar='PATH',
              help="Real patches (zip or folder) to compare against [default: the snapshot's training set].")
@click.option('--data2', metavar='PATH',
              help='A second patch set: measure it against --data instead of measuring a network.')
@click.option('--mirror', type=bool, metavar='BOOL',
              help="Count x-flipped copies of the real patches too [default: as the snapshot's training set did].")
@click.option('--gpus', type=int, default=1, show_default=True, metavar='INT',
              help='How many GPUs to spread the work over (one process each).')
@click.option('--verbose', type=bool, default=True, show_default=True, metavar='BOOL',
              help='Print the options in use and show progress bars.')
@click.option('--detector-dir', metavar='DIR',
              help='Folder holding detector weights already on disk (inception-2015-12-05.pt, default_1.pt, vgg16.pt, '
                   'vgg16.ckpt), for machines without internet access.')
def main(network_pkl, metrics, data, data2, mirror, gpus, verbose, detector_dir):
    """Compute quality metrics of a network snapshot, or of one patch set against another.

    \b
    Score a snapshot against the data it was trained on; when the snapshot sits in a training run folder,
    each result is also appended to <run>/metric-<name>.jsonl:
      python calc_metrics.py --metrics=fid50k_full,pr50k3_full --network=runs/00000-normal/network-snapshot-000200.pkl

    \b
    Compare two patch sets (two scanners, two stainings, two hospitals) without any network:
      python calc_metrics.py --metrics=fid5k_full,kid5k_full,swd --data=scanner_a.zip --data2=scanner_b.zip

    \b
    Metric names (StyleGAN2-ADA's, plus swd). Any image count may replace the standard one, e.g. fid5k_full.
      fid50k_full  FID of 50k generated images against every real image
      kid50k_full  KID, likewise
      pr50k3_full  precision and recall with 3 nearest neighbours, likewise
      ppl2_wend    perceptual path length between W endpoints, uncropped (networks with a W space)
      is50k        Inception score (needs NVIDIA's inception-2015-12-05.pt through --detector-dir)
      fid50k, kid50k, pr50k3                    as above, against 50k real images
      ppl_zfull, ppl_wfull, ppl_zend, ppl_wend  PPL variants in Z or W, whole paths or endpoints, cropped
      swd          sliced Wasserstein distance (x1e3) per Laplacian level and averaged, 16384 images
    """
    try:
        calc_metrics(network_pkl=network_pkl, metrics=metrics, data=data, data2=data2, mirror=mirror, gpus=gpus,
                     verbose=verbose, detector_dir=detector_dir)
    except dnnlib.util.UserError as err:
        raise click.ClickException(str(err))


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
