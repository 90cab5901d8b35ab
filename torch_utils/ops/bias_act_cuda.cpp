// Python binding of the CUDA bias_act kernel: argument checks, output allocation and launch.

#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include "bias_act.h"

//------------------------------------------------------------------------

static void ba_check_aux(const torch::Tensor& t, const torch::Tensor& x, c10::MemoryFormat layout, const char* name)
{
    if (t.numel() == 0)
        return;
    TORCH_CHECK(t.device() == x.device() && t.dtype() == x.dtype(), name, " must have the device and dtype of x");
    TORCH_CHECK(t.sizes() == x.sizes() && t.is_contiguous(layout), name, " must have the shape and memory layout of x");
}

torch::Tensor bias_act_cuda(torch::Tensor x, torch::Tensor b, torch::Tensor xref, torch::Tensor yref, torch::Tensor dy,
                            int grad, int dim, int act, double alpha, double gain, double clamp)
{
    TORCH_CHECK(x.is_cuda(), "x must reside on a CUDA device");
    TORCH_CHECK(x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble || x.scalar_type() == torch::kHalf,
                "x must be float16, float32 or float64");
    c10::MemoryFormat layout = x.suggest_memory_format();
    TORCH_CHECK(x.is_contiguous(layout), "x must be contiguous or channels_last");
    TORCH_CHECK(0 <= dim && dim < x.dim(), "dim is out of bounds");
    TORCH_CHECK(BA_LINEAR <= act && act <= BA_SWISH, "unknown activation index");
    TORCH_CHECK(0 <= grad && grad <= 2, "grad must be 0, 1 or 2");
    TORCH_CHECK(b.numel() == 0 || (b.dim() == 1 && b.size(0) == x.size(dim) && b.is_contiguous()), "b must have shape [x.shape[dim]]");
    TORCH_CHECK(b.numel() == 0 || (b.device() == x.device() && b.dtype() == x.dtype()), "b must have the device and dtype of x");
    ba_check_aux(xref, x, layout, "xref");
    ba_check_aux(yref, x, layout, "yref");
    ba_check_aux(dy, x, layout, "dy");
    TORCH_CHECK(grad != 2 || dy.numel(), "the second-order gradient needs dy");

    const at::cuda::OptionalCUDAGuard device_guard(device_of(x));
    torch::Tensor y = torch::empty_like(x, x.options().memory_format(layout));
    if (x.numel() == 0)
        return y;

    bias_act_kernel_params p;
    p.x = x.data_ptr();
    p.b = b.numel() ? b.data_ptr() : nullptr;
    p.xref = xref.numel() ? xref.data_ptr() : nullptr;
    p.yref = yref.numel() ? yref.data_ptr() : nullptr;
    p.dy = dy.numel() ? dy.data_ptr() : nullptr;
    p.y = y.data_ptr();
    p.grad = grad;
    p.act = act;
    p.alpha = (float)alpha;
    p.gain = (float)gain;
    p.clamp = (float)clamp;
    p.sizeX = x.numel();
    p.sizeB = b.numel() ? x.size(dim) : 1;
    p.stepB = (b.numel() && p.sizeB > 1) ? x.stride(dim) : 1; // memory is dense: bias index = (i / stride) % size
    p.loopX = 4;

    void* kernel = nullptr;
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "bias_act_cuda", [&] {
        kernel = choose_bias_act_kernel<scalar_t>(p);
    });
    TORCH_CHECK(kernel, "no kernel for this activation");

    int block_size = 128;
    int64_t grid_size = (p.sizeX - 1) / ((int64_t)p.loopX * block_size) + 1;
    TORCH_CHECK(grid_size <= 0x7fffffff, "x is too large");
    void* args[] = {&p};
    AT_CUDA_CHECK(cudaLaunchKernel(kernel, dim3((unsigned)grid_size), dim3(block_size), args, 0, at::cuda::getCurrentCUDAStream()));
    return y;
}

//------------------------------------------------------------------------

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("bias_act", &bias_act_cuda, "Fused bias + activation + gain + clamp (CUDA); grad = 0, 1 or 2 selects the mode");
}
