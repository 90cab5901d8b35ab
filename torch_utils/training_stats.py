"""Named statistics reported from anywhere in the training code, summarised per interval over all ranks.

Any code may call `report('Loss/G/loss', tensor)`; every element reported under a name adds to three float64
running sums: how many elements, their sum and their sum of squares. A `Collector` turns the growth of these
sums between two of its `update()` calls into num / mean / std. With torch.distributed running (after
`init_multiprocessing`), `update()` adds up the sums of all ranks, so every rank must call it at the same
time and must have reported the same names; `report0` lets other ranks register a name that only rank 0 has
a value for.
"""

import math
import re
import weakref

import torch

import dnnlib

# ----------------------------------------------------------------------------

_SUMS = 3                # elements, sum, sum of squares
_SUM_DTYPE = torch.float64  # counts stay exact and long sums stay accurate

_config = dnnlib.EasyDict(rank=0, sync_device=None, synced=False)
_unsynced = {}  # name -> {device: sums reported there since the last sync}
# Every live Collector receives each synced increment. Collectors keep increments, not differences of running
# totals: one nan or inf reported under a name would otherwise stay in the totals and spoil every later interval.
_collectors = weakref.WeakSet()

# ----------------------------------------------------------------------------


def init_multiprocessing(rank, sync_device):
    """Tell the module this process's rank and the device on which statistics are all-reduced.

    Must happen before any Collector.update(). `sync_device` is a device the process group's backend can
    reduce on (the rank's CUDA device for NCCL, the CPU for gloo); None keeps every process on its own.
    """
    if _config.synced:
        raise AssertionError('training_stats.init_multiprocessing() must come before the first Collector.update()')
    _config.rank = rank
    _config.sync_device = sync_device


def report(name, value):
    """Add every element of `value` (number, sequence or tensor) to the statistic `name` and return `value`
    unchanged, so the call can wrap an expression. An empty value only makes the name known."""
    per_device = _unsynced.setdefault(name, {})
    flat = torch.as_tensor(value).detach().reshape(-1)
    if flat.numel() == 0:
        return value
    flat = flat.to(_SUM_DTYPE)
    sums = torch.stack([flat.new_tensor(flat.numel()), flat.sum(), torch.dot(flat, flat)])
    if flat.device in per_device:
        per_device[flat.device] += sums
    else:
        per_device[flat.device] = sums
    return value


def report0(name, value):
    """report() that counts the value on rank 0 only; elsewhere the name is merely registered."""
    report(name, value if _config.rank == 0 else [])
    return value

# ----------------------------------------------------------------------------


def _sync(names):
    """Move the unsynced sums of `names` (added up over all ranks when distributed) into every live Collector."""
    if not names:
        return
    _config.synced = True
    device = torch.device('cpu') if _config.sync_device is None else _config.sync_device
    fresh = torch.zeros([len(names), _SUMS], dtype=_SUM_DTYPE, device=device)
    for row, name in enumerate(names):
        for sums in _unsynced[name].values():
            fresh[row] += sums.to(device)
            sums.zero_()
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if _config.sync_device is not None and distributed:
        torch.distributed.all_reduce(fresh)
    fresh = fresh.cpu()
    for collector in list(_collectors):
        for row, name in enumerate(names):
            collector._receive(name, fresh[row])


class Collector:
    """num / mean / std of the reported statistics over the interval between two update() calls.

    regex:          collect only names that fully match it.
    keep_previous:  a name that received nothing in the last interval keeps its previous values;
                    with False it reads num=0, mean=std=nan.
    """

    def __init__(self, regex='.*', keep_previous=True):
        self._pattern = re.compile(regex)
        self._keep_previous = keep_previous
        self._pending = {}    # name -> sums synced since the previous update()
        self._interval = {}   # name -> sums reported during the last interval
        _sync(self.names())   # reports made before the collector existed do not count
        _collectors.add(self)

    def _receive(self, name, sums):
        if self._pattern.fullmatch(name):
            self._pending[name] = self._pending[name] + sums if name in self._pending else sums.clone()

    def names(self):
        """Sorted names of reported statistics that match the regex (the same on every rank)."""
        return [name for name in sorted(_unsynced) if self._pattern.fullmatch(name)]

    def update(self):
        """End the current interval. Collective when distributed: every rank has to call it."""
        if not self._keep_previous:
            self._interval = {}
        _sync(self.names())
        for name, sums in self._pending.items():
            if sums[0] != 0:
                self._interval[name] = sums
        self._pending = {}

    def _sums(self, name):
        if not self._pattern.fullmatch(name):
            raise AssertionError(f"statistic '{name}' is outside this collector's regex {self._pattern.pattern!r}")
        sums = self._interval.get(name)
        return (0.0, 0.0, 0.0) if sums is None else tuple(sums.tolist())

    def num(self, name):
        """How many scalars were reported under `name` in the last interval, over all ranks."""
        return int(self._sums(name)[0])

    def mean(self, name):
        """Their mean; nan when there were none."""
        count, total, _squares = self._sums(name)
        return total / count if count else float('nan')

    def std(self, name):
        """Their population standard deviation (divisor N); nan when there were none or they were not finite."""
        count, total, squares = self._sums(name)
        if count == 0 or not math.isfinite(total):
            return float('nan')
        if count == 1:
            return 0.0
        average = total / count
        return math.sqrt(max(squares / count - average * average, 0.0))  # rounding can dip just below 0

    def as_dict(self):
        """EasyDict name -> EasyDict(num, mean, std) for every collected name (the stats.jsonl record)."""
        return dnnlib.EasyDict({name: dnnlib.EasyDict(num=self.num(name), mean=self.mean(name), std=self.std(name))
                                for name in self.names()})

    def __getitem__(self, name):
        """collector['Loss/G/loss'] is the mean."""
        return self.mean(name)
