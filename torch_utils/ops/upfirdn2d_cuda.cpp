// Python binding of the upfirdn2d CUDA kernel (upfirdn2d.cu).

#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#include "upfirdn2d.h"

static torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f, int upx, int upy, int downx, int downy,
    int padx0, int padx1, int pady0, int pady1, bool flip, double gain)
{
    TORCH_CHECK(x.is_cuda(), "x must reside on a CUDA device");
    TORCH_CHECK(f.device() == x.device(), "f must reside on the same device as x");
    TORCH_CHECK(f.scalar_type() == torch::kFloat, "f must be float32");
    TORCH_CHECK(x.dim() == 4, "x must be rank 4");
    TORCH_CHECK(f.dim() == 2, "f must be rank 2");
    TORCH_CHECK(upx >= 1 && upy >= 1, "upsampling factor must be at least 1");
    TORCH_CHECK(downx >= 1 && downy >= 1, "downsampling factor must be at least 1");
    TORCH_CHECK(f.size(0) >= 1 && f.size(1) >= 1, "f must be at least 1x1");
    const at::cuda::OptionalCUDAGuard device_guard(device_of(x));

    x = x.contiguous();
    f = f.contiguous();
    upfirdn2d_params p;
    ufd_set_geometry(p, x.size(0) * x.size(1), x.size(2), x.size(3), f.size(0), f.size(1),
        upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain);
    TORCH_CHECK(p.out_h >= 1 && p.out_w >= 1, "output must be at least 1x1");

    torch::Tensor y = torch::empty({x.size(0), x.size(1), p.out_h, p.out_w}, x.options());
    if (y.numel() == 0)
        return y;
    p.x = x.data_ptr();
    p.f = f.data_ptr<float>();
    p.y = y.data_ptr();
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    cudaError_t err = cudaSuccess;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "upfirdn2d_cuda", [&]
    {
        err = upfirdn2d_cuda_launch<scalar_t>(p, stream);
    });
    TORCH_CHECK(err == cudaSuccess, "upfirdn2d CUDA kernel failed: ", cudaGetErrorString(err));
    return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("upfirdn2d", &upfirdn2d, "upfirdn2d on a CUDA device");
}
