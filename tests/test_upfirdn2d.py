"""upfirdn2d: the 'ref' spec against numpy/scipy brute force; compiled impls against 'ref'; gradients; sizes."""

import itertools
import warnings

import numpy as np
import pytest
import scipy.signal
import torch

from torch_utils.ops import upfirdn2d

pytestmark = pytest.mark.usefixtures("one_thread")

#----------------------------------------------------------------------------
# Independent brute force: numpy zero insertion + pad/crop, scipy 'valid' convolution, strided decimation.

def brute_force(x, f, up, down, padding, flip_filter, gain):
    x = np.asarray(x, dtype=np.float64)
    upx, upy = (up, up) if isinstance(up, int) else up
    downx, downy = (down, down) if isinstance(down, int) else down
    if isinstance(padding, int):
        padding = [padding] * 4
    elif len(padding) == 2:
        padding = [padding[0], padding[0], padding[1], padding[1]]
    px0, px1, py0, py1 = padding
    f = np.asarray(f, dtype=np.float64)
    if f.ndim == 1:
        f = np.outer(f, f)  # a separable filter runs along both axes
    if flip_filter:
        f = f[::-1, ::-1]
    n, c, h, w = x.shape
    y = []
    for plane in x.reshape(n * c, h, w):
        u = np.zeros([h * upy, w * upx])
        u[::upy, ::upx] = plane
        u = np.pad(u, [[max(py0, 0), max(py1, 0)], [max(px0, 0), max(px1, 0)]])
        u = u[max(-py0, 0) : u.shape[0] - max(-py1, 0), max(-px0, 0) : u.shape[1] - max(-px1, 0)]
        v = scipy.signal.convolve2d(u, f, mode='valid')  # true convolution
        y.append(v[::downy, ::downx] * gain)
    return np.stack(y).reshape(n, c, *y[0].shape)


REF_CASES = [
    # up, down, padding, filter, flip_filter, gain
    (1, 1, 0, [[1, 2], [3, 5]], False, 1),
    (2, 1, 1, [1, 2, 4, 3], False, 1),
    (1, 2, [1, 2], [[1, -2, 3], [0, 4, 1]], True, 2.5),
    ([2, 1], [1, 3], [2, 1, -1, 3], [[1, 2, 3], [4, 5, 6], [7, 8, 10]], False, 1),
    (4, 1, [3, 2, 1, 0], [1, 2, 3, 4, 5, 6, 7, 9], True, 1),  # separable (>= 8 taps)
    (1, 4, [-1, 2, 0, -2], [[1, 3], [2, 1], [5, 1]], False, 0.5),
    (2, 2, [3, -2, 1, 4], [2, 1, 3], False, 3),
    ([1, 2], [2, 1], 0, [[1, 2, 3, 4]], True, 1),
]

@pytest.mark.parametrize("up,down,padding,taps,flip_filter,gain", REF_CASES)
def test_ref_against_brute_force(up, down, padding, taps, flip_filter, gain):
    x = torch.randn([2, 3, 7, 6], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    f = torch.tensor(taps, dtype=torch.float32)
    y = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain, impl='ref')
    want = brute_force(x.numpy(), taps, up, down, padding, flip_filter, gain)
    assert tuple(y.shape) == want.shape
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("up,down", [(1, 1), (3, 1), (1, 2), (2, 3)])
def test_ref_against_scipy_upfirdn(up, down):
    # scipy.signal.upfirdn: zero-stuff by `up` (no trailing zeros), full convolution with h, keep every `down`-th.
    rows = np.random.RandomState(0).randn(4, 11)
    h = np.array([1.0, -2.0, 4.0, 3.0, 0.5])
    fw = len(h)
    x = torch.tensor(rows).reshape(1, 4, 1, 11)
    y = upfirdn2d.upfirdn2d(x, torch.tensor(h[np.newaxis], dtype=torch.float32), up=[up, 1], down=[down, 1],
                            padding=[fw - 1, fw - up, 0, 0], impl='ref')
    for i in range(4):
        np.testing.assert_allclose(y[0, i, 0].numpy(), scipy.signal.upfirdn(h, rows[i], up=up, down=down), rtol=1e-6, atol=1e-9)


