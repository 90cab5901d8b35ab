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
    const void*  x;         // [planes, in_h, in_w], contiguous (CPU kernel); any strides below (ufd_output_element)
    const float* f;         // [fh, fw], contiguous, as given (not yet flipped)
    void*        y;         // [planes, out_h, out_w], contiguous; or [batch, out_h, out_w, channels] (channels_last)
    int64_t      planes, in_h, in_w, out_h, out_w;
    int64_t      upx, upy, downx, downy, padx0, pady0;
    int64_t      fw, fh;
    bool         flip;      // true: correlate with f as given; false: true convolution
    double       gain;
    // Layout (ufd_set_layout; used by ufd_output_element, i.e. the CUDA kernel and upfirdn2d_pixelwise):
    int64_t      channels;                      // planes = batch * channels
    int64_t      sx_n, sx_c, sx_h, sx_w;        // strides of x in elements
    bool         channels_last;                 // y's memory order: NHWC (true) or NCHW (false), dense either way
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

// x's strides and y's memory order, so that the kernel reads x where it lies and writes y in x's layout (a
// channels_last x gives a channels_last y, with neighbouring threads on neighbouring channels).
inline void ufd_set_layout(upfirdn2d_params& p, int64_t channels, int64_t sx_n, int64_t sx_c, int64_t sx_h, int64_t sx_w,
    bool channels_last)
{
    p.channels = channels;
    p.sx_n = sx_n; p.sx_c = sx_c; p.sx_h = sx_h; p.sx_w = sx_w;
    p.channels_last = channels_last;
}

// One output pixel by direct summation over the taps that hit real input pixels. This is the CUDA kernel's
// per-thread work; the CPU plugin exposes it too (upfirdn2d_pixelwise) so that tests check it without a GPU.
// A is the accumulation type (float for half/float, double for double).
// x_plane points at pixel (0, 0) of the plane, whose rows are row_stride and columns col_stride elements apart;
// taps is the filter [fh, fw] as given (p.f, or a copy of it in the CUDA kernel's shared memory).
template <class A, class T>
UFD_FUNC A ufd_output_pixel(const T* x_plane, int64_t row_stride, int64_t col_stride, const float* taps,
    const upfirdn2d_params& p, int64_t ox, int64_t oy)
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
            acc += (A)x_plane[iy * row_stride + ix * col_stride] * (A)taps[fy * p.fw + fx];
        }
    }
    return acc * (A)p.gain;
}

// Element i of y in y's memory order (NCHW or NHWC, see ufd_set_layout): the CUDA kernel's per-thread work,
// which the CPU plugin also runs (upfirdn2d_pixelwise) so that tests check the indexing without a GPU.
template <class A, class T>
UFD_FUNC A ufd_output_element(const T* x, const float* taps, const upfirdn2d_params& p, int64_t i)
{
    int64_t n, c, oy, ox;
    if (p.channels_last)
    {
        c = i % p.channels;
        const int64_t pixel = i / p.channels;
        ox = pixel % p.out_w;
        oy = (pixel / p.out_w) % p.out_h;
        n = pixel / (p.out_w * p.out_h);
    }
    else
    {
        ox = i % p.out_w;
        oy = (i / p.out_w) % p.out_h;
        const int64_t plane = i / (p.out_w * p.out_h);
        c = plane % p.channels;
        n = plane / p.channels;
    }
    return ufd_output_pixel<A>(x + n * p.sx_n + c * p.sx_c, p.sx_h, p.sx_w, taps, p, ox, oy);
}

// Defined in upfirdn2d.cu; visible wherever the CUDA runtime header is included (the .cu and its binding).
#ifdef CUDART_VERSION
template <class T> cudaError_t upfirdn2d_cuda_launch(const upfirdn2d_params& p, cudaStream_t stream);
#endif
