// The element-wise work of one decode step, fused (no autograd; nothing allocated, nothing waits on the
// host, so every call is capturable in a CUDA graph). Around the matrix products of a layer these replace
// the tens of small LibTorch kernels of the step form with one or two launches each:
//   - rms_norm_rows: an RMSNorm of rows, for the layers' input norms and the final norm;
//   - retention_decode_prepare: the retention GAU's activations, dense hidden fusion with its norms and
//     the rotation of q and k;
//   - transition_gates: the dense selective transitions' second layers with the SiLUs around them;
//   - retention_decode_output: the retention output's group norm and its gate;
//   - mamba_decode_prepare: the Mamba x branch's dense hidden fusion with its norm, then the causal
//     convolution's step with its SiLU.
// Every dtype-generic pointer holds elements of `dtype`; the arithmetic is float32.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "dtype.h"

namespace densessm::kernels {

/// out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight, one row per block.
struct RmsNormParams {
  const void* x;       // (rows, dim), row r at x + r * x_stride
  const void* weight;  // (dim)
  void* out;           // (rows, dim) contiguous
  int64_t rows, dim, x_stride;
  float eps;
  DType dtype;
};
cudaError_t rms_norm_rows(const RmsNormParams& p, cudaStream_t stream);

/// From the fused input projection y = x [Wq; Wk; W_hidden; ...] of one token per sequence (row b of y
/// at y + b * y_stride: q at column 0, k at K, v at 2K, the gate at 2K + E):
///   q = rot(silu(q)),  k = silu(k) / sqrt(dk),  v = silu(v),  g = silu(g);
///   hidden_k = k, hidden_v = v (what later layers fuse);
///   with dense fusion (k_gate non-null): k = rms_norm(k + silu(k_gate) * previous_k) * k_norm, and the
///   same for v with v_gate, previous_v, v_norm;
///   k = rot(k).
/// rot turns each pair (x0, x1) of a head's dimensions d = 2i, 2i + 1 by theta = position[b] * angles[d]:
/// (x0 cos - x1 sin, x1 cos + x0 sin), in float64 for the angle.
struct RetentionPrepareParams {
  const void* y;           // (B, >= 2K + 2E), row stride y_stride
  const void* k_gate;      // (B, K) before its SiLU, or null (no fusion)
  const void* v_gate;      // (B, E)
  const void* previous_k;  // (B, K) the earlier layers' hidden keys (summed)
  const void* previous_v;  // (B, E)
  const void* k_norm;      // (K)
  const void* v_norm;      // (E)
  const double* angles;    // (dk) each pair's frequency, repeated for both of its dimensions
  const int64_t* position; // (B)
  void* q;                 // (B, K) = (B, H, dk)
  void* k;                 // (B, K)
  void* v;                 // (B, E) = (B, H, dv)
  void* g;                 // (B, E)
  void* hidden_k;          // (B, K)
  void* hidden_v;          // (B, E)
  int64_t batch, y_stride, key_dim, value_dim, head_qk_dim;
  float key_scale, eps;
  DType dtype;
};
/// Which kernel computes it. kCluster (the default): one cluster of 8 blocks per sequence, each block a
/// chunk of the key pairs and of the values, every element read once, the fused norms' sums of squares
/// shared over distributed shared memory (sm_90); rows beyond its largest block (K > 8192 or E > 16384) go
/// to kRowwise. kRowwise: the earlier kernel (one block for the keys and one per 1024 values of each
/// sequence, each re-reading its row for the norm). DENSESSM_DECODE_PREPARE=0 in the environment makes the
/// model's decode step (src/ops/cuda/decode_cuda.cpp, read once) pick kRowwise, for A/B measurements;
/// tools/decode_prepare_probe.cu checks and times both.
enum class PrepareKernel { kCluster, kRowwise };
cudaError_t retention_decode_prepare(const RetentionPrepareParams& p, cudaStream_t stream,
                                     PrepareKernel kernel = PrepareKernel::kCluster);

/// The selective transitions' second layers, one token per sequence: for each part i (at most 2),
///   out_i[b, n] = sum_j weight_i[n, j] silu(y[b, offset_i + j]),  j < rank,
/// with the SiLU of the first layers' outputs applied here (they are columns of the fused input
/// projection y). batch <= kTransitionBatch, rank <= kTransitionRank; float32 accumulation.
constexpr int64_t kTransitionBatch = 8;
constexpr int64_t kTransitionRank = 256;
struct TransitionParams {
  const void* y;          // (B, >= offset_i + rank), row stride y_stride
  const void* weight[2];  // (n_i, rank) contiguous
  void* out[2];           // (B, n_i) contiguous
  int64_t offset[2], n[2];
  int parts;
  int64_t batch, y_stride, rank;
  DType dtype;
};
cudaError_t transition_gates(const TransitionParams& p, cudaStream_t stream);

/// out[b, h, :] = rms_norm(o[b, h, :]) * norm * g[b, h, :] over each head's dv values, one (b, h) per block.
struct RetentionOutputParams {
  const void* o;     // (B, H, dv)
  const void* norm;  // (dv)
  const void* g;     // (B, H * dv)
  void* out;         // (B, H * dv)
  int64_t batch, heads, dv;
  float eps;
  DType dtype;
};
cudaError_t retention_decode_output(const RetentionOutputParams& p, cudaStream_t stream);

/// From the fused input projection y (row b at y + b * y_stride; x at column 0, C channels):
///   hidden = x;  with dense fusion (gate non-null): x = rms_norm(x + silu(gate) * previous) * norm;
///   out = silu(bias + sum_j weight[c, j] window[b, c, j]), window = (conv_state[b, c, :], x[b, c]);
///   conv_state[b, c, :] = window[1:].
struct MambaPrepareParams {
  const void* y;            // (B, >= C), row stride y_stride
  const void* gate;         // (B, C) before its SiLU, or null (no fusion)
  const void* previous;     // (B, C)
  const void* norm;         // (C)
  void* conv_state;         // (B, C, W-1), updated in place
  const void* conv_weight;  // (C, W)
  const void* conv_bias;    // (C) or null
  void* out;                // (B, C)
  void* hidden;             // (B, C)
  int64_t batch, y_stride, channels, width;
  float eps;
  DType dtype;
};
cudaError_t mamba_decode_prepare(const MambaPrepareParams& p, cudaStream_t stream);

}  // namespace densessm::kernels
