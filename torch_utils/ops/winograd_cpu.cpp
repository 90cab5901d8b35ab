// Winograd F(m x m, 3 x 3) on the CPU: the tile transforms and their adjoints (see winograd.py for the method).
//
// Every transform maps a small square patch to another by the same matrix L on both axes,
//     out[i][j] = sum_{p, q} L[i][p] L[j][q] in[p][q],
// applied to a whole run of channels at once (channels are the innermost, contiguous axis everywhere here):
//   tiles_in           NHWC activations -> [a*a, tiles, C], L = B^T, tile (ty, tx) reads rows ty*m - pad + [0, a)
//   tiles_in_adjoint   the reverse scatter-add (overlapping tiles), L = B
//   tiles_out          [a*a, tiles, C] -> NHWC, L = A^T, cropped to the image
//   tiles_out_adjoint  NHWC -> [a*a, tiles, C], L = A
//   kernel_tiles       [O, I, 3, 3] -> [a*a, I, O], L = G;   kernel_tiles_adjoint: back, L = G^T
// Each pair is adjoint, so winograd.py differentiates any of them by calling its partner (to any order).
// Reading the padding as zeros and writing only the pixels inside the image replaces the pad, unfold,
// permute and crop copies that the pure PyTorch formulation needs.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <vector>

static constexpr int64_t kChunk = 64; // channels per pass: one patch of a chunk stays in the L1 cache

//------------------------------------------------------------------------

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define WINOGRAD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define WINOGRAD_CLONES
#endif

// out[i][j][c] = sum_{p,q} L[i][p] L[j][q] in[p][q][c]; L is R x P, patches hold kChunk-strided channel runs.
template <typename T> WINOGRAD_CLONES
static void sandwich(const T* __restrict in, const T* __restrict L, int R, int P, T* __restrict tmp,
                     T* __restrict out, int64_t n)
{
    for (int i = 0; i < R; i++)
        for (int q = 0; q < P; q++)
        {
            T* t = tmp + (i * P + q) * kChunk;
            std::fill(t, t + n, T(0));
            for (int p = 0; p < P; p++)
            {
                const T l = L[i * P + p];
                if (l == T(0))
                    continue;
                const T* s = in + (p * P + q) * kChunk;
                #pragma omp simd
                for (int64_t c = 0; c < n; c++)
                    t[c] += l * s[c];
            }
        }
    for (int i = 0; i < R; i++)
        for (int j = 0; j < R; j++)
        {
            T* o = out + (i * R + j) * kChunk;
            std::fill(o, o + n, T(0));
            for (int q = 0; q < P; q++)
            {
                const T l = L[j * P + q];
                if (l == T(0))
                    continue;
                const T* s = tmp + (i * P + q) * kChunk;
                #pragma omp simd
                for (int64_t c = 0; c < n; c++)
                    o[c] += l * s[c];
            }
        }
}

template <typename T>
static void add_to(T* __restrict dst, const T* __restrict src, int64_t n)
{
    #pragma omp simd
    for (int64_t c = 0; c < n; c++)
        dst[c] += src[c];
}

// The transform matrix as scalar_t, with its shape.
template <typename T>
struct Matrix
{
    std::vector<T> values;
    int rows, cols;
    explicit Matrix(const torch::Tensor& L) : rows((int)L.size(0)), cols((int)L.size(1))
    {
        TORCH_CHECK(L.dim() == 2 && rows <= 8 && cols <= 8, "winograd_cpu: transform matrices are at most 8 x 8");
        torch::Tensor d = L.to(torch::kDouble).contiguous();
        for (int64_t k = 0; k < d.numel(); k++)
            values.push_back((T)d.data_ptr<double>()[k]);
    }
};

struct Scratch
{
    static constexpr int64_t size = 64 * kChunk;
};

// Image geometry shared by the four activation transforms.
struct Tiling
{
    int64_t n, h, w, channels, m, a, pad, tiles_y, tiles_x;
    int64_t tiles() const { return n * tiles_y * tiles_x; }
};

static void check_input(const torch::Tensor& t, int64_t dims, const char* what)
{
    TORCH_CHECK(t.device().is_cpu() && t.dim() == dims, "winograd_cpu: ", what, " must be a ", dims, "-D CPU tensor");
    TORCH_CHECK(t.scalar_type() == torch::kFloat || t.scalar_type() == torch::kDouble,
                "winograd_cpu: ", what, " must be float32 or float64");
}

//------------------------------------------------------------------------
// Activations.

