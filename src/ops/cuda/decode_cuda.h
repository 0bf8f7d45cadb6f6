// LibTorch wrappers of kernels/decode_step.h and of the step kernels in the layout a fused decode step
// hands them (rows of the fused input projection, read in place). No autograd: the blocks call these
// only when no gradient is wanted (CausalLMImpl::step decides).
#pragma once

#include <utility>
#include <vector>

#include <torch/types.h>

namespace densessm::cuda {

/// x (M, K) (unit stride along K) times w (N, K) transposed: (M, N). On the small-matmul kernel
/// (kernels/small_matmul.h) where it qualifies (float16/bfloat16, M <= 8, K % 8 == 0, 16-byte aligned
/// rows), else on cuBLAS. With `into` given ((M, N) contiguous, x's dtype) the product is added to it in
/// place and `into` is returned.
torch::Tensor small_matmul(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& into = {});

/// x (R, D) with unit stride along D -> RMSNorm of each row times `weight`, (R, D) contiguous.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

/// The dense selective transitions' second layers from the first layers' outputs, which are columns of
/// the fused input projection y (B, ...): part i reads y's columns [offset + i rank, offset + (i + 1) rank),
/// applies SiLU, and multiplies by weights[i] (n_i, rank) transposed: (B, n_i), before the gate's own SiLU.
/// One kernel for up to two parts where it qualifies (B <= 8, rank <= 256), else SiLU and cuBLAS.
std::vector<torch::Tensor> transition_gates(const torch::Tensor& y, int64_t offset, int64_t rank,
                                            const std::vector<torch::Tensor>& weights);

/// What the retention GAU needs from its fused input projection (kernels/decode_step.h has the formulas).
struct RetentionPrepared {
  torch::Tensor q, k, v;            // (B, H, dk), (B, H, dk), (B, H, dv), rotated and fused
  torch::Tensor gate;               // (B, E) the output gate, silu applied
  torch::Tensor hidden_k, hidden_v; // (B, K), (B, E) what the later layers fuse
};
struct RetentionPrepareArgs {
  torch::Tensor y;  // (B, >= 2K + 2E): [q, k, v, g, ...] before their activations
  int64_t heads = 0, key_dim = 0, value_dim = 0;
  torch::Tensor k_gate, v_gate, previous_k, previous_v;  // all undefined: no dense fusion
  torch::Tensor k_norm, v_norm;
  double eps = 0.0;
  torch::Tensor angles;    // (dk) float64 on the device
  torch::Tensor position;  // (B) int64 on the device
};
RetentionPrepared retention_decode_prepare(const RetentionPrepareArgs& args);

/// One token's retention on the step kernel: state (B, H, dk, dv) float32 contiguous, updated in place;
/// returns o (B, H, dv) normalised by the position's weight.
torch::Tensor retention_decode_step(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                    torch::Tensor& state, const torch::Tensor& decays, const torch::Tensor& position);

/// o (B, H, dv) -> (rms_norm(o) * norm) * gate as (B, H * dv).
torch::Tensor retention_decode_output(const torch::Tensor& o, const torch::Tensor& norm, const torch::Tensor& gate,
                                      double eps);

/// The Mamba x branch of the fused input projection y (B, >= C) through the dense fusion (when `gate` is
/// defined) and the convolution step: returns (silu(conv) (B, C), hidden x (B, C)); conv_state
/// (B, C, W-1) in the model dtype is updated in place.
std::pair<torch::Tensor, torch::Tensor> mamba_decode_prepare(const torch::Tensor& y, int64_t channels,
                                                             const torch::Tensor& gate, const torch::Tensor& previous,
                                                             const torch::Tensor& norm, double eps,
                                                             torch::Tensor& conv_state, const torch::Tensor& conv_weight,
                                                             const torch::Tensor& conv_bias);

/// The selective-scan step with Bm, Cm (B, N) and z (B, C) read in place from rows of larger matrices
/// (unit stride along the last dimension). state (B, C, N) float32 contiguous, updated in place; A
/// (C, N) float32. Returns (B, C).
torch::Tensor mamba_scan_step(torch::Tensor& state, const torch::Tensor& u, const torch::Tensor& delta,
                              const torch::Tensor& delta_bias, const torch::Tensor& A, const torch::Tensor& Bm,
                              const torch::Tensor& Cm, const torch::Tensor& D, const torch::Tensor& z);

}  // namespace densessm::cuda
