// What every LibTorch wrapper of a kernel needs: the kernels' dtype tag, raw pointers of optional
// tensors, inputs made contiguous in the dtype a kernel expects, and the error check after a launch.
#pragma once

#include <cuda_runtime.h>
#include <torch/torch.h>

#include "dtype.h"

namespace densessm::cuda {

inline bool kernel_dtype_supported(torch::ScalarType t) {
  return t == torch::kFloat || t == torch::kHalf || t == torch::kBFloat16;
}

inline kernels::DType kernel_dtype(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat: return kernels::DType::kFloat32;
    case torch::kHalf: return kernels::DType::kFloat16;
    case torch::kBFloat16: return kernels::DType::kBFloat16;
    default: TORCH_CHECK(false, "no CUDA kernel for dtype ", t);
  }
}

/// Contiguous and of `dtype`, or undefined when absent.
inline torch::Tensor prepared(const torch::Tensor& t, torch::ScalarType dtype) {
  return t.defined() ? t.to(dtype).contiguous() : t;
}

inline const void* pointer(const torch::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
inline void* mutable_pointer(const torch::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
inline const float* float_pointer(const torch::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

inline void check(cudaError_t status, const char* what) {
  TORCH_CHECK(status == cudaSuccess, what, " kernel failed: ", cudaGetErrorString(status));
}

/// Whether autograd will want gradients of any of these tensors.
inline bool wants_grad(std::initializer_list<const torch::Tensor*> tensors) {
  if (!torch::GradMode::is_enabled()) return false;
  for (const torch::Tensor* t : tensors) {
    if (t->defined() && t->requires_grad()) return true;
  }
  return false;
}

}  // namespace densessm::cuda
