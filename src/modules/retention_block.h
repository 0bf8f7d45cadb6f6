// A DenseRetNet layer: pre-norm residual around the gated attention unit (GAU) with multi-scale
// retention, plus the dense hidden connection of its keys and values (SPEC.md, "DenseRetNet").
#pragma once

#include <memory>
#include <utility>

#include <torch/torch.h>

#include "densessm/model.h"
#include "densessm/retention.h"
#include "modules/dense.h"
#include "modules/fused_rows.h"

namespace densessm {

/// The rotation (xPos without its scale, as in the reference) of one forward pass: cos and sin of
/// (position + t) x angle for every t < T, computed once in float64 and shared by all the retention blocks
/// of a model, which rotate at the same positions with the same angles. The first block (index 0) always
/// computes it; the others reuse it when called with the same position tensor (the model passes one
/// tensor to all its blocks), the same length and dtype, and compute it otherwise.
class Rotation {
 public:
  explicit Rotation(int64_t dk);
  /// (cos, sin), each (B, 1, T, dk) in `dtype` on position's device; sin carries each pair's sign
  /// (-sin, +sin), so that rotating is x cos + swap_pairs(x) sin.
  std::pair<torch::Tensor, torch::Tensor> at(const torch::Tensor& position, int64_t T, torch::ScalarType dtype,
                                             bool recompute);
  /// The (dk) float64 frequencies, each repeated for both dimensions of its pair, on `device`.
  const torch::Tensor& angles(torch::Device device);

 private:
  torch::Tensor angles_;  // (dk) float64 frequencies, each repeated for its pair
  torch::Tensor signs_;   // (dk) float64: -1, +1, -1, +1, ...
  torch::Tensor position_, cos_, sin_;  // the last computed (holding position keeps its identity unique)
  int64_t length_ = 0;
};

class RetentionBlockImpl : public Block {
 public:
  /// `rotation` is shared by a model's blocks (a block makes its own when none is given).
  RetentionBlockImpl(const ModelConfig& config, int64_t index, std::shared_ptr<Rotation> rotation = nullptr);

  torch::Tensor forward(const torch::Tensor& h, const std::vector<DenseHidden>& previous, DenseHidden& hidden,
                        LayerState* state, const torch::Tensor& position, const ForwardOptions& options) override;
  torch::Tensor decode_step(torch::Tensor h, const std::vector<DenseHidden>& previous, DenseHidden& hidden,
                            LayerState& state, const torch::Tensor& position) override;
  LayerState initial_state(int64_t batch, torch::Device device, torch::ScalarType dtype) const override;

  /// x (B, H, T, dk) rotated by the (cos, sin) of Rotation::at: each pair (x0, x1) of the last dimension
  /// becomes (x0 cos - x1 sin, x1 cos + x0 sin).
  static torch::Tensor rotate(const torch::Tensor& x, const std::pair<torch::Tensor, torch::Tensor>& rotation);

 private:
  void reset_parameters(const ModelConfig& config);
  torch::Tensor split_heads(const torch::Tensor& x) const;  // (B, T, H*d) -> (B, H, T, d)

  int64_t index_, heads_, dk_, dv_, chunk_size_;
  torch::Tensor decays_;  // (H) float64; not a buffer, so that model.to(dtype) leaves it exact; moved to
                         // the activations' device on first use
  std::shared_ptr<Rotation> rotation_;
  FusedRows decode_projection_;  // q_proj, k_proj, to_hidden and the selective transitions' first layers
  RMSNorm input_layernorm{nullptr};
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, to_hidden{nullptr}, to_out{nullptr};
  RMSNorm group_norm{nullptr};
  SelectiveTransition k_select{nullptr}, v_select{nullptr};
  RMSNorm k_norm{nullptr}, v_norm{nullptr};
  torch::nn::Dropout dropout{nullptr};
};

}  // namespace densessm