// x: [N, H, W, C] -> [a*a, tiles, C].
static torch::Tensor tiles_in(torch::Tensor x, torch::Tensor bt, int64_t m, int64_t pad, int64_t tiles_y, int64_t tiles_x)
{
    check_input(x, 4, "x");
    x = x.contiguous();
    const Tiling g{x.size(0), x.size(1), x.size(2), x.size(3), m, bt.size(0), pad, tiles_y, tiles_x};
    torch::Tensor v = torch::empty({g.a * g.a, g.tiles(), g.channels}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tiles_in", [&]
    {
        const Matrix<scalar_t> L(bt);
        const scalar_t* src = x.data_ptr<scalar_t>();
        scalar_t* dst = v.data_ptr<scalar_t>();
        at::parallel_for(0, g.tiles(), 1, [&](int64_t begin, int64_t end)
        {
            std::vector<scalar_t> in(Scratch::size), tmp(Scratch::size), out(Scratch::size);
            for (int64_t tile = begin; tile < end; tile++)
            {
                const int64_t n = tile / (g.tiles_y * g.tiles_x), ty = (tile / g.tiles_x) % g.tiles_y, tx = tile % g.tiles_x;
                for (int64_t c0 = 0; c0 < g.channels; c0 += kChunk)
                {
                    const int64_t len = std::min(kChunk, g.channels - c0);
                    for (int64_t p = 0; p < g.a; p++)
                        for (int64_t q = 0; q < g.a; q++)
                        {
                            const int64_t y = ty * m + p - pad, xx = tx * m + q - pad;
                            scalar_t* d = in.data() + (p * g.a + q) * kChunk;
                            if (y < 0 || y >= g.h || xx < 0 || xx >= g.w)
                                std::fill(d, d + len, scalar_t(0));
                            else
                                std::copy_n(src + ((n * g.h + y) * g.w + xx) * g.channels + c0, len, d);
                        }
                    sandwich(in.data(), L.values.data(), L.rows, L.cols, tmp.data(), out.data(), len);
                    for (int64_t k = 0; k < g.a * g.a; k++)
                        std::copy_n(out.data() + k * kChunk, len, dst + (k * g.tiles() + tile) * g.channels + c0);
                }
            }
        });
    });
    return v;
}

// dv: [a*a, tiles, C] -> [N, H, W, C]; b is B (= (B^T)^T). Tiles overlap by a - m rows, so rows of tiles
// are processed in two passes (even, then odd): within a pass no two tasks touch the same pixel.
static torch::Tensor tiles_in_adjoint(torch::Tensor dv, torch::Tensor b, int64_t m, int64_t pad, int64_t n, int64_t h,
                                      int64_t w)
{
    check_input(dv, 3, "dv");
    dv = dv.contiguous();
    const int64_t a = b.size(0);
    TORCH_CHECK(m >= a - m, "winograd_cpu: tiles may overlap only their neighbours");
    const Tiling g{n, h, w, dv.size(2), m, a, pad, (h + m - 1) / m, (w + m - 1) / m};
    TORCH_CHECK(dv.size(0) == a * a && dv.size(1) == g.tiles(), "winograd_cpu: dv does not match the tiling");
    torch::Tensor dx = torch::zeros({n, h, w, g.channels}, dv.options());
    AT_DISPATCH_FLOATING_TYPES(dv.scalar_type(), "tiles_in_adjoint", [&]
    {
        const Matrix<scalar_t> L(b);
        const scalar_t* src = dv.data_ptr<scalar_t>();
        scalar_t* dst = dx.data_ptr<scalar_t>();
        for (int64_t parity = 0; parity < 2; parity++)
        {
            const int64_t rows = (g.tiles_y - parity + 1) / 2;
            at::parallel_for(0, n * rows, 1, [&](int64_t begin, int64_t end)
            {
                std::vector<scalar_t> in(Scratch::size), tmp(Scratch::size), out(Scratch::size);
                for (int64_t job = begin; job < end; job++)
                {
                    const int64_t img = job / rows, ty = 2 * (job % rows) + parity;
                    for (int64_t tx = 0; tx < g.tiles_x; tx++)
                    {
                        const int64_t tile = (img * g.tiles_y + ty) * g.tiles_x + tx;
                        for (int64_t c0 = 0; c0 < g.channels; c0 += kChunk)
                        {
                            const int64_t len = std::min(kChunk, g.channels - c0);
                            for (int64_t k = 0; k < a * a; k++)
                                std::copy_n(src + (k * g.tiles() + tile) * g.channels + c0, len, in.data() + k * kChunk);
                            sandwich(in.data(), L.values.data(), L.rows, L.cols, tmp.data(), out.data(), len);
                            for (int64_t p = 0; p < a; p++)
                                for (int64_t q = 0; q < a; q++)
                                {
                                    const int64_t y = ty * m + p - pad, xx = tx * m + q - pad;
                                    if (y < 0 || y >= h || xx < 0 || xx >= w)
                                        continue;
                                    add_to(dst + ((img * h + y) * w + xx) * g.channels + c0,
                                           out.data() + (p * a + q) * kChunk, len);
                                }
                        }
                    }
                }
            });
        }
    });
    return dx;
}

