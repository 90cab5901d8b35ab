// upfirdn2d on the CPU: polyphase FIR resampling with OpenMP over output rows.
//
// Same definition as the 'ref' impl in upfirdn2d.py: upsample by zero insertion, pad/crop, convolve with the
// FIR filter, keep every down-th pixel. Instead of materialising the zero-stuffed image, every output pixel
// visits only the filter taps that land on real input pixels (for up=2 and a 4x4 filter: 4 of 16).

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <omp.h>
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>
#include "upfirdn2d.h"

//------------------------------------------------------------------------
// Inner loops: acc[m] += g * src[m * stride] over a contiguous run of output pixels of one phase.
// Compiled for several instruction sets; the loader picks the best the CPU has.

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define UPFIRDN2D_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define UPFIRDN2D_CLONES
#endif

template <typename T> UPFIRDN2D_CLONES
static void axpy_unit(T* __restrict acc, const T* __restrict src, T g, int64_t n)
{
    #pragma omp simd
    for (int64_t m = 0; m < n; m++)
        acc[m] += g * src[m];
}

template <typename T> UPFIRDN2D_CLONES
static void axpy_stride2(T* __restrict acc, const T* __restrict src, T g, int64_t n)
{
    #pragma omp simd
    for (int64_t m = 0; m < n; m++)
        acc[m] += g * src[2 * m];
}

template <typename T>
static void axpy_strided(T* __restrict acc, const T* __restrict src, T g, int64_t n, int64_t stride)
{
    if (stride == 1)
        axpy_unit(acc, src, g, n);
    else if (stride == 2)
        axpy_stride2(acc, src, g, n);
    else
        for (int64_t m = 0; m < n; m++)
            acc[m] += g * src[m * stride];
}

// acc[m] += sum_t g[t] * src[m * S + t]: all NT taps of one filter row that hit one phase, in one pass.
// Within a phase, consecutive taps read consecutive input columns.
template <typename T, int NT, int S> UPFIRDN2D_CLONES
static void fused_taps(T* __restrict acc, const T* __restrict src, const T* __restrict g, int64_t n)
{
    T gr[NT];
    for (int t = 0; t < NT; t++)
        gr[t] = g[t];
    #pragma omp simd
    for (int64_t m = 0; m < n; m++)
    {
        T sum = acc[m];
        for (int t = 0; t < NT; t++)
            sum += gr[t] * src[m * S + t];
        acc[m] = sum;
    }
}

template <typename T, int S>
static bool fused_taps_stride(T* acc, const T* src, const T* g, int64_t n, int64_t num_taps)
{
    switch (num_taps)
    {
    case 1: fused_taps<T, 1, S>(acc, src, g, n); return true;
    case 2: fused_taps<T, 2, S>(acc, src, g, n); return true;
    case 3: fused_taps<T, 3, S>(acc, src, g, n); return true;
    case 4: fused_taps<T, 4, S>(acc, src, g, n); return true;
    default: return false;
    }
}

// Returns false for tap counts / strides without a fused loop; the caller then goes tap by tap.
template <typename T>
static bool fused_taps_any(T* acc, const T* src, const T* g, int64_t n, int64_t num_taps, int64_t stride)
{
    if (stride == 1) return fused_taps_stride<T, 1>(acc, src, g, n, num_taps);
    if (stride == 2) return fused_taps_stride<T, 2>(acc, src, g, n, num_taps);
    return false;
}

//------------------------------------------------------------------------

// Output columns ox = phase + num_phases * m (m = 0, 1, ...) use the same filter columns kx = kx0 + upx * t,
// and tap t reads input column ib0 + t + m * step. Tap t is inside the image for m in [m_lo[t], m_hi[t]);
// all taps are inside for m in [interior_lo, interior_hi).
struct Phase
{
    int64_t len, kx0, ib0, interior_lo, interior_hi;
    std::vector<int64_t> m_lo, m_hi;
};