def test_identity_filter():
    x = torch.randn([2, 3, 5, 4])
    torch.testing.assert_close(upfirdn2d.upfirdn2d(x, None, impl='ref'), x)
    y = upfirdn2d.upfirdn2d(x, None, up=2, impl='ref')
    torch.testing.assert_close(y[:, :, ::2, ::2], x)
    assert y[:, :, 1::2].abs().max() == 0 and y[:, :, :, 1::2].abs().max() == 0

#----------------------------------------------------------------------------

def test_setup_filter():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    np.testing.assert_allclose(f.numpy(), np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0, rtol=1e-7)
    # >= 8 taps stay 1-D (separable) by default; normalisation; gain**(ndim/2).
    g = upfirdn2d.setup_filter(np.arange(1, 9), gain=4)
    assert g.shape == (8,)
    np.testing.assert_allclose(g.numpy(), np.arange(1, 9) / 36.0 * 2.0, rtol=1e-6)
    h = upfirdn2d.setup_filter([1, 2, 4], separable=True, normalize=False, flip_filter=True)
    np.testing.assert_allclose(h.numpy(), [4, 2, 1])
    k = upfirdn2d.setup_filter([[1, 2], [3, 4]], gain=3, normalize=False)
    np.testing.assert_allclose(k.numpy(), [[3, 6], [9, 12]])
    assert upfirdn2d.setup_filter(None).shape == (1, 1)
    assert upfirdn2d.setup_filter(5).shape == (1, 1)


@pytest.mark.parametrize("impl", ["ref", "cpu"])
def test_output_sizes(impl):
    x = torch.randn([1, 2, 13, 10])
    f4 = upfirdn2d.setup_filter([1, 3, 3, 1])
    f3 = upfirdn2d.setup_filter([1, 2, 1])
    f8 = upfirdn2d.setup_filter([1, 2, 3, 4, 4, 3, 2, 1])  # separable
    for f in [f4, f3, f8, None]:
        assert upfirdn2d.upsample2d(x, f, impl=impl).shape == (1, 2, 26, 20)
        assert upfirdn2d.upsample2d(x, f, up=[3, 2], impl=impl).shape == (1, 2, 26, 30)
        assert upfirdn2d.downsample2d(x, f, impl=impl).shape == (1, 2, 6, 5)
        assert upfirdn2d.downsample2d(x, f, down=[2, 4], impl=impl).shape == (1, 2, 3, 5)
        assert upfirdn2d.filter2d(x, f, impl=impl).shape == (1, 2, 13, 10)
        assert upfirdn2d.filter2d(x, f, padding=[1, 2, 3, 0], impl=impl).shape == (1, 2, 16, 13)
        assert upfirdn2d.upsample2d(x, f, padding=1, impl=impl).shape == (1, 2, 28, 22)


def test_resampling_preserves_dc():
    # Unit-DC filters: a constant image stays constant away from the borders after up/down/filter.
    x = torch.full([1, 1, 16, 16], 3.0, dtype=torch.float64)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    for y in [upfirdn2d.upsample2d(x, f, impl='ref'), upfirdn2d.downsample2d(x, f, impl='ref'),
              upfirdn2d.filter2d(x, f, impl='ref')]:
        torch.testing.assert_close(y[0, 0, 3:-3, 3:-3], torch.full_like(y[0, 0, 3:-3, 3:-3], 3.0))


def test_ref_filter_gradient():
    # 'ref' also differentiates w.r.t. the filter (plain autograd).
    x = torch.randn([1, 2, 5, 6], dtype=torch.float64)
    f = torch.randn([3, 2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: upfirdn2d.upfirdn2d(x, f, up=2, padding=1, impl='ref'), (f,))

#----------------------------------------------------------------------------
# Compiled impls against 'ref'.

def assert_close_rel(got, want, rtol=1e-5):
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = max(float(want.abs().max()), 1e-30)
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * scale)