// prod: [a*a, tiles, C] -> [N, H, W, C] (the m x m blocks, cropped to H x W); at is A^T [m, a].
static torch::Tensor tiles_out(torch::Tensor prod, torch::Tensor at, int64_t n, int64_t h, int64_t w)
{
    check_input(prod, 3, "prod");
    prod = prod.contiguous();
    const int64_t m = at.size(0), a = at.size(1);
    const Tiling g{n, h, w, prod.size(2), m, a, 0, (h + m - 1) / m, (w + m - 1) / m};
    TORCH_CHECK(prod.size(0) == a * a && prod.size(1) == g.tiles(), "winograd_cpu: prod does not match the tiling");
    torch::Tensor y = torch::empty({n, h, w, g.channels}, prod.options());
    AT_DISPATCH_FLOATING_TYPES(prod.scalar_type(), "tiles_out", [&]
    {
        const Matrix<scalar_t> L(at);
        const scalar_t* src = prod.data_ptr<scalar_t>();
        scalar_t* dst = y.data_ptr<scalar_t>();
        at::parallel_for(0, g.tiles(), 1, [&](int64_t begin, int64_t end)
        {
            std::vector<scalar_t> in(Scratch::size), tmp(Scratch::size), out(Scratch::size);
            for (int64_t tile = begin; tile < end; tile++)
            {
                const int64_t img = tile / (g.tiles_y * g.tiles_x), ty = (tile / g.tiles_x) % g.tiles_y, tx = tile % g.tiles_x;
                for (int64_t c0 = 0; c0 < g.channels; c0 += kChunk)
                {
                    const int64_t len = std::min(kChunk, g.channels - c0);
                    for (int64_t k = 0; k < a * a; k++)
                        std::copy_n(src + (k * g.tiles() + tile) * g.channels + c0, len, in.data() + k * kChunk);
                    sandwich(in.data(), L.values.data(), L.rows, L.cols, tmp.data(), out.data(), len);
                    for (int64_t r = 0; r < m; r++)
                        for (int64_t s = 0; s < m; s++)
                        {
                            const int64_t yy = ty * m + r, xx = tx * m + s;
                            if (yy < h && xx < w)
                                std::copy_n(out.data() + (r * m + s) * kChunk, len, dst + ((img * h + yy) * w + xx) * g.channels + c0);
                        }
                }
            }
        });
    });
    return y;
}

// dy: [N, H, W, C] -> [a*a, tiles, C]; a_mat is A [a, m]; pixels past the image's edge count as zero.
static torch::Tensor tiles_out_adjoint(torch::Tensor dy, torch::Tensor a_mat)
{
    check_input(dy, 4, "dy");
    dy = dy.contiguous();
    const int64_t a = a_mat.size(0), m = a_mat.size(1);
    const Tiling g{dy.size(0), dy.size(1), dy.size(2), dy.size(3), m, a, 0, (dy.size(1) + m - 1) / m, (dy.size(2) + m - 1) / m};
    torch::Tensor dprod = torch::empty({a * a, g.tiles(), g.channels}, dy.options());
    AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "tiles_out_adjoint", [&]
    {
        const Matrix<scalar_t> L(a_mat);
        const scalar_t* src = dy.data_ptr<scalar_t>();
        scalar_t* dst = dprod.data_ptr<scalar_t>();
        at::parallel_for(0, g.tiles(), 1, [&](int64_t begin, int64_t end)
        {
            std::vector<scalar_t> in(Scratch::size), tmp(Scratch::size), out(Scratch::size);
            for (int64_t tile = begin; tile < end; tile++)
            {
                const int64_t img = tile / (g.tiles_y * g.tiles_x), ty = (tile / g.tiles_x) % g.tiles_y, tx = tile % g.tiles_x;
                for (int64_t c0 = 0; c0 < g.channels; c0 += kChunk)
                {
                    const int64_t len = std::min(kChunk, g.channels - c0);
                    for (int64_t r = 0; r < m; r++)
                        for (int64_t s = 0; s < m; s++)
                        {
                            const int64_t yy = ty * m + r, xx = tx * m + s;
                            scalar_t* d = in.data() + (r * m + s) * kChunk;
                            if (yy < g.h && xx < g.w)
                                std::copy_n(src + ((img * g.h + yy) * g.w + xx) * g.channels + c0, len, d);
                            else
                                std::fill(d, d + len, scalar_t(0));
                        }
                    sandwich(in.data(), L.values.data(), L.rows, L.cols, tmp.data(), out.data(), len);
                    for (int64_t k = 0; k < a * a; k++)
                        std::copy_n(out.data() + k * kChunk, len, dst + (k * g.tiles() + tile) * g.channels + c0);
                }
            }
        });
    });
    return dprod;
}

