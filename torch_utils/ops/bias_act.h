// Fused bias + activation + gain + clamp: declarations and per-element math shared by the CPU and CUDA kernels.
//
// One element op, three modes selected by G:
//   G = 0  forward:       y  = clamp(act(x + b) * gain)
//   G = 1  first grad:    dx = dy * act'(x + b) * gain          (masked where the forward clamped)
//   G = 2  second grad:   d  = ddx * act''(x + b) * gain * dy   (masked likewise)
// In the grad modes `x` holds the incoming gradient, `xref`/`yref` the forward's saved input/output and
// `dy` the first-order gradient (G = 2 only). Derivatives are written in terms of the saved output where
// the activation allows it, so that e.g. lrelu only needs y.

#pragma once
#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define BA_FUNC __host__ __device__ __forceinline__
#else
#define BA_FUNC inline
#endif

// Activation indices, shared with bias_act.py (activation_funcs[...].cuda_idx).
enum { BA_LINEAR = 1, BA_RELU = 2, BA_LRELU = 3, BA_TANH = 4, BA_SIGMOID = 5, BA_ELU = 6, BA_SELU = 7, BA_SOFTPLUS = 8, BA_SWISH = 9 };

BA_FUNC float  ba_exp(float v)  { return expf(v); }
BA_FUNC double ba_exp(double v) { return exp(v); }
BA_FUNC float  ba_log1p(float v)  { return log1pf(v); }
BA_FUNC double ba_log1p(double v) { return log1p(v); }

// Beyond this |x| the exponentials saturate; the limit keeps exp() finite in each precision.
template <class T> BA_FUNC T ba_exp_range() { return (sizeof(T) >= 8) ? (T)10000 : (T)80; }

// Returns the element's result before the gain/clamp step (see header comment for the meaning per mode).
// xb = xref + b in the grad modes, yy = yref / gain (the activation's output before gain).
template <class T, int A, int G>
BA_FUNC T ba_activation(T x, T xb, T yy, T alpha)
{
    const T one = 1, two = 2;
    const T selu_scale = (T)1.0507009873554804934193349852946;
    const T selu_alpha = (T)1.6732632423543772848170429916717;
    const T range = ba_exp_range<T>();
    if (A == BA_LINEAR) {
        return (G == 2) ? (T)0 : x;
    }
    if (A == BA_RELU) {
        if (G == 0) return (x > 0) ? x : (T)0;
        if (G == 1) return (yy > 0) ? x : (T)0;
        return 0;
    }
    if (A == BA_LRELU) {
        if (G == 0) return (x > 0) ? x : x * alpha;
        if (G == 1) return (yy > 0) ? x : x * alpha;
        return 0;
    }
    if (A == BA_TANH) {
        if (G == 0) {
            if (x < -range) return -one;
            if (x > range) return one;
            T e = ba_exp(-two * (x < 0 ? -x : x));          // tanh(|x|) = (1 - e) / (1 + e), no overflow
            T t = (one - e) / (one + e);
            return (x < 0) ? -t : t;
        }
        if (G == 1) return x * (one - yy * yy);
        return x * (one - yy * yy) * (-two * yy);
    }
    if (A == BA_SIGMOID) {
        if (G == 0) return (x < -range) ? (T)0 : one / (ba_exp(-x) + one);
        if (G == 1) return x * yy * (one - yy);
        return x * yy * (one - yy) * (one - two * yy);
    }
    if (A == BA_ELU) {
        if (G == 0) return (x >= 0) ? x : ba_exp(x) - one;
        if (G == 1) return (yy >= 0) ? x : x * (yy + one);
        return (yy >= 0) ? (T)0 : x * (yy + one);
    }
    if (A == BA_SELU) {
        if (G == 0) return (x >= 0) ? selu_scale * x : (selu_scale * selu_alpha) * (ba_exp(x) - one);
        if (G == 1) return (yy >= 0) ? x * selu_scale : x * (yy + selu_scale * selu_alpha);
        return (yy >= 0) ? (T)0 : x * (yy + selu_scale * selu_alpha);
    }
    if (A == BA_SOFTPLUS) {
        if (G == 0) return (x > range) ? x : ((x > 0) ? x + ba_log1p(ba_exp(-x)) : ba_log1p(ba_exp(x)));
        if (G == 1) return x * (one - ba_exp(-yy));                  // sigmoid(x) = 1 - exp(-softplus(x))
        T e = ba_exp(-yy);
        return x * e * (one - e);
    }
    if (A == BA_SWISH) {
        if (G == 0) return (x < -range) ? (T)0 : x / (ba_exp(-x) + one);
        // Derivatives from the saved input: s = sigmoid(xb); f' = s(1 + xb(1 - s)); f'' = s(1 - s)(2 + xb(1 - 2s)).
        T s = (xb < -range) ? (T)0 : one / (ba_exp(-xb) + one);
        if (G == 1) return x * s * (one + xb * (one - s));
        return x * s * (one - s) * (two + xb * (one - two * s));
    }
    return 0;
}

