// CPU implementation of bias_act: one fused pass over memory, parallel (OpenMP via at::parallel_for) over
// runs of elements that share a bias value, with plain inner loops that the compiler vectorises. On request
// the same pass also sums the result per bias index (the bias gradient), so the backward pass reads the
// gradient only once.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <vector>
#include "bias_act.h"

#ifdef __linux__
#include <sys/mman.h>
#endif

//------------------------------------------------------------------------

template <class T> struct ba_cpu_args
{
    const T* x; const T* b; const T* xref; const T* yref; const T* dy; T* y;
    const T* zeros; // sizeB zeros: the bias row when there is no bias but the sums go per index
    T alpha, gain, clamp;
};

// The innermost loop: restrict pointers and scalars in registers so that the compiler vectorises it.
// Returns the sum of the written values when SUM (else 0); with VEC_BIAS, `bins[j]` gets y[j] added instead.
template <class T, int A, int G, bool VEC_BIAS, bool HAS_Y, bool SUM>
static inline double ba_loop(const T* __restrict__ x, const T* __restrict__ bvec, T bias, const T* __restrict__ xr,
                             const T* __restrict__ yr, const T* __restrict__ dy, T* __restrict__ y, int64_t n,
                             T alpha, T gain, T clamp, double* __restrict__ bins)
{
    double total = 0;
    #pragma omp simd reduction(+:total)
    for (int64_t j = 0; j < n; j++)
    {
        T bj = VEC_BIAS ? bvec[j] : bias;
        T xrj = (G != 0 && A == BA_SWISH) ? xr[j] : (T)0;
        T yrj = (G != 0 && HAS_Y) ? yr[j] : (T)0;
        T dyj = (G == 2) ? dy[j] : (T)1;
        T v = ba_element<T, A, G>(x[j], bj, xrj, yrj, dyj, alpha, gain, clamp);
        y[j] = v;
        if (SUM && VEC_BIAS) bins[j] += (double)v;
        if (SUM && !VEC_BIAS) total += (double)v;
    }
    return total;
}

// Elements [start, start + n); bias is bvec[j] when VEC_BIAS, else the scalar bias. The entry point checks
// that every tensor the mode reads is present; yref is optional only where the activation ignores it.
template <class T, int A, int G, bool VEC_BIAS, bool SUM>
static double ba_span(const ba_cpu_args<T>& p, int64_t start, int64_t n, const T* bvec, T bias, double* bins)
{
    const T* xr = p.xref ? p.xref + start : nullptr;
    const T* yr = p.yref ? p.yref + start : nullptr;
    const T* dy = p.dy ? p.dy + start : nullptr;
    if (G != 0 && yr)
        return ba_loop<T, A, G, VEC_BIAS, true, SUM>(p.x + start, bvec, bias, xr, yr, dy, p.y + start, n, p.alpha, p.gain, p.clamp, bins);
    return ba_loop<T, A, G, VEC_BIAS, false, SUM>(p.x + start, bvec, bias, xr, yr, dy, p.y + start, n, p.alpha, p.gain, p.clamp, bins);
}

// Per-thread partial sums of the bias gradient, added up in a fixed order once the threads are done.
struct ba_partials
{
    int64_t width;
    std::vector<double> rows;
    ba_partials(int64_t w, bool used) : width(w), rows(used ? (size_t)(w * at::get_num_threads()) : 0, 0.0) {}
    double* mine() { return rows.empty() ? nullptr : rows.data() + at::get_thread_num() * width; }
    void reduce_into(double* out) const
    {
        for (size_t i = 0; i < rows.size(); i++)
            out[i % width] += rows[i];
    }
};

