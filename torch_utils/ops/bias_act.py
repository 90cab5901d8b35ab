"""bias_act: y = clamp(act(x + b) * gain, -clamp, +clamp) in one op, differentiable twice.

Three implementations compute the same thing: 'ref' writes the formula with ordinary PyTorch ops (the
specification, and what the official StyleGAN2-ADA code computes), 'cpu' and 'cuda' make a single pass over
memory (bias_act_cpu.cpp, bias_act.cu; the per-element math lives in bias_act.h). The compiled paths give the
first and second derivatives through the same kernels, which the R1 and path-length penalties need.
"""

import dataclasses
import math
import os

import torch

import dnnlib

from .. import custom_ops

# ----------------------------------------------------------------------------
# The activations. Per entry: the PyTorch formula, default alpha and gain, the kernels' activation code
# (enum in bias_act.h), which forward tensor the first derivative is computed from ('x' = input, 'y' =
# output, '' = none) and whether the second derivative can be non-zero.


def _activation(formula, code, def_gain=1.0, def_alpha=0.0, ref='y', has_2nd_grad=True):
    return dnnlib.EasyDict(func=formula, cuda_idx=code, def_gain=def_gain, def_alpha=def_alpha, ref=ref,
                           has_2nd_grad=has_2nd_grad)


_F = torch.nn.functional
_SQRT2 = math.sqrt(2)

activation_funcs = {
    'linear':   _activation(lambda v, alpha: v, 1, ref='', has_2nd_grad=False),
    'relu':     _activation(lambda v, alpha: _F.relu(v), 2, def_gain=_SQRT2, has_2nd_grad=False),
    'lrelu':    _activation(lambda v, alpha: _F.leaky_relu(v, alpha), 3, def_gain=_SQRT2, def_alpha=0.2,
                            has_2nd_grad=False),
    'tanh':     _activation(lambda v, alpha: torch.tanh(v), 4),
    'sigmoid':  _activation(lambda v, alpha: torch.sigmoid(v), 5),
    'elu':      _activation(lambda v, alpha: _F.elu(v), 6),
    'selu':     _activation(lambda v, alpha: _F.selu(v), 7),
    'softplus': _activation(lambda v, alpha: _F.softplus(v), 8),
    'swish':    _activation(lambda v, alpha: v * torch.sigmoid(v), 9, def_gain=_SQRT2, ref='x'),
}

# ----------------------------------------------------------------------------
# Plugins: built on first use, cached on disk by custom_ops.

_HERE = os.path.dirname(os.path.abspath(__file__))

# Resolved once per process (custom_ops.Plugin): later calls return the loaded module without touching the sources.
# -fno-trapping-math lets the compiler turn the activations' branches into vector selects (same results).
_cpu_plugin = custom_ops.Plugin('bias_act_cpu_plugin', sources=['bias_act_cpu.cpp'], headers=['bias_act.h'],
                                source_dir=_HERE, extra_cflags=['-fno-trapping-math'])
_cuda_plugin = custom_ops.Plugin('bias_act_cuda_plugin', sources=['bias_act_cuda.cpp', 'bias_act.cu'],
                                 headers=['bias_act.h'], source_dir=_HERE, extra_cuda_cflags=['--use_fast_math'])
_plugins = {'cpu': _cpu_plugin, 'cuda': _cuda_plugin}


def _self_check(plugin, device):
    """One tiny launch (a StyleGAN layer's lrelu + bias + gain + clamp, float32) against 'ref'.

    The inputs are multiples of 1/8 and the gain 2, so both sides are exact; the clamp cuts some values.
    """
    x = ((torch.arange(2 * 3 * 4 * 5, device=device) % 11 - 5) / 8).reshape([2, 3, 4, 5])
    b = torch.tensor([0.25, -0.5, 0.125], device=device)
    op = _Setting.make('ref', 1, 'lrelu', None, 2.0, 1.0)
    blank = x.new_empty([0])
    got, _ = plugin.bias_act(x, b, blank, blank, blank, 0, op.dim, activation_funcs[op.act].cuda_idx, op.alpha,
                             op.gain, op.clamp, False)
    custom_ops.check_close('bias_act', got, _reference(x, b, op), 1e-6)


