// RMSNorm for training, forward and backward (the autograd wrapper is src/ops/cuda/rms_norm_cuda.cpp):
//   y = x r w,  r = 1 / sqrt(mean(x^2) + eps) per row,
//   dx = r (w dy) - x r^3 mean(w dy x),  dw = sum over rows of dy x r.
// x (and y, dy, dx) of float32, float16 or bfloat16; w of the same dtype or float32; float32 arithmetic.
// One pass over a row's memory per direction after the row's sum (the row is read again from L1/L2).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "dtype.h"

namespace densessm::kernels {

/// The widest row the kernels take (the backward keeps a thread's share of dw in registers).
constexpr int64_t kRmsNormMaxDim = 8192;

struct RmsNormForwardParams {
  const void* x;       // (rows, dim) contiguous
  const void* weight;  // (dim)
  void* y;             // (rows, dim)
  float* rstd;         // (rows): r, kept for the backward
  int64_t rows, dim;
  float eps;
  DType dtype, weight_dtype;
};
cudaError_t rms_norm_forward(const RmsNormForwardParams& p, cudaStream_t stream);

/// The blocks of the backward, each of which writes one row of dweight_partial (blocks, dim); their sum
/// over the blocks is dw.
int64_t rms_norm_backward_blocks(int64_t rows);

struct RmsNormBackwardParams {
  const void* x;          // (rows, dim)
  const void* weight;     // (dim)
  const void* dy;         // (rows, dim)
  const float* rstd;      // (rows)
  void* dx;               // (rows, dim)
  float* dweight_partial; // (rms_norm_backward_blocks(rows), dim)
  int64_t rows, dim;
  DType dtype, weight_dtype;
};
cudaError_t rms_norm_backward(const RmsNormBackwardParams& p, cudaStream_t stream);

}  // namespace densessm::kernels
