// bias_act for CUDA tensors: validates what bias_act.py passes, allocates the result and starts the kernel
// of bias_act.cu. Same calling convention as the CPU plugin (bias_act_cpu.cpp).

#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <vector>
#include "bias_act.h"

// True when `t` is absent (empty) or an operand of the same shape, device, dtype and element order as `x`.
static bool ba_matches(const torch::Tensor& t, const torch::Tensor& x)
{
    if (t.numel() == 0)
        return true;
    if (t.sizes() != x.sizes() || t.device() != x.device() || t.scalar_type() != x.scalar_type())
        return false;
    for (int64_t d = 0; d < x.dim(); d++)
        if (x.size(d) > 1 && t.stride(d) != x.stride(d))
            return false;
    return true;
}

static std::vector<torch::Tensor> bias_act_cuda(torch::Tensor x, torch::Tensor b, torch::Tensor xref, torch::Tensor yref,
    torch::Tensor dy, int64_t mode, int64_t dim, int64_t act, double alpha, double gain, double clamp, bool sum_bias)
{
    const auto type = x.scalar_type();
    TORCH_CHECK(x.is_cuda(), "bias_act_cuda: the input is not on a CUDA device");
    TORCH_CHECK(type == torch::kHalf || type == torch::kFloat || type == torch::kDouble, "bias_act_cuda: unsupported dtype ", type);
    TORCH_CHECK(x.is_non_overlapping_and_dense(), "bias_act_cuda: the input must be dense");
    TORCH_CHECK(dim >= 0 && dim < x.dim() && mode >= 0 && mode <= 2, "bias_act_cuda: dim or mode out of range");
    TORCH_CHECK(act >= BA_LINEAR && act <= BA_SWISH, "bias_act_cuda: unknown activation code ", act);
    const bool has_bias = b.numel() > 0;
    TORCH_CHECK(!has_bias || (b.dim() == 1 && b.size(0) == x.size(dim) && b.device() == x.device() && b.scalar_type() == type),
                "bias_act_cuda: the bias must be a vector of x.size(dim) values on x's device, in x's dtype");
    TORCH_CHECK(ba_matches(xref, x) && ba_matches(yref, x) && ba_matches(dy, x),
                "bias_act_cuda: saved tensors must match the input in shape, device, dtype and layout");
    // The same demands as the CPU binding: a kernel without the saved tensor it reads would compute with zeros.
    const bool act_needs_y = act >= BA_RELU && act <= BA_SOFTPLUS;
    TORCH_CHECK(mode == 0 || !act_needs_y || yref.numel() > 0, "bias_act_cuda: this activation's gradient needs yref");
    TORCH_CHECK(mode == 0 || act != BA_SWISH || xref.numel() > 0, "bias_act_cuda: swish's gradient needs xref");
    TORCH_CHECK(mode == 0 || clamp < 0 || yref.numel() > 0, "bias_act_cuda: a clamped gradient needs yref");
    TORCH_CHECK(mode != 2 || dy.numel() > 0, "bias_act_cuda: mode 2 needs the first-order gradient");

    TORCH_CHECK(!sum_bias || mode != 0, "bias_act_cuda: bias sums are for the gradient modes");

    c10::cuda::CUDAGuard guard(x.device());
    torch::Tensor bc = b.contiguous();
    torch::Tensor out = torch::empty_like(x);
    if (x.numel() > 0)
    {
        ba_cuda_args a;
        a.in = x.data_ptr();
        a.bias = has_bias ? bc.data_ptr() : nullptr;
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
        a.bias_len = has_bias ? x.size(dim) : 1;
        a.bias_stride = (has_bias && a.bias_len > 1) ? x.stride(dim) : 1; // dense memory: index = (i / stride) % len
        cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
        cudaError_t status = cudaSuccess;
        AT_DISPATCH_FLOATING_TYPES_AND_HALF(type, "bias_act_cuda", [&] { status = bias_act_cuda_launch<scalar_t>(a, stream); });
        TORCH_CHECK(status == cudaSuccess, "bias_act_cuda: kernel launch failed: ", cudaGetErrorString(status));
    }

    // The bias gradient: the result summed over every dimension but `dim` (an ATen reduction).
    torch::Tensor total = x.new_empty({0});
    if (sum_bias)
    {
        std::vector<int64_t> others;
        for (int64_t d = 0; d < x.dim(); d++)
            if (d != dim)
                others.push_back(d);
        total = others.empty() ? out.clone() : out.sum(others);
    }
    return {out, total};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module)
{
    module.def("bias_act", &bias_act_cuda,
               "bias + activation + gain + clamp on CUDA; mode 0 = forward, 1 = first, 2 = second derivative; "
               "returns [result, result summed over all dims but dim (if asked)]");
}