FILTERS = {
    '2d': [[1.0, -2.0, 3.0, 0.5], [2.0, 4.0, -1.0, 1.5], [0.5, 1.0, 2.0, -3.0]],  # 3x4, not symmetric
    'separable': [1.0, 3.0, -2.0, 4.0, 0.5],                                    # 1-D, not symmetric
    '1x1': [[2.0]],
}

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("filter_name", list(FILTERS))
def test_cpu_matches_ref(dtype, filter_name):
    f = torch.tensor(FILTERS[filter_name])
    gen = torch.Generator().manual_seed(3)
    x = torch.randn([2, 3, 9, 7], dtype=dtype, generator=gen)
    checked = 0
    for up, down, padding, flip_filter in itertools.product(
            [1, 2, 4, [2, 1]], [1, 2, 4, [1, 3]], [0, [2, 1], [3, -1, 1, -2]], [False, True]):
        gain = 0.5 + float(torch.rand([], generator=gen)) * 2
        kwargs = dict(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
        want = upfirdn2d.upfirdn2d(x, f, impl='ref', **kwargs)
        got = upfirdn2d.upfirdn2d(x, f, impl='cpu', **kwargs)
        assert_close_rel(got, want)
        checked += 1
    assert checked == 96


@pytest.mark.parametrize("kernel", [1, 2])  # the two CPU kernels, pinned: 1 = polyphase, 2 = buffered planes
@pytest.mark.parametrize("taps", [[[1.0, 3.0, 3.0, 1.0]], FILTERS['2d'], [[2.0, -1.0], [4.0, -2.0], [1.0, -0.5]]])
def test_each_cpu_kernel_matches_ref(kernel, taps):
    # The third filter has rank 1 (its rows are multiples of [2, -1]): the buffered kernel splits it into a
    # column and a row pass; the 4x4 [1, 3, 3, 1] outer product is StyleGAN's filter.
    f = torch.tensor(taps)
    f = f.t() * f if f.shape[0] == 1 else f
    plugin = upfirdn2d._cpu_plugin()
    gen = torch.Generator().manual_seed(11)
    x = torch.randn([2, 3, 10, 7], dtype=torch.float64, generator=gen)
    for up, down, padding, flip_filter in itertools.product([1, 2, 3], [1, 2, 3], [[0, 0, 0, 0], [2, 1, 3, 1], [3, -1, 1, -2]],
                                                            [False, True]):
        plan = upfirdn2d._Resampling.make(x, f, up, down, padding, flip_filter, 1.5)
        got = plugin.upfirdn2d_with(x, f, up, up, down, down, *padding, flip_filter, 1.5, kernel)
        want = upfirdn2d._reference(x, f, plan)
        assert_close_rel(got, want, rtol=1e-12)


@pytest.mark.parametrize("layout", ["transposed", "sliced", "channels_last"])
def test_cpu_strided_inputs(layout):
    f = upfirdn2d.setup_filter([1, 2, 4, 1])
    base = torch.randn([2, 5, 11, 13])
    x = {'transposed': base.transpose(2, 3), 'sliced': base[:, 1:4, ::2, 1:],
         'channels_last': base.contiguous(memory_format=torch.channels_last)}[layout]
    assert not x.is_contiguous()
    for up, down in [(1, 1), (2, 1), (1, 2)]:
        kwargs = dict(up=up, down=down, padding=[2, 1, 1, 2])
        assert_close_rel(upfirdn2d.upfirdn2d(x, f, impl='cpu', **kwargs), upfirdn2d.upfirdn2d(x.contiguous(), f, impl='ref', **kwargs))


def test_cpu_half_precision():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn([1, 2, 8, 8]).to(torch.bfloat16)
    y = upfirdn2d.upsample2d(x, f, impl='cpu')
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), upfirdn2d.upsample2d(x.float(), f, impl='ref'), rtol=1e-2, atol=1e-2)


def test_default_impl_on_cpu():
    from torch_utils import custom_ops
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn([1, 2, 8, 8])
    assert upfirdn2d._resolve_impl(None, x) == 'cpu'
    with custom_ops.force_impl('ref'):
        assert upfirdn2d._resolve_impl(None, x) == 'ref'
    assert_close_rel(upfirdn2d.upsample2d(x, f), upfirdn2d.upsample2d(x, f, impl='ref'))


