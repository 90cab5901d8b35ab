"""Drop-in conv2d / conv_transpose2d whose backward can skip the weight gradient.

Regularisers such as R1 differentiate the discriminator w.r.t. its *input* only; inside
`no_weight_gradients()` the backward pass then never computes the (costly) weight gradient, although the
weights require grad. The backward is built from `torch.ops.aten.convolution_backward` with an output
mask, an op that autograd can differentiate again, so double backward works on CPU and CUDA.
"""

import contextlib

import torch

# ----------------------------------------------------------------------------

enabled = True                      # False = plain torch.nn.functional calls.
weight_gradients_disabled = False   # Set by no_weight_gradients().


@contextlib.contextmanager
def no_weight_gradients(disable=True):
    """Within the block, backward passes through these convolutions skip the weight gradient."""
    global weight_gradients_disabled
    old = weight_gradients_disabled
    if disable:
        weight_gradients_disabled = True
    try:
        yield
    finally:
        weight_gradients_disabled = old

# ----------------------------------------------------------------------------


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d with the same arguments."""
    if not enabled:
        return torch.nn.functional.conv2d(input, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    conv = _conv2d_gradfix(transpose=False, weight_shape=tuple(weight.shape), stride=stride, padding=padding,
                           output_padding=0, dilation=dilation, groups=groups)
    return conv.apply(input, weight, bias)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """torch.nn.functional.conv_transpose2d with the same arguments."""
    if not enabled:
        return torch.nn.functional.conv_transpose2d(input, weight, bias, stride=stride, padding=padding,
                                                    output_padding=output_padding, groups=groups, dilation=dilation)
    conv = _conv2d_gradfix(transpose=True, weight_shape=tuple(weight.shape), stride=stride, padding=padding,
                           output_padding=output_padding, dilation=dilation, groups=groups)
    return conv.apply(input, weight, bias)

# ----------------------------------------------------------------------------

_conv2d_gradfix_cache = dict()


def _pair(value, name):
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 0 for v in pair):
        raise ValueError(f'{name} must be a non-negative int or a pair of them, got {value!r}')
    return pair


def _conv2d_gradfix(transpose, weight_shape, stride, padding, output_padding, dilation, groups):
    """The autograd Function for one convolution configuration (cached)."""
    stride, padding = _pair(stride, 'stride'), _pair(padding, 'padding')
    output_padding, dilation = _pair(output_padding, 'output_padding'), _pair(dilation, 'dilation')
    key = (transpose, weight_shape, stride, padding, output_padding, dilation, groups)
    if key in _conv2d_gradfix_cache:
        return _conv2d_gradfix_cache[key]
    if len(weight_shape) != 4:
        raise ValueError(f'weight must be 4-D, got shape {list(weight_shape)}')

    class Conv2d(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input, weight, bias):  # pylint: disable=arguments-differ
            if transpose:
                out = torch.nn.functional.conv_transpose2d(input, weight, bias, stride=stride, padding=padding,
                                                           output_padding=output_padding, groups=groups, dilation=dilation)
            else:
                out = torch.nn.functional.conv2d(input, weight, bias, stride=stride, padding=padding,
                                                 dilation=dilation, groups=groups)
            ctx.save_for_backward(input, weight)
            ctx.has_bias = bias is not None
            return out

        @staticmethod
        def backward(ctx, grad_output):  # pylint: disable=arguments-differ
            input, weight = ctx.saved_tensors
            need_input = ctx.needs_input_grad[0]
            need_weight = ctx.needs_input_grad[1] and not weight_gradients_disabled
            need_bias = ctx.has_bias and ctx.needs_input_grad[2]
            if not (need_input or need_weight or need_bias):
                return None, None, None
            # Recorded by autograd when the caller asked for create_graph, which makes double backward work.
            out_channels = weight.shape[1] * groups if transpose else weight.shape[0]
            grad_input, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad_output, input, weight, [out_channels] if ctx.has_bias else None, list(stride), list(padding),
                list(dilation), transpose, list(output_padding), groups, [need_input, need_weight, need_bias])
            return grad_input, grad_weight, grad_bias

    _conv2d_gradfix_cache[key] = Conv2d
    return Conv2d

# ----------------------------------------------------------------------------
