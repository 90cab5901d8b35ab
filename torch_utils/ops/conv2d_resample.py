"""conv2d_resample: a 2-D convolution fused with FIR up- or downsampling, in the cheapest equivalent order.

What it computes (every branch below equals this; tests/test_conv2d_resample.py checks each one):
    1. upfirdn2d(x, f, up=up, padding=P, gain=up**2)  -- only when up > 1; otherwise just the padding P
    2. conv2d with w (no padding; flip_weight=False makes it a true convolution)
    3. upfirdn2d(., f, down=down)                      -- only when down > 1
P is the caller's `padding` plus the centring padding of upsample2d and/or downsample2d, all applied in step 1.
Convolution and FIR filtering are both linear and shift-invariant, so they commute; the fast paths move the
padding and the resampling to wherever the fewest pixels get touched.
"""

import torch

import dnnlib

from . import conv2d_gradfix, upfirdn2d, winograd

# ----------------------------------------------------------------------------


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    r"""Convolve x with w, upsampling before and/or downsampling after with the FIR filter f.

    Args:
        x:           [batch, in_channels, height, width].
        w:           [out_channels, in_channels // groups, kh, kw], x's dtype.
        f:           float32 filter from upfirdn2d.setup_filter() for the resampling, or None.
        up:          Integer upsampling factor (>= 1).
        down:        Integer downsampling factor (>= 1).
        padding:     Padding of the (upsampled) input: int, [x, y] or [x0, x1, y0, y1]; applied once, up front.
        groups:      Grouped convolution: in and out channels split into this many groups.
        flip_weight: True = cross-correlation with w (torch's conv2d); False = true convolution.
        flip_filter: True = correlate with f; False = convolve with it.

    Returns:
        [batch, out_channels, out_height, out_width].
    """
    _check(x, w, f, up, down, groups)
    kh, kw = int(w.shape[2]), int(w.shape[3])
    pad = upfirdn2d._sides(padding)
    if up > 1:
        pad = _add(pad, upfirdn2d._aligned_padding(f, 0, up=up))
    if down > 1:
        pad = _add(pad, upfirdn2d._aligned_padding(f, 0, down=down))
    resample = dict(flip_filter=flip_filter)

    if up == 1 and down == 1:
        x0, x1, y0, y1 = pad
        if x0 == x1 >= 0 and y0 == y1 >= 0:  # an ordinary padded convolution
            return _conv(x, w, padding=[y0, x0], groups=groups, flip=flip_weight)
        x = upfirdn2d.upfirdn2d(x, None, padding=list(pad))
        return _conv(x, w, groups=groups, flip=flip_weight)

    pointwise = kh == 1 and kw == 1
    if pointwise and up == 1:
        # A 1x1 convolution commutes with everything: shrink the image first.
        x = upfirdn2d.upfirdn2d(x, f, down=down, padding=list(pad), **resample)
        return _conv(x, w, groups=groups, flip=flip_weight)
    if pointwise and down == 1:
        # Likewise, but convolve while the image is still small.
        x = _conv(x, w, groups=groups, flip=flip_weight)
        return upfirdn2d.upfirdn2d(x, f, up=up, padding=list(pad), gain=up ** 2, **resample)
    if up == 1:
        # Low-pass first, then let the convolution's stride drop the pixels.
        x = upfirdn2d.upfirdn2d(x, f, padding=list(pad), impl=_filter_impl(x), **resample)
        return _conv(x, w, stride=down, groups=groups, flip=flip_weight)
    return _transposed_path(x, w, f, up, down, pad, groups, flip_weight, flip_filter)


