// LibTorch wrappers of kernels/selective_scan.h and kernels/causal_conv1d.h with their autograd, used by
// selective_scan() and causal_conv1d() for CUDA tensors.
#pragma once

#include <torch/types.h>

#include "densessm/selective_scan.h"

namespace densessm::cuda {

/// Whether the scan kernels take this call: kernels enabled, CUDA tensors of float32/float16/bfloat16,
/// N <= 64, and no gradient wanted when a state is passed (the kernels' backward gives no gradient to the
/// initial state and takes none from the final one; the reference form runs then).
bool can_run_scan(const SelectiveScanArgs& args, const torch::Tensor* state);
/// The same contract as densessm::selective_scan, whose shape checks have run.
torch::Tensor selective_scan(const SelectiveScanArgs& args, torch::Tensor* state);

/// Whether the convolution kernels take this call (as can_run_scan; width 2 to 4).
bool can_run_conv(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                  const torch::Tensor* state);
/// The same contract as densessm::causal_conv1d, whose shape checks have run.
torch::Tensor causal_conv1d(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                            torch::Tensor* state);

}  // namespace densessm::cuda
