// The RMSNorm kernels (kernels/rms_norm.h) with autograd, behind RMSNormImpl::forward for CUDA tensors.
#pragma once

#include <torch/types.h>

namespace densessm::cuda {

/// Whether the kernels take this call: kernels enabled, x on CUDA in float32/float16/bfloat16, the weight
/// (dim) in x's dtype or float32 on the same device, dim up to kernels::kRmsNormMaxDim.
bool can_run_rms_norm(const torch::Tensor& x, const torch::Tensor& weight);

/// RMSNorm over x's last dimension, differentiable in x and weight; returns x's dtype.
torch::Tensor rms_norm_autograd(const torch::Tensor& x, const torch::Tensor& weight, double eps);

}  // namespace densessm::cuda