// The whole element op. dy is only read in mode 2 (pass 1 otherwise); yref is the forward's clamped output.
template <class T, int A, int G>
BA_FUNC T ba_element(T x, T b, T xref, T yref, T dy, T alpha, T gain, T clamp)
{
    T xb = xref + b;
    if (G == 0) x += b;
    T yy = (gain != 0) ? yref / gain : (T)0;
    T y = ba_activation<T, A, G>(x, xb, yy, alpha) * gain;
    if (G == 2) y *= dy;
    if (clamp >= 0) {
        if (G == 0) y = (y > -clamp && y < clamp) ? y : ((y >= 0) ? clamp : -clamp);
        else        y = (yref > -clamp && yref < clamp) ? y : (T)0;
    }
    return y;
}

// What the CUDA binding (bias_act_cuda.cpp) hands to the kernel (bias_act.cu). Every tensor is dense and
// shares the memory order of `in`, so flat element i takes the bias value bias[(i / bias_stride) % bias_len].
struct ba_cuda_args
{
    const void* in;           // x in mode 0, the incoming gradient in modes 1 and 2
    const void* bias;         // may be nullptr
    const void* saved_x;      // the forward's input (modes 1, 2), or nullptr when the math does not read it
    const void* saved_y;      // the forward's output (modes 1, 2), or nullptr likewise
    const void* first_grad;   // mode 2: the first-order gradient that the forward received
    void*       out;
    int         mode, act;
    float       alpha, gain, clamp;
    int64_t     count, bias_len, bias_stride;
};

// Element i of the CUDA kernel's loop: fetch by flat index, compute in S, return the value to store. The
// CPU plugin runs the same function over the whole tensor (bias_act_flat) so that tests check it here.
template <class S, class T, int A, int M>
BA_FUNC S ba_flat_element(const ba_cuda_args& a, int64_t i)
{
    const T* bias = static_cast<const T*>(a.bias);
    const T* sx = static_cast<const T*>(a.saved_x);
    const T* sy = static_cast<const T*>(a.saved_y);
    const T* g1 = static_cast<const T*>(a.first_grad);
    const S bv = bias ? (S)bias[(i / a.bias_stride) % a.bias_len] : (S)0;
    const S xv = sx ? (S)sx[i] : (S)0;
    const S yv = sy ? (S)sy[i] : (S)0;
    const S gv = g1 ? (S)g1[i] : (S)1;
    const S v = (S)static_cast<const T*>(a.in)[i];
    return ba_element<S, A, M>(v, bv, xv, yv, gv, (S)a.alpha, (S)a.gain, (S)a.clamp);
}

// Defined in bias_act.cu, for the storage types double, float and c10::Half.
#ifdef CUDART_VERSION
template <class T> cudaError_t bias_act_cuda_launch(const ba_cuda_args& a, cudaStream_t stream);
#endif
