// upfirdn2d CUDA kernel: one thread per output pixel (ufd_output_pixel in upfirdn2d.h), visiting only the
// filter taps that land on real (non-inserted) input pixels. Accumulates in float (double for float64).

#include <cuda_runtime.h>
#include <c10/util/Half.h>
#include <c10/util/BFloat16.h>
#include "upfirdn2d.h"

template <class T> struct ufd_acc { typedef float type; };
template <> struct ufd_acc<double> { typedef double type; };

template <class T>
__global__ void upfirdn2d_kernel(upfirdn2d_params p)
{
    typedef typename ufd_acc<T>::type A;
    const T* x = (const T*)p.x;
    T* y = (T*)p.y;
    const int64_t total = p.planes * p.out_h * p.out_w;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)blockDim.x * gridDim.x)
    {
        const int64_t ox = i % p.out_w;
        const int64_t oy = (i / p.out_w) % p.out_h;
        const int64_t plane = i / (p.out_w * p.out_h);
        y[i] = (T)ufd_output_pixel<A>(x + plane * p.in_h * p.in_w, p, ox, oy);
    }
}

template <class T> cudaError_t upfirdn2d_cuda_launch(const upfirdn2d_params& p, cudaStream_t stream)
{
    const int64_t total = p.planes * p.out_h * p.out_w;
    const int block = 256;
    const int64_t grid = (total + block - 1) / block;
    upfirdn2d_kernel<T><<<(unsigned int)(grid < 65535 * 16 ? grid : 65535 * 16), block, 0, stream>>>(p);
    return cudaGetLastError();
}

template cudaError_t upfirdn2d_cuda_launch<float>(const upfirdn2d_params& p, cudaStream_t stream);
template cudaError_t upfirdn2d_cuda_launch<double>(const upfirdn2d_params& p, cudaStream_t stream);
template cudaError_t upfirdn2d_cuda_launch<c10::Half>(const upfirdn2d_params& p, cudaStream_t stream);
template cudaError_t upfirdn2d_cuda_launch<c10::BFloat16>(const upfirdn2d_params& p, cudaStream_t stream);