template <class T, int A, int G, bool SUM>
static void ba_run(const ba_cpu_args<T>& p, int64_t sizeX, int64_t sizeB, int64_t stepB, double* sums)
{
    const int64_t chunk = 1 << 15; // elements per task: large enough to hide the scheduling cost
    if (sizeB == 1)
    {
        // One bias value (or none) for everything: plain chunks of the flat array.
        T bias = p.b ? p.b[0] : (T)0;
        ba_partials part(1, SUM);
        at::parallel_for(0, sizeX, chunk, [&](int64_t begin, int64_t end) {
            double s = ba_span<T, A, G, false, SUM>(p, begin, end - begin, nullptr, bias, nullptr);
            if (SUM) *part.mine() += s;
        });
        if (SUM) part.reduce_into(sums);
    }
    else if (stepB == 1)
    {
        // Bias dimension innermost in memory (e.g. channels_last): rows of sizeB elements take b[0..sizeB).
        ba_partials part(sizeB, SUM);
        at::parallel_for(0, sizeX / sizeB, std::max<int64_t>(1, chunk / sizeB), [&](int64_t begin, int64_t end) {
            double* bins = part.mine();
            for (int64_t r = begin; r < end; r++)
                if (p.b)
                    ba_span<T, A, G, true, SUM>(p, r * sizeB, sizeB, p.b, (T)0, bins);
                else
                    ba_span<T, A, G, true, SUM>(p, r * sizeB, sizeB, p.zeros, (T)0, bins);
        });
        if (SUM) part.reduce_into(sums);
    }
    else
    {
        // Runs of stepB consecutive elements share one bias value (e.g. NCHW with dim=1: one run per H*W plane).
        ba_partials part(sizeB, SUM);
        at::parallel_for(0, sizeX / stepB, std::max<int64_t>(1, chunk / stepB), [&](int64_t begin, int64_t end) {
            double* bins = part.mine();
            for (int64_t r = begin; r < end; r++)
            {
                double s = ba_span<T, A, G, false, SUM>(p, r * stepB, stepB, nullptr, p.b ? p.b[r % sizeB] : (T)0, nullptr);
                if (SUM) bins[r % sizeB] += s;
            }
        });
        if (SUM) part.reduce_into(sums);
    }
}

template <class T, int A>
static void ba_run_mode(const ba_cpu_args<T>& p, int grad, int64_t sizeX, int64_t sizeB, int64_t stepB, double* sums)
{
    if (grad == 0) ba_run<T, A, 0, false>(p, sizeX, sizeB, stepB, sums);
    if (grad == 1 && !sums) ba_run<T, A, 1, false>(p, sizeX, sizeB, stepB, sums);
    if (grad == 1 && sums) ba_run<T, A, 1, true>(p, sizeX, sizeB, stepB, sums);
    if (grad == 2 && !sums) ba_run<T, A, 2, false>(p, sizeX, sizeB, stepB, sums);
    if (grad == 2 && sums) ba_run<T, A, 2, true>(p, sizeX, sizeB, stepB, sums);
}

template <class T>
static void ba_run_act(const ba_cpu_args<T>& p, int act, int grad, int64_t sizeX, int64_t sizeB, int64_t stepB, double* sums)
{
    switch (act)
    {
    case BA_LINEAR:   ba_run_mode<T, BA_LINEAR>(p, grad, sizeX, sizeB, stepB, sums); break;
    case BA_RELU:     ba_run_mode<T, BA_RELU>(p, grad, sizeX, sizeB, stepB, sums); break;
    case BA_LRELU:    ba_run_mode<T, BA_LRELU>(p, grad, sizeX, sizeB, stepB, sums); break;
    case BA_TANH:     ba_run_mode<T, BA_TANH>(p, grad, sizeX, sizeB, stepB, sums); break;
    case BA_SIGMOID:  ba_run_mode<T, BA_SIGMOID>(p, grad, sizeX, sizeB, stepB, sums); break;
    case BA_ELU:      ba_run_mode<T, BA_ELU>(p, grad, sizeX, sizeB, stepB, sums); break;
    case BA_SELU:     ba_run_mode<T, BA_SELU>(p, grad, sizeX, sizeB, stepB, sums); break;
    case BA_SOFTPLUS: ba_run_mode<T, BA_SOFTPLUS>(p, grad, sizeX, sizeB, stepB, sums); break;
    case BA_SWISH:    ba_run_mode<T, BA_SWISH>(p, grad, sizeX, sizeB, stepB, sums); break;
    }
}

