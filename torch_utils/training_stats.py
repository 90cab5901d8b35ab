"""Statistics reported from anywhere in training code and collected across processes.

`report(name, value)` may be called at any point (losses, augment probability, timings); each call
adds the count, sum and sum of squares of the reported elements to a per-name float64 counter.
A `Collector` turns the counters into num / mean / std over the interval since its last update(),
summed over all ranks when torch.distributed is initialised (see `init_multiprocessing`).

Every rank must report the same set of names and call `Collector.update()` together, because the
update is a collective operation; `report0()` helps with values that exist on rank 0 only.
"""

import re

import numpy as np
import torch

import dnnlib

#----------------------------------------------------------------------------

_num_moments = 3                # [count, sum, sum of squares]
_counter_dtype = torch.float64  # exact counts and stable sums over long runs
_rank = 0
_sync_device = None             # device for the all-reduce; None = no cross-process reduction
_sync_called = False            # init_multiprocessing() must come before the first sync
_counters = dict()              # name -> device -> moments accumulated since the last sync
_cumulative = dict()            # name -> moments summed over all ranks since the start

#----------------------------------------------------------------------------

def init_multiprocessing(rank, sync_device):
    """Declare this process's rank and the device used to all-reduce statistics.

    Call once, before the first Collector.update(). `sync_device` is the device whose tensors the
    process group's backend reduces (e.g. torch.device('cuda', rank) for NCCL, torch.device('cpu')
    for gloo); None disables cross-process reduction (single process).
    """
    global _rank, _sync_device
    assert not _sync_called
    _rank = rank
    _sync_device = sync_device

#----------------------------------------------------------------------------

def report(name, value):
    """Add the elements of `value` (scalar, sequence or tensor of any shape) to statistic `name`;
    return `value` unchanged so calls can wrap expressions. Empty values only register the name."""
    if name not in _counters:
        _counters[name] = dict()

    elems = torch.as_tensor(value)
    if elems.numel() == 0:
        return value

    elems = elems.detach().flatten().to(_counter_dtype)
    moments = torch.stack([
        torch.ones_like(elems).sum(),
        elems.sum(),
        elems.square().sum(),
    ])
    assert moments.ndim == 1 and moments.shape[0] == _num_moments
    device = moments.device
    if device not in _counters[name]:
        _counters[name][device] = torch.zeros_like(moments)
    _counters[name][device].add_(moments)
    return value

def report0(name, value):
    """Like report(), but only rank 0's value counts; other ranks just register the name."""
    report(name, value if _rank == 0 else [])
    return value

#----------------------------------------------------------------------------

class Collector:
    """num / mean / std of reported statistics over the interval between update() calls.

    Args:
        regex:          only names that fully match this regular expression are collected.
        keep_previous:  keep the last values of statistics not reported in the latest interval
                        (otherwise they read as num=0, mean=nan).
    """

    def __init__(self, regex='.*', keep_previous=True):
        self._regex = re.compile(regex)
        self._keep_previous = keep_previous
        self._cumulative = dict()
        self._moments = dict()
        self.update()           # start the first interval now: earlier reports do not count
        self._moments.clear()

    def names(self):
        """Names of all reported statistics that match the regex (sorted, identical on every rank)."""
        return [name for name in sorted(_counters) if self._regex.fullmatch(name)]

    def update(self):
        """Close the current interval: gather (and, across ranks, all-reduce) what was reported since
        the previous update(). Collective when multiprocessing is initialised: call on every rank."""
        if not self._keep_previous:
            self._moments.clear()
        for name, cumulative in _sync(self.names()):
            if name not in self._cumulative:
                self._cumulative[name] = torch.zeros_like(cumulative)
            delta = cumulative - self._cumulative[name]
            self._cumulative[name].copy_(cumulative)
            if float(delta[0]) != 0:
                self._moments[name] = delta

    def _get_delta(self, name):
        assert self._regex.fullmatch(name)
        if name not in self._moments:
            self._moments[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
        return self._moments[name]

    def num(self, name):
        """Number of scalars reported under `name` in the last interval (all ranks)."""
        return int(self._get_delta(name)[0])

    def mean(self, name):
        """Mean of those scalars, nan if there were none."""
        delta = self._get_delta(name)
        if int(delta[0]) == 0:
            return float('nan')
        return float(delta[1] / delta[0])

    def std(self, name):
        """Population standard deviation (ddof=0) of those scalars, nan if there were none."""
        delta = self._get_delta(name)
        if int(delta[0]) == 0 or not np.isfinite(float(delta[1])):
            return float('nan')
        if int(delta[0]) == 1:
            return 0.0
        mean = float(delta[1] / delta[0])
        raw_var = float(delta[2] / delta[0])
        return float(np.sqrt(max(raw_var - mean ** 2, 0)))  # rounding can push a tiny variance below 0

    def as_dict(self):
        """{name: EasyDict(num, mean, std)} for every collected name; convenient for stats.jsonl."""
        stats = dnnlib.EasyDict()
        for name in self.names():
            stats[name] = dnnlib.EasyDict(num=self.num(name), mean=self.mean(name), std=self.std(name))
        return stats

    def __getitem__(self, name):
        """The mean of `name`: collector['Loss/G/loss']."""
        return self.mean(name)

#----------------------------------------------------------------------------

def _sync(names):
    """Move the per-device counters of `names` into the cumulative totals (all-reduced across ranks)
    and return [(name, cumulative moments)]."""
    global _sync_called
    if len(names) == 0:
        return []
    _sync_called = True

    device = _sync_device if _sync_device is not None else torch.device('cpu')
    deltas = []
    for name in names:
        delta = torch.zeros([_num_moments], dtype=_counter_dtype, device=device)
        for counter in _counters[name].values():
            delta.add_(counter.to(device))
            counter.zero_()
        deltas.append(delta)
    deltas = torch.stack(deltas)

    if _sync_device is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(deltas)

    deltas = deltas.cpu()
    for idx, name in enumerate(names):
        if name not in _cumulative:
            _cumulative[name] = torch.zeros_like(deltas[idx])
        _cumulative[name].add_(deltas[idx])
    return [(name, _cumulative[name]) for name in names]

#----------------------------------------------------------------------------
