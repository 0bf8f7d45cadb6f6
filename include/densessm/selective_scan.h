// Mamba's sequence operators: the selective scan and the causal depthwise convolution, each as a
// sequence form (training, prefill) and a one-token step (decoding) with explicit state.
//
// Selective scan, per batch b, channel c and state index i, with delta = softplus(delta + delta_bias)
// when requested:
//   h_t[i] = exp(delta_t A[c,i]) h_{t-1}[i] + delta_t Bm_t[i] u_t,
//   y_t    = sum_i Cm_t[i] h_t[i] + Dskip[c] u_t,   then  y_t *= silu(z_t)  when z is given.
// The state h is float32 (float64 for float64 inputs) whatever the inputs' dtype.
#pragma once

#include <torch/types.h>

namespace densessm {

struct SelectiveScanArgs {
  torch::Tensor u;           ///< (B, C, T) input
  torch::Tensor delta;       ///< (B, C, T) step sizes, before bias and softplus
  torch::Tensor A;           ///< (C, N) float32 or float64, negative for a stable scan
  torch::Tensor Bm;          ///< (B, N, T)
  torch::Tensor Cm;          ///< (B, N, T)
  torch::Tensor Dskip;       ///< (C) or undefined
  torch::Tensor z;           ///< (B, C, T) gate or undefined
  torch::Tensor delta_bias;  ///< (C) or undefined
  bool delta_softplus = true;
};

/// The plain selective scan in LibTorch ops (the reference that kernels are tested against).
/// `state` (B, C, N): null starts from zero and drops the final state; otherwise undefined means zero
/// and the final state is written back. Returns y (B, C, T) in u's dtype.
torch::Tensor selective_scan(const SelectiveScanArgs& args, torch::Tensor* state);

/// One token: u, delta, z are (B, C); Bm, Cm are (B, N); `state` (B, C, N) must be defined and is
/// updated in place of the tensor (reassigned). Returns y (B, C).
torch::Tensor selective_scan_step(const SelectiveScanArgs& args, torch::Tensor& state);

/// Causal depthwise convolution over time with SiLU: x (B, C, T), weight (C, W), bias (C) or undefined.
/// `state` (B, C, W-1) holds the previous W-1 inputs: null or undefined means zeros; when non-null the
/// last W-1 inputs are written back. Returns silu(conv(x)) (B, C, T).
torch::Tensor causal_conv1d(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                            torch::Tensor* state);

/// One token: x (B, C); `state` (B, C, W-1) must be defined and is rolled by one. Returns (B, C).
torch::Tensor causal_conv1d_step(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                 torch::Tensor& state);

}  // namespace densessm
