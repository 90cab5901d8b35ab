"""2-D convolution with optional up/downsampling (FIR-filtered), using the cheapest equivalent op order.

Definition (what every fast path must equal): upsample x by `up` with upfirdn2d (filter `f`, gain up**2),
pad by `padding` plus the filter's resampling padding, convolve with `w` (no padding), then low-pass with
`f` and keep every `down`-th pixel.
"""

import torch

from .. import misc
from . import conv2d_gradfix, upfirdn2d

#----------------------------------------------------------------------------

def _get_weight_shape(w):
    out_channels, in_channels_per_group, kh, kw = [int(sz) for sz in w.shape]
    return out_channels, in_channels_per_group, kh, kw

def _conv2d_wrapper(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    """conv2d or conv_transpose2d; flip_weight=True is torch's cross-correlation, False a true convolution."""
    if not flip_weight:
        w = w.flip([2, 3])
    op = conv2d_gradfix.conv_transpose2d if transpose else conv2d_gradfix.conv2d
    return op(x, w, stride=stride, padding=padding, groups=groups)

#----------------------------------------------------------------------------

@misc.profiled_function
def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    r"""2-D convolution with optional up/downsampling.

    Padding is applied only once at the beginning, not between the operations.

    Args:
        x:           Input tensor of shape [batch_size, in_channels, in_height, in_width].
        w:           Weight tensor of shape [out_channels, in_channels//groups, kernel_height, kernel_width].
        f:           Low-pass filter for up/downsampling (from upfirdn2d.setup_filter); None = identity.
        up:          Integer upsampling factor.
        down:        Integer downsampling factor.
        padding:     Padding relative to the upsampled image: int, [x, y] or [x_before, x_after, y_before, y_after].
        groups:      Split the input channels into N groups.
        flip_weight: False = convolution, True = correlation (torch.nn.functional.conv2d).
        flip_filter: False = convolution, True = correlation (for the FIR filter).

    Returns:
        Tensor of shape [batch_size, out_channels, out_height, out_width].
    """
    assert isinstance(x, torch.Tensor) and x.ndim == 4
    assert isinstance(w, torch.Tensor) and w.ndim == 4 and w.dtype == x.dtype
    assert f is None or (isinstance(f, torch.Tensor) and f.ndim in [1, 2] and f.dtype == torch.float32)
    assert isinstance(up, int) and up >= 1
    assert isinstance(down, int) and down >= 1
    assert isinstance(groups, int) and groups >= 1
    out_channels, in_channels_per_group, kh, kw = _get_weight_shape(w)
    fw, fh = upfirdn2d._get_filter_size(f)
    px0, px1, py0, py1 = upfirdn2d._parse_padding(padding)

    # The filter's own padding for up/downsampling (as in upsample2d/downsample2d), all applied up front.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    # 1x1 kernel, downsampling only: downsample first, so the conv touches 1/down**2 of the pixels.
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d.upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d_wrapper(x, w, groups=groups, flip_weight=flip_weight)

    # 1x1 kernel, upsampling only: convolve first, at the low resolution.
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv2d_wrapper(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d.upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter)

    # Downsampling only: filter, then a strided convolution.
    if down > 1 and up == 1:
        x = upfirdn2d.upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d_wrapper(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    # Upsampling (optionally followed by downsampling): a stride-`up` transposed convolution does the zero
    # insertion and the convolution in one op; the filter then runs on its output.
    if up > 1:
        # conv_transpose2d wants [in_channels, out_channels // groups, kh, kw].
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, out_channels // groups, in_channels_per_group, kh, kw)
            w = w.transpose(1, 2)
            w = w.reshape(groups * in_channels_per_group, out_channels // groups, kh, kw)
        # The transposed conv already yields a border of kw - 1 (kh - 1) pixels on each side, minus the
        # trailing zeros of the zero insertion; move the remainder of the padding to the filter step.
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        # Crop what both sides crop inside the transposed conv (its `padding` removes pixels).
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        # A transposed conv flips the kernel by construction, hence the inverted flip_weight.
        x = _conv2d_wrapper(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=(not flip_weight))
        x = upfirdn2d.upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up ** 2, flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d.upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    # No resampling and symmetric non-negative padding: a plain conv2d.
    if up == 1 and down == 1:
        if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
            return _conv2d_wrapper(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    # General case: the definition itself.
    x = upfirdn2d.upfirdn2d(x, (f if up > 1 else None), up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter)
    x = _conv2d_wrapper(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d.upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x

#----------------------------------------------------------------------------