template <typename T>
static void upfirdn2d_kernel(const upfirdn2d_params& p, const T* g)
{
    const T* x = (const T*)p.x;
    T* y = (T*)p.y;
    const int64_t d = ufd_gcd(p.upx, p.downx);
    const int64_t num_phases = p.upx / d;
    const int64_t step = p.downx / d; // input columns advanced per output pixel within a phase
    std::vector<Phase> phases(num_phases);
    for (int64_t ph = 0; ph < num_phases; ph++)
    {
        Phase& q = phases[ph];
        q.len = (ph < p.out_w) ? (p.out_w - ph + num_phases - 1) / num_phases : 0;
        const int64_t base = ph * p.downx - p.padx0;
        q.kx0 = ufd_pos_mod(-base, p.upx);
        q.ib0 = (base + q.kx0) / p.upx; // exact division
        q.interior_lo = 0;
        q.interior_hi = q.len;
        for (int64_t kx = q.kx0, t = 0; kx < p.fw; kx += p.upx, t++)
        {
            q.m_lo.push_back(std::max<int64_t>(0, ufd_ceil_div(-(q.ib0 + t), step)));
            q.m_hi.push_back(std::max<int64_t>(q.m_lo.back(), std::min<int64_t>(q.len, ufd_floor_div(p.in_w - 1 - (q.ib0 + t), step) + 1)));
            q.interior_lo = std::max(q.interior_lo, q.m_lo.back());
            q.interior_hi = std::min(q.interior_hi, q.m_hi.back());
        }
    }
    const int64_t max_len = phases[0].len;
    const int64_t total_rows = p.planes * p.out_h;
    const bool direct = (num_phases == 1); // accumulate straight into the output row

    #pragma omp parallel num_threads(at::get_num_threads()) if (total_rows * p.out_w * p.fw * p.fh >= 32768)
    {
        std::vector<T> acc_buf(direct ? 0 : max_len);
        std::vector<T> taps(p.fw);
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < total_rows; r++)
        {
            const int64_t plane = r / p.out_h;
            const int64_t oy = r % p.out_h;
            const T* x_plane = x + plane * p.in_h * p.in_w;
            T* y_row = y + r * p.out_w;
            const int64_t base_y = oy * p.downy - p.pady0;
            for (int64_t ph = 0; ph < num_phases; ph++)
            {
                const Phase& q = phases[ph];
                const int64_t num_taps = (int64_t)q.m_lo.size();
                T* acc = direct ? y_row : acc_buf.data();
                std::fill(acc, acc + q.len, T(0));
                for (int64_t ky = ufd_pos_mod(-base_y, p.upy); ky < p.fh; ky += p.upy)
                {
                    const int64_t iy = (base_y + ky) / p.upy; // exact division
                    if (iy < 0 || iy >= p.in_h)
                        continue;
                    const T* x_row = x_plane + iy * p.in_w + q.ib0;
                    for (int64_t t = 0; t < num_taps; t++)
                        taps[t] = g[ky * p.fw + q.kx0 + t * p.upx];
                    int64_t lo = q.interior_lo, hi = q.interior_hi;
                    if (hi <= lo || !fused_taps_any(acc + lo, x_row + lo * step, taps.data(), hi - lo, num_taps, step))
                        lo = hi = q.len; // no fused interior: every tap covers its whole range below
                    for (int64_t t = 0; t < num_taps; t++)
                    {
                        const int64_t a = q.m_lo[t], b = q.m_hi[t];
                        const int64_t left_end = std::min(b, lo), right_start = std::max(a, hi);
                        if (left_end > a)
                            axpy_strided(acc + a, x_row + t + a * step, taps[t], left_end - a, step);
                        if (b > right_start)
                            axpy_strided(acc + right_start, x_row + t + right_start * step, taps[t], b - right_start, step);
                    }
                }
                if (!direct)
                    for (int64_t m = 0; m < q.len; m++)
                        y_row[ph + m * num_phases] = acc[m];
            }
        }
    }
}

//------------------------------------------------------------------------
// Small planes (a StyleGAN layer's 4..64 pixel rows): the polyphase bookkeeping above costs more per row than
// the arithmetic. Instead each plane is copied, zero-stuffed and padded, into a scratch buffer u whose row r and
// column c hold the upsampled, padded image at (r - pady0, c - padx0); then y[oy, ox] = sum g[ky, kx] *
// u[oy * downy + ky, ox * downx + kx] runs as a few long loops over the flattened buffer: with a row pitch that
// is a multiple of downx, output (oy, ox) sits at flat index oy * pitch / downx + ox of a pitch-wide result
// (the columns past out_w are discarded). Zero-stuffed samples are multiplied through (cheaper than skipping).
// A rank-1 filter (the usual [1,3,3,1] outer product) runs as a column pass and a row pass: 2k taps, not k^2.

