"""conv2d_resample: every fast path against the straightforward definition (upsample -> conv -> downsample)."""

import itertools

import pytest
import torch

from torch_utils.ops import conv2d_resample, upfirdn2d

pytestmark = pytest.mark.usefixtures("one_thread")


def definition(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    """Upsample (zero insertion + filter, gain up**2, all padding up front), plain conv2d, filter + decimate."""
    fw, fh = (1, 1) if f is None else (f.shape[-1], f.shape[0])
    px0, px1, py0, py1 = [padding] * 4 if isinstance(padding, int) else padding
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    x = upfirdn2d.upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up ** 2,
                            flip_filter=flip_filter, impl='ref')
    x = torch.nn.functional.conv2d(x, w if flip_weight else w.flip([2, 3]), groups=groups)
    if down > 1:
        x = upfirdn2d.upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl='ref')
    return x


@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2), (2, 2)])
@pytest.mark.parametrize("kernel", [1, 3])
def test_matches_definition(up, down, kernel):
    f = upfirdn2d.setup_filter([1, 2, 3, 1])  # non-symmetric, so filter flips matter
    gen = torch.Generator().manual_seed(up * 10 + down * 3 + kernel)
    for groups, padding, flip_weight, flip_filter in itertools.product(
            [1, 2], [0, 1, [2, 0, 1, -1]], [True, False], [True, False]):
        x = torch.randn([2, 4, 9, 8], dtype=torch.float64, generator=gen)
        w = torch.randn([6, 4 // groups, kernel, kernel], dtype=torch.float64, generator=gen)
        got = conv2d_resample.conv2d_resample(x, w, f=f, up=up, down=down, padding=padding, groups=groups,
                                              flip_weight=flip_weight, flip_filter=flip_filter)
        want = definition(x, w, f, up, down, padding, groups, flip_weight, flip_filter)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_stylegan_shapes():
    # The layer shapes StyleGAN2 uses: 3x3 up-conv doubles, 3x3 down-conv halves, 1x1 skip down-conv halves.
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn([2, 8, 16, 16])
    w3 = torch.randn([4, 8, 3, 3])
    w1 = torch.randn([4, 8, 1, 1])
    assert conv2d_resample.conv2d_resample(x, w3, f=f, up=2, padding=1, flip_weight=False).shape == (2, 4, 32, 32)
    assert conv2d_resample.conv2d_resample(x, w3, f=f, down=2, padding=1).shape == (2, 4, 8, 8)
    assert conv2d_resample.conv2d_resample(x, w1, f=f, down=2).shape == (2, 4, 8, 8)
    assert conv2d_resample.conv2d_resample(x, w3, padding=1).shape == (2, 4, 16, 16)


def test_constant_image_upconv():
    # Away from the borders, an up-conv of a constant image is constant: sum(w) * value (the filter has unit DC gain).
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.full([1, 1, 12, 12], 2.0, dtype=torch.float64)
    w = torch.arange(9, dtype=torch.float64).reshape(1, 1, 3, 3)
    y = conv2d_resample.conv2d_resample(x, w, f=f, up=2, padding=1)
    inner = y[0, 0, 6:-6, 6:-6]
    torch.testing.assert_close(inner, torch.full_like(inner, 2.0 * 36.0))


def test_gradients():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn([1, 2, 5, 5], dtype=torch.float64, requires_grad=True)
    w = torch.randn([3, 2, 3, 3], dtype=torch.float64, requires_grad=True)
    for up, down in [(2, 1), (1, 2)]:
        fn = lambda x, w: conv2d_resample.conv2d_resample(x, w, f=f, up=up, down=down, padding=1)
        assert torch.autograd.gradcheck(fn, (x, w))
        assert torch.autograd.gradgradcheck(fn, (x, w))


@pytest.mark.parametrize("up,down", [(2, 1), (1, 2)])
def test_channels_last_input_gives_the_same_result_and_layout(up, down):
    # On CPUs a channels-last input is filtered by the depthwise reference (it keeps the layout).
    f = upfirdn2d.setup_filter([1, 2, 3, 1])
    gen = torch.Generator().manual_seed(up + 2 * down)
    x = torch.randn([2, 4, 9, 8], dtype=torch.float64, generator=gen)
    w = torch.randn([6, 4, 3, 3], dtype=torch.float64, generator=gen)
    last = x.contiguous(memory_format=torch.channels_last)
    for padding, flip_filter in itertools.product([1, [2, 0, 1, 1]], [False, True]):
        kwargs = dict(f=f, up=up, down=down, padding=padding, flip_weight=(up == 1), flip_filter=flip_filter)
        got = conv2d_resample.conv2d_resample(last, w, **kwargs)
        want = conv2d_resample.conv2d_resample(x, w, **kwargs)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        assert got.is_contiguous(memory_format=torch.channels_last)
