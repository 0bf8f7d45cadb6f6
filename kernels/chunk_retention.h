// Chunkwise multi-scale retention, forward and backward, as defined in include/densessm/retention.h:
// per (batch, head) with decay g and absolute positions n = offset[b] + t,
//   o_t = ( sum_{s <= t} g^(t-s) (q_t . k_s) v_s + g^(t+1) q_t . KV ) / sqrt(w_n),
// with the carried-in state KV (dk x dv) and the state after the last token written out.
//
// The forward on bfloat16/float16 with dk <= 320 runs as one fused kernel: one block per (batch, head,
// 64-column tile of v) walks the chunks keeping its tile of the state on chip, so no per-chunk state is
// stored. From dk 129 on, the fused kernel reads each chunk's scores, computed once per (batch, head,
// chunk) by a first kernel, from the workspace instead of recomputing them in each column tile's block.
// DENSESSM_RETENTION_FUSED in the environment: 0 forces the two passes below instead, 1 the fused kernel
// that recomputes the scores, 2 the one that reads them.
//
// Three passes over chunks of kChunk tokens. (1) A scan over the chunks of each (batch, head, state
// tile) keeps the float32 state in registers and stores the state entering every chunk (in the inputs'
// dtype, as the operand of the tensor-core products). (2) One block per (batch, head, chunk) computes
// its rows from the chunk's masked products and the stored state. The backward pass runs the same scan
// in reverse over (q, do) for the state gradients and the same chunk pass three more times for dq, dk
// and dv (the products are the forward's with the roles of q, k, v, do exchanged).
//
// All tensors are contiguous. q, k: (B, H, T, dk); v, o, do: (B, H, T, dv) of `dtype`; states
// (B, H, dk, dv) float32; decays (H) float64; offset (B) int64 or null for zeros.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "dtype.h"

namespace densessm::kernels {

constexpr int64_t kRetentionChunk = 64;

struct RetentionShape {
  int64_t batch, heads, length, dk, dv;
  const double* decays;   // (H) on the device
  const int64_t* offset;  // (B) on the device, or null
  DType dtype;
};

/// Elements (of `dtype`) of the workspace each call needs: one state per (batch, head, chunk); the
/// backward pass needs twice this.
int64_t chunk_retention_workspace(const RetentionShape& shape);
/// Elements of the workspace the forward needs on the current device: 0 when the fused kernel takes the
/// call, B H ceil(T / 64) 64^2 for the fused kernel with precomputed scores, else
/// chunk_retention_workspace(shape).
int64_t chunk_retention_forward_workspace(const RetentionShape& shape);

struct RetentionForwardParams {
  RetentionShape shape;
  const void* q;
  const void* k;
  const void* v;
  const float* initial_state;  // (B, H, dk, dv) or null for zeros
  void* o;                     // (B, H, T, dv)
  float* final_state;          // (B, H, dk, dv) or null when not wanted
  void* workspace;             // chunk_retention_forward_workspace(shape) elements (null when 0)
};
cudaError_t chunk_retention_forward(const RetentionForwardParams& p, cudaStream_t stream);

struct RetentionBackwardParams {
  RetentionShape shape;
  const void* q;
  const void* k;
  const void* v;
  const float* initial_state;  // (B, H, dk, dv) or null for zeros
  const void* grad_o;          // (B, H, T, dv)
  const float* grad_final;     // (B, H, dk, dv) or null for zeros
  void* grad_q;                // (B, H, T, dk)
  void* grad_k;                // (B, H, T, dk)
  void* grad_v;                // (B, H, T, dv)
  float* grad_initial;         // (B, H, dk, dv) or null when not wanted
  void* workspace;             // 2 * chunk_retention_workspace(shape) elements
};
cudaError_t chunk_retention_backward(const RetentionBackwardParams& p, cudaStream_t stream);

}  // namespace densessm::kernels
