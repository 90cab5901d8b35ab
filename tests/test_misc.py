"""torch_utils.misc: constants, shape checks, sampler, parameter copying, DDP helpers, module summary."""

import json
import os
import re

import numpy as np
import pytest
import torch

import dnnlib
from torch_utils import misc

# ----------------------------------------------------------------------------


def test_constant_values_and_cache():
    a = misc.constant([1, 2, 3], dtype=torch.float32)
    assert a.dtype == torch.float32 and a.tolist() == [1.0, 2.0, 3.0]
    assert misc.constant([1, 2, 3], dtype=torch.float32) is a  # cached
    assert misc.constant([1, 2, 3], dtype=torch.float64) is not a
    assert misc.constant([1, 2, 4], dtype=torch.float32) is not a
    b = misc.constant(0.5, shape=[2, 3, 4, 5], memory_format=torch.channels_last)
    assert b.shape == (2, 3, 4, 5) and b.dtype == torch.get_default_dtype()
    assert b.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(b, torch.full([2, 3, 4, 5], 0.5))


def test_nan_to_num_matches_numpy():
    x = np.array([np.nan, np.inf, -np.inf, 1.5, -2.0], dtype=np.float32)
    got = misc.nan_to_num(torch.from_numpy(x), nan=0.25, posinf=7.0, neginf=-7.0).numpy()
    np.testing.assert_array_equal(got, np.nan_to_num(x, nan=0.25, posinf=7.0, neginf=-7.0))


@pytest.mark.filterwarnings('ignore::FutureWarning')
def test_assert_shape():
    x = torch.zeros(2, 3, 4)
    misc.assert_shape(x, [2, 3, 4])
    misc.assert_shape(x, [None, 3, None])
    with pytest.raises(AssertionError, match='dimensions'):
        misc.assert_shape(x, [2, 3])
    with pytest.raises(AssertionError, match='dimension 1: got 3, expected 5'):
        misc.assert_shape(x, [2, 5, 4])

    def fn(t):
        misc.assert_shape(t, [None, 3])
        return t * 2
    with misc.suppress_tracer_warnings():
        traced = torch.jit.trace(fn, torch.ones(4, 3))
    assert torch.equal(traced(torch.ones(5, 3)), torch.full([5, 3], 2.0))


def test_profiled_function_is_recorded():
    @misc.profiled_function
    def my_profiled_op(x):
        return x + 1
    assert my_profiled_op.__name__ == 'my_profiled_op'
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        assert my_profiled_op(torch.ones(2)).tolist() == [2.0, 2.0]
    assert any(evt.name == 'my_profiled_op' for evt in prof.events())


# ----------------------------------------------------------------------------


def take(iterator, n):
    return [int(next(iterator)) for _ in range(n)]


def test_infinite_sampler_order():
    data = list(range(7))
    assert take(iter(misc.InfiniteSampler(data, shuffle=False)), 16) == [i % 7 for i in range(16)]

    # Shuffling starts from numpy's permutation for the seed; without a window that order just repeats.
    perm = np.random.RandomState(123).permutation(7).tolist()
    assert take(iter(misc.InfiniteSampler(data, seed=123, window_size=0)), 21) == perm * 3
    assert take(iter(misc.InfiniteSampler(data, seed=123)), 1) == perm[:1]
    # With a window, later passes differ from the first one but every index keeps coming back.
    stream = take(iter(misc.InfiniteSampler(list(range(50)), seed=5)), 50 * 40)
    assert stream[50:100] != stream[:50]
    counts = np.bincount(stream, minlength=50)
    assert counts.min() >= 20 and counts.max() <= 60


def test_infinite_sampler_replicas_partition_the_stream():
    data = list(range(11))
    full = take(iter(misc.InfiniteSampler(data, seed=9)), 33)
    for rank in range(3):
        part = take(iter(misc.InfiniteSampler(data, rank=rank, num_replicas=3, seed=9)), 11)
        assert part == full[rank::3]


# ----------------------------------------------------------------------------


class Pair(torch.nn.Module):
    def __init__(self, width, extra=False):
        super().__init__()
        self.fc = torch.nn.Linear(width, 3)
        self.register_buffer('scale', torch.arange(3, dtype=torch.float32))
        if extra:
            self.extra = torch.nn.Parameter(torch.ones(2))

    def forward(self, x):
        return self.fc(x) * self.scale


def test_copy_params_and_buffers():
    torch.manual_seed(0)
    src, dst = Pair(4), Pair(4, extra=True)
    src.scale.fill_(5)
    dst.fc.weight.requires_grad_(False)
    misc.copy_params_and_buffers(src, dst)  # `extra` is missing from src: allowed without require_all
    assert torch.equal(dst.fc.weight, src.fc.weight) and torch.equal(dst.fc.bias, src.fc.bias)
    assert torch.equal(dst.scale, torch.full([3], 5.0))
    assert not dst.fc.weight.requires_grad and dst.fc.bias.requires_grad
    assert dst.fc.weight.data_ptr() != src.fc.weight.data_ptr()

    with pytest.raises(dnnlib.util.UserError, match=r'extra \[2\]'):
        misc.copy_params_and_buffers(src, dst, require_all=True)


