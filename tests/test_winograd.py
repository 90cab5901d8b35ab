"""Winograd 3x3 convolution (torch_utils/ops/winograd.py) against torch's direct convolution."""

import pytest
import torch

from torch_utils.ops import conv2d_resample, winograd

pytestmark = pytest.mark.usefixtures("one_thread")


def relative_error(got, want):
    return ((got - want).abs().max() / want.abs().max()).item()


IMPLS = ['ref', 'cpu']  # PyTorch tensor ops; compiled tile transforms (winograd_cpu.cpp)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("size", [(8, 8), (9, 13), (5, 4)])  # whole tiles, partial tiles, an image smaller than a tile
def test_equals_direct_convolution_float64(impl, m, size):
    gen = torch.Generator().manual_seed(m + size[1])
    x = torch.randn([2, 5, *size], dtype=torch.float64, generator=gen)
    w = torch.randn([7, 5, 3, 3], dtype=torch.float64, generator=gen)
    got = winograd.conv3x3(x, w, m=m, impl=impl)
    want = torch.nn.functional.conv2d(x, w, padding=1)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)


FLOAT32_EPS = torch.finfo(torch.float32).eps  # 1.19e-7


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("m,bound_eps", [(2, 16), (4, 256)])
@pytest.mark.parametrize("seed", [3, 4])
def test_float32_error_is_small(impl, m, bound_eps, seed):
    # Channel counts and magnitudes of a StyleGAN layer: float32 rounding only, no lost accuracy. The error
    # against float64 is bounded on its own, not compared with F.conv2d's, whose size depends on the kernel
    # oneDNN picks for this CPU (on a 2-core AMD EPYC with AVX2 it is the larger one). Measured there over
    # seeds 3-5: F(2x2, 3x3) 2.5-3 eps; F(4x4, 3x3) 35-51 eps (its transforms have entries up to 8, which
    # amplify rounding); F.conv2d 5-7 eps. A wrong tap, a lost term or float16/bfloat16 arithmetic anywhere
    # (>= 1e-3, i.e. ~8000 eps) fails.
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn([2, 64, 16, 16], generator=gen)
    w = torch.randn([32, 64, 3, 3], generator=gen) / 24
    want = torch.nn.functional.conv2d(x.double(), w.double(), padding=1)
    error = relative_error(winograd.conv3x3(x, w, m=m, impl=impl).double(), want)
    assert error < bound_eps * FLOAT32_EPS


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_first_and_second_derivatives(impl, m, layout):
    # R1 and the path-length penalty differentiate through the convolution twice.
    gen = torch.Generator().manual_seed(4)
    x = torch.randn([1, 2, 5, 6], dtype=torch.float64, generator=gen).contiguous(memory_format=layout)
    w = torch.randn([3, 2, 3, 3], dtype=torch.float64, generator=gen)
    x.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: winograd.conv3x3(a, b, m=m, impl=impl), (x, w))
    assert torch.autograd.gradgradcheck(lambda a, b: winograd.conv3x3(a, b, m=m, impl=impl), (x, w))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_output_keeps_the_input_layout(impl, layout):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn([2, 6, 12, 12], generator=gen).contiguous(memory_format=layout)
    w = torch.randn([4, 6, 3, 3], generator=gen)
    got = winograd.conv3x3(x, w, impl=impl)
    assert got.is_contiguous(memory_format=layout)
    torch.testing.assert_close(got, torch.nn.functional.conv2d(x, w, padding=1), rtol=0, atol=1e-4)


