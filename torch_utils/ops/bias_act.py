"""Fused bias + activation + gain + clamp, with first- and second-order gradients.

`impl='ref'` is the plain-PyTorch specification; 'cpu' and 'cuda' run one fused pass over memory
(bias_act_cpu.cpp, bias_act.cu) and give the same results, including double backward.
"""

import os

import numpy as np
import torch

import dnnlib

from .. import custom_ops

# ----------------------------------------------------------------------------
# Activation table: default alpha/gain, the kernels' index, which forward tensor the gradient needs
# ('x' = input, 'y' = output) and whether the second derivative is non-zero.

activation_funcs = {
    'linear':   dnnlib.EasyDict(func=lambda x, **_:        x,                                        def_alpha=0,   def_gain=1,          cuda_idx=1, ref='',  has_2nd_grad=False),
    'relu':     dnnlib.EasyDict(func=lambda x, **_:        torch.nn.functional.relu(x),              def_alpha=0,   def_gain=np.sqrt(2), cuda_idx=2, ref='y', has_2nd_grad=False),
    'lrelu':    dnnlib.EasyDict(func=lambda x, alpha, **_: torch.nn.functional.leaky_relu(x, alpha), def_alpha=0.2, def_gain=np.sqrt(2), cuda_idx=3, ref='y', has_2nd_grad=False),
    'tanh':     dnnlib.EasyDict(func=lambda x, **_:        torch.tanh(x),                            def_alpha=0,   def_gain=1,          cuda_idx=4, ref='y', has_2nd_grad=True),
    'sigmoid':  dnnlib.EasyDict(func=lambda x, **_:        torch.sigmoid(x),                         def_alpha=0,   def_gain=1,          cuda_idx=5, ref='y', has_2nd_grad=True),
    'elu':      dnnlib.EasyDict(func=lambda x, **_:        torch.nn.functional.elu(x),               def_alpha=0,   def_gain=1,          cuda_idx=6, ref='y', has_2nd_grad=True),
    'selu':     dnnlib.EasyDict(func=lambda x, **_:        torch.nn.functional.selu(x),              def_alpha=0,   def_gain=1,          cuda_idx=7, ref='y', has_2nd_grad=True),
    'softplus': dnnlib.EasyDict(func=lambda x, **_:        torch.nn.functional.softplus(x),          def_alpha=0,   def_gain=1,          cuda_idx=8, ref='y', has_2nd_grad=True),
    'swish':    dnnlib.EasyDict(func=lambda x, **_:        torch.sigmoid(x) * x,                     def_alpha=0,   def_gain=np.sqrt(2), cuda_idx=9, ref='x', has_2nd_grad=True),
}

# ----------------------------------------------------------------------------

_cpu_module = None
_cuda_module = None


def _cpu_plugin():
    global _cpu_module
    if _cpu_module is None:
        # -fno-trapping-math lets the compiler turn the activations' branches into vector selects; results are unchanged.
        _cpu_module = custom_ops.get_plugin('bias_act_cpu_plugin', sources=['bias_act_cpu.cpp'], headers=['bias_act.h'],
                                            source_dir=os.path.dirname(__file__), extra_cflags=['-fno-trapping-math'])
    return _cpu_module


def _cuda_plugin():
    global _cuda_module
    if _cuda_module is None:
        _cuda_module = custom_ops.get_plugin('bias_act_cuda_plugin', sources=['bias_act_cuda.cpp', 'bias_act.cu'],
                                             headers=['bias_act.h'], source_dir=os.path.dirname(__file__),
                                             extra_cuda_cflags=['--use_fast_math'])
    return _cuda_module


_plugins = {'cpu': _cpu_plugin, 'cuda': _cuda_plugin}
_kernel_dtypes = {'cpu': (torch.float32, torch.float64), 'cuda': (torch.float16, torch.float32, torch.float64)}

# ----------------------------------------------------------------------------


def _check_args(x, b, dim, act):
    if not isinstance(x, torch.Tensor):
        raise dnnlib.util.UserError(f'bias_act: x must be a tensor, got {type(x).__name__}')
    if act not in activation_funcs:
        raise dnnlib.util.UserError(f'bias_act: unknown activation {act!r}; choose from {sorted(activation_funcs)}')
    if not -x.ndim <= dim < x.ndim:
        raise dnnlib.util.UserError(f'bias_act: dim={dim} is out of range for a {x.ndim}-D tensor')
    dim = dim % x.ndim
    if b is not None:
        if not (isinstance(b, torch.Tensor) and b.ndim == 1 and b.shape[0] == x.shape[dim]):
            raise dnnlib.util.UserError(f'bias_act: b must be a 1-D tensor of length x.shape[{dim}] = {x.shape[dim]}')
        if b.dtype != x.dtype or b.device != x.device:
            raise dnnlib.util.UserError('bias_act: b must have the dtype and device of x')
    return dim


def _resolve_params(act, alpha, gain, clamp):
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return spec, alpha, gain, clamp