// acc[m] += sum_t g[t] * src[m * stride + t], t < num_taps.
template <typename T>
static void taps_along(T* acc, const T* src, const T* g, int64_t n, int64_t num_taps, int64_t stride)
{
    if (!fused_taps_any(acc, src, g, n, num_taps, stride))
        for (int64_t t = 0; t < num_taps; t++)
            axpy_strided(acc, src + t, g[t], n, stride);
}

template <typename T>
static void fill_buffer(const upfirdn2d_params& p, const T* x_plane, T* u, int64_t rows, int64_t pitch)
{
    std::fill(u, u + rows * pitch, T(0));
    const int64_t ix_lo = std::max<int64_t>(0, ufd_ceil_div(-p.padx0, p.upx));
    const int64_t ix_hi = std::min<int64_t>(p.in_w, ufd_floor_div(pitch - 1 - p.padx0, p.upx) + 1);
    for (int64_t r = 0; r < rows; r++)
    {
        const int64_t v = r - p.pady0; // row of the upsampled image
        if (v < 0 || v % p.upy != 0 || v / p.upy >= p.in_h)
            continue;
        const T* src = x_plane + (v / p.upy) * p.in_w;
        T* dst = u + r * pitch + p.padx0;
        if (p.upx == 1)
            std::copy(src + ix_lo, src + ix_hi, dst + ix_lo);
        else
            for (int64_t ix = ix_lo; ix < ix_hi; ix++)
                dst[ix * p.upx] = src[ix];
    }
}

// g: [fh, fw] correlation taps with the gain folded in. gy, gx: its factors (g = gy gx^T), or null.
template <typename T>
static void upfirdn2d_buffered(const upfirdn2d_params& p, const T* g, const T* gy, const T* gx)
{
    const T* x = (const T*)p.x;
    T* y = (T*)p.y;
    const int64_t sx = p.downx, sy = p.downy;
    const int64_t rows = (p.out_h - 1) * sy + p.fh;               // rows of u that the output reads
    const int64_t pitch = ufd_ceil_div((p.out_w - 1) * sx + p.fw, sx) * sx;
    const int64_t zp = pitch / sx;                                  // row pitch of the result
    // With downy = 1 all output rows form one flat run; otherwise each output row is its own run.
    const int64_t run_rows = (sy == 1) ? p.out_h : 1;

    #pragma omp parallel num_threads(at::get_num_threads()) if (p.planes * rows * pitch * p.fh >= 32768)
    {
        std::vector<T> u(rows * pitch + p.fw), col(gy ? p.out_h * pitch + p.fw : 0), z(p.out_h * zp);
        #pragma omp for schedule(static)
        for (int64_t plane = 0; plane < p.planes; plane++)
        {
            fill_buffer(p, x + plane * p.in_h * p.in_w, u.data(), rows, pitch);
            std::fill(z.begin(), z.end(), T(0));
            if (gy)
            {
                std::fill(col.begin(), col.end(), T(0));
                for (int64_t oy = 0; oy < p.out_h; oy += run_rows)
                    for (int64_t ky = 0; ky < p.fh; ky++)
                        axpy_unit(col.data() + oy * pitch, u.data() + (oy * sy + ky) * pitch, gy[ky], run_rows * pitch);
                taps_along(z.data(), col.data(), gx, p.out_h * zp, p.fw, sx);
            }
            else
            {
                for (int64_t oy = 0; oy < p.out_h; oy += run_rows)
                    for (int64_t ky = 0; ky < p.fh; ky++)
                        taps_along(z.data() + oy * zp, u.data() + (oy * sy + ky) * pitch, g + ky * p.fw,
                                   run_rows * zp, p.fw, sx);
            }
            T* y_plane = y + plane * p.out_h * p.out_w;
            for (int64_t oy = 0; oy < p.out_h; oy++)
                std::copy(z.data() + oy * zp, z.data() + oy * zp + p.out_w, y_plane + oy * p.out_w);
        }
    }
}

