"""PyTorch odds and ends used across networks, training and metrics.

The public names and signatures are the ones StyleGAN2-ADA code expects to find in `torch_utils.misc`
(constant, assert_shape, InfiniteSampler, copy_params_and_buffers, ddp_sync, print_module_summary, ...);
the implementations are HistoSynth's own.
"""

import contextlib
import functools
import itertools
import re
import warnings

import numpy as np
import torch

import dnnlib

# ----------------------------------------------------------------------------
# Constants

_constants = {}  # (value bytes, layout, target) -> tensor; networks ask for the same few constants every call


def constant(value, shape=None, dtype=None, device=None, memory_format=None):
    """`value` as a tensor (broadcast to `shape` when given), created once per distinct request and reused.

    The result is shared between callers, so never modify it in place.
    """
    array = np.array(value)
    target_dtype = torch.get_default_dtype() if dtype is None else dtype
    target_device = torch.device('cpu' if device is None else device)
    layout = torch.contiguous_format if memory_format is None else memory_format
    target_shape = None if shape is None else tuple(shape)

    key = (array.dtype.str, array.shape, array.tobytes(), target_shape, target_dtype, target_device, layout)
    cached = _constants.get(key)
    if cached is None:
        cached = torch.tensor(array, dtype=target_dtype, device=target_device)
        if target_shape is not None:
            cached = cached.expand(target_shape)
        cached = cached.contiguous(memory_format=layout)
        _constants[key] = cached
    return cached


# Kept under the names StyleGAN2-ADA code uses.
nan_to_num = torch.nan_to_num
symbolic_assert = torch._assert  # pylint: disable=protected-access

# ----------------------------------------------------------------------------
# Shape checks (also valid while tracing, where sizes may be tensors)


@contextlib.contextmanager
def suppress_tracer_warnings():
    """Hide torch.jit.TracerWarning in the block: our shape checks compare traced sizes on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        yield


def _check_traced_size(actual, wanted, dim):
    with suppress_tracer_warnings():
        same = torch.equal(torch.as_tensor(actual), torch.as_tensor(wanted))
        symbolic_assert(same, f'Wrong size for dimension {dim}: expected {wanted}')


def assert_shape(tensor, ref_shape):
    """AssertionError unless `tensor` has the shape `ref_shape`; a None entry accepts any size."""
    actual_shape = tuple(tensor.shape)
    if len(actual_shape) != len(ref_shape):
        raise AssertionError(f'Wrong number of dimensions: got {len(actual_shape)}, expected {len(ref_shape)}')
    for dim, (actual, wanted) in enumerate(zip(actual_shape, ref_shape)):
        if wanted is None:
            continue
        if isinstance(actual, torch.Tensor) or isinstance(wanted, torch.Tensor):
            _check_traced_size(actual, wanted, dim)
        elif actual != wanted:
            raise AssertionError(f'Wrong size for dimension {dim}: got {actual}, expected {wanted}')

# ----------------------------------------------------------------------------


def profiled_function(fn):
    """Decorator: each call appears as a range named after the function in torch.profiler traces."""
    label = fn.__name__

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.profiler.record_function(label):
            result = fn(*args, **kwargs)
        return result
    return wrapper

# ----------------------------------------------------------------------------


class InfiniteSampler(torch.utils.data.Sampler):
    """Never-ending stream of dataset indices; replica `rank` of `num_replicas` gets every num_replicas-th one.

    Shuffled streams start from the permutation `np.random.RandomState(seed).shuffle` gives. After each
    position is visited, its entry trades places with one at most `window_size * len(dataset)` positions
    earlier, so the order drifts from pass to pass instead of repeating.
    """

    def __init__(self, dataset, rank=0, num_replicas=1, shuffle=True, seed=0, window_size=0.5):
        if len(dataset) == 0:
            raise ValueError('InfiniteSampler needs a non-empty dataset')
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f'rank {rank} is not one of {num_replicas} replicas')
        if not 0 <= window_size <= 1:
            raise ValueError(f'window_size must lie in [0, 1], got {window_size}')
        super().__init__()
        self.dataset = dataset
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size

    def __iter__(self):
        size = len(self.dataset)
        perm = np.arange(size)
        rng, window = None, 0
        if self.shuffle:
            rng = np.random.RandomState(self.seed)
            rng.shuffle(perm)
            window = int(np.rint(size * self.window_size))
        for step in itertools.count():
            pos = step % size
            if step % self.num_replicas == self.rank:
                yield perm[pos]
            if window >= 2:
                partner = (pos - rng.randint(window)) % size
                perm[[pos, partner]] = perm[[partner, pos]]

# ----------------------------------------------------------------------------
# Parameters and buffers: both are state that copies, snapshots and EMA have to carry.


def named_params_and_buffers(module):
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f'expected a torch.nn.Module, got {type(module).__name__}')
    return [*module.named_parameters(), *module.named_buffers()]


def params_and_buffers(module):
    return [tensor for _name, tensor in named_params_and_buffers(module)]


def _copy_problems(src_tensors, dst_tensors, require_all):
    """Human-readable reasons why dst cannot be filled from src (empty when it can)."""
    wrong_shape = [f'{name} (source {list(src_tensors[name].shape)}, destination {list(t.shape)})'
                   for name, t in dst_tensors if name in src_tensors and src_tensors[name].shape != t.shape]
    absent = [f'{name} {list(t.shape)}' for name, t in dst_tensors if require_all and name not in src_tensors]
    problems = []
    if wrong_shape:
        problems.append('shape mismatch: ' + ', '.join(wrong_shape))
    if absent:
        problems.append('missing from source: ' + ', '.join(absent))
    return problems


@torch.no_grad()
def copy_params_and_buffers(src_module, dst_module, require_all=False):
    """Overwrite each parameter/buffer of `dst_module` with the same-named tensor of `src_module`.

    All or nothing: if any shape differs (or, with `require_all`, a tensor is absent from the source),
    nothing is copied and one UserError lists every offending tensor. requires_grad flags of the
    destination stay as they were.
    """
    src_tensors = dict(named_params_and_buffers(src_module))
    dst_tensors = named_params_and_buffers(dst_module)
    problems = _copy_problems(src_tensors, dst_tensors, require_all)
    if problems:
        raise dnnlib.util.UserError(f'Cannot copy {type(src_module).__name__} into {type(dst_module).__name__}: '
                                    + '; '.join(problems))
    for name, target in dst_tensors:
        source = src_tensors.get(name)
        if source is not None:
            target.copy_(source.detach())

# ----------------------------------------------------------------------------
# Multi-GPU helpers


@contextlib.contextmanager
def ddp_sync(module, sync):
    """With sync=False, a DistributedDataParallel module skips its gradient all-reduce inside the block,
    so accumulation rounds exchange gradients only once. Plain modules are unaffected."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f'expected a torch.nn.Module, got {type(module).__name__}')
    defer = not sync and isinstance(module, torch.nn.parallel.DistributedDataParallel)
    with module.no_sync() if defer else contextlib.nullcontext():
        yield