def _transposed_path(x, w, f, up, down, pad, groups, flip_weight, flip_filter):
    """up > 1: conv_transpose2d with stride `up` zero-inserts and convolves in one op; f runs afterwards.

    Per axis, the transposed convolution behaves like zero insertion (up - 1 zeros after each sample) padded
    by k - 1 before and k - up after, then a convolution with the spatially reversed kernel. The rest of the
    wanted padding goes to the filter step; a crop on both sides moves into the transposed conv instead.
    """
    kh, kw = int(w.shape[2]), int(w.shape[3])
    rest = [pad[0] - (kw - 1), pad[1] - (kw - up), pad[2] - (kh - 1), pad[3] - (kh - up)]
    crop_x, crop_y = max(0, -max(rest[0], rest[1])), max(0, -max(rest[2], rest[3]))
    # [out, in / g, kh, kw] -> [in, out / g, kh, kw], group by group.
    wt = w.unflatten(0, (groups, -1)).transpose(1, 2).flatten(0, 1)
    x = _conv(x, wt, stride=up, padding=[crop_y, crop_x], groups=groups, flip=not flip_weight, transpose=True)
    rest = [rest[0] + crop_x, rest[1] + crop_x, rest[2] + crop_y, rest[3] + crop_y]
    impl = _filter_impl(x)
    if impl == 'ref' and _depthwise_fits(f, rest):
        x = _depthwise_filter(x, f, rest, up ** 2, flip_filter)
    else:
        x = upfirdn2d.upfirdn2d(x, f, padding=rest, gain=up ** 2, flip_filter=flip_filter, impl=impl)
    if down > 1:
        x = upfirdn2d.upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x


def _depthwise_fits(f, pad):
    """A 2-D filter with the same non-negative padding on both sides of each axis: conv2d pads by itself."""
    return f is not None and f.ndim == 2 and pad[0] == pad[1] >= 0 and pad[2] == pad[3] >= 0


def _depthwise_filter(x, f, pad, gain, flip_filter):
    """upfirdn2d(x, f, padding=pad, gain=gain) for _depthwise_fits() cases: one depthwise conv2d with its own
    zero padding (no padded copy of x), in x's memory layout."""
    taps = f.to(x.dtype) * gain
    taps = taps if flip_filter else taps.flip([0, 1])  # conv2d correlates; upfirdn2d convolves unless flipped
    channels = x.shape[1]
    return torch.nn.functional.conv2d(x, taps[None, None].expand(channels, 1, *taps.shape), padding=[pad[2], pad[0]],
                                      groups=channels)


def _filter_impl(x):
    """A channels-last CPU tensor in inference is filtered by the depthwise-convolution reference, which keeps the
    layout: measured 2.5-3x faster than the compiled NCHW kernel plus the two layout conversions around it."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    differentiated = torch.is_grad_enabled() and x.requires_grad  # measured for inference only
    return 'ref' if channels_last and x.device.type == 'cpu' and not differentiated else None

# ----------------------------------------------------------------------------


def _conv(x, w, stride=1, padding=0, groups=1, flip=True, transpose=False):
    """conv2d / conv_transpose2d through conv2d_gradfix; flip=False reverses w (a true convolution)."""
    if not flip:
        w = w.flip([2, 3])
    if transpose:
        return conv2d_gradfix.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    if winograd.applies(x, w, stride, padding, groups):
        return winograd.conv3x3(x, w)
    return conv2d_gradfix.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def _add(a, b):
    return tuple(p + q for p, q in zip(a, b))


def _check(x, w, f, up, down, groups):
    if not (isinstance(x, torch.Tensor) and x.ndim == 4):
        raise dnnlib.util.UserError('conv2d_resample: x must be a 4-D tensor [batch, channels, height, width]')
    if not (isinstance(w, torch.Tensor) and w.ndim == 4 and w.dtype == x.dtype):
        raise dnnlib.util.UserError('conv2d_resample: w must be a 4-D tensor of the dtype of x')
    if f is not None and not (isinstance(f, torch.Tensor) and f.ndim in (1, 2) and f.dtype == torch.float32):
        raise dnnlib.util.UserError('conv2d_resample: f must be None or a float32 filter from setup_filter()')
    for name, value in (('up', up), ('down', down), ('groups', groups)):
        if not (isinstance(value, int) and value >= 1):
            raise dnnlib.util.UserError(f'conv2d_resample: {name} must be a positive int, got {value!r}')
