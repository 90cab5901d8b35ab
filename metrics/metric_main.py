"""The metrics by name, as in the official StyleGAN2-ADA, plus SWD and quick variants with fewer images.

Names: the official ones (fid50k_full, kid50k_full, pr50k3_full, ppl2_wend, is50k, fid50k, kid50k, pr50k3,
ppl_zfull, ppl_wfull, ppl_zend, ppl_wend) and swd (16384 images). Any image count may replace the official
one for a quick check: fid5k_full, kid2k, pr1k3_full, is500, swd256, ppl2_wend1k ('k' = thousand)."""

import json
import os
import re
import time

import torch

import dnnlib
from metrics import (
    frechet_inception_distance,
    inception_score,
    kernel_inception_distance,
    metric_utils,
    perceptual_path_length,
    precision_recall,
    sliced_wasserstein,
)

# ----------------------------------------------------------------------------
# Metric families; each takes the options and the parsed image count.


def _fid(opts, metric, count, full):
    fid = frechet_inception_distance.compute_fid(opts, max_real=None if full else count, num_gen=count)
    return {metric: fid}


def _kid(opts, metric, count, full):
    kid = kernel_inception_distance.compute_kid(opts, max_real=1000000 if full else count, num_gen=count,
                                                num_subsets=100, max_subset_size=1000)
    return {metric: kid}


def _pr(opts, metric, count, full):
    precision, recall = precision_recall.compute_pr(opts, max_real=200000 if full else count, num_gen=count, nhood_size=3,
                                                    row_batch_size=10000, col_batch_size=10000)
    return {f'{metric}_precision': precision, f'{metric}_recall': recall}


def _is(opts, metric, count, full):
    mean, std = inception_score.compute_is(opts, num_gen=count, num_splits=10)
    return {f'{metric}_mean': mean, f'{metric}_std': std}


def _swd(opts, metric, count, full):
    per_level = sliced_wasserstein.compute_swd(opts, max_real=count, num_gen=count)
    return {f'{metric}_{key}': value for key, value in per_level.items()}


# Official PPL variants: (space, sampling, crop); ppl2_wend is the StyleGAN2 paper's PPL without the face crop.
_PPL_VARIANTS = dict(ppl2_wend=('w', 'end', False), ppl_zfull=('z', 'full', True), ppl_wfull=('w', 'full', True),
                     ppl_zend=('z', 'end', True), ppl_wend=('w', 'end', True))


def _ppl(opts, metric, count, full, variant):
    if opts.dataset2_kwargs is not None:
        raise dnnlib.util.UserError(f"{metric} measures a generator; it has no dataset-vs-dataset form")
    space, sampling, crop = _PPL_VARIANTS[variant]
    ppl = perceptual_path_length.compute_ppl(opts, num_samples=count, epsilon=1e-4, space=space, sampling=sampling,
                                             crop=crop, batch_size=2)
    return {metric: ppl}

# ----------------------------------------------------------------------------
# Parsing names into (function, count, full).

_COUNT = r'(\d+)(k?)'
_PATTERNS = [
    (re.compile(rf'^fid{_COUNT}(_full)?$'), _fid),
    (re.compile(rf'^kid{_COUNT}(_full)?$'), _kid),
    (re.compile(rf'^pr{_COUNT}3(_full)?$'), _pr),  # The trailing 3 is the k-NN neighbourhood size.
    (re.compile(rf'^is{_COUNT}()$'), _is),
    (re.compile(rf'^swd{_COUNT}()$'), _swd),
]
_PPL_PATTERN = re.compile(rf'^({"|".join(_PPL_VARIANTS)})(?:{_COUNT})?$')

_OFFICIAL = ['fid50k_full', 'kid50k_full', 'pr50k3_full', 'ppl2_wend', 'is50k', 'fid50k', 'kid50k', 'pr50k3',
             'ppl_zfull', 'ppl_wfull', 'ppl_zend', 'ppl_wend', 'swd']
_ALIASES = dict(swd='swd16384')  # Karras et al. 2018: 16384 images x 128 descriptors = 2^21 per level.


