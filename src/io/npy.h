// NumPy .npy files (format version 1.0), the simplest way to hand tensors to Python scripts.
#pragma once

#include <string>

#include <torch/types.h>

namespace densessm {

/// Writes a CPU copy of `tensor` (float32, float64, int64 or int32) as a C-ordered .npy file, atomically.
void write_npy(const std::string& path, const torch::Tensor& tensor);

}  // namespace densessm
