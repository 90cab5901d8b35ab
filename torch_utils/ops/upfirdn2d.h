// upfirdn2d: parameters and index arithmetic shared by the CPU and CUDA kernels.
//
// Output pixel (oy, ox) of one channel plane is
//     y[oy, ox] = gain * sum_{ky, kx} g[ky, kx] * u[oy * downy + ky - pady0, ox * downx + kx - padx0]
// where u is the input upsampled by zero insertion (u[iy * upy, ix * upx] = x[iy, ix], zero elsewhere and
// outside the image) and g is the filter, flipped along both axes unless flip_filter is set. Only the taps
// with (oy * downy + ky - pady0) divisible by upy (likewise for x) touch a real input pixel.

#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define UFD_FUNC __host__ __device__ __forceinline__
#else
#define UFD_FUNC inline
#endif

// Integer helpers that are correct for negative numerators.
UFD_FUNC int64_t ufd_floor_div(int64_t a, int64_t b) { int64_t q = a / b; return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q; }
UFD_FUNC int64_t ufd_ceil_div(int64_t a, int64_t b) { return -ufd_floor_div(-a, b); }
UFD_FUNC int64_t ufd_pos_mod(int64_t a, int64_t b) { int64_t r = a % b; return (r < 0) ? r + b : r; }
UFD_FUNC int64_t ufd_gcd(int64_t a, int64_t b) { while (b) { int64_t t = a % b; a = b; b = t; } return a; }

// Output size along one axis: floor((in * up + pad0 + pad1 - taps) / down) + 1.
UFD_FUNC int64_t ufd_out_size(int64_t in, int64_t up, int64_t down, int64_t pad0, int64_t pad1, int64_t taps)
{
    return ufd_floor_div(in * up + pad0 + pad1 - taps, down) + 1;
}

struct upfirdn2d_params
{
    const void*  x;         // [planes, in_h, in_w], contiguous
    const float* f;         // [fh, fw], contiguous, as given (not yet flipped)
    void*        y;         // [planes, out_h, out_w], contiguous
    int64_t      planes, in_h, in_w, out_h, out_w;
    int64_t      upx, upy, downx, downy, padx0, pady0;
    int64_t      fw, fh;
    bool         flip;      // true: correlate with f as given; false: true convolution
    double       gain;
};

// Why a geometry cannot be computed, or nullptr when it can (checked by both bindings before any work).
inline const char* ufd_geometry_problem(int64_t fh, int64_t fw, int upx, int upy, int downx, int downy)
{
    if (fh < 1 || fw < 1)
        return "upfirdn2d: the filter has no taps";
    if (upx < 1 || upy < 1 || downx < 1 || downy < 1)
        return "upfirdn2d: up and down factors start at 1";
    return nullptr;
}

// Fills everything but the data pointers from the tensor sizes and the op's arguments (shared by both bindings).
inline void ufd_set_geometry(upfirdn2d_params& p, int64_t planes, int64_t in_h, int64_t in_w, int64_t fh, int64_t fw,
    int upx, int upy, int downx, int downy, int padx0, int padx1, int pady0, int pady1, bool flip, double gain)
{
    p.planes = planes;
    p.in_h = in_h;
    p.in_w = in_w;
    p.fh = fh;
    p.fw = fw;
    p.upx = upx; p.upy = upy; p.downx = downx; p.downy = downy;
    p.padx0 = padx0; p.pady0 = pady0;
    p.out_h = ufd_out_size(in_h, upy, downy, pady0, pady1, fh);
    p.out_w = ufd_out_size(in_w, upx, downx, padx0, padx1, fw);
    p.flip = flip;
    p.gain = gain;
}

// One output pixel by direct summation over the taps that hit real input pixels. This is the CUDA kernel's
// per-thread work; the CPU plugin exposes it too (upfirdn2d_pixelwise) so that tests check it without a GPU.
// A is the accumulation type (float for half/float, double for double).
template <class A, class T>
UFD_FUNC A ufd_output_pixel(const T* x_plane, const upfirdn2d_params& p, int64_t ox, int64_t oy)
{
    const int64_t base_x = ox * p.downx - p.padx0;
    const int64_t base_y = oy * p.downy - p.pady0;
    A acc = 0;
    for (int64_t ky = ufd_pos_mod(-base_y, p.upy); ky < p.fh; ky += p.upy)
    {
        const int64_t iy = (base_y + ky) / p.upy; // exact division
        if (iy < 0 || iy >= p.in_h)
            continue;
        const int64_t fy = p.flip ? ky : p.fh - 1 - ky;
        for (int64_t kx = ufd_pos_mod(-base_x, p.upx); kx < p.fw; kx += p.upx)
        {
            const int64_t ix = (base_x + kx) / p.upx;
            if (ix < 0 || ix >= p.in_w)
                continue;
            const int64_t fx = p.flip ? kx : p.fw - 1 - kx;
            acc += (A)x_plane[iy * p.in_w + ix] * (A)p.f[fy * p.fw + fx];
        }
    }
    return acc * (A)p.gain;
}

// Defined in upfirdn2d.cu; visible wherever the CUDA runtime header is included (the .cu and its binding).
#ifdef CUDART_VERSION
template <class T> cudaError_t upfirdn2d_cuda_launch(const upfirdn2d_params& p, cudaStream_t stream);
#endif