def check_ddp_consistency(module, ignore_regex=None):
    """AssertionError unless every parameter and buffer equals rank 0's copy (collective: all ranks call it).

    Names are matched as `<ClassName>.<tensor path>`; those fully matching `ignore_regex` are skipped.
    """
    skip = re.compile(ignore_regex) if ignore_regex is not None else None
    for path, tensor in named_params_and_buffers(module):
        label = f'{type(module).__name__}.{path}'
        if skip is not None and skip.fullmatch(label):
            continue
        mine = tensor.detach()
        if mine.is_floating_point():
            mine = torch.nan_to_num(mine)  # NaN never equals itself; compare it as a number
        reference = mine.clone()
        torch.distributed.broadcast(reference, src=0)
        if not torch.equal(mine, reference):
            raise AssertionError(f'{label} differs from rank 0')

# ----------------------------------------------------------------------------
# Module summary table


def _trace_calls(module, inputs, max_nesting):
    """Run the module once; return its outputs and [(submodule, tensor outputs)] in the order calls finish,
    leaving out calls nested deeper than `max_nesting`."""
    depth = [0]
    calls = []

    def enter(_mod, _args):
        depth[0] += 1

    def leave(mod, _args, result):
        depth[0] -= 1
        if depth[0] > max_nesting:
            return
        items = result if isinstance(result, (tuple, list)) else [result]
        calls.append((mod, [t for t in items if isinstance(t, torch.Tensor)]))

    handles = []
    for sub in module.modules():
        handles.append(sub.register_forward_pre_hook(enter))
        handles.append(sub.register_forward_hook(leave))
    try:
        outputs = module(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, calls


def _format_table(rows):
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    return '\n'.join('  '.join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows)


def print_module_summary(module, inputs, max_nesting=3, skip_redundant=True):
    """Call `module(*inputs)`, print one row per submodule call (parameter and buffer counts, output shape and
    dtype) and return the outputs.

    Each tensor is counted once, for the innermost call that owns it; calls deeper than `max_nesting` fold
    into their parents. With `skip_redundant`, rows contributing nothing new are dropped.
    """
    if not isinstance(module, torch.nn.Module) or isinstance(module, torch.jit.ScriptModule):
        raise TypeError('print_module_summary needs an eager torch.nn.Module')
    if not isinstance(inputs, (tuple, list)):
        raise TypeError('inputs must be a tuple or list of positional arguments')
    outputs, calls = _trace_calls(module, inputs, max_nesting)

    names = {sub: path for path, sub in module.named_modules()}
    counted = set()
    rows = []
    total_params = total_buffers = 0
    for sub, results in calls:
        params = [t for t in sub.parameters() if id(t) not in counted]
        buffers = [t for t in sub.buffers() if id(t) not in counted]
        new_results = [t for t in results if id(t) not in counted]
        counted.update(id(t) for t in params + buffers + new_results)
        if skip_redundant and not (params or buffers or new_results):
            continue
        n_params = sum(t.numel() for t in params)
        n_buffers = sum(t.numel() for t in buffers)
        total_params += n_params
        total_buffers += n_buffers
        label = '<top-level>' if sub is module else names[sub]
        shapes = [str(list(t.shape)) for t in results] or ['-']
        dtypes = [str(t.dtype).rsplit('.', 1)[-1] for t in results] or ['-']
        suffix = ':0' if len(results) > 1 else ''
        rows.append([label + suffix, str(n_params or '-'), str(n_buffers or '-'), shapes[0], dtypes[0]])
        rows.extend([f'{label}:{k}', '-', '-', shapes[k], dtypes[k]] for k in range(1, len(results)))

    header = [type(module).__name__, 'Parameters', 'Buffers', 'Output shape', 'Datatype']
    rule = ['---'] * len(header)
    footer = ['Total', str(total_params), str(total_buffers), '-', '-']
    print()
    print(_format_table([header, rule, *rows, rule, footer]))
    print()
    return outputs