def test_copy_params_and_buffers_names_every_mismatch():
    src, dst = Pair(4), Pair(6, extra=True)
    before = dst.fc.bias.clone()
    with pytest.raises(dnnlib.util.UserError) as info:
        misc.copy_params_and_buffers(src, dst, require_all=True)
    msg = str(info.value)
    assert '\n' not in msg
    assert 'fc.weight (source [3, 4], destination [3, 6])' in msg
    assert 'missing from source: extra [2]' in msg
    assert 'fc.bias' not in msg and 'scale' not in msg
    assert torch.equal(dst.fc.bias, before)  # nothing copied when anything is wrong


def test_ddp_sync_without_ddp_is_a_no_op():
    net = Pair(2)
    with misc.ddp_sync(net, sync=False):
        net.fc(torch.ones(1, 2)).sum().backward()
    assert net.fc.weight.grad is not None


# ----------------------------------------------------------------------------


def _ddp_worker(rank, world_size, init_file, out_dir):
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world_size)
    results = {}
    torch.manual_seed(0)
    net = Pair(2)
    misc.check_ddp_consistency(net)  # identical on both ranks: passes everywhere
    results['same'] = 'ok'

    with torch.no_grad():
        net.scale.fill_(float(rank))
    try:
        misc.check_ddp_consistency(net)
        results['diff'] = 'ok'
    except AssertionError as err:
        results['diff'] = str(err)
    misc.check_ddp_consistency(net, ignore_regex=r'.*\.scale')
    results['ignored'] = 'ok'

    # ddp_sync(sync=False) must skip the gradient all-reduce; sync=True averages gradients over ranks.
    ddp = torch.nn.parallel.DistributedDataParallel(Pair(2))
    x = torch.full([1, 2], float(rank + 1))
    with misc.ddp_sync(ddp, sync=False):
        ddp(x).sum().backward()
    results['nosync_grad'] = ddp.module.fc.weight.grad[1].tolist()
    ddp.zero_grad(set_to_none=True)
    with misc.ddp_sync(ddp, sync=True):
        ddp(x).sum().backward()
    results['sync_grad'] = ddp.module.fc.weight.grad[1].tolist()

    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(results, f)
    torch.distributed.destroy_process_group()


def test_ddp_helpers_two_processes(tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path / 'init'), str(tmp_path)), nprocs=2)
    r0 = json.load(open(tmp_path / 'rank0.json'))
    r1 = json.load(open(tmp_path / 'rank1.json'))
    assert r0['same'] == r1['same'] == 'ok'
    assert r0['diff'] == 'ok'  # rank 0 compares with itself
    assert r1['diff'] == 'Pair.scale differs from rank 0'
    assert r0['ignored'] == r1['ignored'] == 'ok'
    # d sum(fc(x) * scale) / d fc.weight[1] = scale[1] * x = x, with x = rank + 1 on each rank.
    assert r0['nosync_grad'] == [1.0, 1.0] and r1['nosync_grad'] == [2.0, 2.0]
    assert r0['sync_grad'] == r1['sync_grad'] == [1.5, 1.5]


# ----------------------------------------------------------------------------


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(4)

    def forward(self, x):
        return self.norm(self.conv(x))


class TwoHeads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        y = self.block(x)
        return y, self.head(y.mean(dim=[2, 3]))


def test_print_module_summary(capsys):
    torch.manual_seed(0)
    net = TwoHeads().eval()
    x = torch.randn(2, 3, 8, 8)
    outputs = misc.print_module_summary(net, [x])
    expected = net(x)
    assert torch.equal(outputs[0], expected[0]) and torch.equal(outputs[1], expected[1])

    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    rows = {re.split(r'\s{2,}', line.strip())[0]: re.split(r'\s{2,}', line.strip()) for line in lines}
    assert lines[0].split()[:5] == ['TwoHeads', 'Parameters', 'Buffers', 'Output', 'shape']
    n_params = sum(p.numel() for p in net.parameters())
    n_buffers = sum(b.numel() for b in net.buffers())
    assert rows['Total'] == ['Total', str(n_params), str(n_buffers), '-', '-']
    assert rows['block.conv'] == ['block.conv', str(3 * 4 * 9 + 4), '-', '[2, 4, 8, 8]', 'float32']
    assert rows['block.norm'][1:3] == ['8', str(n_buffers)]
    assert rows['head'] == ['head', '10', '-', '[2, 2]', 'float32']
    assert '<top-level>:0' not in rows  # adds nothing new: its outputs are block's and head's

    misc.print_module_summary(net, [x], skip_redundant=False)
    out = capsys.readouterr().out
    top = [line.split() for line in out.splitlines() if line.startswith('<top-level>')]
    assert [row[0] for row in top] == ['<top-level>:0', '<top-level>:1']
    assert top[1][1:] == ['-', '-', '[2,', '2]', 'float32']

    # With max_nesting=1, the block's children fold into the block's row.
    misc.print_module_summary(net, [x], max_nesting=1)
    out = capsys.readouterr().out
    assert 'block.conv' not in out
    row = [line for line in out.splitlines() if line.startswith('block ')][0].split()
    assert row[1] == str(3 * 4 * 9 + 4 + 8)
