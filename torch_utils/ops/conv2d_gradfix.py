"""conv2d and conv_transpose2d whose backward pass can leave out the weight gradient.

The R1 penalty differentiates the discriminator output w.r.t. the images only, yet every weight requires grad;
inside `no_weight_gradients()` the backward passes of these convolutions ask ATen's convolution_backward for
the input (and bias) gradient alone. That op is differentiable itself, so double backward works on any device.
"""

import contextlib
import dataclasses

import torch

# ----------------------------------------------------------------------------

enabled = True                      # False: hand every call straight to torch.nn.functional.
weight_gradients_disabled = False   # True inside no_weight_gradients().


@contextlib.contextmanager
def no_weight_gradients(disable=True):
    """Skip the weight gradients of these convolutions within the block (when `disable` is true)."""
    global weight_gradients_disabled
    before = weight_gradients_disabled
    weight_gradients_disabled = before or bool(disable)
    try:
        yield
    finally:
        weight_gradients_disabled = before


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Same arguments and result as torch.nn.functional.conv2d."""
    if not enabled:
        return torch.nn.functional.conv2d(input, weight, bias, stride, padding, dilation, groups)
    spec = _ConvSpec.make(False, stride, padding, dilation, 0, groups)
    return _Convolution.apply(input, weight, bias, spec)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Same arguments and result as torch.nn.functional.conv_transpose2d."""
    if not enabled:
        return torch.nn.functional.conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups,
                                                    dilation)
    spec = _ConvSpec.make(True, stride, padding, dilation, output_padding, groups)
    return _Convolution.apply(input, weight, bias, spec)

# ----------------------------------------------------------------------------


def _two(value, name):
    both = (value, value) if isinstance(value, int) else tuple(value)
    if len(both) != 2 or any(not isinstance(v, int) or v < 0 for v in both):
        raise ValueError(f'conv2d_gradfix: {name} must be a non-negative int or a pair of them, got {value!r}')
    return list(both)


@dataclasses.dataclass(frozen=True)
class _ConvSpec:
    """The non-tensor arguments of aten::convolution, normalised."""
    transposed: bool
    stride: tuple
    padding: tuple
    dilation: tuple
    output_padding: tuple
    groups: int

    @staticmethod
    def make(transposed, stride, padding, dilation, output_padding, groups):
        return _ConvSpec(bool(transposed), tuple(_two(stride, 'stride')), tuple(_two(padding, 'padding')),
                         tuple(_two(dilation, 'dilation')), tuple(_two(output_padding, 'output_padding')), int(groups))

    def args(self):
        """The arguments after (input, weight, bias) that aten::convolution and its backward share."""
        return [list(self.stride), list(self.padding), list(self.dilation), self.transposed, list(self.output_padding),
                self.groups]


class _Convolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, spec):  # pylint: disable=arguments-differ
        ctx.spec = spec
        ctx.bias_shape = None if b is None else list(b.shape)
        ctx.save_for_backward(x, w)
        return torch.ops.aten.convolution(x, w, b, *spec.args())

    @staticmethod
    def backward(ctx, gy):  # pylint: disable=arguments-differ
        x, w = ctx.saved_tensors
        wanted = [ctx.needs_input_grad[0], ctx.needs_input_grad[1] and not weight_gradients_disabled,
                  ctx.needs_input_grad[2] and ctx.bias_shape is not None]
        if not any(wanted):
            return None, None, None, None
        # Called through the dispatcher, so that under create_graph autograd records it for double backward.
        gx, gw, gb = torch.ops.aten.convolution_backward(gy, x, w, ctx.bias_shape, *ctx.spec.args(), wanted)
        return gx, gw, gb, None