def test_failed_build_falls_back_to_ref(monkeypatch):
    # impl=None: a plugin that cannot be built gives one warning and the 'ref' result, not an error.
    from torch_utils import custom_ops
    def broken_plugin():
        raise custom_ops.PluginBuildError('building upfirdn2d_cpu_plugin failed: no compiler')
    monkeypatch.setattr(upfirdn2d, '_cpu_plugin', broken_plugin)
    monkeypatch.setattr(custom_ops, '_resolved', dict())
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn([1, 2, 8, 8])
    with pytest.warns(RuntimeWarning, match='upfirdn2d'):
        y = upfirdn2d.upsample2d(x, f)
    torch.testing.assert_close(y, upfirdn2d.upsample2d(x, f, impl='ref'))
    assert upfirdn2d._resolve_impl(None, x) == 'ref'
    with pytest.raises(custom_ops.PluginBuildError):
        upfirdn2d.upsample2d(x, f, impl='cpu')  # asked for by name: no silent fallback


@pytest.mark.parametrize("impl", ["ref", "cpu"])
@pytest.mark.parametrize("up,down,padding,separable", [
    (2, 1, [2, 1, 1, 2], False),
    (1, 2, [1, 2, 0, 1], False),
    ([2, 1], [1, 2], [3, -1, 2, 0], False),
    (2, 2, 1, True),
])
def test_gradients(impl, up, down, padding, separable):
    f = torch.tensor([1.0, 3.0, -2.0, 4.0] if separable else [[1.0, -2.0, 3.0], [2.0, 4.0, -1.0]])
    x = torch.randn([1, 2, 5, 6], dtype=torch.float64, requires_grad=True)
    fn = lambda x: upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=False, gain=1.5, impl=impl)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_cpu_gradients_match_ref():
    # First and second order gradients of 'cpu' equal those of 'ref' (float32, larger than gradcheck sizes).
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x0 = torch.randn([2, 4, 12, 10])
    results = []
    for impl in ['ref', 'cpu']:
        x = x0.clone().requires_grad_(True)
        y = upfirdn2d.upsample2d(x, f, impl=impl)
        z = upfirdn2d.downsample2d(y * y, f, impl=impl)
        (dx,) = torch.autograd.grad(z.sum(), x, create_graph=True)
        (ddx,) = torch.autograd.grad((dx ** 2).sum(), x)
        results.append((y.detach(), z.detach(), dx.detach(), ddx))
    for want, got in zip(*results):
        assert_close_rel(got, want)


def test_cpu_filter_requiring_grad_uses_ref():
    # The kernels do not differentiate w.r.t. f; a trainable filter must still get its gradient.
    x = torch.randn([1, 2, 6, 5], dtype=torch.float64)
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = upfirdn2d.upfirdn2d(x, f, up=2, padding=1, impl='cpu')
    (df,) = torch.autograd.grad(y.sum(), f)
    g = f.detach().clone().requires_grad_(True)
    (want,) = torch.autograd.grad(upfirdn2d.upfirdn2d(x, g, up=2, padding=1, impl='ref').sum(), g)
    torch.testing.assert_close(df, want)


def test_real_he_tile_cpu_matches_ref(he_crops):
    # Real H&E pixels through the resampling StyleGAN2 uses: 2x up and 2x down with the [1,3,3,1] filter.
    crops = torch.tensor(he_crops(64, 2)).permute(0, 3, 1, 2).float() / 127.5 - 1
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    for fn in [upfirdn2d.upsample2d, upfirdn2d.downsample2d, upfirdn2d.filter2d]:
        assert_close_rel(fn(crops, f, impl='cpu'), fn(crops, f, impl='ref'))
    # Down then up keeps a smooth image close to itself: low-pass content survives.
    y = upfirdn2d.upsample2d(upfirdn2d.downsample2d(crops, f, impl='cpu'), f, impl='cpu')
    assert y.shape == crops.shape
    assert float((y - crops)[:, :, 4:-4, 4:-4].abs().mean()) < float(crops.std())


