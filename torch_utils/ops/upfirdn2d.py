"""Upsample, FIR-filter and downsample 2-D images in one op (upfirdn2d).

The operation, per channel plane:
  1. upsample by inserting `up - 1` zeros after every input pixel,
  2. pad with zeros (or crop, for negative padding),
  3. convolve with the 2-D FIR filter `f` (true convolution; cross-correlation if `flip_filter`),
  4. keep every `down`-th pixel.

Three implementations share that definition: 'ref' (plain PyTorch, the specification), 'cpu' (C++/OpenMP,
polyphase) and 'cuda'. The gradient of upfirdn2d is itself an upfirdn2d (up and down swapped, filter
flipped, padding adjusted), so the compiled impls support gradients of any order.
"""

import os

import numpy as np
import torch

from .. import custom_ops, misc

#----------------------------------------------------------------------------

_SOURCE_DIR = os.path.dirname(os.path.abspath(__file__))

def _cpu_plugin():
    return custom_ops.get_plugin(
        module_name='upfirdn2d_cpu_plugin',
        sources=['upfirdn2d_cpu.cpp'],
        headers=['upfirdn2d.h'],
        source_dir=_SOURCE_DIR,
        extra_cflags=['-O3', '-fopenmp'],
        extra_ldflags=['-fopenmp'],
    )

def _cuda_plugin():
    return custom_ops.get_plugin(
        module_name='upfirdn2d_cuda_plugin',
        sources=['upfirdn2d_cuda.cpp', 'upfirdn2d.cu'],
        headers=['upfirdn2d.h'],
        source_dir=_SOURCE_DIR,
        extra_cuda_cflags=['--use_fast_math'],
    )

#----------------------------------------------------------------------------
# Argument parsing shared by all impls.

def _parse_scaling(scaling):
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    assert isinstance(scaling, (list, tuple)) and len(scaling) == 2
    assert all(isinstance(s, int) for s in scaling)
    sx, sy = scaling
    assert sx >= 1 and sy >= 1
    return sx, sy

def _parse_padding(padding):
    if isinstance(padding, int):
        padding = [padding, padding]
    assert isinstance(padding, (list, tuple))
    assert all(isinstance(p, int) for p in padding)
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    assert len(padding) == 4
    padx0, padx1, pady0, pady1 = padding
    return padx0, padx1, pady0, pady1

def _get_filter_size(f):
    """Filter width and height; a 1-D filter is separable and applies along both axes."""
    if f is None:
        return 1, 1
    assert isinstance(f, torch.Tensor) and f.ndim in [1, 2]
    fw = f.shape[-1]
    fh = f.shape[0]
    assert fw >= 1 and fh >= 1
    return int(fw), int(fh)

#----------------------------------------------------------------------------

