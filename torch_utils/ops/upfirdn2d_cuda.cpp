// upfirdn2d for CUDA tensors: checks the call from upfirdn2d.py as the CPU binding does, sizes the output with
// the shared geometry of upfirdn2d.h and starts the kernel of upfirdn2d.cu on the current stream. The output
// keeps x's layout: a channels_last x is read in place and gives a channels_last y (no copy to NCHW).

#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include "upfirdn2d.h"

static torch::Tensor upfirdn2d_cuda(torch::Tensor x, torch::Tensor f, int64_t upx, int64_t upy, int64_t downx,
    int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip, double gain)
{
    TORCH_CHECK(x.is_cuda() && f.device() == x.device(), "upfirdn2d_cuda: x and f must be on the same CUDA device");
    TORCH_CHECK(x.dim() == 4 && f.dim() == 2, "upfirdn2d_cuda: x is [N, C, H, W] and f [fh, fw]");
    TORCH_CHECK(f.scalar_type() == torch::kFloat, "upfirdn2d_cuda: the filter is float32");
    const auto type = x.scalar_type();
    TORCH_CHECK(type == torch::kFloat || type == torch::kDouble || type == torch::kHalf || type == torch::kBFloat16,
                "upfirdn2d_cuda: x is float16, bfloat16, float32 or float64");
    const char* problem = ufd_geometry_problem(f.size(0), f.size(1), (int)upx, (int)upy, (int)downx, (int)downy);
    TORCH_CHECK(problem == nullptr, problem);

    c10::cuda::CUDAGuard guard(x.device());
    // channels_last stays channels_last (both the read and the written layout); anything else becomes NCHW.
    const bool channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
    const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    torch::Tensor xc = x.contiguous(format), fc = f.contiguous();
    upfirdn2d_params geometry;
    ufd_set_geometry(geometry, xc.size(0) * xc.size(1), xc.size(2), xc.size(3), fc.size(0), fc.size(1), (int)upx, (int)upy,
                     (int)downx, (int)downy, (int)padx0, (int)padx1, (int)pady0, (int)pady1, flip, gain);
    ufd_set_layout(geometry, xc.size(1), xc.stride(0), xc.stride(1), xc.stride(2), xc.stride(3), channels_last);
    TORCH_CHECK(geometry.out_h >= 1 && geometry.out_w >= 1, "upfirdn2d_cuda: the output would be empty");

    torch::Tensor y = torch::empty({xc.size(0), xc.size(1), geometry.out_h, geometry.out_w}, xc.options().memory_format(format));
    if (y.numel() == 0)
        return y;
    geometry.x = xc.data_ptr();
    geometry.f = fc.data_ptr<float>();
    geometry.y = y.data_ptr();
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    cudaError_t status = cudaSuccess;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, type, "upfirdn2d_cuda",
                                    [&] { status = upfirdn2d_cuda_launch<scalar_t>(geometry, stream); });
    TORCH_CHECK(status == cudaSuccess, "upfirdn2d_cuda: kernel launch failed: ", cudaGetErrorString(status));
    return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module)
{
    module.def("upfirdn2d", &upfirdn2d_cuda, "upfirdn2d on a CUDA device (one thread per output element, x's layout kept)");
}
