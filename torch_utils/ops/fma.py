"""Fused multiply-add a * b + c with a hand-written backward (one kernel forward, no saved intermediates)."""

import torch

# ----------------------------------------------------------------------------


def fma(a, b, c):
    """Return a * b + c with broadcasting, like torch.addcmul(c, a, b), differentiable to any order."""
    return _FusedMultiplyAdd.apply(a, b, c)

# ----------------------------------------------------------------------------


class _FusedMultiplyAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, c):  # pylint: disable=arguments-differ
        out = torch.addcmul(c, a, b)
        ctx.save_for_backward(a, b)
        ctx.c_shape = c.shape
        return out

    @staticmethod
    def backward(ctx, dout):  # pylint: disable=arguments-differ
        a, b = ctx.saved_tensors
        da = db = dc = None
        # Built from differentiable ops, so double backward goes through ordinary autograd.
        if ctx.needs_input_grad[0]:
            da = _unbroadcast(dout * b, a.shape)
        if ctx.needs_input_grad[1]:
            db = _unbroadcast(dout * a, b.shape)
        if ctx.needs_input_grad[2]:
            dc = _unbroadcast(dout, ctx.c_shape)
        return da, db, dc

# ----------------------------------------------------------------------------


def _unbroadcast(grad, shape):
    """Sum a gradient of the broadcast result back down to an operand's shape."""
    shape = torch.Size(shape)
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(dim=list(range(extra)))
    squeezed = [i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1]
    if squeezed:
        grad = grad.sum(dim=squeezed, keepdim=True)
    assert grad.shape == shape
    return grad

# ----------------------------------------------------------------------------
