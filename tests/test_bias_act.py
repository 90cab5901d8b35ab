"""bias_act: 'ref' against numpy formulas, the fused 'cpu' kernel against 'ref', gradients to second order."""

import itertools
import warnings

import numpy as np
import pytest
import scipy.special
import torch

import dnnlib
from torch_utils import custom_ops
from torch_utils.ops import bias_act

ACTS = list(bias_act.activation_funcs)


def _numpy_act(act, v, alpha):
    """Each activation written independently in numpy/scipy."""
    return {
        'linear':   lambda: v,
        'relu':     lambda: np.maximum(v, 0),
        'lrelu':    lambda: np.where(v > 0, v, v * alpha),
        'tanh':     lambda: np.tanh(v),
        'sigmoid':  lambda: scipy.special.expit(v),
        'elu':      lambda: np.where(v > 0, v, np.expm1(v)),
        'selu':     lambda: 1.0507009873554805 * np.where(v > 0, v, 1.6732632423543772 * np.expm1(v)),
        'softplus': lambda: np.logaddexp(0, v),
        'swish':    lambda: v * scipy.special.expit(v),
    }[act]()


@pytest.fixture(scope='module')
def cpu_plugin():
    # Build (or load from the on-disk cache) once; a failed build must fail these tests, not fall back.
    return bias_act._cpu_plugin()

# ----------------------------------------------------------------------------


@pytest.mark.parametrize('act', ACTS)
def test_ref_matches_numpy(act):
    rnd = np.random.RandomState(1)
    x = rnd.randn(3, 5, 4, 2) * 3
    b = rnd.randn(5)
    spec = bias_act.activation_funcs[act]
    alpha = spec.def_alpha if act != 'lrelu' else 0.2
    expected = _numpy_act(act, x + b[None, :, None, None], alpha) * spec.def_gain
    got = bias_act.bias_act(torch.from_numpy(x), torch.from_numpy(b), act=act, impl='ref').numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    clamped = bias_act.bias_act(torch.from_numpy(x), torch.from_numpy(b), act=act, gain=0.7, clamp=0.5, impl='ref').numpy()
    np.testing.assert_allclose(clamped, np.clip(expected / spec.def_gain * 0.7, -0.5, 0.5), rtol=1e-12, atol=1e-12)


def test_default_gains_and_alpha():
    # The official table: sqrt(2) for the rectifiers and swish, lrelu slope 0.2.
    gains = {act: spec.def_gain for act, spec in bias_act.activation_funcs.items()}
    assert gains == pytest.approx({'linear': 1, 'relu': 2 ** 0.5, 'lrelu': 2 ** 0.5, 'tanh': 1, 'sigmoid': 1,
                                   'elu': 1, 'selu': 1, 'softplus': 1, 'swish': 2 ** 0.5})
    assert bias_act.activation_funcs['lrelu'].def_alpha == 0.2
    y = bias_act.bias_act(torch.tensor([[-1.0, 2.0]]), act='lrelu', impl='ref')
    assert torch.allclose(y, torch.tensor([[-0.2, 2.0]]) * 2 ** 0.5)

# ----------------------------------------------------------------------------


def _layout(x, kind):
    if kind == 'contiguous':
        return x
    if kind == 'channels_last':
        return x.contiguous(memory_format=torch.channels_last)
    # A strided view: every other column of a wider tensor.
    wide = torch.cat([x, torch.randn_like(x)], dim=-1)
    return wide[..., 0::2] if x.shape[-1] > 0 else wide


