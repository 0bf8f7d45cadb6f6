// One-token Mamba updates for decoding (no autograd): the causal convolution's state roll with its SiLU,
// and the selective-scan state update with its output. Each is one launch and capturable in a CUDA graph.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "dtype.h"

namespace densessm::kernels {

/// out[b,c] = silu(bias[c] + sum_j weight[c,j] * window[b,c,j]), window = (state[b,c,:], x[b,c]);
/// then state[b,c,:] = window[1:]. All tensors contiguous, of `dtype`; bias may be null.
struct ConvStepParams {
  const void* x;       // (B, C)
  void* state;         // (B, C, W-1), updated in place
  const void* weight;  // (C, W)
  const void* bias;    // (C) or null
  void* out;           // (B, C)
  int64_t batch, channels, width;
  DType dtype;
};
cudaError_t causal_conv1d_step(const ConvStepParams& p, cudaStream_t stream);

/// delta = softplus(delta + delta_bias) (when requested); state = exp(delta A) state + delta Bm u;
/// out = (Cm . state + D u) * silu(z). State and A are float32; the rest are contiguous and of `dtype`;
/// delta_bias, D and z may be null.
struct ScanStepParams {
  float* state;            // (B, C, N), updated in place
  const void* u;           // (B, C)
  const void* delta;       // (B, C)
  const void* delta_bias;  // (C) or null
  const float* A;          // (C, N)
  const void* Bm;          // (B, N)
  const void* Cm;          // (B, N)
  const void* D;           // (C) or null
  const void* z;           // (B, C) or null
  void* out;               // (B, C)
  int64_t batch, channels, state_size;
  bool delta_softplus;
  DType dtype;
  int64_t bc_stride = 0;  // distance between the rows of Bm and of Cm (0: state_size, contiguous)
  int64_t z_stride = 0;   // distance between the rows of z (0: channels, contiguous)
};
cudaError_t selective_scan_step(const ScanStepParams& p, cudaStream_t stream);

}  // namespace densessm::kernels