// Factors g = gy gx^T when g has rank 1 (to T's rounding); false otherwise.
template <typename T>
static bool rank_one_factors(const std::vector<T>& g, int64_t fh, int64_t fw, std::vector<T>& gy, std::vector<T>& gx)
{
    int64_t best = 0;
    for (int64_t i = 1; i < fh * fw; i++)
        if (std::abs(g[i]) > std::abs(g[best]))
            best = i;
    const T pivot = g[best];
    if (pivot == T(0))
        return false;
    const int64_t r0 = best / fw, c0 = best % fw;
    gy.resize(fh);
    gx.resize(fw);
    for (int64_t ky = 0; ky < fh; ky++)
        gy[ky] = g[ky * fw + c0];
    for (int64_t kx = 0; kx < fw; kx++)
        gx[kx] = g[r0 * fw + kx] / pivot;
    const T tolerance = std::abs(pivot) * 4 * std::numeric_limits<T>::epsilon(); // a rounding of T, no more
    for (int64_t ky = 0; ky < fh; ky++)
        for (int64_t kx = 0; kx < fw; kx++)
            if (std::abs(gy[ky] * gx[kx] - g[ky * fw + kx]) > tolerance)
                return false;
    return true;
}

// Which kernel: 0 = by plane size, 1 = polyphase, 2 = buffered (tests pin one).
template <typename T>
static void run_kernel(const upfirdn2d_params& p, const std::vector<T>& g, int method)
{
    const int64_t buffer = ((p.out_h - 1) * p.downy + p.fh) * ((p.out_w - 1) * p.downx + p.fw);
    const bool buffered = method == 2 || (method == 0 && p.out_w <= 96 && buffer <= (1 << 16));
    if (!buffered)
        return upfirdn2d_kernel<T>(p, g.data());
    std::vector<T> gy, gx;
    const bool separable = p.fh > 1 && p.fw > 1 && rank_one_factors(g, p.fh, p.fw, gy, gx);
    upfirdn2d_buffered<T>(p, g.data(), separable ? gy.data() : nullptr, separable ? gx.data() : nullptr);
}

//------------------------------------------------------------------------

// Checks the arguments, makes x contiguous and allocates y; fills p with everything but the filter taps.
static torch::Tensor setup_output(torch::Tensor& x, const torch::Tensor& f, upfirdn2d_params& p, int upx, int upy,
    int downx, int downy, int padx0, int padx1, int pady0, int pady1, bool flip, double gain)
{
    TORCH_CHECK(x.device().is_cpu() && f.device().is_cpu(), "upfirdn2d_cpu: x and f must be CPU tensors");
    TORCH_CHECK(x.dim() == 4 && f.dim() == 2, "upfirdn2d_cpu: x is [N, C, H, W] and f [fh, fw]");
    TORCH_CHECK(f.scalar_type() == torch::kFloat, "upfirdn2d_cpu: the filter is float32");
    TORCH_CHECK(x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble, "upfirdn2d_cpu: x is float32 or float64");
    const char* problem = ufd_geometry_problem(f.size(0), f.size(1), upx, upy, downx, downy);
    TORCH_CHECK(problem == nullptr, problem);

    x = x.contiguous();
    ufd_set_geometry(p, x.size(0) * x.size(1), x.size(2), x.size(3), f.size(0), f.size(1),
        upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain);
    ufd_set_layout(p, x.size(1), x.stride(0), x.stride(1), x.stride(2), x.stride(3), false);
    TORCH_CHECK(p.out_h >= 1 && p.out_w >= 1, "upfirdn2d_cpu: the output would be empty");
    torch::Tensor y = torch::empty({x.size(0), x.size(1), p.out_h, p.out_w}, x.options());
    p.x = x.data_ptr();
    p.y = y.data_ptr();
    return y;
}

