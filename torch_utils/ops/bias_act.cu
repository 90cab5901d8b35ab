// CUDA kernel of bias_act: each thread handles loopX elements, strided by the block size.

#include <c10/util/Half.h>
#include "bias_act.h"

//------------------------------------------------------------------------

// Arithmetic type per storage type: half is computed in float.
template <class T> struct ba_compute_type             { typedef T type; };
template <>        struct ba_compute_type<c10::Half>  { typedef float type; };

template <class T, int A>
__global__ void bias_act_kernel(bias_act_kernel_params p)
{
    typedef typename ba_compute_type<T>::type S;
    const T* x = (const T*)p.x;
    const T* b = (const T*)p.b;
    const T* xref = (const T*)p.xref;
    const T* yref = (const T*)p.yref;
    const T* dy = (const T*)p.dy;
    T* y = (T*)p.y;
    S alpha = (S)p.alpha, gain = (S)p.gain, clamp = (S)p.clamp;

    int64_t i = (int64_t)blockIdx.x * p.loopX * blockDim.x + threadIdx.x;
    for (int k = 0; k < p.loopX && i < p.sizeX; k++, i += blockDim.x)
    {
        S xi = (S)x[i];
        S bi = b ? (S)b[(i / p.stepB) % p.sizeB] : (S)0;
        S xr = xref ? (S)xref[i] : (S)0;
        S yr = yref ? (S)yref[i] : (S)0;
        S dyi = dy ? (S)dy[i] : (S)1;
        S out;
        if (p.grad == 0)      out = ba_element<S, A, 0>(xi, bi, xr, yr, dyi, alpha, gain, clamp);
        else if (p.grad == 1) out = ba_element<S, A, 1>(xi, bi, xr, yr, dyi, alpha, gain, clamp);
        else                  out = ba_element<S, A, 2>(xi, bi, xr, yr, dyi, alpha, gain, clamp);
        y[i] = (T)out;
    }
}

//------------------------------------------------------------------------

template <class T> void* choose_bias_act_kernel(const bias_act_kernel_params& p)
{
    switch (p.act)
    {
    case BA_LINEAR:   return (void*)bias_act_kernel<T, BA_LINEAR>;
    case BA_RELU:     return (void*)bias_act_kernel<T, BA_RELU>;
    case BA_LRELU:    return (void*)bias_act_kernel<T, BA_LRELU>;
    case BA_TANH:     return (void*)bias_act_kernel<T, BA_TANH>;
    case BA_SIGMOID:  return (void*)bias_act_kernel<T, BA_SIGMOID>;
    case BA_ELU:      return (void*)bias_act_kernel<T, BA_ELU>;
    case BA_SELU:     return (void*)bias_act_kernel<T, BA_SELU>;
    case BA_SOFTPLUS: return (void*)bias_act_kernel<T, BA_SOFTPLUS>;
    case BA_SWISH:    return (void*)bias_act_kernel<T, BA_SWISH>;
    }
    return nullptr;
}

template void* choose_bias_act_kernel<double>    (const bias_act_kernel_params& p);
template void* choose_bias_act_kernel<float>     (const bias_act_kernel_params& p);
template void* choose_bias_act_kernel<c10::Half> (const bias_act_kernel_params& p);
