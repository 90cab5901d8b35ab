"""fma, conv2d_gradfix and grid_sample_gradfix against torch's own ops, to second order."""

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import conv2d_gradfix, fma, grid_sample_gradfix

F64 = torch.float64

# ----------------------------------------------------------------------------


@pytest.mark.parametrize('shapes', [
    ([2, 3], [2, 3], [2, 3]),
    ([4, 1, 5], [3, 1], [1]),         # broadcasting in every operand
    ([5], [2, 3, 5], [3, 1]),
    ([], [2, 2], [2, 1]),
])
def test_fma_matches_addcmul_and_reduces_gradients_to_operand_shapes(shapes):
    gen = torch.Generator().manual_seed(0)
    a, b, c = [torch.randn(s, generator=gen, dtype=F64, requires_grad=True) for s in shapes]
    out = fma.fma(a, b, c)
    torch.testing.assert_close(out, a * b + c, rtol=1e-14, atol=1e-14)
    grads = torch.autograd.grad(out.square().sum(), [a, b, c])
    expected = torch.autograd.grad((a * b + c).square().sum(), [a, b, c])
    for got, ref, operand in zip(grads, expected, [a, b, c]):
        assert got.shape == operand.shape
        torch.testing.assert_close(got, ref)
    assert torch.autograd.gradcheck(fma.fma, (a, b, c))
    assert torch.autograd.gradgradcheck(fma.fma, (a, b, c))

# ----------------------------------------------------------------------------

CONV_CASES = [
    # transpose, stride, padding, dilation, groups, output_padding
    (False, 1, 1, 1, 1, 0),
    (False, 2, 1, 1, 2, 0),
    (False, (2, 1), (0, 2), 2, 1, 0),
    (True, 2, 1, 1, 2, 1),
    (True, (2, 3), (1, 0), (1, 2), 1, (1, 2)),
]


