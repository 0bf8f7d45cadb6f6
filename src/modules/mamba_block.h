// A DenseMamba layer: pre-norm residual around the Mamba-1 mixer, plus the dense hidden connection of
// the mixer's x branch (SPEC.md, "Mamba and DenseMamba").
#pragma once

#include <torch/torch.h>

#include "densessm/model.h"
#include "densessm/selective_scan.h"
#include "modules/dense.h"
#include "modules/fused_rows.h"

namespace densessm {

class MambaBlockImpl : public Block {
 public:
  MambaBlockImpl(const ModelConfig& config, int64_t index);

  torch::Tensor forward(const torch::Tensor& h, const std::vector<DenseHidden>& previous, DenseHidden& hidden,
                        LayerState* state, const torch::Tensor& position, const ForwardOptions& options) override;
  torch::Tensor decode_step(torch::Tensor h, const std::vector<DenseHidden>& previous, DenseHidden& hidden,
                            LayerState& state, const torch::Tensor& position) override;
  LayerState initial_state(int64_t batch, torch::Device device, torch::ScalarType dtype) const override;

 private:
  void reset_parameters(const ModelConfig& config);
  // x (B, T, d_inner) after fusion, z (B, T, d_inner) -> y (B, T, d_inner), by the parallel scan or by steps.
  torch::Tensor mix_parallel(const torch::Tensor& x, const torch::Tensor& z, LayerState* state);
  torch::Tensor mix_recurrent(const torch::Tensor& x, const torch::Tensor& z, LayerState* state);
  // (..., d_inner) -> (delta before bias, Bm, Cm) for the scan.
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> project(const torch::Tensor& x);
  torch::Tensor A() const;  // -exp(A_log) in float32 (float64 for float64 models): (d_inner, N)
  const torch::Tensor& decode_A();  // A() in float32, kept while A_log is unchanged

  FusedRows decode_projection_;  // in_proj and x_select's first layer, for decode_step
  torch::Tensor decode_A_;
  const void* decode_A_source_ = nullptr;
  int64_t decode_A_version_ = -1;

  int64_t index_, d_inner_, d_state_, dt_rank_, d_conv_;
  RMSNorm norm{nullptr};
  torch::nn::Linear in_proj{nullptr}, x_proj{nullptr}, dt_proj{nullptr}, out_proj{nullptr};
  torch::Tensor conv_weight, conv_bias;  // (d_inner, d_conv), (d_inner) or undefined
  torch::Tensor A_log, D_skip;           // (d_inner, N), (d_inner); D_skip is registered as "D"
  SelectiveTransition x_select{nullptr};
  RMSNorm x_norm{nullptr};
  torch::nn::Dropout dropout{nullptr};
};

}  // namespace densessm