# (act, bias, dtype, layout, dim, gain, clamp, alpha): every activation with and without bias in both
# dtypes, plus variations of layout, dim, gain, clamp and alpha spread over them.
GRID = []
for i, (act, with_bias, dtype) in enumerate(itertools.product(ACTS, [True, False], [torch.float32, torch.float64])):
    layout = ['contiguous', 'channels_last', 'strided'][i % 3]
    dim = [1, 1, 2, -1][i % 4]
    gain = [None, 0.5, -1.3][i % 3]
    clamp = [None, 0.8, 256][(i // 2) % 3]
    alpha = [None, 0.1][i % 2] if act == 'lrelu' else None
    GRID.append((act, with_bias, dtype, layout, dim, gain, clamp, alpha))


@pytest.mark.parametrize('act,with_bias,dtype,layout,dim,gain,clamp,alpha', GRID)
def test_cpu_matches_ref(cpu_plugin, act, with_bias, dtype, layout, dim, gain, clamp, alpha):
    gen = torch.Generator().manual_seed(len(act) * 7 + dim)
    x = _layout((torch.randn([3, 7, 5, 3], generator=gen, dtype=dtype) * 2), layout)
    b = torch.randn([x.shape[dim]], generator=gen, dtype=dtype) if with_bias else None
    kwargs = dict(b=b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    dy = torch.randn(x.shape, generator=gen, dtype=dtype)
    outs = {}
    for impl in ['ref', 'cpu']:
        xi = x.detach().requires_grad_(True)
        bi = b.detach().requires_grad_(True) if b is not None else None
        y = bias_act.bias_act(xi, **{**kwargs, 'b': bi}, impl=impl)
        grads = torch.autograd.grad(y, [xi] + ([bi] if bi is not None else []), dy)
        outs[impl] = (y, *grads)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    for ref, got in zip(outs['ref'], outs['cpu']):
        assert got.dtype == dtype and got.shape == ref.shape
        torch.testing.assert_close(got, ref, **tol)
    if layout == 'channels_last':
        assert outs['cpu'][0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('shape,dim', [([1], 0), ([13, 1, 1, 1], 0), ([2, 3], 1), ([1, 5, 1, 3], 1), ([4, 3, 17], 2), ([2, 0, 3], 1)])
def test_cpu_odd_shapes(cpu_plugin, shape, dim):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=gen)
    b = torch.randn([shape[dim]], generator=gen)
    for act in ['lrelu', 'swish']:
        ref = bias_act.bias_act(x, b, dim=dim, act=act, clamp=1.0, impl='ref')
        got = bias_act.bias_act(x, b, dim=dim, act=act, clamp=1.0, impl='cpu')
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_cpu_large_parallel_input(cpu_plugin):
    # Big enough to be split over several threads, in both bias layouts.
    gen = torch.Generator().manual_seed(4)
    x = torch.randn([2, 64, 33, 31], generator=gen)
    b = torch.randn([64], generator=gen)
    for xx in [x, x.contiguous(memory_format=torch.channels_last)]:
        ref = bias_act.bias_act(xx, b, act='lrelu', gain=1.3, clamp=2.0, impl='ref')
        got = bias_act.bias_act(xx, b, act='lrelu', gain=1.3, clamp=2.0, impl='cpu')
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)

# ----------------------------------------------------------------------------


@pytest.mark.parametrize('impl', ['ref', 'cpu'])
@pytest.mark.parametrize('act', ACTS)
def test_gradcheck_and_gradgradcheck(cpu_plugin, impl, act):
    gen = torch.Generator().manual_seed(5)
    # Keep values away from the kinks of relu/lrelu and the clamp edges, where finite differences break.
    x = torch.randn([2, 3, 2, 2], generator=gen, dtype=torch.float64)
    x = (x + 0.1 * x.sign()).requires_grad_(True)
    b = (torch.randn([3], generator=gen, dtype=torch.float64) * 0.01).requires_grad_(True)
    for clamp in [None, 0.9]:
        fn = lambda x, b: bias_act.bias_act(x, b, act=act, gain=1.1, clamp=clamp, impl=impl)
        assert torch.autograd.gradcheck(fn, (x, b), eps=1e-6, atol=1e-5)
        assert torch.autograd.gradgradcheck(fn, (x, b), eps=1e-6, atol=1e-5)


def test_cpu_second_order_matches_ref_r1_style(cpu_plugin):
    # R1 penalty shape: gradient w.r.t. the input with create_graph, then its norm's gradient.
    gen = torch.Generator().manual_seed(6)
    x0 = torch.randn([2, 4, 3, 3], generator=gen, dtype=torch.float64)
    b0 = torch.randn([4], generator=gen, dtype=torch.float64)
    results = []
    for impl in ['ref', 'cpu']:
        x, b = x0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        y = bias_act.bias_act(x, b, act='softplus', gain=1.5, impl=impl)
        (gx,) = torch.autograd.grad((y * y).sum(), [x], create_graph=True)
        results.append(torch.autograd.grad(gx.square().sum(), [x, b]))
    for ref, got in zip(*results):
        torch.testing.assert_close(got, ref)

# ----------------------------------------------------------------------------


def test_impl_none_uses_the_cpu_kernel_and_force_impl_overrides(cpu_plugin):
    x = torch.zeros([1])
    assert custom_ops.resolve_impl(None, x, 'bias_act', bias_act._plugins) == 'cpu'
    with custom_ops.force_impl('ref'):
        assert custom_ops.resolve_impl(None, x, 'bias_act', bias_act._plugins) == 'ref'
    y = bias_act.bias_act(torch.tensor([[-1.0, 3.0]]), torch.tensor([0.5, 0.0]), act='relu')
    torch.testing.assert_close(y, torch.tensor([[0.0, 3.0]]) * 2 ** 0.5)


@pytest.mark.parametrize('failure', ['raises', 'wrong values'])
def test_failing_launch_falls_back_to_ref_with_one_warning(cpu_plugin, monkeypatch, failure):
    # A plugin that loads but cannot launch (a CUDA build without code for this GPU) or computes wrong values:
    # the self-check after loading catches it, one warning names the op and the cause, and 'ref' runs.
    class Broken:
        def bias_act(self, x, *args):
            if failure == 'raises':
                raise RuntimeError('CUDA error: no kernel image is available for execution on the device')
            result, sums = cpu_plugin.bias_act(x, *args)
            return result + 0.01, sums

    monkeypatch.setitem(bias_act._plugins, 'cpu', Broken)
    monkeypatch.setattr(custom_ops, '_resolved', dict())
    monkeypatch.delenv(custom_ops.IMPL_ENV, raising=False)
    x, b = torch.randn([2, 3, 4, 4]), torch.randn([3])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        ys = [bias_act.bias_act(x, b, act=act) for act in ['lrelu', 'tanh', 'lrelu']]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    cause = 'no kernel image' if failure == 'raises' else 'differs from ref'
    assert 'bias_act' in messages[0] and cause in messages[0] and '\n' not in messages[0]
    for y, act in zip(ys, ['lrelu', 'tanh', 'lrelu']):
        torch.testing.assert_close(y, bias_act.bias_act(x, b, act=act, impl='ref'), rtol=0, atol=0)
    with pytest.raises(custom_ops.PluginSelfCheckError, match=cause):
        bias_act.bias_act(x, b, impl='cpu')  # asked for by name: an error, not a silent fallback


def test_bad_input_raises_user_error():
    x = torch.zeros([2, 3])
    with pytest.raises(dnnlib.util.UserError, match='unknown activation'):
        bias_act.bias_act(x, act='gelu')
    with pytest.raises(dnnlib.util.UserError, match='x.shape'):
        bias_act.bias_act(x, torch.zeros([2]))
    with pytest.raises(dnnlib.util.UserError, match='out of range'):
        bias_act.bias_act(x, dim=2)
    with pytest.raises(dnnlib.util.UserError, match='cannot run'):
        bias_act.bias_act(x, impl='cuda')
    with pytest.raises(dnnlib.util.UserError, match='not torch.float16'):
        bias_act.bias_act(x.half(), act='lrelu', impl='cpu')


def test_automatic_impl_takes_ref_for_dtypes_without_a_kernel(cpu_plugin):
    x = torch.tensor([[-1.0, 2.0]], dtype=torch.bfloat16)
    y = bias_act.bias_act(x, act='lrelu')
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, torch.tensor([[-0.2, 2.0]], dtype=torch.bfloat16) * 2 ** 0.5)

# ----------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize('act', ACTS)
def test_cuda_matches_ref(act):
    gen = torch.Generator().manual_seed(7)
    for dtype, layout in [(torch.float32, 'contiguous'), (torch.float64, 'channels_last'), (torch.float16, 'strided')]:
        x = _layout(torch.randn([4, 9, 6, 5], generator=gen).to('cuda', dtype), layout)
        b = torch.randn([9], generator=gen).to('cuda', dtype)
        dy = torch.randn(x.shape, generator=gen).to('cuda', dtype)
        outs = {}
        for impl in ['ref', 'cuda']:
            xi, bi = x.detach().requires_grad_(True), b.detach().requires_grad_(True)
            y = bias_act.bias_act(xi, bi, act=act, gain=1.2, clamp=1.5, impl=impl)
            outs[impl] = (y, *torch.autograd.grad(y, [xi, bi], dy))
        tol = dict(rtol=1e-2, atol=1e-2) if dtype == torch.float16 else dict(rtol=1e-5, atol=1e-5)
        for ref, got in zip(outs['ref'], outs['cuda']):
            torch.testing.assert_close(got.float(), ref.float(), **tol)
    x = torch.randn([2, 3, 2, 2], generator=gen, dtype=torch.float64, device='cpu').to('cuda').requires_grad_(True)
    bb = torch.randn([3], generator=gen, dtype=torch.float64).to('cuda').requires_grad_(True)
    fn = lambda x, b: bias_act.bias_act(x, b, act=act, gain=1.1, impl='cuda')
    assert torch.autograd.gradcheck(fn, (x, bb), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradgradcheck(fn, (x, bb), eps=1e-6, atol=1e-5)

# ----------------------------------------------------------------------------


@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
def test_cpu_training_config_against_numpy(cpu_plugin, layout):
    # A StyleGAN2 layer's call (lrelu, bias, gain sqrt(2), clamp) with its derivatives written out in numpy:
    # y = clip(lrelu(x + b) * g, -c, c); dx = dy * lrelu'(x + b) * g where |y| < c; db = dx summed per channel.
    rnd = np.random.RandomState(8)
    x, b, dy = rnd.randn(3, 6, 9, 7) * 2, rnd.randn(6), rnd.randn(3, 6, 9, 7)
    alpha, gain, clamp = 0.2, 2 ** 0.5, 1.5
    v = x + b[None, :, None, None]
    y = np.clip(np.where(v > 0, v, alpha * v) * gain, -clamp, clamp)
    dx = dy * np.where(v > 0, 1, alpha) * gain * (np.abs(y) < clamp)
    db = dx.sum(axis=(0, 2, 3))
    xt = _layout(torch.tensor(x, dtype=torch.float32), layout).requires_grad_(True)
    bt = torch.tensor(b, dtype=torch.float32, requires_grad=True)
    yt = bias_act.bias_act(xt, bt, act='lrelu', gain=gain, clamp=clamp, impl='cpu')
    gx, gb = torch.autograd.grad(yt, [xt, bt], torch.tensor(dy, dtype=torch.float32))
    np.testing.assert_allclose(yt.detach().numpy(), y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx.numpy(), dx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gb.numpy(), db, rtol=1e-5, atol=1e-4)


def test_cpu_large_tensors_and_bias_gradient_precision(cpu_plugin):
    # Results above the kernel's huge-page threshold (8 MiB), in both layouts; the bias gradient sums 16k
    # values per channel and must still agree with a float64 sum.
    gen = torch.Generator().manual_seed(9)
    x = torch.randn([4, 16, 192, 192], generator=gen)
    b = torch.randn([16], generator=gen)
    dy = torch.randn(x.shape, generator=gen)
    for xx in [x, x.contiguous(memory_format=torch.channels_last)]:
        outs = {}
        for impl in ['ref', 'cpu']:
            xi, bi = xx.detach().requires_grad_(True), b.detach().requires_grad_(True)
            y = bias_act.bias_act(xi, bi, act='lrelu', clamp=2.5, impl=impl)
            outs[impl] = (y.detach(), *torch.autograd.grad(y, [xi, bi], dy))
        for ref, got in zip(outs['ref'], outs['cpu']):
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-3)
        v = (x.double() + b.double()[None, :, None, None])
        y64 = (torch.where(v > 0, v, 0.2 * v) * 2 ** 0.5)
        db64 = (dy.double() * torch.where(v > 0, 1.0, 0.2) * 2 ** 0.5 * (y64.abs() < 2.5)).sum([0, 2, 3])
        torch.testing.assert_close(outs['cpu'][2].double(), db64, rtol=1e-6, atol=1e-3)
        assert outs['cpu'][0].is_contiguous(memory_format=_memory_format_of(xx))
        del outs  # frees the huge-page buffers through their deleters


def _memory_format_of(t):
    return torch.contiguous_format if t.is_contiguous() else torch.channels_last


def test_bias_gradient_without_kept_bias_and_dims(cpu_plugin):
    # lrelu keeps neither x nor b for its backward pass; the bias gradient is then summed by the kernel on its
    # own, for every bias dimension and layout.
    gen = torch.Generator().manual_seed(10)
    for shape, dim in [([2, 5, 4, 3], 1), ([2, 5, 4, 3], 3), ([6, 1, 3], 1), ([7, 4], 0)]:
        x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
        b = torch.randn([shape[dim]], generator=gen, dtype=torch.float64, requires_grad=True)
        dy = torch.randn(shape, generator=gen, dtype=torch.float64)
        got = torch.autograd.grad(bias_act.bias_act(x, b, dim=dim, act='lrelu', impl='cpu'), [x, b], dy)
        want = torch.autograd.grad(bias_act.bias_act(x, b, dim=dim, act='lrelu', impl='ref'), [x, b], dy)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('act', ACTS)
def test_cuda_element_code_on_cpu_matches_ref_derivatives(cpu_plugin, act):
    # bias_act.cu runs ba_flat_element (bias_act.h) per element; the CPU plugin's bias_act_flat runs the same
    # code, flat index and bias indexing included. Its three modes against 'ref' and autograd on 'ref'.
    gen = torch.Generator().manual_seed(12)
    code = bias_act.activation_funcs[act].cuda_idx
    for layout, dim in [('contiguous', 1), ('channels_last', 1), ('contiguous', 3), ('channels_last', 2)]:
        x = _layout(torch.randn([2, 5, 4, 3], generator=gen, dtype=torch.float64) * 2, layout)
        b = torch.randn([x.shape[dim]], generator=gen, dtype=torch.float64)
        dy, ddx = torch.randn(x.shape, generator=gen, dtype=torch.float64), torch.randn(x.shape, generator=gen, dtype=torch.float64)
        dy, ddx = dy.contiguous(memory_format=bias_act._memory_format(x)), ddx.contiguous(memory_format=bias_act._memory_format(x))
        # The kernel arguments carry alpha, gain and clamp as float32: values exact in float32 keep float64 exact.
        alpha, gain, clamp = 0.25, 1.25, 1.125
        xr = x.detach().requires_grad_(True)
        y = bias_act.bias_act(xr, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, impl='ref')
        (gx,) = torch.autograd.grad(y, xr, dy, create_graph=True)
        ggx = torch.autograd.grad(gx, xr, ddx, allow_unused=True)[0] if gx.requires_grad else None
        none = x.new_empty([0])
        flat = lambda *args: cpu_plugin.bias_act_flat(*args, dim, code, alpha, gain, clamp)  # noqa: E731
        y_flat = flat(x, b, none, none, none, 0)
        torch.testing.assert_close(y_flat, y.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(flat(dy, b, x, y_flat, none, 1), gx.detach(), rtol=1e-10, atol=1e-12)
        want2 = torch.zeros_like(x) if ggx is None else ggx
        torch.testing.assert_close(flat(ddx, b, x, y_flat, dy, 2), want2, rtol=1e-8, atol=1e-10)