def test_cpu_multithreaded_matches_ref():
    # The OpenMP path (rows split between threads) on an input big enough to enable it.
    torch.set_num_threads(2)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn([2, 8, 48, 40])
    for kwargs in [dict(up=2, padding=[2, 1, 2, 1]), dict(down=2, padding=1), dict(up=[1, 2], down=[3, 1])]:
        assert_close_rel(upfirdn2d.upfirdn2d(x, f, impl='cpu', **kwargs), upfirdn2d.upfirdn2d(x, f, impl='ref', **kwargs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_cuda_pixel_formula_on_cpu(dtype, layout):
    # The CUDA kernel's per-thread work (ufd_output_element in upfirdn2d.h: the output index in NCHW or NHWC
    # order, x read through its strides) runs here through the CPU plugin; y keeps x's layout.
    plugin = upfirdn2d._cpu_plugin()
    f = torch.tensor(FILTERS['2d'])
    x = torch.randn([2, 3, 9, 7], dtype=dtype, generator=torch.Generator().manual_seed(5)).contiguous(memory_format=layout)
    for up, down, padding, flip_filter in itertools.product(
            [1, 2, [2, 1]], [1, 2, [1, 3]], [0, [3, -1, 1, -2]], [False, True]):
        upx, upy = upfirdn2d._xy(up, 'up')
        downx, downy = upfirdn2d._xy(down, 'down')
        got = plugin.upfirdn2d_pixelwise(x, f, upx, upy, downx, downy, *upfirdn2d._sides(padding), flip_filter, 1.7)
        want = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=1.7, impl='ref')
        assert got.is_contiguous(memory_format=layout)
        assert_close_rel(got, want)


@pytest.mark.parametrize("failure", ["raises", "wrong values"])
def test_failing_launch_falls_back_to_ref_with_one_warning(monkeypatch, failure):
    # A plugin that loads but whose first launch fails (as a CUDA build without code for the GPU does) or
    # computes wrong values: the self-check catches it, one warning names the op and the cause, 'ref' runs.
    from torch_utils import custom_ops
    real = upfirdn2d._cpu_plugin()

    class Broken:
        def upfirdn2d(self, x, f, *geometry):
            if failure == 'raises':
                raise RuntimeError('upfirdn2d_cuda: kernel launch failed: no kernel image is available for execution '
                                   'on the device')
            return real.upfirdn2d(x, f, *geometry) * 1.01

    monkeypatch.setattr(upfirdn2d, '_cpu_plugin', Broken)
    monkeypatch.setattr(custom_ops, '_resolved', dict())
    monkeypatch.delenv(custom_ops.IMPL_ENV, raising=False)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn([1, 2, 8, 8])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        ys = [upfirdn2d.upsample2d(x, f), upfirdn2d.downsample2d(x, f), upfirdn2d.upsample2d(x, f)]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    cause = 'no kernel image' if failure == 'raises' else 'differs from ref'
    assert 'upfirdn2d' in messages[0] and cause in messages[0] and '\n' not in messages[0]
    for y, want in zip(ys, [upfirdn2d.upsample2d(x, f, impl='ref'), upfirdn2d.downsample2d(x, f, impl='ref')] * 2):
        torch.testing.assert_close(y, want, rtol=0, atol=0)
    with pytest.raises(custom_ops.PluginSelfCheckError, match=cause):
        upfirdn2d.upsample2d(x, f, impl='cpu')  # asked for by name: an error, not a silent fallback


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_ref(dtype):
    f = torch.tensor(FILTERS['2d'], device='cuda')
    fs = torch.tensor(FILTERS['separable'], device='cuda')
    x = torch.randn([2, 3, 9, 7], dtype=dtype, device='cuda')
    for up, down, padding, flip_filter, filt in itertools.product(
            [1, 2, [2, 1]], [1, 2, [1, 3]], [0, [3, -1, 1, -2]], [False, True], [f, fs]):
        kwargs = dict(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=1.7)
        assert_close_rel(upfirdn2d.upfirdn2d(x, filt, impl='cuda', **kwargs), upfirdn2d.upfirdn2d(x, filt, impl='ref', **kwargs))
    xg = torch.randn([1, 2, 5, 6], dtype=torch.float64, device='cuda', requires_grad=True)
    fn = lambda x: upfirdn2d.upfirdn2d(x, f, up=2, down=1, padding=[2, 1, 1, 2], impl='cuda')
    assert torch.autograd.gradcheck(fn, (xg,))
    assert torch.autograd.gradgradcheck(fn, (xg,))



@pytest.mark.gpu
def test_cuda_keeps_channels_last_in_float16():
    # config-e's fp16 layers run channels_last: the CUDA kernel reads and writes that layout, no copy to NCHW.
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device='cuda')
    x = torch.randn([2, 16, 9, 7], device='cuda').half().contiguous(memory_format=torch.channels_last)
    for fn in [upfirdn2d.upsample2d, upfirdn2d.downsample2d, upfirdn2d.filter2d]:
        y = fn(x, f, impl='cuda')
        assert y.dtype == torch.float16 and y.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y.float(), fn(x.float(), f, impl='ref'), rtol=1e-2, atol=1e-2)

