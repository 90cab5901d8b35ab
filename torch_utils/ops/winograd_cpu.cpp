// Winograd F(m x m, 3 x 3) on the CPU: the tile transforms and their adjoints (see winograd.py for the method).
//
// Every transform maps a small square patch to another by the same matrix L on both axes,
//     out[i][j] = sum_{p, q} L[i][p] L[j][q] in[p][q],
// applied to a run of channels at once (channels are the innermost, contiguous axis everywhere here):
//   tiles_in           NHWC activations -> transformed tiles, L = B^T; tile (ty, tx) reads rows ty*m - pad + [0, a)
//   tiles_in_adjoint   the reverse scatter-add (neighbouring tiles overlap), L = B
//   tiles_out          transformed tiles -> NHWC activations, L = A^T, cropped to the image
//   tiles_out_adjoint  NHWC -> transformed tiles, L = A
//   kernel_tiles       [O, I, 3, 3] -> transformed kernels [., I, O], L = G;  kernel_tiles_adjoint: back, L = G^T
// Each pair is adjoint, so winograd.py differentiates any of them by calling its partner (to any order).
// Reading the padding as zeros and writing only the pixels inside the image replaces the pad, unfold,
// permute and crop copies of the pure PyTorch formulation.
//
// The transformed side is a list of tensors, one per group of consecutive tile positions ([k1 - k0, tiles, C]
// for positions k0 .. k1 - 1 of the a*a), so that no single tensor is large: glibc hands out blocks above
// 32 MiB as fresh mappings, and touching a fresh mapping costs more than the transform itself.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <vector>

static constexpr int64_t kChunk = 64;            // channels per pass: one patch of a chunk stays in the L1 cache
static constexpr int64_t kScratch = 64 * kChunk;  // a patch of up to 8 x 8 positions

//------------------------------------------------------------------------

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define WINOGRAD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define WINOGRAD_CLONES
#endif

// dst[c] = sum_p coeffs[p] src[p * step + c] for c < n, skipping the zero coefficients of the transforms.
template <typename T> WINOGRAD_CLONES
static void combine(T* __restrict dst, const T* __restrict coeffs, const T* __restrict src, int64_t step, int P,
                    int64_t n)
{
    std::fill(dst, dst + n, T(0));
    for (int p = 0; p < P; p++)
    {
        const T l = coeffs[p];
        if (l == T(0))
            continue;
        const T* s = src + p * step;
        #pragma omp simd
        for (int64_t c = 0; c < n; c++)
            dst[c] += l * s[c];
    }
}

// out[i][j][c] = sum_{p,q} L[i][p] L[j][q] in[p][q][c]; L is R x P, patches hold kChunk-strided channel runs.
// First along the rows (into tmp[i][q]), then along the columns.
template <typename T>
static void sandwich(const T* __restrict in, const T* __restrict L, int R, int P, T* __restrict tmp,
                     T* __restrict out, int64_t n)
{
    for (int i = 0; i < R; i++)
        for (int q = 0; q < P; q++)
            combine(tmp + (i * P + q) * kChunk, L + i * P, in + q * kChunk, int64_t(P) * kChunk, P, n);
    for (int i = 0; i < R; i++)
        for (int j = 0; j < R; j++)
            combine(out + (i * R + j) * kChunk, L + j * P, tmp + i * P * kChunk, int64_t(kChunk), P, n);
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
    void apply(const T* in, T* tmp, T* out, int64_t n) const { sandwich(in, values.data(), rows, cols, tmp, out, n); }
};

// Per-thread patch buffers: input, intermediate, output.
template <typename T>
struct Patches
{
    std::vector<T> in, tmp, out;
    Patches() : in(kScratch), tmp(kScratch), out(kScratch) {}
};

