// A DenseRetNet layer: pre-norm residual around the gated attention unit (GAU) with multi-scale
// retention, plus the dense hidden connection of its keys and values (SPEC.md, "DenseRetNet").
#pragma once

#include <torch/torch.h>

#include "densessm/model.h"
#include "densessm/retention.h"
#include "modules/dense.h"

namespace densessm {

class RetentionBlockImpl : public Block {
 public:
  RetentionBlockImpl(const ModelConfig& config, int64_t index);

  torch::Tensor forward(const torch::Tensor& h, const std::vector<DenseHidden>& previous, DenseHidden& hidden,
                        LayerState* state, const torch::Tensor& position, const ForwardOptions& options) override;
  LayerState initial_state(int64_t batch, torch::Device device, torch::ScalarType dtype) const override;

 private:
  void reset_parameters(const ModelConfig& config);
  torch::Tensor split_heads(const torch::Tensor& x) const;  // (B, T, H*d) -> (B, H, T, d)
  torch::Tensor rotate(const torch::Tensor& x, const torch::Tensor& position) const;

  int64_t index_, heads_, dk_, dv_, chunk_size_;
  torch::Tensor decays_;  // (H) float64; not a buffer, so that model.to(dtype) leaves it exact; moved to
                         // the activations' device on first use
  torch::Tensor angles_;  // (dk) float64 rotation frequencies, each repeated for its pair
  RMSNorm input_layernorm{nullptr};
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, to_hidden{nullptr}, to_out{nullptr};
  RMSNorm group_norm{nullptr};
  SelectiveTransition k_select{nullptr}, v_select{nullptr};
  RMSNorm k_norm{nullptr}, v_norm{nullptr};
  torch::nn::Dropout dropout{nullptr};
};

}  // namespace densessm
