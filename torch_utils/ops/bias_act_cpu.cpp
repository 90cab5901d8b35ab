// CPU implementation of bias_act: one fused pass over memory, parallel (OpenMP via at::parallel_for) over
// runs of elements that share a bias value, with plain inner loops that the compiler vectorises.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include "bias_act.h"

//------------------------------------------------------------------------

template <class T> struct ba_cpu_args
{
    const T* x; const T* b; const T* xref; const T* yref; const T* dy; T* y;
    T alpha, gain, clamp;
};

// The innermost loop: restrict pointers and scalars in registers so that the compiler vectorises it.
template <class T, int A, int G, bool VEC_BIAS, bool HAS_Y>
static inline void ba_loop(const T* __restrict__ x, const T* __restrict__ bvec, T bias, const T* __restrict__ xr,
                           const T* __restrict__ yr, const T* __restrict__ dy, T* __restrict__ y, int64_t n,
                           T alpha, T gain, T clamp)
{
    for (int64_t j = 0; j < n; j++)
    {
        T bj = VEC_BIAS ? bvec[j] : bias;
        T xrj = (G != 0 && A == BA_SWISH) ? xr[j] : (T)0;
        T yrj = (G != 0 && HAS_Y) ? yr[j] : (T)0;
        T dyj = (G == 2) ? dy[j] : (T)1;
        y[j] = ba_element<T, A, G>(x[j], bj, xrj, yrj, dyj, alpha, gain, clamp);
    }
}

// Elements [start, start + n); bias is bvec[j] when VEC_BIAS, else the scalar bias. The entry point checks
// that every tensor the mode reads is present; yref is optional only where the activation ignores it.
template <class T, int A, int G, bool VEC_BIAS>
static void ba_span(const ba_cpu_args<T>& p, int64_t start, int64_t n, const T* bvec, T bias)
{
    const T* xr = p.xref ? p.xref + start : nullptr;
    const T* yr = p.yref ? p.yref + start : nullptr;
    const T* dy = p.dy ? p.dy + start : nullptr;
    if (G != 0 && yr)
        ba_loop<T, A, G, VEC_BIAS, true>(p.x + start, bvec, bias, xr, yr, dy, p.y + start, n, p.alpha, p.gain, p.clamp);
    else
        ba_loop<T, A, G, VEC_BIAS, false>(p.x + start, bvec, bias, xr, yr, dy, p.y + start, n, p.alpha, p.gain, p.clamp);
}

template <class T, int A, int G>
static void ba_run(const ba_cpu_args<T>& p, int64_t sizeX, int64_t sizeB, int64_t stepB)
{
    const int64_t chunk = 1 << 15; // elements per task: large enough to hide the scheduling cost
    if (!p.b || sizeB == 1)
    {
        // One bias value (or none) for everything: plain chunks of the flat array.
        T bias = p.b ? p.b[0] : (T)0;
        at::parallel_for(0, sizeX, chunk, [&](int64_t begin, int64_t end) {
            ba_span<T, A, G, false>(p, begin, end - begin, nullptr, bias);
        });
    }
    else if (stepB == 1)
    {
        // Bias dimension innermost in memory (e.g. channels_last): rows of sizeB elements take b[0..sizeB).
        at::parallel_for(0, sizeX / sizeB, std::max<int64_t>(1, chunk / sizeB), [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; r++)
                ba_span<T, A, G, true>(p, r * sizeB, sizeB, p.b, (T)0);
        });
    }
    else
    {
        // Runs of stepB consecutive elements share one bias value (e.g. NCHW with dim=1: one run per H*W plane).
        at::parallel_for(0, sizeX / stepB, std::max<int64_t>(1, chunk / stepB), [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; r++)
                ba_span<T, A, G, false>(p, r * stepB, stepB, nullptr, p.b[r % sizeB]);
        });
    }
}

template <class T, int A>
static void ba_run_mode(const ba_cpu_args<T>& p, int grad, int64_t sizeX, int64_t sizeB, int64_t stepB)
{
    if (grad == 0) ba_run<T, A, 0>(p, sizeX, sizeB, stepB);
    if (grad == 1) ba_run<T, A, 1>(p, sizeX, sizeB, stepB);
    if (grad == 2) ba_run<T, A, 2>(p, sizeX, sizeB, stepB);
}