static void check_input(const torch::Tensor& t, int64_t dims, const char* what)
{
    TORCH_CHECK(t.device().is_cpu() && t.dim() == dims, "winograd_cpu: ", what, " must be a ", dims, "-D CPU tensor");
    TORCH_CHECK(t.scalar_type() == torch::kFloat || t.scalar_type() == torch::kDouble,
                "winograd_cpu: ", what, " must be float32 or float64");
}

//------------------------------------------------------------------------
// The transformed side: a*a positions split into groups, each a contiguous [positions, rows, C] tensor.

// New group tensors [k1 - k0, rows, cols] for consecutive bounds k0 < k1 (bounds: 0, ..., positions).
static std::vector<torch::Tensor> new_groups(const std::vector<int64_t>& bounds, int64_t positions, int64_t rows,
                                             int64_t cols, const torch::TensorOptions& options)
{
    TORCH_CHECK(bounds.size() >= 2 && bounds.front() == 0 && bounds.back() == positions,
                "winograd_cpu: group bounds must run from 0 to the number of tile positions");
    std::vector<torch::Tensor> groups;
    for (size_t g = 0; g + 1 < bounds.size(); g++)
    {
        TORCH_CHECK(bounds[g] < bounds[g + 1], "winograd_cpu: group bounds must increase");
        groups.push_back(torch::empty({bounds[g + 1] - bounds[g], rows, cols}, options));
    }
    return groups;
}

// Where each position's [rows, C] plane lives, whatever group holds it.
template <typename T>
struct Positions
{
    std::vector<T*> plane;
    int64_t rows, cols;
    Positions(std::vector<torch::Tensor>& groups, int64_t positions)
    {
        for (auto& g : groups)
        {
            check_input(g, 3, "a group of transformed tiles");
            g = g.contiguous();
            for (int64_t k = 0; k < g.size(0); k++)
                plane.push_back(g.data_ptr<T>() + k * g.size(1) * g.size(2));
        }
        TORCH_CHECK((int64_t)plane.size() == positions, "winograd_cpu: the groups hold ", plane.size(),
                    " tile positions, expected ", positions);
        rows = groups[0].size(1);
        cols = groups[0].size(2);
        for (auto& g : groups)
            TORCH_CHECK(g.size(1) == rows && g.size(2) == cols && g.scalar_type() == groups[0].scalar_type(),
                        "winograd_cpu: the groups differ in shape or dtype");
    }
    // Copies row `row`, columns c0 + [0, len) of every position to (load) or from a patch.
    void move(int64_t row, int64_t c0, int64_t len, T* patch, bool load) const
    {
        for (size_t k = 0; k < plane.size(); k++)
        {
            T* t = plane[k] + row * cols + c0;
            if (load)
                std::copy_n(t, len, patch + k * kChunk);
            else
                std::copy_n(patch + k * kChunk, len, t);
        }
    }
};

//------------------------------------------------------------------------
// Activations: NHWC images [N, H, W, C]; tiles numbered (image, ty, tx) row-major.

struct Tiling
{
    int64_t n, h, w, m, pad, tiles_y, tiles_x;
    int64_t tiles() const { return n * tiles_y * tiles_x; }
};

// Copies the size x size patch of tile `tile` (its top-left pixel at (ty*m - pad, tx*m - pad) of its image),
// channels c0 + [0, len), between an NHWC image and a patch: load reads zeros outside the image, store and add
// leave pixels outside it alone.
enum class Move { load, store, add };

template <typename T>
static void move_patch(T* image, const Tiling& g, int64_t channels, int64_t tile, int64_t size, int64_t c0,
                       int64_t len, T* patch, Move move)
{
    const int64_t img = tile / (g.tiles_y * g.tiles_x), ty = (tile / g.tiles_x) % g.tiles_y, tx = tile % g.tiles_x;
    const int64_t y0 = ty * g.m - g.pad, x0 = tx * g.m - g.pad;
    for (int64_t p = 0; p < size; p++)
        for (int64_t q = 0; q < size; q++)
        {
            T* buf = patch + (p * size + q) * kChunk;
            const int64_t y = y0 + p, x = x0 + q;
            if (y < 0 || y >= g.h || x < 0 || x >= g.w)
            {
                if (move == Move::load)
                    std::fill(buf, buf + len, T(0));
                continue;
            }
            T* pix = image + ((img * g.h + y) * g.w + x) * channels + c0;
            if (move == Move::load)
                std::copy_n(pix, len, buf);
            else if (move == Move::store)
                std::copy_n(buf, len, pix);
            else
                add_to(pix, buf, len);
        }
}

