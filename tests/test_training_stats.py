"""torch_utils.training_stats: reported statistics vs numpy, in one process and reduced over two."""

import json
import math
import os
import uuid

import numpy as np
import pytest
import torch

from torch_utils import training_stats


@pytest.fixture
def prefix():
    """A fresh name prefix: the statistics registry is process-global and shared with other tests."""
    return f'test{uuid.uuid4().hex[:8]}/'


def test_mean_std_match_numpy(prefix):
    rnd = np.random.RandomState(0)
    a = rnd.randn(5, 7).astype(np.float32)
    b = rnd.randn(13).astype(np.float32) * 3 + 1
    collector = training_stats.Collector(regex=prefix + '.*')
    t = torch.from_numpy(a)
    assert training_stats.report(prefix + 'x', t) is t  # passes the value through
    training_stats.report(prefix + 'x', b.tolist())
    training_stats.report(prefix + 'x', 2.5)
    training_stats.report(prefix + 'y', torch.tensor(4.0))
    collector.update()

    union = np.concatenate([a.ravel(), b, [2.5]]).astype(np.float64)
    assert collector.num(prefix + 'x') == union.size
    assert collector.mean(prefix + 'x') == pytest.approx(union.mean(), rel=1e-12, abs=1e-12)
    assert collector.std(prefix + 'x') == pytest.approx(union.std(), rel=1e-9)
    assert collector[prefix + 'x'] == collector.mean(prefix + 'x')
    assert collector.num(prefix + 'y') == 1 and collector.std(prefix + 'y') == 0.0
    assert collector.names() == [prefix + 'x', prefix + 'y']
    stats = collector.as_dict()
    assert set(stats) == {prefix + 'x', prefix + 'y'}
    assert stats[prefix + 'y'] == {'num': 1, 'mean': 4.0, 'std': 0.0}
    assert stats[prefix + 'x'].num == union.size


def test_intervals_and_keep_previous(prefix):
    name = prefix + 'loss'
    training_stats.report(name, [100.0])  # before the collector exists: not counted
    keep = training_stats.Collector(regex=prefix + '.*')
    fresh = training_stats.Collector(regex=prefix + '.*', keep_previous=False)
    training_stats.report(name, [1.0, 2.0, 3.0])
    keep.update()
    fresh.update()
    assert keep.num(name) == fresh.num(name) == 3 and keep.mean(name) == 2.0

    training_stats.report(name, [10.0])
    keep.update()
    fresh.update()
    assert keep.num(name) == fresh.num(name) == 1 and keep.mean(name) == fresh.mean(name) == 10.0

    keep.update()  # nothing reported in this interval
    fresh.update()
    assert keep.mean(name) == 10.0
    assert fresh.num(name) == 0 and math.isnan(fresh.mean(name)) and math.isnan(fresh.std(name))


def test_regex_empty_values_and_nonfinite(prefix):
    collector = training_stats.Collector(regex=prefix + 'Loss/.*')
    training_stats.report(prefix + 'Loss/G', [1.0, 3.0])
    training_stats.report(prefix + 'Timing/step', [5.0])
    training_stats.report(prefix + 'Loss/empty', [])
    training_stats.report(prefix + 'Loss/nan', [1.0, float('nan')])
    collector.update()
    assert collector.names() == [prefix + 'Loss/G', prefix + 'Loss/empty', prefix + 'Loss/nan']
    assert collector.std(prefix + 'Loss/G') == 1.0
    assert collector.num(prefix + 'Loss/empty') == 0 and math.isnan(collector.mean(prefix + 'Loss/empty'))
    assert collector.num(prefix + 'Loss/nan') == 2 and math.isnan(collector.std(prefix + 'Loss/nan'))
    with pytest.raises(AssertionError):
        collector.mean(prefix + 'Timing/step')  # outside this collector's regex


def test_report0_counts_rank0_only(prefix, monkeypatch):
    collector = training_stats.Collector(regex=prefix + '.*')
    assert training_stats.report0(prefix + 'r0', 7.0) == 7.0
    monkeypatch.setitem(training_stats._config, 'rank', 1)
    training_stats.report0(prefix + 'r0', 100.0)
    training_stats.report0(prefix + 'only_other_ranks', 5.0)
    collector.update()
    assert collector.num(prefix + 'r0') == 1 and collector.mean(prefix + 'r0') == 7.0
    assert prefix + 'only_other_ranks' in collector.names() and collector.num(prefix + 'only_other_ranks') == 0


# ----------------------------------------------------------------------------


def rank_values(rank):
    return np.random.RandomState(rank).randn(3 + 4 * rank) * (rank + 1) + rank


def _worker(rank, world_size, init_file, out_dir):
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world_size)
    training_stats.init_multiprocessing(rank=rank, sync_device=torch.device('cpu'))
    collector = training_stats.Collector(regex='.*')
    # Names reported in a different order per rank must still line up in the reduction.
    if rank == 0:
        training_stats.report('A/values', torch.from_numpy(rank_values(rank)))
        training_stats.report0('B/rank0', 3.0 + rank)
    else:
        training_stats.report0('B/rank0', 3.0 + rank)
        training_stats.report('A/values', torch.from_numpy(rank_values(rank)))
    collector.update()
    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(collector.as_dict(), f)
    torch.distributed.destroy_process_group()


def test_reduction_across_two_processes(tmp_path):
    torch.multiprocessing.spawn(_worker, args=(2, str(tmp_path / 'init'), str(tmp_path)), nprocs=2)
    union = np.concatenate([rank_values(0), rank_values(1)])
    for rank in range(2):
        stats = json.load(open(tmp_path / f'rank{rank}.json'))
        assert stats['A/values']['num'] == union.size
        assert stats['A/values']['mean'] == pytest.approx(union.mean(), rel=1e-12)
        assert stats['A/values']['std'] == pytest.approx(union.std(), rel=1e-9)
        assert stats['B/rank0'] == {'num': 1, 'mean': 3.0, 'std': 0.0}


def test_a_nan_spoils_only_its_own_interval(prefix):
    """One nan loss (e.g. a diverged step) must not make every later interval nan, in this or a new collector."""
    collector = training_stats.Collector(regex=prefix + '.*')
    training_stats.report(prefix + 'loss', [1.0, float('nan')])
    collector.update()
    assert math.isnan(collector.mean(prefix + 'loss'))
    training_stats.report(prefix + 'loss', [2.0, 4.0])
    collector.update()
    assert collector.mean(prefix + 'loss') == 3.0 and collector.num(prefix + 'loss') == 2
    later = training_stats.Collector(regex=prefix + '.*')
    training_stats.report(prefix + 'loss', 5.0)
    later.update()
    collector.update()
    assert later.mean(prefix + 'loss') == 5.0 == collector.mean(prefix + 'loss')