#----------------------------------------------------------------------------

def test_aligned_padding_matches_the_per_wrapper_formulas():
    # One rule in the code ((taps + up - down) // 2 before, taps - down in total) against the separate formulas
    # that define filter2d, upsample2d and downsample2d: taps // 2 and (taps - 1) // 2; (taps + up - 1) // 2 and
    # (taps - up) // 2; (taps - down + 1) // 2 and (taps - down) // 2.
    for taps in range(1, 9):
        f = torch.ones([taps, taps])
        assert upfirdn2d._aligned_padding(f, 0) == [taps // 2, (taps - 1) // 2] * 2
        for k in range(2, 5):
            up_pad = [(taps + k - 1) // 2, (taps - k) // 2]
            down_pad = [(taps - k + 1) // 2, (taps - k) // 2]
            assert upfirdn2d._aligned_padding(f, 0, up=k) == up_pad * 2
            assert upfirdn2d._aligned_padding(f, 0, down=k) == down_pad * 2
    assert upfirdn2d._aligned_padding(torch.ones([3, 5]), [1, 2, 3, 4], up=[2, 1]) == [1 + 3, 2 + 1, 3 + 1, 4 + 1]


def test_transposed_plan_is_the_adjoint():
    # <upfirdn2d(x), y> == <x, transposed upfirdn2d(y)> for random geometries: the backward pass's plan.
    gen = torch.Generator().manual_seed(11)
    f = torch.randn([3, 4], generator=gen, dtype=torch.float64)
    for up, down, padding, flip in [(2, 1, [2, 1, 0, 3], False), (1, 3, [1, -1, 2, 0], True), ([3, 2], [2, 1], 1, False)]:
        x = torch.randn([1, 2, 7, 9], generator=gen, dtype=torch.float64)
        plan = upfirdn2d._Resampling.make(x, f, up, down, padding, flip, 1.3)
        y = upfirdn2d._reference(x, f, plan)
        back = plan.transposed(x.shape[2], x.shape[3], y.shape[2], y.shape[3], f.shape[1], f.shape[0])
        r = torch.randn(y.shape, generator=gen, dtype=torch.float64)
        xt = upfirdn2d._reference(r, f, back)
        assert xt.shape == x.shape
        torch.testing.assert_close((y * r).sum(), (x * xt).sum(), rtol=1e-12, atol=1e-12)


def test_bad_arguments_are_user_errors():
    import dnnlib
    x = torch.zeros([1, 1, 4, 4])
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    with pytest.raises(dnnlib.util.UserError, match='empty output'):
        upfirdn2d.upfirdn2d(x, f, padding=-2)
    with pytest.raises(dnnlib.util.UserError, match='padding'):
        upfirdn2d.upfirdn2d(x, f, padding=[1, 2, 3])
    with pytest.raises(dnnlib.util.UserError, match='up'):
        upfirdn2d.upsample2d(x, f, up=0)
    with pytest.raises(dnnlib.util.UserError, match='4-D'):
        upfirdn2d.upfirdn2d(x[0], f)
    with pytest.raises(dnnlib.util.UserError, match='separable'):
        upfirdn2d.setup_filter([[1, 2], [3, 4]], separable=True)
