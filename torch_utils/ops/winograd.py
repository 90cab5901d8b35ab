"""3x3 stride-1 convolution by Winograd's minimal filtering F(m x m, 3 x 3) (Lavin & Gray, CVPR 2016).

An m x m block of outputs needs an (m + 2) x (m + 2) input tile d and the 3 x 3 kernel g:

    Y = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise, per input/output channel pair)

Summed over the input channels, the elementwise product becomes one matrix product per tile position:
(m + 2)^2 products [tiles, in] @ [in, out] instead of 9 m^2 multiply-adds per output pixel and channel pair.
F(2x2, 3x3) needs 2.25 times fewer multiplications than the direct convolution, F(4x4, 3x3) 4 times fewer.
On CPUs the convolutions of StyleGAN's 3x3 layers dominate a training step, so this is the fast path's main
saving. Every step is a matrix product or a reshape, so autograd differentiates it to any order (R1 and the
path-length penalty need the second derivative).

The tile transforms are exact in real arithmetic; in float32 F(2, 3) agrees with the direct convolution to
about 1e-6 and F(4, 3) to about 1e-5 of the output's magnitude.

Two implementations: 'ref' spells the transforms out with PyTorch ops (pad, unfold, matrix products,
permutes); 'cpu' (winograd_cpu.cpp) computes each transform and its adjoint in one pass over NHWC memory,
reading the padding as zeros and writing only the pixels inside the image, and splits the transformed side
into groups of tile positions small enough for the C library to recycle their memory. The matrix products
are torch's in both.
"""

import functools
import os

import torch

from .. import custom_ops

# ----------------------------------------------------------------------------

enabled = True     # The convolutions that qualify (see applies()) go through Winograd on CPUs.
tile = 4           # m: outputs per tile side, 2 or 4.
min_channels = 64  # Narrower layers stay with the direct convolution (too little work per tile to gain).
min_size = 8       # Likewise images smaller than this (mostly padding in the tiles).
min_tiles = 64     # Likewise fewer tiles in the batch: the kernel transform ([a*a, in, out]) would dominate.
inference_min_channels = 256  # Without autograd oneDNN's direct forward is faster below this width (measured).
max_group_bytes = 24 << 20  # the transformed side is split into tensors no larger than this (see winograd_cpu.cpp)