// Runs body(tile, c0, len, patches) for every tile and channel chunk, the tiles split between threads.
template <typename T, typename Body>
static void for_tiles(const Tiling& g, int64_t channels, Body body)
{
    at::parallel_for(0, g.tiles(), 1, [&](int64_t begin, int64_t end)
    {
        Patches<T> buf;
        for (int64_t tile = begin; tile < end; tile++)
            for (int64_t c0 = 0; c0 < channels; c0 += kChunk)
                body(tile, c0, std::min(kChunk, channels - c0), buf);
    });
}

// NHWC image -> groups of [positions, tiles, C]: each tile's size x size patch (size = l's columns) transformed
// by l on both axes into l.rows x l.rows positions. Shared by tiles_in and tiles_out_adjoint.
static std::vector<torch::Tensor> image_to_groups(const torch::Tensor& x, const torch::Tensor& l, const Tiling& g,
                                                  const std::vector<int64_t>& bounds)
{
    const int64_t positions = l.size(0) * l.size(0), size = l.size(1), channels = x.size(3);
    std::vector<torch::Tensor> groups = new_groups(bounds, positions, g.tiles(), channels, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "image_to_groups", [&]
    {
        const Matrix<scalar_t> L(l);
        const Positions<scalar_t> dst(groups, positions);
        scalar_t* src = x.data_ptr<scalar_t>();
        for_tiles<scalar_t>(g, channels, [&](int64_t tile, int64_t c0, int64_t len, Patches<scalar_t>& buf)
        {
            move_patch(src, g, channels, tile, size, c0, len, buf.in.data(), Move::load);
            L.apply(buf.in.data(), buf.tmp.data(), buf.out.data(), len);
            dst.move(tile, c0, len, buf.out.data(), false);
        });
    });
    return groups;
}

// x: [N, H, W, C] -> groups of [positions, tiles, C]; tile (ty, tx) reads rows ty*m - pad + [0, a).
static std::vector<torch::Tensor> tiles_in(torch::Tensor x, torch::Tensor bt, int64_t m, int64_t pad,
                                           int64_t tiles_y, int64_t tiles_x, std::vector<int64_t> bounds)
{
    check_input(x, 4, "x");
    x = x.contiguous();
    return image_to_groups(x, bt, Tiling{x.size(0), x.size(1), x.size(2), m, pad, tiles_y, tiles_x}, bounds);
}