//------------------------------------------------------------------------
// Kernels. The output channel is the contiguous run: [a*a, I, O] on the transformed side, a stride of
// I*k*k on the [O, I, k, k] side.

// Moves one [k][k] patch per output channel between the two layouts; to_patch = gather, else scatter.
template <typename T>
static void weight_patch(T* wt, T* patch, int64_t k, int64_t in_channels, int64_t i, int64_t o0, int64_t len, bool to_patch)
{
    for (int64_t p = 0; p < k * k; p++)
        for (int64_t c = 0; c < len; c++)
        {
            T& w = wt[((o0 + c) * in_channels + i) * k * k + p];
            if (to_patch)
                patch[p * kChunk + c] = w;
            else
                w = patch[p * kChunk + c];
        }
}

// w: [O, I, k, k] -> [a*a, I, O]; g is G [a, k].
static torch::Tensor kernel_tiles(torch::Tensor w, torch::Tensor g)
{
    check_input(w, 4, "w");
    w = w.contiguous();
    const int64_t out_channels = w.size(0), in_channels = w.size(1), k = w.size(2), a = g.size(0);
    TORCH_CHECK(w.size(3) == k && g.size(1) == k, "winograd_cpu: the kernel does not match G");
    torch::Tensor u = torch::empty({a * a, in_channels, out_channels}, w.options());
    AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "kernel_tiles", [&]
    {
        const Matrix<scalar_t> L(g);
        scalar_t* src = w.data_ptr<scalar_t>();
        scalar_t* dst = u.data_ptr<scalar_t>();
        at::parallel_for(0, in_channels, 1, [&](int64_t begin, int64_t end)
        {
            std::vector<scalar_t> in(Scratch::size), tmp(Scratch::size), out(Scratch::size);
            for (int64_t i = begin; i < end; i++)
                for (int64_t o0 = 0; o0 < out_channels; o0 += kChunk)
                {
                    const int64_t len = std::min(kChunk, out_channels - o0);
                    weight_patch(src, in.data(), k, in_channels, i, o0, len, true);
                    sandwich(in.data(), L.values.data(), L.rows, L.cols, tmp.data(), out.data(), len);
                    for (int64_t t = 0; t < a * a; t++)
                        std::copy_n(out.data() + t * kChunk, len, dst + (t * in_channels + i) * out_channels + o0);
                }
        });
    });
    return u;
}

// du: [a*a, I, O] -> [O, I, k, k]; gt is G^T [k, a].
static torch::Tensor kernel_tiles_adjoint(torch::Tensor du, torch::Tensor gt)
{
    check_input(du, 3, "du");
    du = du.contiguous();
    const int64_t k = gt.size(0), a = gt.size(1), in_channels = du.size(1), out_channels = du.size(2);
    TORCH_CHECK(du.size(0) == a * a, "winograd_cpu: du does not match G^T");
    torch::Tensor dw = torch::empty({out_channels, in_channels, k, k}, du.options());
    AT_DISPATCH_FLOATING_TYPES(du.scalar_type(), "kernel_tiles_adjoint", [&]
    {
        const Matrix<scalar_t> L(gt);
        const scalar_t* src = du.data_ptr<scalar_t>();
        scalar_t* dst = dw.data_ptr<scalar_t>();
        at::parallel_for(0, in_channels, 1, [&](int64_t begin, int64_t end)
        {
            std::vector<scalar_t> in(Scratch::size), tmp(Scratch::size), out(Scratch::size);
            for (int64_t i = begin; i < end; i++)
                for (int64_t o0 = 0; o0 < out_channels; o0 += kChunk)
                {
                    const int64_t len = std::min(kChunk, out_channels - o0);
                    for (int64_t t = 0; t < a * a; t++)
                        std::copy_n(src + (t * in_channels + i) * out_channels + o0, len, in.data() + t * kChunk);
                    sandwich(in.data(), L.values.data(), L.rows, L.cols, tmp.data(), out.data(), len);
                    weight_patch(dst, out.data(), k, in_channels, i, o0, len, false);
                }
        });
    });
    return dw;
}

//------------------------------------------------------------------------

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("tiles_in", &tiles_in, "NHWC activations -> Winograd input tiles [a*a, tiles, C]");
    m.def("tiles_in_adjoint", &tiles_in_adjoint, "adjoint of tiles_in (overlapping tiles summed)");
    m.def("tiles_out", &tiles_out, "Winograd output tiles [a*a, tiles, C] -> NHWC activations");
    m.def("tiles_out_adjoint", &tiles_out_adjoint, "adjoint of tiles_out");
    m.def("kernel_tiles", &kernel_tiles, "[O, I, k, k] kernels -> Winograd domain [a*a, I, O]");
    m.def("kernel_tiles_adjoint", &kernel_tiles_adjoint, "adjoint of kernel_tiles");
}

//------------------------------------------------------------------------