_kernel_dtypes = {'cpu': (torch.float32, torch.float64), 'cuda': (torch.float16, torch.float32, torch.float64)}

# ----------------------------------------------------------------------------


def bias_act(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl=None):
    r"""Add bias `b` along dimension `dim` of `x`, apply activation `act`, multiply by `gain`, clamp to ±`clamp`.

    Args:
        x:      Input tensor, any shape.
        b:      None, or a 1-D tensor with x.shape[dim] entries (x's dtype and device).
        dim:    Dimension of x along which b is added (negative counts from the end).
        act:    Name of the activation, a key of `activation_funcs`.
        alpha:  Activation parameter (the negative slope of 'lrelu'); None takes the table's default.
        gain:   Output scale; None takes the table's default (sqrt(2) for relu, lrelu and swish, else 1).
        clamp:  Clamp the scaled output to [-clamp, clamp]; None leaves it unbounded.
        impl:   'ref', 'cpu', 'cuda', or None for the fastest one that works for x's device.

    Returns:
        A tensor like x (shape, dtype, and channels_last layout where x has it).
    """
    dim = _validate(x, b, dim, act)
    named = impl if impl is not None else custom_ops.forced_impl()
    impl = custom_ops.resolve_impl(impl, x, 'bias_act', _plugins, self_check=_self_check)
    if impl != 'ref' and x.dtype not in _kernel_dtypes[impl]:
        if named is not None:
            supported = ', '.join(str(t) for t in _kernel_dtypes[impl])
            raise dnnlib.util.UserError(f'bias_act: impl={impl!r} handles {supported}, not {x.dtype}')
        impl = 'ref'  # e.g. bfloat16 under impl=None
    op = _Setting.make(impl, dim, act, alpha, gain, clamp)
    if impl == 'ref':
        return _reference(x, b, op)
    if b is None and op.is_identity:
        return x
    # The layout change happens outside the autograd Functions so that it is part of the graph, and the
    # second derivative finds its way back to the caller's tensors.
    fmt = _memory_format(x)
    return _BiasActForward.apply(x.contiguous(memory_format=fmt), None if b is None else b.contiguous(), op)


def _validate(x, b, dim, act):
    """Check the arguments users get wrong; returns dim as a non-negative index."""
    if not isinstance(x, torch.Tensor):
        raise dnnlib.util.UserError(f'bias_act: x must be a tensor, got {type(x).__name__}')
    if act not in activation_funcs:
        raise dnnlib.util.UserError(f'bias_act: unknown activation {act!r}; choose from {sorted(activation_funcs)}')
    if dim < -x.ndim or dim >= x.ndim:
        raise dnnlib.util.UserError(f'bias_act: dim={dim} is out of range for a {x.ndim}-D tensor')
    dim %= x.ndim
    if b is None:
        return dim
    if not isinstance(b, torch.Tensor) or list(b.shape) != [x.shape[dim]]:
        raise dnnlib.util.UserError(f'bias_act: b must be a 1-D tensor of length x.shape[{dim}] = {x.shape[dim]}')
    if (b.dtype, b.device) != (x.dtype, x.device):
        raise dnnlib.util.UserError('bias_act: b must have the dtype and device of x')
    return dim


def _memory_format(t):
    """channels_last for 4-D tensors stored that way (the kernels keep it), contiguous for everything else."""
    channels_last = t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last and not t.is_contiguous() else torch.contiguous_format

# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Setting:
    """Everything about one call except the tensors: resolved defaults plus what the backward pass keeps."""
    impl: str
    dim: int
    act: str
    alpha: float
    gain: float
    clamp: float            # negative: no clamping

    @staticmethod
    def make(impl, dim, act, alpha, gain, clamp):
        table = activation_funcs[act]
        return _Setting(impl=impl, dim=dim, act=act,
                        alpha=float(table.def_alpha if alpha is None else alpha),
                        gain=float(table.def_gain if gain is None else gain),
                        clamp=-1.0 if clamp is None else float(clamp))

    @property
    def curved(self):       # act'' is not identically zero
        return activation_funcs[self.act].has_2nd_grad

    @property
    def keeps_x(self):      # swish's derivatives read x; the curved ones send their 2nd derivative to x
        return activation_funcs[self.act].ref == 'x' or self.curved

    @property
    def keeps_y(self):      # act' read off the output, and the clamp mask, which is where |y| reached clamp
        return activation_funcs[self.act].ref == 'y' or self.clamp >= 0

    @property
    def is_identity(self):
        return self.act == 'linear' and self.gain == 1 and self.clamp < 0

    def kernel(self, mode, values, b=None, x=None, y=None, first_grad=None, sum_bias=False):
        """Run the compiled kernel in `mode` (0 forward, 1 act', 2 act''); returns (result, per-bias sums or None)."""
        blank = values.new_empty([0])
        pick = lambda t: blank if t is None else t  # noqa: E731
        result, sums = _plugins[self.impl]().bias_act(
            values, pick(b), pick(x), pick(y), pick(first_grad), mode, self.dim,
            activation_funcs[self.act].cuda_idx, self.alpha, self.gain, self.clamp, bool(sum_bias))
        return result, (sums if sum_bias else None)


def _reference(x, b, op):
    """The formula with stock PyTorch ops; autograd supplies every derivative."""
    if b is not None:
        x = x + b.reshape([x.shape[op.dim] if i == op.dim else 1 for i in range(x.ndim)])
    y = activation_funcs[op.act].func(x, op.alpha)
    if op.gain != 1:
        y = y * op.gain
    return y if op.clamp < 0 else torch.clamp(y, -op.clamp, op.clamp)

# ----------------------------------------------------------------------------
# Autograd for the compiled kernels. _BiasActForward's backward is _BiasActGrad, whose own backward uses
# _BiasActGrad again (the first derivative is linear in the incoming gradient) and kernel mode 2 (act'').


class _BiasActForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, op):  # pylint: disable=arguments-differ
        y, _ = op.kernel(0, x, b)
        ctx.op, ctx.fmt = op, _memory_format(x)
        ctx.save_for_backward(x if op.keeps_x else None, b if op.keeps_x else None, y if op.keeps_y else None)
        return y

    @staticmethod
    def backward(ctx, gy):  # pylint: disable=arguments-differ
        x, b, y = ctx.saved_tensors
        want_x, want_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (want_x or want_b):
            return None, None, None
        gx, gb = _BiasActGrad.apply(gy.contiguous(memory_format=ctx.fmt), x, b, y, ctx.op, want_b)
        return (gx if want_x else None), gb, None


class _BiasActGrad(torch.autograd.Function):
    """(gy, x, b, y) -> (gx, gb): gx = gy * act'(x + b) * gain where unclamped, gb = gx summed along all but dim."""

    @staticmethod
    def forward(ctx, gy, x, b, y, op, with_gb):  # pylint: disable=arguments-differ
        # x, b and y are None where the activation does not read them; gb is summed from gx regardless.
        gx, gb = op.kernel(1, gy, b, x, y, sum_bias=with_gb)
        ctx.op, ctx.fmt, ctx.shape = op, _memory_format(gy), gy.shape
        ctx.save_for_backward(gy if op.curved else None, x, b, y)
        ctx.set_materialize_grads(False)
        return gx, gb

    @staticmethod
    def backward(ctx, ggx, ggb):  # pylint: disable=arguments-differ
        gy, x, b, y = ctx.saved_tensors
        op = ctx.op
        if ggb is not None:  # gb is a sum of gx: its gradient spreads evenly back over gx
            shape = ctx.shape
            spread = ggb.reshape([-1 if i == op.dim else 1 for i in range(len(shape))]).expand(shape)
            ggx = spread if ggx is None else ggx + spread
        if ggx is None:
            return None, None, None, None, None, None
        ggx = ggx.contiguous(memory_format=ctx.fmt)
        want_gy, want_x, want_b = ctx.needs_input_grad[:3]
        d_gy = d_x = d_b = None
        if want_gy:
            d_gy, _ = _BiasActGrad.apply(ggx, x, b, y, op, False)
        if op.curved and (want_x or want_b):
            d_x, d_b = op.kernel(2, ggx, b, x, y, first_grad=gy, sum_bias=want_b)
        return d_gy, (d_x if want_x else None), d_b, None, None, None
