// The selective scan for training and prefill, forward and backward. Plain entry points on raw pointers
// (layouts below, all contiguous); src/ops/cuda wraps them for LibTorch tensors and autograd.
//
// The scan's backward keeps no per-step state from the forward: it reruns the recurrence once to store
// the state at every 16th step (a scratch buffer of B * C * ceil(T/16) * N floats, N rounded up to a
// multiple of 4), then walks the chunks backwards, recomputing each chunk's states from its checkpoint in
// registers. Reductions over channels (the grads of Bm and Cm) and over the batch (A, D, delta_bias) come
// back as float32 partial sums that the caller adds up, so the result does not depend on the order in
// which blocks finish.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "dtype.h"

namespace densessm::kernels {

/// The largest state size N the scan kernels take.
constexpr int64_t kScanMaxStates = 64;

/// y = (Cm . h + D u) * silu(z) with h_t = exp(delta_t A) h_{t-1} + delta_t Bm_t u_t and
/// delta = softplus(delta + delta_bias) when delta_softplus (just delta + delta_bias otherwise).
struct ScanParams {
  const void* u;             // (B, C, T) of dtype
  const void* delta;         // (B, C, T) of dtype, before bias and softplus
  const void* z;             // (B, C, T) of dtype, or null: no gate
  const float* A;            // (C, N)
  const void* Bm;            // (B, N, T) of dtype
  const void* Cm;            // (B, N, T) of dtype
  const float* D;            // (C) or null
  const float* delta_bias;   // (C) or null
  const float* initial_state;  // (B, C, N) or null: zeros
  float* final_state;        // (B, C, N) or null: not wanted
  void* out;                 // (B, C, T) of dtype
  int64_t batch, channels, length, state_size;
  bool delta_softplus;
  DType dtype;
};
cudaError_t selective_scan_forward(const ScanParams& p, cudaStream_t stream);

/// The backward pass's partial sums have one row per block of channels: this many.
int64_t selective_scan_backward_channel_blocks(int64_t channels, int64_t state_size);
/// Floats of the checkpoint scratch buffer the backward pass needs.
int64_t selective_scan_backward_scratch(int64_t batch, int64_t channels, int64_t length, int64_t state_size);

/// Gradients of ScanParams' inputs given grad_out = dL/dy. `forward.out` and `forward.final_state` are
/// unused; the initial state is taken into account but gets no gradient.
struct ScanBackwardParams {
  ScanParams forward;
  const void* grad_out;   // (B, C, T) of dtype
  void* grad_u;           // (B, C, T) of dtype
  void* grad_delta;       // (B, C, T) of dtype: the grad of delta before bias and softplus
  void* grad_z;           // (B, C, T) of dtype, or null when there is no z
  float* grad_A;          // (B, C, N) partial sums: sum over the batch for dL/dA
  float* grad_Bm;         // (B, channel blocks, N, T) partial sums: sum over blocks for dL/dBm
  float* grad_Cm;         // (B, channel blocks, N, T) partial sums
  float* grad_D;          // (B, C) partial sums, or null when there is no D
  float* grad_delta_bias;  // (B, C) partial sums, or null when there is no delta_bias
  float* scratch;         // selective_scan_backward_scratch(...) floats
};
cudaError_t selective_scan_backward(const ScanBackwardParams& p, cudaStream_t stream);

}  // namespace densessm::kernels
