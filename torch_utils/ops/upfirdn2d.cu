// upfirdn2d CUDA kernel: one thread per output element, in the output's memory order (NCHW, or NHWC for a
// channels_last input, so that neighbouring threads read neighbouring channels of one pixel). Each element
// is ufd_output_element of upfirdn2d.h, visiting only the filter taps that land on real (non-inserted)
// input pixels. The block first copies the filter to shared memory; every thread then reads its taps
// there. Accumulates in float (double for float64).

#include <cuda_runtime.h>
#include <c10/util/Half.h>
#include <c10/util/BFloat16.h>
#include "upfirdn2d.h"

template <class T> struct ufd_acc { typedef float type; };
template <> struct ufd_acc<double> { typedef double type; };

// Filters up to this many taps go to shared memory (48 KiB, what every GPU gives a block without opting in);
// larger ones, which no network uses, are read from global memory.
static const int64_t ufd_max_shared_taps = 48 * 1024 / sizeof(float);

template <class T>
__global__ void upfirdn2d_kernel(upfirdn2d_params p, bool taps_in_shared)
{
    extern __shared__ float shared_taps[];
    typedef typename ufd_acc<T>::type A;
    const float* taps = p.f;
    if (taps_in_shared) // the same for every thread: the barrier below is reached by all of the block
    {
        for (int64_t k = threadIdx.x; k < p.fh * p.fw; k += blockDim.x)
            shared_taps[k] = p.f[k];
        __syncthreads();
        taps = shared_taps;
    }
    const T* x = (const T*)p.x;
    T* y = (T*)p.y;
    const int64_t total = p.planes * p.out_h * p.out_w;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)blockDim.x * gridDim.x)
        y[i] = (T)ufd_output_element<A>(x, taps, p, i);
}

template <class T> cudaError_t upfirdn2d_cuda_launch(const upfirdn2d_params& p, cudaStream_t stream)
{
    const int64_t total = p.planes * p.out_h * p.out_w;
    const int block = 256;
    const int64_t grid = (total + block - 1) / block;
    const bool taps_in_shared = p.fh * p.fw <= ufd_max_shared_taps;
    const size_t shared_bytes = taps_in_shared ? (size_t)(p.fh * p.fw) * sizeof(float) : 0;
    upfirdn2d_kernel<T><<<(unsigned int)(grid < 65535 * 16 ? grid : 65535 * 16), block, shared_bytes, stream>>>(p, taps_in_shared);
    return cudaGetLastError();
}

template cudaError_t upfirdn2d_cuda_launch<float>(const upfirdn2d_params& p, cudaStream_t stream);
template cudaError_t upfirdn2d_cuda_launch<double>(const upfirdn2d_params& p, cudaStream_t stream);
template cudaError_t upfirdn2d_cuda_launch<c10::Half>(const upfirdn2d_params& p, cudaStream_t stream);
template cudaError_t upfirdn2d_cuda_launch<c10::BFloat16>(const upfirdn2d_params& p, cudaStream_t stream);
