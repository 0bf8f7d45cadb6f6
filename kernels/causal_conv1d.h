// The causal depthwise convolution over time fused with its SiLU (Mamba's short convolution), forward and
// backward, for training and prefill. Plain entry points on raw pointers (layouts below, all contiguous);
// src/ops/cuda wraps them for LibTorch tensors and autograd. The weight's and bias's gradients come back
// as float32 partial sums per (batch, channel, tile of time) that the caller adds up.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "dtype.h"

namespace densessm::kernels {

/// out[b,c,t] = silu(bias[c] + sum_j weight[c,j] * x[b,c,t+j-(W-1)]), where x at negative times comes
/// from `initial` (the W-1 inputs before the sequence) or is zero.
struct ConvParams {
  const void* x;        // (B, C, T) of dtype
  const float* weight;  // (C, W), 2 <= W <= 4
  const float* bias;    // (C) or null
  const void* initial;  // (B, C, W-1) of dtype, or null: zeros
  void* out;            // (B, C, T) of dtype
  int64_t batch, channels, length, width;
  DType dtype;
};
cudaError_t causal_conv1d_forward(const ConvParams& p, cudaStream_t stream);

/// Tiles of time per sequence in the convolution backward's partial sums.
int64_t causal_conv1d_backward_tiles(int64_t length);

/// Gradients of x, weight and bias given grad_out; `forward.out` is unused, `initial` gets no gradient.
struct ConvBackwardParams {
  ConvParams forward;
  const void* grad_out;  // (B, C, T) of dtype
  void* grad_x;          // (B, C, T) of dtype
  float* grad_weight;    // (B, C, tiles, W + 1) partial sums: weight grads, then the bias grad
};
cudaError_t causal_conv1d_backward(const ConvBackwardParams& p, cudaStream_t stream);

}  // namespace densessm::kernels