// dv groups -> [N, H, W, C]; b is B (= (B^T)^T). Tiles overlap their neighbours by a - m rows, so rows of
// tiles go in two passes (even, then odd): within a pass no two tasks touch the same pixel.
static torch::Tensor tiles_in_adjoint(std::vector<torch::Tensor> dv, torch::Tensor b, int64_t m, int64_t pad,
                                      int64_t n, int64_t h, int64_t w)
{
    const int64_t a = b.size(0);
    TORCH_CHECK(m >= a - m, "winograd_cpu: tiles may overlap only their neighbours");
    const Tiling g{n, h, w, m, pad, (h + m - 1) / m, (w + m - 1) / m};
    torch::Tensor dx;
    AT_DISPATCH_FLOATING_TYPES(dv.at(0).scalar_type(), "tiles_in_adjoint", [&]
    {
        const Positions<scalar_t> src(dv, a * a);
        TORCH_CHECK(src.rows == g.tiles(), "winograd_cpu: dv does not match the tiling");
        const int64_t channels = src.cols;
        dx = torch::zeros({n, h, w, channels}, dv[0].options());
        const Matrix<scalar_t> L(b);
        scalar_t* dst = dx.data_ptr<scalar_t>();
        for (int64_t parity = 0; parity < 2; parity++)
        {
            const int64_t rows = (g.tiles_y - parity + 1) / 2;
            at::parallel_for(0, n * rows, 1, [&](int64_t begin, int64_t end)
            {
                Patches<scalar_t> buf;
                for (int64_t job = begin; job < end; job++)
                {
                    const int64_t img = job / rows, ty = 2 * (job % rows) + parity;
                    for (int64_t tx = 0; tx < g.tiles_x; tx++)
                        for (int64_t c0 = 0; c0 < channels; c0 += kChunk)
                        {
                            const int64_t len = std::min(kChunk, channels - c0);
                            const int64_t tile = (img * g.tiles_y + ty) * g.tiles_x + tx;
                            src.move(tile, c0, len, buf.in.data(), true);
                            L.apply(buf.in.data(), buf.tmp.data(), buf.out.data(), len);
                            move_patch(dst, g, channels, tile, a, c0, len, buf.out.data(), Move::add);
                        }
                }
            });
        }
    });
    return dx;
}

// prod groups -> [N, H, W, C] (the m x m blocks, cropped to H x W); at is A^T [m, a].
static torch::Tensor tiles_out(std::vector<torch::Tensor> prod, torch::Tensor at, int64_t n, int64_t h, int64_t w)
{
    const int64_t m = at.size(0), a = at.size(1);
    const Tiling g{n, h, w, m, 0, (h + m - 1) / m, (w + m - 1) / m};
    torch::Tensor y;
    AT_DISPATCH_FLOATING_TYPES(prod.at(0).scalar_type(), "tiles_out", [&]
    {
        const Positions<scalar_t> src(prod, a * a);
        TORCH_CHECK(src.rows == g.tiles(), "winograd_cpu: prod does not match the tiling");
        const int64_t channels = src.cols;
        y = torch::empty({n, h, w, channels}, prod[0].options());
        const Matrix<scalar_t> L(at);
        scalar_t* dst = y.data_ptr<scalar_t>();
        for_tiles<scalar_t>(g, channels, [&](int64_t tile, int64_t c0, int64_t len, Patches<scalar_t>& buf)
        {
            src.move(tile, c0, len, buf.in.data(), true);
            L.apply(buf.in.data(), buf.tmp.data(), buf.out.data(), len);
            move_patch(dst, g, channels, tile, m, c0, len, buf.out.data(), Move::store);
        });
    });
    return y;
}

// dy: [N, H, W, C] -> groups of [positions, tiles, C]; a_mat is A [a, m]; pixels past the edge count as zero.
static std::vector<torch::Tensor> tiles_out_adjoint(torch::Tensor dy, torch::Tensor a_mat, std::vector<int64_t> bounds)
{
    check_input(dy, 4, "dy");
    dy = dy.contiguous();
    const int64_t m = a_mat.size(1);
    return image_to_groups(dy, a_mat, Tiling{dy.size(0), dy.size(1), dy.size(2), m, 0, (dy.size(1) + m - 1) / m,
                                             (dy.size(2) + m - 1) / m}, bounds);
}

//------------------------------------------------------------------------
// Kernels. The output channel is the contiguous run: [positions, I, O] on the transformed side, a stride of
// I*k*k on the [O, I, k, k] side.

// Moves one k x k patch per output channel o0 + [0, len) of input channel i between the two layouts.
template <typename T>
static void weight_patch(T* wt, T* patch, int64_t k, int64_t in_channels, int64_t i, int64_t o0, int64_t len, bool load)
{
    for (int64_t c = 0; c < len; c++)
    {
        T* w = wt + ((o0 + c) * in_channels + i) * k * k;
        for (int64_t p = 0; p < k * k; p++)
            if (load)
                patch[p * kChunk + c] = w[p];
            else
                w[p] = patch[p * kChunk + c];
    }
}

