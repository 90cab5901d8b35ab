"""upfirdn2d: upsample, FIR-filter and downsample a batch of images, each channel plane on its own.

Along each axis, with factors `up`, `down`, padding (p0, p1) and filter taps g (f itself for a correlation,
i.e. flip_filter=True; f reversed for a true convolution, the default):

    u = x with up - 1 zeros after every sample           (length n * up)
    v = u with p0 zeros before and p1 after it          (a negative count crops instead)
    y[o] = gain * sum_k g[k] * v[o * down + k]          (so len(y) = (n * up + p0 + p1 - taps) // down + 1)

A 2-D filter [fh, fw] acts on both axes at once; a 1-D filter is separable and runs along x, then along y,
each pass with sqrt(gain). 'ref' spells this out with PyTorch ops; 'cpu' (upfirdn2d_cpu.cpp, polyphase) and
'cuda' (upfirdn2d.cu) compute it directly. The derivative w.r.t. x is again an upfirdn2d (factors swapped,
filter reversed, see _Resampling.transposed), so the compiled paths are differentiable to any order.
"""

import dataclasses
import os

import torch

import dnnlib

from .. import custom_ops

# ----------------------------------------------------------------------------

_HERE = os.path.dirname(os.path.abspath(__file__))


# Resolved once per process (custom_ops.Plugin): later calls return the loaded module without touching the sources.
_cpu_plugin = custom_ops.Plugin('upfirdn2d_cpu_plugin', sources=['upfirdn2d_cpu.cpp'], headers=['upfirdn2d.h'],
                                source_dir=_HERE)
_cuda_plugin = custom_ops.Plugin('upfirdn2d_cuda_plugin', sources=['upfirdn2d_cuda.cpp', 'upfirdn2d.cu'],
                                 headers=['upfirdn2d.h'], source_dir=_HERE, extra_cuda_cflags=['--use_fast_math'])


def _resolve_impl(impl, x):
    """The implementation for this call: impl, or under None the forced one or the best that builds for x."""
    return custom_ops.resolve_impl(impl, x, 'upfirdn2d', {'cpu': _cpu_plugin, 'cuda': _cuda_plugin},
                                   self_check=_self_check)


def _self_check(plugin, device):
    """One tiny launch per layout the networks use (NCHW float32; channels_last float16 on a GPU) against 'ref'.

    The values are multiples of 1/4 and the taps of 1/64, so both sides are exact in float32 and within
    float16 rounding of the output (|y| < 2) in float16.
    """
    f = setup_filter([1, 3, 3, 1], device=device)
    x = ((torch.arange(2 * 3 * 5 * 6, device=device) % 7 - 3) / 4).reshape([2, 3, 5, 6])
    cases = [(x, 1e-6)]
    if device.type == 'cuda':
        cases.append((x.half().contiguous(memory_format=torch.channels_last), 2e-3))
    for xs, tolerance in cases:
        for up, down in [(2, 1), (1, 2)]:
            plan = _Resampling.make(xs, f, up, down, _aligned_padding(f, 0, up=up, down=down), False, up * up)
            got = plan.run(plugin, xs, f)
            custom_ops.check_close('upfirdn2d', got.float(), _reference(xs.float(), f, plan), tolerance)

# ----------------------------------------------------------------------------
# Argument forms: factors as int or [x, y]; padding as int, [x, y] or [x0, x1, y0, y1].


def _xy(value, what):
    pair = [value, value] if isinstance(value, int) else list(value) if isinstance(value, (list, tuple)) else None
    if pair is None or len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise dnnlib.util.UserError(f'upfirdn2d: {what} must be a positive int or [x, y] of them, got {value!r}')
    return tuple(pair)


def _sides(padding):
    values = [padding] if isinstance(padding, int) else list(padding) if isinstance(padding, (list, tuple)) else []
    if len(values) not in (1, 2, 4) or not all(isinstance(v, int) for v in values):
        raise dnnlib.util.UserError(f'upfirdn2d: padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding!r}')
    if len(values) == 1:
        values = values * 4
    elif len(values) == 2:
        values = [values[0], values[0], values[1], values[1]]
    return tuple(values)


def _taps(f):
    """(width, height) of a filter in taps; a 1-D filter runs along both axes, None is a single tap."""
    if f is None:
        return 1, 1
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2) or f.numel() == 0:
        raise dnnlib.util.UserError('upfirdn2d: f must be None or a non-empty 1-D or 2-D tensor')
    return int(f.shape[-1]), int(f.shape[0])