// ba_flat_element with the activation and mode chosen at run time (the CUDA side picks them per launch).
template <class T, int A>
static T ba_flat_mode(const ba_cuda_args& a, int64_t i)
{
    if (a.mode == 0) return ba_flat_element<T, T, A, 0>(a, i);
    if (a.mode == 1) return ba_flat_element<T, T, A, 1>(a, i);
    return ba_flat_element<T, T, A, 2>(a, i);
}

template <class T>
static T ba_flat_dispatch(const ba_cuda_args& a, int64_t i)
{
    switch (a.act)
    {
    case BA_LINEAR:   return ba_flat_mode<T, BA_LINEAR>(a, i);
    case BA_RELU:     return ba_flat_mode<T, BA_RELU>(a, i);
    case BA_LRELU:    return ba_flat_mode<T, BA_LRELU>(a, i);
    case BA_TANH:     return ba_flat_mode<T, BA_TANH>(a, i);
    case BA_SIGMOID:  return ba_flat_mode<T, BA_SIGMOID>(a, i);
    case BA_ELU:      return ba_flat_mode<T, BA_ELU>(a, i);
    case BA_SELU:     return ba_flat_mode<T, BA_SELU>(a, i);
    case BA_SOFTPLUS: return ba_flat_mode<T, BA_SOFTPLUS>(a, i);
    default:          return ba_flat_mode<T, BA_SWISH>(a, i);
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

// An uninitialised tensor with x's shape, dtype and memory layout. Large results go into memory the kernel
// is asked to back with 2 MiB pages (transparent huge pages, where the system allows them on request):
// a fresh multi-megabyte buffer otherwise costs one page fault per 4 KiB on first touch, which takes longer
// than the whole arithmetic of this memory-bound op.
static torch::Tensor ba_output_like(const torch::Tensor& x)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const size_t huge = size_t(2) << 20;
    const size_t bytes = (size_t)x.numel() * x.element_size();
    if (bytes >= 4 * huge)
    {
        const size_t length = bytes + huge; // room to start on a 2 MiB boundary
        void* base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base != MAP_FAILED)
        {
            char* start = (char*)(((uintptr_t)base + huge - 1) & ~(uintptr_t)(huge - 1));
            madvise(start, bytes, MADV_HUGEPAGE); // advisory: failure only costs speed
            return torch::from_blob(start, x.sizes(), x.strides(), [base, length](void*) { munmap(base, length); }, x.options());
        }
    }
#endif
    return torch::empty_like(x);
}