// w: [O, I, k, k] -> groups of [positions, I, O]; g is G [a, k].
static std::vector<torch::Tensor> kernel_tiles(torch::Tensor w, torch::Tensor g, std::vector<int64_t> bounds)
{
    check_input(w, 4, "w");
    w = w.contiguous();
    const int64_t out_channels = w.size(0), in_channels = w.size(1), k = w.size(2), a = g.size(0);
    TORCH_CHECK(w.size(3) == k && g.size(1) == k, "winograd_cpu: the kernel does not match G");
    std::vector<torch::Tensor> u = new_groups(bounds, a * a, in_channels, out_channels, w.options());
    AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "kernel_tiles", [&]
    {
        const Matrix<scalar_t> L(g);
        const Positions<scalar_t> dst(u, a * a);
        scalar_t* src = w.data_ptr<scalar_t>();
        at::parallel_for(0, in_channels, 1, [&](int64_t begin, int64_t end)
        {
            Patches<scalar_t> buf;
            for (int64_t i = begin; i < end; i++)
                for (int64_t o0 = 0; o0 < out_channels; o0 += kChunk)
                {
                    const int64_t len = std::min(kChunk, out_channels - o0);
                    weight_patch(src, buf.in.data(), k, in_channels, i, o0, len, true);
                    L.apply(buf.in.data(), buf.tmp.data(), buf.out.data(), len);
                    dst.move(i, o0, len, buf.out.data(), false);
                }
        });
    });
    return u;
}

// du groups -> [O, I, k, k]; gt is G^T [k, a].
static torch::Tensor kernel_tiles_adjoint(std::vector<torch::Tensor> du, torch::Tensor gt)
{
    const int64_t k = gt.size(0), a = gt.size(1);
    torch::Tensor dw;
    AT_DISPATCH_FLOATING_TYPES(du.at(0).scalar_type(), "kernel_tiles_adjoint", [&]
    {
        const Positions<scalar_t> src(du, a * a);
        const int64_t in_channels = src.rows, out_channels = src.cols;
        dw = torch::empty({out_channels, in_channels, k, k}, du[0].options());
        const Matrix<scalar_t> L(gt);
        scalar_t* dst = dw.data_ptr<scalar_t>();
        at::parallel_for(0, in_channels, 1, [&](int64_t begin, int64_t end)
        {
            Patches<scalar_t> buf;
            for (int64_t i = begin; i < end; i++)
                for (int64_t o0 = 0; o0 < out_channels; o0 += kChunk)
                {
                    const int64_t len = std::min(kChunk, out_channels - o0);
                    src.move(i, o0, len, buf.in.data(), true);
                    L.apply(buf.in.data(), buf.tmp.data(), buf.out.data(), len);
                    weight_patch(dst, buf.out.data(), k, in_channels, i, o0, len, false);
                }
        });
    });
    return dw;
}

//------------------------------------------------------------------------

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("tiles_in", &tiles_in, "NHWC activations -> Winograd input tiles, in groups of tile positions");
    m.def("tiles_in_adjoint", &tiles_in_adjoint, "adjoint of tiles_in (overlapping tiles summed)");
    m.def("tiles_out", &tiles_out, "Winograd output tiles (groups) -> NHWC activations");
    m.def("tiles_out_adjoint", &tiles_out_adjoint, "adjoint of tiles_out");
    m.def("kernel_tiles", &kernel_tiles, "[O, I, k, k] kernels -> Winograd domain, in groups of tile positions");
    m.def("kernel_tiles_adjoint", &kernel_tiles_adjoint, "adjoint of kernel_tiles");
}

//------------------------------------------------------------------------
