// Records that an operator ran its LibTorch reference form although its inputs are CUDA tensors and the
// kernels are enabled (see kernel_fallbacks() in densessm/kernels.h).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>

namespace densessm {

/// Counts the fallback when the kernels are enabled and `x` is a CUDA tensor, and logs the first one of `op`
/// with the reason `why()` (called only then).
void note_reference_fallback(const char* op, const torch::Tensor& x, const std::function<std::string()>& why);

}  // namespace densessm
