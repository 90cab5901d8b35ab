// bias_act on a CUDA device: a grid-stride loop over the flat tensor. Everything per element (indexing and
// arithmetic) is ba_flat_element() of bias_act.h, which the CPU plugin also runs (and the CPU tests check).

#include <cuda_runtime.h>
#include <c10/util/Half.h>
#include "bias_act.h"

// float16 storage is computed in float32; the other types in themselves.
template <class T> struct ba_math_type             { using type = T; };
template <>        struct ba_math_type<c10::Half>  { using type = float; };

template <class T, int A, int M>
__global__ void ba_cuda_kernel(ba_cuda_args a)
{
    using S = typename ba_math_type<T>::type;
    T* out = static_cast<T*>(a.out);
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < a.count; i += stride)
        out[i] = (T)ba_flat_element<S, T, A, M>(a, i);
}

// Grid size: enough blocks to fill any current GPU, each thread then loops over the rest.
static unsigned int ba_blocks(int64_t count, int threads)
{
    const int64_t wanted = (count + threads - 1) / threads;
    return (unsigned int)(wanted < 8192 ? (wanted > 0 ? wanted : 1) : 8192);
}

template <class T, int A>
static void ba_launch_act(const ba_cuda_args& a, cudaStream_t stream)
{
    const int threads = 256;
    const unsigned int blocks = ba_blocks(a.count, threads);
    if (a.mode == 0)      ba_cuda_kernel<T, A, 0><<<blocks, threads, 0, stream>>>(a);
    else if (a.mode == 1) ba_cuda_kernel<T, A, 1><<<blocks, threads, 0, stream>>>(a);
    else                  ba_cuda_kernel<T, A, 2><<<blocks, threads, 0, stream>>>(a);
}

template <class T> cudaError_t bias_act_cuda_launch(const ba_cuda_args& a, cudaStream_t stream)
{
    switch (a.act)
    {
        case BA_LINEAR:   ba_launch_act<T, BA_LINEAR>(a, stream);   break;
        case BA_RELU:     ba_launch_act<T, BA_RELU>(a, stream);     break;
        case BA_LRELU:    ba_launch_act<T, BA_LRELU>(a, stream);    break;
        case BA_TANH:     ba_launch_act<T, BA_TANH>(a, stream);     break;
        case BA_SIGMOID:  ba_launch_act<T, BA_SIGMOID>(a, stream);  break;
        case BA_ELU:      ba_launch_act<T, BA_ELU>(a, stream);      break;
        case BA_SELU:     ba_launch_act<T, BA_SELU>(a, stream);     break;
        case BA_SOFTPLUS: ba_launch_act<T, BA_SOFTPLUS>(a, stream); break;
        case BA_SWISH:    ba_launch_act<T, BA_SWISH>(a, stream);    break;
        default:          return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

template cudaError_t bias_act_cuda_launch<double>(const ba_cuda_args&, cudaStream_t);
template cudaError_t bias_act_cuda_launch<float>(const ba_cuda_args&, cudaStream_t);
template cudaError_t bias_act_cuda_launch<c10::Half>(const ba_cuda_args&, cudaStream_t);