def _parse(metric: str):
    """(family function, image count, full) or None for an unknown name."""
    if not isinstance(metric, str):
        return None
    name = _ALIASES.get(metric, metric)
    m = _PPL_PATTERN.match(name)
    if m:
        count = 50000 if m.group(2) is None else int(m.group(2)) * (1000 if m.group(3) else 1)
        variant = m.group(1)
        return (lambda opts, metric_, count_, full_: _ppl(opts, metric_, count_, full_, variant)), count, False
    for pattern, func in _PATTERNS:
        m = pattern.match(name)
        if m:
            count = int(m.group(1)) * (1000 if m.group(2) else 1)
            return func, count, bool(m.group(3))
    return None


def is_valid_metric(metric: str) -> bool:
    parsed = _parse(metric)
    return parsed is not None and parsed[1] > 0


def requires_w_space(metric: str) -> bool:
    """Whether the metric walks the generator's W space (the PPL family), which z-only GAN families lack."""
    return isinstance(metric, str) and _PPL_PATTERN.match(_ALIASES.get(metric, metric)) is not None


def list_valid_metrics() -> list[str]:
    """The official names (any of them with another image count is valid too, e.g. fid5k_full)."""
    return list(_OFFICIAL)

# ----------------------------------------------------------------------------


def calc_metric(metric: str, **kwargs) -> dnnlib.EasyDict:
    """Compute one metric. kwargs: G, G_kwargs, dataset_kwargs, dataset2_kwargs, num_gpus, rank, device,
    progress, cache, detector_dir, seed (see metric_utils.MetricOptions)."""
    if not is_valid_metric(metric):
        raise dnnlib.util.UserError(f"Unknown metric '{metric}'; valid: {', '.join(list_valid_metrics())} "
                                    f"(or another count, e.g. fid5k_full)")
    func, count, full = _parse(metric)
    opts = metric_utils.MetricOptions(**kwargs)
    if opts.G is None and opts.dataset2_kwargs is None:
        raise dnnlib.util.UserError(f"{metric} needs a generator (--network) or a second dataset (--data2)")

    # The official protocol: all real images, no x-flips for the *_full metrics.
    for dataset_kwargs in (opts.dataset_kwargs, opts.dataset2_kwargs):
        if dataset_kwargs:
            dataset_kwargs.update(max_size=None)
            if full:
                dataset_kwargs.update(xflip=False)

    start_time = time.time()
    results = func(opts, metric, count, full)
    total_time = time.time() - start_time

    # Every rank returns rank 0's numbers.
    results = dnnlib.EasyDict(results)
    if opts.num_gpus > 1 and torch.distributed.is_initialized():
        for key, value in list(results.items()):
            value = torch.as_tensor(value, dtype=torch.float64, device=opts.device)
            torch.distributed.broadcast(tensor=value, src=0)
            results[key] = float(value.cpu())

    sources = sorted(opts.detector_sources.values())
    return dnnlib.EasyDict(
        results=results,
        metric=metric,
        total_time=total_time,
        total_time_str=dnnlib.util.format_time(total_time),
        num_gpus=opts.num_gpus,
        detector_source=', '.join(sources) if sources else 'none (no pretrained weights)',
    )


def _append_line(path: str, line: str) -> None:
    """Add a line to a text file by rewriting it through a temp file: an interrupted or failed write (a full
    disk) leaves the old file intact instead of a torn last line, and no temp file behind."""
    try:
        with open(path, 'rt') as f:
            before = f.read()
    except FileNotFoundError:
        before = ''
    if before and not before.endswith('\n'):
        before += '\n'
    try:
        with dnnlib.util.atomic_write(path) as tmp:
            with open(tmp, 'wt') as f:
                f.write(before + line + '\n')
    except OSError as err:
        raise dnnlib.util.UserError(f"cannot write '{path}': {err.strerror or err}") from None


def report_metric(result_dict: dict, run_dir: str | None = None, snapshot_pkl: str | None = None) -> str:
    """Print the result as one JSON line and append it to <run_dir>/metric-<name>.jsonl; returns the line."""
    metric = result_dict['metric']
    assert is_valid_metric(metric)
    if run_dir is not None and snapshot_pkl is not None:
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    line = json.dumps(dict(result_dict, snapshot_pkl=snapshot_pkl, timestamp=time.time()))
    print(line)
    if run_dir is not None and os.path.isdir(run_dir):
        _append_line(os.path.join(run_dir, f'metric-{metric}.jsonl'), line)
    return line