std::vector<torch::Tensor> bias_act_cpu(torch::Tensor x, torch::Tensor b, torch::Tensor xref, torch::Tensor yref,
    torch::Tensor dy, int64_t grad, int64_t dim, int64_t act, double alpha, double gain, double clamp, bool sum_bias)
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
    TORCH_CHECK(!sum_bias || grad != 0, "bias sums are for the gradient modes");

    torch::Tensor bc = b.contiguous();
    torch::Tensor y = ba_output_like(x);
    TORCH_CHECK(ba_same_layout(y, x), "internal error: output layout differs from x");
    const bool sums_wanted = sum_bias;
    std::vector<double> sums(sums_wanted ? x.size(dim) : 0, 0.0);

    // Memory is dense, so the bias index of flat element i is (i / stride(dim)) % size(dim). Without a bias
    // and without sums, the whole tensor is one run.
    const bool per_index = bc.numel() > 0 || sums_wanted;
    int64_t sizeB = per_index ? x.size(dim) : 1;
    int64_t stepB = (per_index && sizeB > 1) ? x.stride(dim) : 1;
    if (x.numel() > 0)
        AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bias_act_cpu", [&] {
            std::vector<scalar_t> zeros(sizeB, (scalar_t)0);
            ba_cpu_args<scalar_t> p;
            p.zeros = zeros.data();
            p.x = x.data_ptr<scalar_t>();
            p.b = bc.numel() ? bc.data_ptr<scalar_t>() : nullptr;
            p.xref = xref.numel() ? xref.data_ptr<scalar_t>() : nullptr;
            p.yref = yref.numel() ? yref.data_ptr<scalar_t>() : nullptr;
            p.dy = dy.numel() ? dy.data_ptr<scalar_t>() : nullptr;
            p.y = y.data_ptr<scalar_t>();
            p.alpha = (scalar_t)alpha;
            p.gain = (scalar_t)gain;
            p.clamp = (scalar_t)clamp;
            ba_run_act<scalar_t>(p, (int)act, (int)grad, x.numel(), sizeB, stepB, sums_wanted ? sums.data() : nullptr);
        });

    torch::Tensor total = x.new_empty({sums_wanted ? x.size(dim) : 0});
    if (sums_wanted)
        total.copy_(torch::from_blob(sums.data(), {x.size(dim)}, torch::kFloat64));
    return {y, total};
}

//------------------------------------------------------------------------

// The CUDA kernel's per-element code (ba_flat_element) over the whole tensor, single-threaded: lets the CPU
// tests check what bias_act.cu computes, bias indexing included. Same arguments as bias_act_cpu, no sums.
torch::Tensor bias_act_flat(torch::Tensor x, torch::Tensor b, torch::Tensor xref, torch::Tensor yref,
    torch::Tensor dy, int64_t mode, int64_t dim, int64_t act, double alpha, double gain, double clamp)
{
    TORCH_CHECK(x.device().is_cpu() && x.is_non_overlapping_and_dense(), "bias_act_flat: x must be a dense CPU tensor");
    TORCH_CHECK(x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble, "bias_act_flat: float32 or float64");
    TORCH_CHECK(0 <= dim && dim < x.dim() && 0 <= mode && mode <= 2, "bias_act_flat: dim or mode out of range");
    TORCH_CHECK(BA_LINEAR <= act && act <= BA_SWISH, "bias_act_flat: unknown activation");
    ba_check_aux(xref, x, "xref");
    ba_check_aux(yref, x, "yref");
    ba_check_aux(dy, x, "dy");
    torch::Tensor bc = b.contiguous();
    torch::Tensor out = torch::empty_like(x);
    ba_cuda_args a;
    a.in = x.data_ptr();
    a.bias = bc.numel() ? bc.data_ptr() : nullptr;
    a.saved_x = xref.numel() ? xref.data_ptr() : nullptr;
    a.saved_y = yref.numel() ? yref.data_ptr() : nullptr;
    a.first_grad = dy.numel() ? dy.data_ptr() : nullptr;
    a.out = out.data_ptr();
    a.mode = (int)mode;
    a.act = (int)act;
    a.alpha = (float)alpha;
    a.gain = (float)gain;
    a.clamp = (float)clamp;
    a.count = x.numel();
    a.bias_len = bc.numel() ? x.size(dim) : 1;
    a.bias_stride = (bc.numel() && a.bias_len > 1) ? x.stride(dim) : 1;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bias_act_flat", [&] {
        scalar_t* y = out.data_ptr<scalar_t>();
        for (int64_t i = 0; i < a.count; i++)
            y[i] = ba_flat_dispatch<scalar_t>(a, i);
    });
    return out;
}

//------------------------------------------------------------------------

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module)
{
    module.def("bias_act", &bias_act_cpu,
               "bias + activation + gain + clamp on the CPU; grad = 0, 1 or 2 selects the mode; returns "
               "[result, result summed over all dims but dim (if sum_bias)]");
    module.def("bias_act_flat", &bias_act_flat, "the CUDA kernel's per-element code on the CPU (single thread, for tests)");
}