def _conv_pair(transpose, stride, padding, dilation, groups, output_padding):
    if transpose:
        ours = lambda x, w, b: conv2d_gradfix.conv_transpose2d(x, w, b, stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
        torchs = lambda x, w, b: F.conv_transpose2d(x, w, b, stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
    else:
        ours = lambda x, w, b: conv2d_gradfix.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
        torchs = lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return ours, torchs


def _conv_inputs(transpose, groups, seed=0):
    gen = torch.Generator().manual_seed(seed)
    cin, cout = 2, 4
    x = torch.randn([2, cin, 5, 4], generator=gen, dtype=F64, requires_grad=True)
    wshape = [cin, cout // groups, 3, 3] if transpose else [cout, cin // groups, 3, 3]
    w = torch.randn(wshape, generator=gen, dtype=F64, requires_grad=True)
    b = torch.randn([cout], generator=gen, dtype=F64, requires_grad=True)
    return x, w, b


@pytest.mark.parametrize('case', CONV_CASES)
def test_conv_matches_torch_and_passes_gradgradcheck(case):
    ours, torchs = _conv_pair(*case)
    x, w, b = _conv_inputs(case[0], case[4])
    torch.testing.assert_close(ours(x, w, b), torchs(x, w, b), rtol=0, atol=0)
    # Second-order gradients against torch's own double backward, e.g. an R1-like penalty.
    results = []
    for fn in [ours, torchs]:
        (gx,) = torch.autograd.grad(fn(x, w, b).square().sum(), [x], create_graph=True)
        results.append(torch.autograd.grad(gx.square().sum(), [x, w, b], allow_unused=True))
    for got, ref in zip(*results):
        if ref is None:
            assert got is None or torch.count_nonzero(got) == 0
        else:
            torch.testing.assert_close(got, ref)
    # fast_mode checks random projections of the Jacobians: the same test, a fraction of the time.
    assert torch.autograd.gradcheck(ours, (x, w, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(ours, (x, w, b), fast_mode=True)


def test_conv_without_bias():
    x, w, _ = _conv_inputs(False, 1)
    fn = lambda x, w: conv2d_gradfix.conv2d(x, w, padding=1)
    torch.testing.assert_close(fn(x, w), F.conv2d(x, w, padding=1), rtol=0, atol=0)
    assert torch.autograd.gradgradcheck(fn, (x, w), fast_mode=True)


def test_no_weight_gradients_skips_the_weight_gradient(monkeypatch):
    x, w, b = _conv_inputs(False, 1)
    masks = []
    real = torch.ops.aten.convolution_backward

    class Spy:  # records the output_mask that conv2d_gradfix hands to aten
        def __call__(self, *args):
            masks.append(list(args[-1]))
            return real(*args)
    monkeypatch.setattr(torch.ops.aten, 'convolution_backward', Spy())

    with conv2d_gradfix.no_weight_gradients():
        y = conv2d_gradfix.conv2d(x, w, b, padding=1)
        y.square().sum().backward()
    assert w.grad is None and x.grad is not None and b.grad is not None
    assert masks == [[True, False, True]]
    torch.testing.assert_close(x.grad, torch.autograd.grad(F.conv2d(x, w, b, padding=1).square().sum(), x)[0])

    # Outside the block (and with disable=False) the weight gradient is back.
    with conv2d_gradfix.no_weight_gradients(disable=False):
        conv2d_gradfix.conv2d(x, w, b, padding=1).square().sum().backward()
    assert w.grad is not None and masks[-1] == [True, True, True]
    assert not conv2d_gradfix.weight_gradients_disabled


def test_r1_penalty_under_no_weight_gradients_matches_torch():
    # The way the GAN losses use it: input gradient without weight gradient, then the penalty's weight gradient.
    x, w, b = _conv_inputs(False, 1, seed=3)
    with conv2d_gradfix.no_weight_gradients():
        (gx,) = torch.autograd.grad(conv2d_gradfix.conv2d(x, w, b, padding=1).sum(), [x], create_graph=True)
    ours = torch.autograd.grad(gx.square().sum(), [w])[0]
    (gx_ref,) = torch.autograd.grad(F.conv2d(x, w, b, padding=1).sum(), [x], create_graph=True)
    ref = torch.autograd.grad(gx_ref.square().sum(), [w])[0]
    torch.testing.assert_close(ours, ref)


def test_disabled_module_uses_plain_torch(monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', False)
    x, w, b = _conv_inputs(False, 1)
    y = conv2d_gradfix.conv2d(x, w, b, padding=1)
    assert y.grad_fn.name().startswith('Convolution')

# ----------------------------------------------------------------------------


def _grid(gen, shape):
    # Coordinates slightly beyond [-1, 1] so that the zero padding is exercised too.
    return (torch.rand(shape, generator=gen, dtype=F64) * 2.4 - 1.2).requires_grad_(True)


def test_grid_sample_matches_torch_to_second_order():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn([2, 3, 5, 6], generator=gen, dtype=F64, requires_grad=True)
    grid = _grid(gen, [2, 4, 3, 2])
    ref_fn = lambda x, g: F.grid_sample(x, g, mode='bilinear', padding_mode='zeros', align_corners=False)
    torch.testing.assert_close(grid_sample_gradfix.grid_sample(x, grid), ref_fn(x, grid), rtol=0, atol=0)
    assert torch.autograd.gradcheck(grid_sample_gradfix.grid_sample, (x, grid))
    assert torch.autograd.gradgradcheck(grid_sample_gradfix.grid_sample, (x, grid))
    results = []
    for fn in [grid_sample_gradfix.grid_sample, ref_fn]:
        gx, gg = torch.autograd.grad(fn(x, grid).square().sum(), [x, grid], create_graph=True)
        results.append(torch.autograd.grad(gx.square().sum() + gg.square().sum(), [x, grid]))
    for got, ref in zip(*results):
        torch.testing.assert_close(got, ref)


def test_grid_sample_of_a_known_image():
    # Identity grid at pixel centres reproduces the image; a shift by one pixel moves it and pads with zeros.
    img = torch.arange(12, dtype=F64).reshape(1, 1, 3, 4)
    ys, xs = torch.meshgrid((torch.arange(3, dtype=F64) * 2 + 1) / 3 - 1, (torch.arange(4, dtype=F64) * 2 + 1) / 4 - 1, indexing='ij')
    grid = torch.stack([xs, ys], dim=-1)[None]
    torch.testing.assert_close(grid_sample_gradfix.grid_sample(img, grid), img)
    shifted = grid_sample_gradfix.grid_sample(img, grid + torch.tensor([2 / 4, 0], dtype=F64))
    torch.testing.assert_close(shifted[0, 0, :, :3], img[0, 0, :, 1:])
    assert torch.all(shifted[0, 0, :, 3] == 0)


def test_grid_sample_skips_the_grid_gradient_when_the_grid_is_constant(monkeypatch):
    masks = []
    real = torch.ops.aten.grid_sampler_2d_backward

    class Spy:
        def __call__(self, *args):
            masks.append(list(args[-1]))
            return real(*args)
    monkeypatch.setattr(torch.ops.aten, 'grid_sampler_2d_backward', Spy())
    gen = torch.Generator().manual_seed(2)
    x = torch.randn([1, 2, 4, 4], generator=gen, dtype=F64, requires_grad=True)
    grid = _grid(gen, [1, 3, 3, 2]).detach()
    grid_sample_gradfix.grid_sample(x, grid).sum().backward()
    assert masks == [[True, False]]
