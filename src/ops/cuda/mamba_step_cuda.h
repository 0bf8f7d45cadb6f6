// LibTorch wrappers of kernels/mamba_step.h, used by the step operators for CUDA tensors.
#pragma once

#include <torch/types.h>

#include "densessm/selective_scan.h"

namespace densessm::cuda {

/// Whether the one-token kernels can take this call: CUDA tensors of float32/float16/bfloat16, kernels
/// enabled, and no gradient wanted (the step kernels have no backward; they update state in place).
bool can_run_step(const torch::Tensor& x, const std::vector<torch::Tensor>& others);

torch::Tensor causal_conv1d_step(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                 torch::Tensor& state);
torch::Tensor selective_scan_step(const SelectiveScanArgs& args, torch::Tensor& state);

}  // namespace densessm::cuda