def setup_filter(f, device=torch.device('cpu'), normalize=True, flip_filter=False, gain=1, separable=None):
    r"""Convenience function to set up a 2-D FIR filter for `upfirdn2d()`.

    Args:
        f:           Filter taps as an array-like of rank 0, 1 or 2; None gives the identity [[1]].
        device:      Device of the returned tensor.
        normalize:   Scale the taps so that their sum is 1.
        flip_filter: Flip the filter along every axis.
        gain:        Overall gain of the filter; a separable filter gets gain**0.5 since it is applied twice.
        separable:   Keep a 1-D filter 1-D (applied along x, then y). None: only for 1-D filters with >= 8 taps.

    Returns:
        float32 tensor of shape [filter_height, filter_width] (2-D) or [filter_taps] (separable).
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    assert f.ndim in [0, 1, 2]
    assert f.numel() > 0
    if f.ndim == 0:
        f = f[np.newaxis]
    if separable is None:
        separable = (f.ndim == 1 and f.numel() >= 8)
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    assert f.ndim == (1 if separable else 2)
    if normalize:
        f /= f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)

#----------------------------------------------------------------------------

def _resolve_impl(impl, x):
    """'ref', 'cpu' or 'cuda' for this call (None: forced impl, else the best one that builds for x.device)."""
    return custom_ops.resolve_impl(impl, x, 'upfirdn2d', {'cpu': _cpu_plugin, 'cuda': _cuda_plugin})

def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl=None):
    r"""Pad, upsample, filter, and downsample a batch of 2-D images.

    Per channel: upsample by zero insertion (`up`), pad/crop (`padding`), convolve with `f`, and keep every
    `down`-th pixel. Output size along x: (in_w * upx + padx0 + padx1 - fw) // downx + 1 (same for y).

    Args:
        x:           Float tensor of shape [batch_size, num_channels, in_height, in_width].
        f:           Float32 FIR filter of shape [filter_height, filter_width] (non-separable),
                     [filter_taps] (separable), or None (identity).
        up:          Integer upsampling factor, int or [x, y].
        down:        Integer downsampling factor, int or [x, y].
        padding:     Padding relative to the upsampled image: int, [x, y] or [x_before, x_after, y_before,
                     y_after]; negative values crop.
        flip_filter: False = convolution, True = correlation.
        gain:        Overall scaling of the signal magnitude.
        impl:        'ref', 'cpu', 'cuda' or None (best for the tensor's device).

    Returns:
        Tensor of shape [batch_size, num_channels, out_height, out_width].
    """
    assert isinstance(x, torch.Tensor)
    impl = _resolve_impl(impl, x)
    if impl == 'ref':
        return _upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    # The compiled kernels do not differentiate w.r.t. the filter; the reference does.
    if f is not None and f.requires_grad and torch.is_grad_enabled():
        return _upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    return _upfirdn2d_plugin(impl=impl, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain).apply(x, f)

#----------------------------------------------------------------------------

@misc.profiled_function
def _upfirdn2d_ref(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Plain PyTorch upfirdn2d: the specification the compiled kernels must match."""
    assert isinstance(x, torch.Tensor) and x.ndim == 4
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    assert isinstance(f, torch.Tensor) and f.ndim in [1, 2]
    assert f.dtype.is_floating_point
    batch_size, num_channels, in_height, in_width = x.shape
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)

    # Upsample: place every input pixel at the top-left of an up x up cell of zeros.
    x = x.reshape([batch_size, num_channels, in_height, 1, in_width, 1])
    x = torch.nn.functional.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape([batch_size, num_channels, in_height * upy, in_width * upx])

    # Pad with zeros, then crop where the padding is negative.
    x = torch.nn.functional.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])
    x = x[:, :, max(-pady0, 0) : x.shape[2] - max(-pady1, 0), max(-padx0, 0) : x.shape[3] - max(-padx1, 0)]

    # conv2d computes a correlation; flip the taps for a true convolution.
    f = f * (gain ** (f.ndim / 2))
    f = f.to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))

    # Depthwise convolution; a separable filter runs along x, then along y.
    f = f[np.newaxis, np.newaxis].repeat([num_channels, 1] + [1] * f.ndim)
    if f.ndim == 4:
        x = torch.nn.functional.conv2d(x, f, groups=num_channels)
    else:
        x = torch.nn.functional.conv2d(x, f.unsqueeze(2), groups=num_channels)
        x = torch.nn.functional.conv2d(x, f.unsqueeze(3), groups=num_channels)

    # Downsample by keeping every down-th pixel.
    return x[:, :, ::downy, ::downx]

#----------------------------------------------------------------------------

_plugin_cache = dict()