template <class T>
static void ba_run_act(const ba_cpu_args<T>& p, int act, int grad, int64_t sizeX, int64_t sizeB, int64_t stepB)
{
    switch (act)
    {
    case BA_LINEAR:   ba_run_mode<T, BA_LINEAR>(p, grad, sizeX, sizeB, stepB); break;
    case BA_RELU:     ba_run_mode<T, BA_RELU>(p, grad, sizeX, sizeB, stepB); break;
    case BA_LRELU:    ba_run_mode<T, BA_LRELU>(p, grad, sizeX, sizeB, stepB); break;
    case BA_TANH:     ba_run_mode<T, BA_TANH>(p, grad, sizeX, sizeB, stepB); break;
    case BA_SIGMOID:  ba_run_mode<T, BA_SIGMOID>(p, grad, sizeX, sizeB, stepB); break;
    case BA_ELU:      ba_run_mode<T, BA_ELU>(p, grad, sizeX, sizeB, stepB); break;
    case BA_SELU:     ba_run_mode<T, BA_SELU>(p, grad, sizeX, sizeB, stepB); break;
    case BA_SOFTPLUS: ba_run_mode<T, BA_SOFTPLUS>(p, grad, sizeX, sizeB, stepB); break;
    case BA_SWISH:    ba_run_mode<T, BA_SWISH>(p, grad, sizeX, sizeB, stepB); break;
    }
}

//------------------------------------------------------------------------

// Same strides wherever the size is > 1, i.e. the same order of elements in memory.
static bool ba_same_layout(const torch::Tensor& a, const torch::Tensor& b)
{
    if (a.sizes() != b.sizes())
        return false;
    for (int64_t i = 0; i < a.dim(); i++)
        if (a.size(i) > 1 && a.stride(i) != b.stride(i))
            return false;
    return true;
}

static void ba_check_aux(const torch::Tensor& t, const torch::Tensor& x, const char* name)
{
    if (t.numel() == 0)
        return;
    TORCH_CHECK(t.device() == x.device() && t.dtype() == x.dtype(), name, " must have the device and dtype of x");
    TORCH_CHECK(ba_same_layout(t, x), name, " must have the shape and memory layout of x");
}

torch::Tensor bias_act_cpu(torch::Tensor x, torch::Tensor b, torch::Tensor xref, torch::Tensor yref, torch::Tensor dy,
                           int grad, int dim, int act, double alpha, double gain, double clamp)
{
    TORCH_CHECK(x.device().is_cpu(), "x must reside on the CPU");
    TORCH_CHECK(x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble, "x must be float32 or float64");
    TORCH_CHECK(x.is_non_overlapping_and_dense(), "x must be dense (contiguous in some memory format)");
    TORCH_CHECK(0 <= dim && dim < x.dim(), "dim is out of bounds");
    TORCH_CHECK(BA_LINEAR <= act && act <= BA_SWISH, "unknown activation index");
    TORCH_CHECK(0 <= grad && grad <= 2, "grad must be 0, 1 or 2");
    TORCH_CHECK(b.numel() == 0 || (b.dim() == 1 && b.size(0) == x.size(dim)), "b must have shape [x.shape[dim]]");
    TORCH_CHECK(b.numel() == 0 || (b.device() == x.device() && b.dtype() == x.dtype()), "b must have the device and dtype of x");
    ba_check_aux(xref, x, "xref");
    ba_check_aux(yref, x, "yref");
    ba_check_aux(dy, x, "dy");
    bool act_needs_y = (act >= BA_RELU && act <= BA_SOFTPLUS);
    TORCH_CHECK(grad == 0 || !act_needs_y || yref.numel(), "this activation's gradient needs yref");
    TORCH_CHECK(grad == 0 || act != BA_SWISH || xref.numel(), "swish's gradient needs xref");
    TORCH_CHECK(grad == 0 || clamp < 0 || yref.numel(), "a clamped gradient needs yref");
    TORCH_CHECK(grad != 2 || dy.numel(), "the second-order gradient needs dy");

    torch::Tensor bc = b.contiguous();
    torch::Tensor y = torch::empty_like(x); // keeps x's memory layout
    TORCH_CHECK(ba_same_layout(y, x), "internal error: output layout differs from x");
    if (x.numel() == 0)
        return y;

    // Memory is dense, so the bias index of flat element i is (i / stride(dim)) % size(dim).
    int64_t sizeB = bc.numel() ? x.size(dim) : 1;
    int64_t stepB = (bc.numel() && sizeB > 1) ? x.stride(dim) : 1;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bias_act_cpu", [&] {
        ba_cpu_args<scalar_t> p;
        p.x = x.data_ptr<scalar_t>();
        p.b = bc.numel() ? bc.data_ptr<scalar_t>() : nullptr;
        p.xref = xref.numel() ? xref.data_ptr<scalar_t>() : nullptr;
        p.yref = yref.numel() ? yref.data_ptr<scalar_t>() : nullptr;
        p.dy = dy.numel() ? dy.data_ptr<scalar_t>() : nullptr;
        p.y = y.data_ptr<scalar_t>();
        p.alpha = (scalar_t)alpha;
        p.gain = (scalar_t)gain;
        p.clamp = (scalar_t)clamp;
        ba_run_act<scalar_t>(p, act, grad, x.numel(), sizeB, stepB);
    });
    return y;
}

//------------------------------------------------------------------------

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("bias_act", &bias_act_cpu, "Fused bias + activation + gain + clamp (CPU); grad = 0, 1 or 2 selects the mode");
}
