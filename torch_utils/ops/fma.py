"""fma(a, b, c) = a * b + c as one addcmul, with broadcasting and derivatives of every order."""

import torch

# ----------------------------------------------------------------------------


def fma(a, b, c):
    """a * b + c (broadcast like torch.addcmul(c, a, b)); saves only a and b for the backward pass."""
    return _MulAdd.apply(a, b, c)


class _MulAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, c):  # pylint: disable=arguments-differ
        ctx.shapes = (a.shape, b.shape, c.shape)
        ctx.save_for_backward(a, b)
        return torch.addcmul(c, a, b)

    @staticmethod
    def backward(ctx, grad):  # pylint: disable=arguments-differ
        # d/da = grad * b, d/db = grad * a, d/dc = grad, each summed back to its operand's (broadcast) shape.
        # Plain differentiable ops, so autograd takes it from here for higher orders.
        a, b = ctx.saved_tensors
        shape_a, shape_b, shape_c = ctx.shapes
        want_a, want_b, want_c = ctx.needs_input_grad
        return (_reduce(grad * b, shape_a) if want_a else None,
                _reduce(grad * a, shape_b) if want_b else None,
                _reduce(grad, shape_c) if want_c else None)


def _reduce(grad, shape):
    """Sum a gradient over the dimensions that broadcasting added to or stretched in `shape`."""
    leading = grad.ndim - len(shape)
    if leading > 0:
        grad = grad.sum(dim=tuple(range(leading)))
    return grad.sum_to_size(shape) if grad.shape != shape else grad