def bias_act(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl=None):
    r"""Add a bias along `dim`, apply an activation, scale by `gain` and clamp to [-clamp, clamp].

    Args:
        x:      Input tensor of any shape.
        b:      Bias, a 1-D tensor of length x.shape[dim], or None.
        dim:    The dimension of x that `b` runs along.
        act:    One of `activation_funcs` ('linear', 'relu', 'lrelu', 'tanh', 'sigmoid', 'elu', 'selu',
                'softplus', 'swish').
        alpha:  Shape parameter of the activation (lrelu's negative slope); None = the act's default.
        gain:   Output scale; None = the act's default (sqrt(2) for relu, lrelu and swish, else 1).
        clamp:  Clamp the output to [-clamp, clamp]; None = no clamping.
        impl:   'ref', 'cpu', 'cuda' or None (best for x's device, see custom_ops.resolve_impl).

    Returns:
        Tensor of the shape, dtype and memory layout of x.
    """
    dim = _check_args(x, b, dim, act)
    requested = impl if impl is not None else custom_ops.forced_impl()
    impl = custom_ops.resolve_impl(impl, x, 'bias_act', _plugins)
    if impl != 'ref' and x.dtype not in _kernel_dtypes[impl]:
        if requested is not None:
            raise dnnlib.util.UserError(f"bias_act: impl={impl!r} supports {', '.join(map(str, _kernel_dtypes[impl]))}, not {x.dtype}")
        impl = 'ref'  # e.g. bfloat16: only the reference handles it
    if impl == 'ref':
        return _bias_act_ref(x=x, b=b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    _, alpha, gain, clamp = _resolve_params(act, alpha, gain, clamp)
    if b is None and act == 'linear' and gain == 1 and clamp < 0:
        return x
    # Make the layout dense outside the autograd Function, so that the copy stays on the graph and the
    # second-order gradient reaches the caller's x.
    x = x.contiguous(memory_format=_memory_format(x))
    b = b.contiguous() if b is not None else None
    return _fused_bias_act(impl=impl, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp).apply(x, b)

# ----------------------------------------------------------------------------


def _bias_act_ref(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None):
    """The specification, in plain PyTorch ops."""
    spec, alpha, gain, clamp = _resolve_params(act, alpha, gain, clamp)
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha=alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x

# ----------------------------------------------------------------------------

_fused_cache = dict()


def _memory_format(x):
    # Keep channels_last tensors channels_last (the kernels work on any dense layout); anything else
    # becomes contiguous.
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _fused_bias_act(impl, dim, act, alpha, gain, clamp):
    """The autograd Function of the compiled kernels for one parameter set (cached)."""
    key = (impl, dim, act, alpha, gain, clamp)
    if key in _fused_cache:
        return _fused_cache[key]
    spec = activation_funcs[act]
    plugin = _plugins[impl]
    save_x = 'x' in spec.ref or spec.has_2nd_grad
    save_y = 'y' in spec.ref or clamp >= 0   # The clamp mask of the gradient is read off y.
    is_identity = (act == 'linear' and gain == 1 and clamp < 0)

    def empty(x):
        return x.new_empty([0])

    class BiasActFused(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, b):  # pylint: disable=arguments-differ
            ctx.memory_format = _memory_format(x)
            b = b if b is not None else empty(x)
            y = plugin().bias_act(x, b, empty(x), empty(x), empty(x), 0, dim, spec.cuda_idx, alpha, gain, clamp)
            ctx.save_for_backward(x if save_x else empty(x), b if save_x else empty(x), y if save_y else empty(x))
            ctx.has_bias = b.numel() > 0
            return y

        @staticmethod
        def backward(ctx, dy):  # pylint: disable=arguments-differ
            dy = dy.contiguous(memory_format=ctx.memory_format)
            x, b, y = ctx.saved_tensors
            dx = db = None
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
                dx = dy if is_identity else BiasActFusedGrad.apply(dy, x, b, y)
            if ctx.needs_input_grad[1] and ctx.has_bias:
                db = dx.sum([i for i in range(dx.ndim) if i != dim])
            return dx, db

    class BiasActFusedGrad(torch.autograd.Function):
        # dx = f'(x + b) * gain * dy, itself differentiable: w.r.t. dy it is linear (this Function again),
        # w.r.t. x and b the kernel's second-order mode gives it.
        @staticmethod
        def forward(ctx, dy, x, b, y):  # pylint: disable=arguments-differ
            ctx.memory_format = _memory_format(dy)
            dx = plugin().bias_act(dy, b, x, y, empty(dy), 1, dim, spec.cuda_idx, alpha, gain, clamp)
            ctx.save_for_backward(dy if spec.has_2nd_grad else empty(dy), x, b, y)
            return dx

        @staticmethod
        def backward(ctx, d_dx):  # pylint: disable=arguments-differ
            d_dx = d_dx.contiguous(memory_format=ctx.memory_format)
            dy, x, b, y = ctx.saved_tensors
            d_dy = d_x = d_b = None
            if ctx.needs_input_grad[0]:
                d_dy = BiasActFusedGrad.apply(d_dx, x, b, y)
            if spec.has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
                d_x = plugin().bias_act(d_dx, b, x, y, dy, 2, dim, spec.cuda_idx, alpha, gain, clamp)
            if spec.has_2nd_grad and ctx.needs_input_grad[2] and b.numel() > 0:
                d_b = d_x.sum([i for i in range(d_x.ndim) if i != dim])
            return d_dy, d_x, d_b, None

    _fused_cache[key] = BiasActFused
    return BiasActFused

# ----------------------------------------------------------------------------