static torch::Tensor upfirdn2d_with(torch::Tensor x, torch::Tensor f, int upx, int upy, int downx, int downy,
    int padx0, int padx1, int pady0, int pady1, bool flip, double gain, int method)
{
    upfirdn2d_params p;
    torch::Tensor y = setup_output(x, f, p, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain);
    if (y.numel() == 0)
        return y;
    torch::Tensor fc = f.contiguous();
    p.f = fc.data_ptr<float>();

    // The kernel correlates with g; convolution (flip=false) means correlating with the flipped filter.
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "upfirdn2d_cpu", [&]
    {
        std::vector<scalar_t> g(p.fh * p.fw);
        for (int64_t ky = 0; ky < p.fh; ky++)
            for (int64_t kx = 0; kx < p.fw; kx++)
            {
                int64_t src = p.flip ? (ky * p.fw + kx) : ((p.fh - 1 - ky) * p.fw + (p.fw - 1 - kx));
                g[ky * p.fw + kx] = (scalar_t)((double)p.f[src] * p.gain);
            }
        run_kernel<scalar_t>(p, g, method);
    });
    return y;
}

static torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f, int upx, int upy, int downx, int downy,
    int padx0, int padx1, int pady0, int pady1, bool flip, double gain)
{
    return upfirdn2d_with(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain, 0);
}

// The CUDA kernel's per-element work (ufd_output_element), run on the CPU so tests can check it without a GPU:
// x is read through its strides and y comes in x's layout (channels_last stays channels_last), as in
// upfirdn2d_cuda.cpp.
static torch::Tensor upfirdn2d_pixelwise(torch::Tensor x, torch::Tensor f, int upx, int upy, int downx, int downy,
    int padx0, int padx1, int pady0, int pady1, bool flip, double gain)
{
    TORCH_CHECK(x.device().is_cpu() && f.device().is_cpu(), "upfirdn2d_pixelwise: x and f must be CPU tensors");
    TORCH_CHECK(x.dim() == 4 && f.dim() == 2, "upfirdn2d_pixelwise: x is [N, C, H, W] and f [fh, fw]");
    TORCH_CHECK(f.scalar_type() == torch::kFloat, "upfirdn2d_pixelwise: the filter is float32");
    TORCH_CHECK(x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble, "upfirdn2d_pixelwise: x is float32 or float64");
    const char* problem = ufd_geometry_problem(f.size(0), f.size(1), upx, upy, downx, downy);
    TORCH_CHECK(problem == nullptr, problem);
    const bool channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
    const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    torch::Tensor xc = x.contiguous(format), fc = f.contiguous();
    upfirdn2d_params p;
    ufd_set_geometry(p, xc.size(0) * xc.size(1), xc.size(2), xc.size(3), fc.size(0), fc.size(1),
        upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain);
    ufd_set_layout(p, xc.size(1), xc.stride(0), xc.stride(1), xc.stride(2), xc.stride(3), channels_last);
    TORCH_CHECK(p.out_h >= 1 && p.out_w >= 1, "upfirdn2d_pixelwise: the output would be empty");
    torch::Tensor y = torch::empty({xc.size(0), xc.size(1), p.out_h, p.out_w}, xc.options().memory_format(format));
    p.x = xc.data_ptr();
    p.f = fc.data_ptr<float>();
    p.y = y.data_ptr();
    AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "upfirdn2d_pixelwise", [&]
    {
        const scalar_t* xp = (const scalar_t*)p.x;
        scalar_t* yp = (scalar_t*)p.y;
        const int64_t total = p.planes * p.out_h * p.out_w;
        for (int64_t i = 0; i < total; i++)
            yp[i] = ufd_output_element<scalar_t>(xp, p.f, p, i);
    });
    return y;
}

//------------------------------------------------------------------------

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("upfirdn2d", &upfirdn2d, "upfirdn2d on the CPU (buffered for small planes, else polyphase; OpenMP)");
    m.def("upfirdn2d_with", &upfirdn2d_with, "upfirdn2d on the CPU with a chosen kernel: 1 = polyphase, 2 = buffered (tests)");
    m.def("upfirdn2d_pixelwise", &upfirdn2d_pixelwise, "the CUDA kernel's per-pixel formula on the CPU (single thread, for tests)");
}

//------------------------------------------------------------------------