def _aligned_padding(f, padding, up=1, down=1):
    """padding plus what keeps the resampled image centred on the input: in total taps - down per axis,
    (taps + up - down) // 2 of it before the image."""
    (upx, upy), (downx, downy) = _xy(up, 'up'), _xy(down, 'down')
    fw, fh = _taps(f)
    x0, x1, y0, y1 = _sides(padding)
    before_x, before_y = (fw + upx - downx) // 2, (fh + upy - downy) // 2
    return [x0 + before_x, x1 + fw - downx - before_x, y0 + before_y, y1 + fh - downy - before_y]

# ----------------------------------------------------------------------------


def setup_filter(f, device=torch.device('cpu'), normalize=True, flip_filter=False, gain=1, separable=None):
    r"""Turn filter taps into the float32 tensor that upfirdn2d() and its wrappers take.

    Args:
        f:           Taps: a scalar, a 1-D or a 2-D array-like; None means the single tap 1.
        device:      Where the result lives.
        normalize:   Divide by the sum of the taps (unit DC gain).
        flip_filter: Reverse the taps along every axis.
        gain:        Overall signal gain; a separable filter carries gain ** 0.5, as it is applied twice.
        separable:   Keep 1-D taps 1-D (applied per axis). None: only 1-D filters of 8 or more taps.

    Returns:
        float32 tensor [taps] (separable) or [fh, fw].
    """
    taps = torch.as_tensor(1 if f is None else f, dtype=torch.float32)
    if taps.ndim > 2 or taps.numel() == 0:
        raise dnnlib.util.UserError(f'setup_filter: expected a scalar, 1-D or 2-D filter, got shape {list(taps.shape)}')
    taps = taps.reshape([1]) if taps.ndim == 0 else taps
    if separable is None:
        separable = taps.ndim == 1 and taps.numel() >= 8
    if separable and taps.ndim != 1:
        raise dnnlib.util.UserError('setup_filter: only a 1-D filter can be separable')
    if not separable and taps.ndim == 1:
        taps = taps[:, None] * taps[None, :]
    if normalize:
        taps = taps / taps.sum()
    if flip_filter:
        taps = taps.flip(list(range(taps.ndim)))
    return (taps * gain ** (taps.ndim / 2)).to(device)


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl=None):
    r"""Upsample by zero insertion, pad, filter with `f`, keep every `down`-th pixel (see the module doc).

    Args:
        x:           [batch, channels, height, width] floating-point tensor.
        f:           Filter from setup_filter(): float32 [fh, fw], [taps] (separable) or None (identity).
        up:          Upsampling factor, int or [x, y].
        down:        Downsampling factor, int or [x, y].
        padding:     Zeros added to the upsampled image (negative crops): int, [x, y] or [x0, x1, y0, y1].
        flip_filter: True correlates with f as given; False (default) convolves.
        gain:        Factor on the output.
        impl:        'ref', 'cpu', 'cuda' or None (the best available for x's device).

    Returns:
        [batch, channels, out_height, out_width] tensor of x's dtype.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise dnnlib.util.UserError('upfirdn2d: x must be a 4-D tensor [batch, channels, height, width]')
    plan = _Resampling.make(x, f, up, down, padding, flip_filter, gain)
    impl = _resolve_impl(impl, x)
    # The compiled kernels have no derivative w.r.t. the filter: a trainable filter takes the reference path.
    if impl == 'ref' or (f is not None and f.requires_grad and torch.is_grad_enabled()):
        return _reference(x, f, plan)
    ones = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    return _Upfirdn2dKernel.apply(x, ones if f is None else f, plan, impl)


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl=None):
    r"""Filter each channel of x with f; the output keeps x's size (plus any extra `padding`).

    Arguments as in upfirdn2d(); `padding` is added to the centring padding.
    """
    return upfirdn2d(x, f, padding=_aligned_padding(f, padding), flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl=None):
    r"""Upsample x by `up` (int or [x, y]) with interpolation filter f: the output is `up` times larger.

    The gain is multiplied by upx * upy to make up for the inserted zeros. Other arguments as in upfirdn2d().
    """
    upx, upy = _xy(up, 'up')
    return upfirdn2d(x, f, up=up, padding=_aligned_padding(f, padding, up=up), flip_filter=flip_filter,
                     gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl=None):
    r"""Low-pass x with f and keep every `down`-th pixel (int or [x, y]): the output is `down` times smaller.

    Arguments as in upfirdn2d().
    """
    return upfirdn2d(x, f, down=down, padding=_aligned_padding(f, padding, down=down), flip_filter=flip_filter,
                     gain=gain, impl=impl)

# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Resampling:
    """The resampling of one call, already checked: factors and padding per axis, filter sense, gain."""
    upx: int
    upy: int
    downx: int
    downy: int
    pad: tuple              # (x0, x1, y0, y1)
    flip: bool
    gain: float

    @staticmethod
    def make(x, f, up, down, padding, flip_filter, gain):
        (upx, upy), (downx, downy) = _xy(up, 'up'), _xy(down, 'down')
        plan = _Resampling(upx, upy, downx, downy, _sides(padding), bool(flip_filter), float(gain))
        fw, fh = _taps(f)
        height, width = plan.output_size(x.shape[2], x.shape[3], fw, fh)
        if height < 1 or width < 1:
            raise dnnlib.util.UserError(f'upfirdn2d: a {x.shape[2]}x{x.shape[3]} input gives an empty output '
                                        f'({height}x{width}) with this filter, padding and factors')
        return plan

    def output_size(self, height, width, fw, fh):
        x0, x1, y0, y1 = self.pad
        out_height = (height * self.upy + y0 + y1 - fh) // self.downy + 1
        out_width = (width * self.upx + x0 + x1 - fw) // self.downx + 1
        return out_height, out_width

    def transposed(self, in_height, in_width, out_height, out_width, fw, fh):
        """The upfirdn2d that maps a gradient w.r.t. the output back to one w.r.t. the input.

        By axis, the input gradient is sum over o of dy[o] * g[i * up + p0 - o * down]: dy upsampled by `down`,
        correlated with the reversed taps after taps - 1 - p0 zeros, sampled every `up`-th; the trailing
        padding is whatever makes in_width (in_height) samples come out.
        """
        x0, _, y0, _ = self.pad
        bx, by = fw - 1 - x0, fh - 1 - y0
        ax = (in_width - 1) * self.upx + fw - out_width * self.downx - bx
        ay = (in_height - 1) * self.upy + fh - out_height * self.downy - by
        return _Resampling(self.downx, self.downy, self.upx, self.upy, (bx, ax, by, ay), not self.flip, self.gain)

    def run(self, plugin, x, f):
        """Call the compiled kernel; a separable filter runs as an x pass and a y pass, each with sqrt(gain)."""
        x0, x1, y0, y1 = self.pad
        if f.ndim == 2:
            return _kernel_call(plugin, x, f, self.upx, self.upy, self.downx, self.downy, x0, x1, y0, y1, self.flip,
                                self.gain)
        half_gain = self.gain ** 0.5
        x = _kernel_call(plugin, x, f[None, :], self.upx, 1, self.downx, 1, x0, x1, 0, 0, self.flip, half_gain)
        return _kernel_call(plugin, x, f[:, None], 1, self.upy, 1, self.downy, 0, 0, y0, y1, self.flip, half_gain)


def _kernel_call(plugin, x, f, *geometry):
    # The CPU kernel works in float32/float64; other float types (bfloat16, float16) go through float32.
    widened = x.device.type == 'cpu' and x.dtype not in (torch.float32, torch.float64)
    y = plugin.upfirdn2d(x.float() if widened else x, f.to(device=x.device, dtype=torch.float32), *geometry)
    return y.to(x.dtype)


def _reference(x, f, plan):
    """The definition with stock PyTorch ops (differentiable in x and f through autograd)."""
    batch, channels, height, width = x.shape
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if plan.upx > 1 or plan.upy > 1:
        spread = x.new_zeros([batch, channels, height * plan.upy, width * plan.upx])
        spread[:, :, ::plan.upy, ::plan.upx] = x
        x = spread
    x = torch.nn.functional.pad(x, list(plan.pad))  # negative amounts crop
    # conv2d correlates: reversing the taps makes it the convolution that flip_filter=False asks for.
    taps = f.to(x.dtype) * plan.gain ** (f.ndim / 2)
    if not plan.flip:
        taps = taps.flip(list(range(f.ndim)))
    conv = lambda v, k: torch.nn.functional.conv2d(  # noqa: E731  depthwise: one filter per channel
        v, k[None, None].expand(channels, 1, *k.shape), groups=channels)
    x = conv(x, taps) if f.ndim == 2 else conv(conv(x, taps[None, :]), taps[:, None])
    return x[:, :, ::plan.downy, ::plan.downx]  # decimation as its own step, as in the definition


class _Upfirdn2dKernel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, f, plan, impl):  # pylint: disable=arguments-differ
        plugin = _cpu_plugin() if impl == 'cpu' else _cuda_plugin()  # from memory: resolved in upfirdn2d()
        y = plan.run(plugin, x, f)
        ctx.plan, ctx.impl, ctx.sizes = plan, impl, (x.shape[2], x.shape[3], y.shape[2], y.shape[3])
        ctx.save_for_backward(f)
        return y

    @staticmethod
    def backward(ctx, dy):  # pylint: disable=arguments-differ
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        (f,) = ctx.saved_tensors
        fw, fh = _taps(f)
        back = ctx.plan.transposed(*ctx.sizes, fw, fh)
        return _Upfirdn2dKernel.apply(dy, f, back, ctx.impl), None, None, None