# Transforms for the interpolation points 0, +-1 (F(2, 3)) and 0, +-1, +-2 (F(4, 3)), each with the point at
# infinity. Rows of B^T and A^T evaluate/interpolate; G carries the Lagrange denominators.
_MATRICES = {
    2: dict(
        BT=[[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        G=[[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
        AT=[[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: dict(
        BT=[[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        G=[[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
           [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        AT=[[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}

# ----------------------------------------------------------------------------


def applies(x, w, stride, padding, groups, transposed=False):
    """Whether conv2d(x, w, stride, padding, groups) is computed here: CPU, float32, 3x3, 'same', wide enough.

    Measured on a 2-core AVX-512 Xeon, float32, one thread: with autograd (forward, backward, double backward)
    Winograd wins from 64 channels and 16x16 images at batch 8 (128 tiles) and loses at 8x8 (32 tiles), where
    the kernel transform is as large as the whole activation side. Without autograd oneDNN's direct forward is
    hard to beat: Winograd wins at 512 channels (about 2x), breaks even at 256 and loses at 64 and 128.
    """
    if not enabled or transposed or x.device.type != 'cpu' or x.dtype != torch.float32 or w.dtype != torch.float32:
        return False
    if tuple(w.shape[2:]) != (3, 3) or groups != 1 or stride not in (1, [1, 1], (1, 1)):
        return False
    if padding not in (1, [1, 1], (1, 1)):
        return False
    height, width = x.shape[2], x.shape[3]
    if min(height, width) < min_size or x.shape[0] * -(-height // tile) * -(-width // tile) < min_tiles:
        return False
    differentiated = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
    if not differentiated and custom_ops.resolve_impl(None, x, 'winograd', {'cpu': _cpu_plugin}) != 'cpu':
        return False  # the 'ref' transforms cost more than they save in a forward pass alone
    return min(w.shape[0], w.shape[1]) >= (min_channels if differentiated else inference_min_channels)


_HERE = os.path.dirname(os.path.abspath(__file__))


@functools.lru_cache(maxsize=None)
def _transform_matrices(m, dtype):
    """{'BT', 'G', 'AT'} of F(m x m, 3 x 3) as tensors, built once per tile size and dtype (read-only)."""
    return {key: torch.tensor(value, dtype=dtype) for key, value in _MATRICES[m].items()}


# Resolved once per process: the transforms call it on every convolution.
_cpu_plugin = custom_ops.Plugin('winograd_cpu_plugin', sources=['winograd_cpu.cpp'], source_dir=_HERE)


def conv3x3(x, w, m=None, impl=None):
    """torch.nn.functional.conv2d(x, w, padding=1) for w [out, in, 3, 3], stored in x's memory layout.

    impl: 'ref', 'cpu' or None (the compiled transforms for CPU tensors when they build, else 'ref').
    """
    m = tile if m is None else m
    impl = custom_ops.resolve_impl(impl, x, 'winograd', {'cpu': _cpu_plugin}) if x.device.type == 'cpu' else 'ref'
    if impl == 'cpu':
        return _compiled(x, w, m)
    return _reference(x, w, m)


def _is_channels_last(x):
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class _LinearMap(torch.autograd.Function):
    """outputs = forward_map(*inputs) for a linear map with a known adjoint (tensors or tuples of tensors on
    either side). The gradient is adjoint_map(*grads), computed by another _LinearMap with the two roles
    swapped, so autograd differentiates through it to any order."""

    @staticmethod
    def forward(ctx, forward_map, adjoint_map, *inputs):  # pylint: disable=arguments-differ
        ctx.maps = (forward_map, adjoint_map)
        return forward_map(*inputs)

    @staticmethod
    def backward(ctx, *grads):  # pylint: disable=arguments-differ
        forward_map, adjoint_map = ctx.maps
        result = _LinearMap.apply(adjoint_map, forward_map, *grads)
        return (None, None) + (tuple(result) if isinstance(result, (tuple, list)) else (result,))


def _position_groups(positions, row_counts, columns, itemsize):
    """Bounds 0 = k0 < k1 < ... = positions of consecutive tile positions whose [positions, rows, columns]
    tensors (for every row count given) stay below max_group_bytes."""
    per_position = max(row_counts) * columns * itemsize
    count = min(positions, max(1, -(-positions * per_position // max_group_bytes)))
    return [round(i * positions / count) for i in range(count + 1)]


def _compiled(x, w, m):
    """The 'cpu' implementation: compiled tile transforms around torch.bmm, NHWC on the compiled side."""
    plugin = _cpu_plugin()
    mats = _transform_matrices(m, torch.float64)
    bt, g, at = mats['BT'], mats['G'], mats['AT']
    n, in_channels, height, width = x.shape
    out_channels = w.shape[0]
    tiles_y, tiles_x = -(-height // m), -(-width // m)
    tiles = n * tiles_y * tiles_x
    bounds = _position_groups((m + 2) ** 2, [tiles, in_channels], max(in_channels, out_channels), x.element_size())

    v = _LinearMap.apply(lambda t: tuple(plugin.tiles_in(t, bt, m, 1, tiles_y, tiles_x, bounds)),
                         lambda *ts: plugin.tiles_in_adjoint(list(ts), bt.t(), m, 1, n, height, width),
                         x.permute(0, 2, 3, 1))
    u = _LinearMap.apply(lambda t: tuple(plugin.kernel_tiles(t, g, bounds)),
                         lambda *ts: plugin.kernel_tiles_adjoint(list(ts), g.t()), w)
    prod = [torch.bmm(vg, ug) for vg, ug in zip(v, u)]  # per position: [tiles, in] @ [in, out]
    y = _LinearMap.apply(lambda *ts: plugin.tiles_out(list(ts), at, n, height, width),
                         lambda t: tuple(plugin.tiles_out_adjoint(t, at.t(), bounds)), *prod)
    y = y.permute(0, 3, 1, 2)  # NHWC memory
    return y if _is_channels_last(x) else y.contiguous()


def _reference(x, w, m):
    """The 'ref' implementation: the transforms as PyTorch tensor ops."""
    mats = _transform_matrices(m, x.dtype)
    a = m + 2
    n, _, height, width = x.shape
    tiles_y, tiles_x = -(-height // m), -(-width // m)

    # Input tiles in the transform domain, B^T d B: [a * a, n * tiles_y * tiles_x, in]. The unfolded tiles
    # overlap, so they are gathered once; the two transforms are matrix products on the leading axes.
    nhwc = x.permute(0, 2, 3, 1)
    nhwc = torch.nn.functional.pad(nhwc, [0, 0, 1, tiles_x * m + 1 - width, 1, tiles_y * m + 1 - height])
    tiles = nhwc.unfold(1, a, m).unfold(2, a, m).permute(4, 5, 0, 1, 2, 3)    # [a_y, a_x, n, ty, tx, in]
    v = mats['BT'] @ tiles.reshape(a, -1)                                       # rows: [a_y', a_x * ...]
    v = torch.matmul(mats['BT'], v.view(a, a, -1))                              # columns: [a_y', a_x', ...]
    v = v.view(a * a, -1, x.shape[1])

    # Kernels in the transform domain, G g G^T, indexed like v: [a * a, in, out] (one product with G (x) G).
    u = torch.kron(mats['G'], mats['G']) @ w.permute(2, 3, 1, 0).reshape(9, -1)
    u = u.view(a * a, w.shape[1], w.shape[0])

    # One product per tile position, then A^T (.) A back to m x m output blocks.
    prod = torch.bmm(v, u)                                                      # [a_y * a_x, tiles, out]
    y = torch.matmul(mats['AT'], prod.view(a, a, -1))                           # [a_y, m_x, ...]
    y = (mats['AT'] @ y.view(a, -1)).view(m, m, n, tiles_y, tiles_x, -1)        # [m_y, m_x, n, ty, tx, out]
    # Blocks back into images, in x's memory layout (a layout change would cost the next ops a conversion).
    if _is_channels_last(x):
        y = y.permute(2, 3, 0, 4, 1, 5).reshape(n, tiles_y * m, tiles_x * m, -1)  # [n, H', W', out]
        return y[:, :height, :width].permute(0, 3, 1, 2)
    y = y.permute(2, 5, 3, 0, 4, 1).reshape(n, -1, tiles_y * m, tiles_x * m)       # [n, out, H', W']
    return y[:, :, :height, :width]

# ----------------------------------------------------------------------------
