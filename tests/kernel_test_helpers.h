// What the CUDA kernel tests share: the kernels' dtype tag, tolerances, float64 copies on the CPU for the
// references, and outputs poisoned with NaN so that an element a kernel fails to write shows.
#pragma once

#ifdef DENSESSM_WITH_CUDA
#include <cmath>

#include <torch/torch.h>

#include "dtype.h"

namespace densessm::testing {

inline kernels::DType kernel_dtype(torch::ScalarType t) {
  return t == torch::kFloat ? kernels::DType::kFloat32 : t == torch::kHalf ? kernels::DType::kFloat16 : kernels::DType::kBFloat16;
}

/// Relative error a kernel must reach against the float64 reference.
inline double tolerance(torch::ScalarType t) { return t == torch::kFloat ? 1e-5 : 1e-2; }

/// A float64 CPU copy, detached (a leaf, ready for requires_grad_); undefined stays undefined.
inline torch::Tensor cpu64(const torch::Tensor& t) { return t.defined() ? t.detach().to(torch::kCPU, torch::kDouble) : t; }

inline torch::Tensor poisoned(torch::IntArrayRef sizes, const torch::TensorOptions& options) {
  return torch::full(sizes, NAN, options);
}
inline torch::Tensor poisoned(torch::IntArrayRef sizes, torch::ScalarType dtype) {
  return poisoned(sizes, torch::TensorOptions().device(torch::kCUDA).dtype(dtype));
}

}  // namespace densessm::testing
#endif