def test_conv2d_resample_takes_it_for_wide_same_convolutions(monkeypatch):
    calls = []
    monkeypatch.setattr(winograd, 'conv3x3', lambda x, w, **kwargs: calls.append(x.shape) or torch.zeros(1))
    wide = torch.zeros([4, winograd.min_channels, 16, 16])  # 4 images of 4 x 4 tiles: winograd.min_tiles
    narrow = torch.zeros([4, winograd.min_channels // 2, 16, 16])

    def conv(x, out_channels=winograd.min_channels, padding=1, trainable=True, dtype=torch.float32):
        w = torch.zeros([out_channels, x.shape[1], 3, 3], dtype=dtype, requires_grad=trainable)
        conv2d_resample.conv2d_resample(x.to(dtype), w, padding=padding)

    conv(wide)
    assert len(calls) == 1
    conv(narrow)
    conv(wide, out_channels=8)
    conv(wide, dtype=torch.float64)
    conv(wide, padding=0)  # not 'same'
    conv(wide[:1])  # too few tiles
    conv(wide, trainable=False)  # inference at this width: oneDNN's direct forward is faster
    with torch.no_grad():
        conv(wide)
    assert len(calls) == 1
    inference_wide = torch.zeros([4, winograd.inference_min_channels, 16, 16])
    conv(inference_wide, out_channels=winograd.inference_min_channels, trainable=False)
    assert len(calls) == 2
    monkeypatch.setattr(winograd, 'enabled', False)
    conv(wide)
    conv(inference_wide, out_channels=winograd.inference_min_channels, trainable=False)
    assert len(calls) == 2


@pytest.mark.parametrize("bounds", [[0, 36], [0, 5, 17, 36]])  # one group; groups of unequal size
def test_compiled_transforms_are_adjoint_pairs(bounds):
    # <T(a), b> == <a, T*(b)> for every transform and its partner, on random tensors (float64): the gradients of
    # the compiled path rest on this. The transformed side comes as a list of groups of tile positions.
    plugin = winograd._cpu_plugin()
    mats = {key: torch.tensor(value, dtype=torch.float64) for key, value in winograd._MATRICES[4].items()}
    bt, g, at = mats['BT'], mats['G'], mats['AT']
    gen = torch.Generator().manual_seed(6)
    n, h, w, c = 2, 9, 7, 70  # partial tiles; more channels than one compiled chunk (64)

    def groups(rows, cols):
        return [torch.randn([k1 - k0, rows, cols], dtype=torch.float64, generator=gen) for k0, k1 in zip(bounds, bounds[1:])]

    pairs = [
        (torch.randn([n, h, w, c], dtype=torch.float64, generator=gen),
         lambda t: plugin.tiles_in(t, bt, 4, 1, 3, 2, bounds), lambda t: plugin.tiles_in_adjoint(t, bt.t(), 4, 1, n, h, w)),
        (groups(n * 3 * 2, c),
         lambda t: plugin.tiles_out(t, at, n, h, w), lambda t: plugin.tiles_out_adjoint(t, at.t(), bounds)),
        (torch.randn([c, 5, 3, 3], dtype=torch.float64, generator=gen),
         lambda t: plugin.kernel_tiles(t, g, bounds), lambda t: plugin.kernel_tiles_adjoint(t, g.t())),
    ]
    dot = lambda p, q: sum((u * v).sum() for u, v in zip(p, q)) if isinstance(p, list) else (p * q).sum()  # noqa: E731
    for a, forward, adjoint in pairs:
        image = forward(a)
        b = ([torch.randn(t.shape, dtype=torch.float64, generator=gen) for t in image] if isinstance(image, list)
             else torch.randn(image.shape, dtype=torch.float64, generator=gen))
        back = adjoint(b)
        if isinstance(a, list):
            assert [t.shape for t in back] == [t.shape for t in a]
        else:
            assert back.shape == a.shape
        torch.testing.assert_close(dot(image, b), dot(a, back), rtol=1e-12, atol=0)


def test_groups_of_positions_stay_small(monkeypatch):
    # The compiled path splits the transformed side so that no tensor exceeds max_group_bytes; the result is
    # the same however it is split.
    gen = torch.Generator().manual_seed(7)
    x = torch.randn([2, 6, 12, 12], dtype=torch.float64, generator=gen)
    w = torch.randn([5, 6, 3, 3], dtype=torch.float64, generator=gen)
    want = torch.nn.functional.conv2d(x, w, padding=1)
    for limit in [1 << 30, 3 * 18 * 6 * 8, 1]:  # one group; about a dozen; one position per group
        monkeypatch.setattr(winograd, 'max_group_bytes', limit)
        bounds = winograd._position_groups(36, [18, 6], 6, 8)
        assert bounds[0] == 0 and bounds[-1] == 36 and all(k0 < k1 for k0, k1 in zip(bounds, bounds[1:]))
        assert max(k1 - k0 for k0, k1 in zip(bounds, bounds[1:])) * 18 * 6 * 8 <= max(limit, 18 * 6 * 8)
        torch.testing.assert_close(winograd.conv3x3(x, w, impl='cpu'), want, rtol=1e-11, atol=1e-11)
    # Several groups under autograd, to the second order.
    xs = torch.randn([1, 2, 5, 6], dtype=torch.float64, generator=gen, requires_grad=True)
    ws = torch.randn([3, 2, 3, 3], dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: winograd.conv3x3(a, b, impl='cpu'), (xs, ws))
    assert torch.autograd.gradgradcheck(lambda a, b: winograd.conv3x3(a, b, impl='cpu'), (xs, ws))