def _upfirdn2d_plugin(impl, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Autograd Function running the compiled kernel; its backward is again this Function."""
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    key = (impl, upx, upy, downx, downy, padx0, padx1, pady0, pady1, bool(flip_filter), float(gain))
    if key in _plugin_cache:
        return _plugin_cache[key]

    class Upfirdn2dPlugin(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, f): # pylint: disable=arguments-differ
            assert isinstance(x, torch.Tensor) and x.ndim == 4
            if f is None:
                f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
            assert isinstance(f, torch.Tensor) and f.ndim in [1, 2]
            plugin = _cpu_plugin() if impl == 'cpu' else _cuda_plugin()
            y = x
            if f.ndim == 2:
                y = _run_kernel(plugin, y, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain)
            else:
                # Separable: an x pass, then a y pass, each with sqrt(gain).
                y = _run_kernel(plugin, y, f.unsqueeze(0), upx, 1, downx, 1, padx0, padx1, 0, 0, flip_filter, np.sqrt(gain))
                y = _run_kernel(plugin, y, f.unsqueeze(1), 1, upy, 1, downy, 0, 0, pady0, pady1, flip_filter, np.sqrt(gain))
            ctx.save_for_backward(f)
            ctx.x_shape = x.shape
            return y

        @staticmethod
        def backward(ctx, dy): # pylint: disable=arguments-differ
            f, = ctx.saved_tensors
            _, _, in_height, in_width = ctx.x_shape
            _, _, out_height, out_width = dy.shape
            fw, fh = _get_filter_size(f)
            # Transposed op: dy upsampled by `down`, filtered with the flipped filter, downsampled by `up`.
            p = [
                fw - padx0 - 1,
                in_width * upx - out_width * downx + padx0 - upx + 1,
                fh - pady0 - 1,
                in_height * upy - out_height * downy + pady0 - upy + 1,
            ]
            dx = None
            if ctx.needs_input_grad[0]:
                dx = _upfirdn2d_plugin(impl=impl, up=[downx, downy], down=[upx, upy], padding=p,
                    flip_filter=(not flip_filter), gain=gain).apply(dy, f)
            return dx, None

    _plugin_cache[key] = Upfirdn2dPlugin
    return Upfirdn2dPlugin

def _run_kernel(plugin, x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain):
    """One call of the compiled kernel; on the CPU, half-precision input runs in float32."""
    dtype = x.dtype
    if x.device.type == 'cpu' and dtype not in [torch.float32, torch.float64]:
        x = x.to(torch.float32)
    f = f.to(device=x.device, dtype=torch.float32)
    y = plugin.upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, bool(flip_filter), float(gain))
    return y.to(dtype)

#----------------------------------------------------------------------------

def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl=None):
    r"""Filter a batch of 2-D images with a FIR filter, keeping the size (for zero extra padding).

    Args:
        x:           Float tensor of shape [batch_size, num_channels, in_height, in_width].
        f:           Float32 FIR filter ([fh, fw], [taps] separable, or None).
        padding:     Extra padding: int, [x, y] or [x_before, x_after, y_before, y_after].
        flip_filter: False = convolution, True = correlation.
        gain:        Overall scaling of the signal magnitude.
        impl:        'ref', 'cpu', 'cuda' or None.

    Returns:
        Tensor of shape [batch_size, num_channels, out_height, out_width].
    """
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + fw // 2,
        padx1 + (fw - 1) // 2,
        pady0 + fh // 2,
        pady1 + (fh - 1) // 2,
    ]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)

def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl=None):
    r"""Upsample a batch of 2-D images by `up` with a FIR interpolation filter (output = input * up).

    The signal gain is multiplied by upx * upy so that the zero-inserted pixels do not dim the image.

    Args:
        x:           Float tensor of shape [batch_size, num_channels, in_height, in_width].
        f:           Float32 FIR filter ([fh, fw], [taps] separable, or None).
        up:          Integer upsampling factor, int or [x, y].
        padding:     Extra padding: int, [x, y] or [x_before, x_after, y_before, y_after].
        flip_filter: False = convolution, True = correlation.
        gain:        Overall scaling of the signal magnitude.
        impl:        'ref', 'cpu', 'cuda' or None.

    Returns:
        Tensor of shape [batch_size, num_channels, out_height, out_width].
    """
    upx, upy = _parse_scaling(up)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + (fw + upx - 1) // 2,
        padx1 + (fw - upx) // 2,
        pady0 + (fh + upy - 1) // 2,
        pady1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)

def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl=None):
    r"""Downsample a batch of 2-D images by `down` after FIR low-pass filtering (output = input // down).

    Args:
        x:           Float tensor of shape [batch_size, num_channels, in_height, in_width].
        f:           Float32 FIR filter ([fh, fw], [taps] separable, or None).
        down:        Integer downsampling factor, int or [x, y].
        padding:     Extra padding: int, [x, y] or [x_before, x_after, y_before, y_after].
        flip_filter: False = convolution, True = correlation.
        gain:        Overall scaling of the signal magnitude.
        impl:        'ref', 'cpu', 'cuda' or None.

    Returns:
        Tensor of shape [batch_size, num_channels, out_height, out_width].
    """
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + (fw - downx + 1) // 2,
        padx1 + (fw - downx) // 2,
        pady0 + (fh - downy + 1) // 2,
        pady1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)

#----------------------------------------------------------------------------
