// The two parts of a dense hidden connection (paper, section 3): the selective transition module and
// hidden fusion.
#pragma once

#include <vector>

#include <torch/torch.h>

#include "densessm/rms_norm.h"

namespace densessm {

/// Selective transition module: a bottleneck MLP D -> D / ratio -> out whose silu is the gate with
/// which a block selects from the earlier blocks' hidden states.
class SelectiveTransitionImpl : public torch::nn::Module {
 public:
  SelectiveTransitionImpl(int64_t in, int64_t bottleneck, int64_t out);
  /// x (B, T, D) -> gate (B, T, out), after silu.
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(SelectiveTransition);

/// The sum over the earlier blocks of their hidden state number `part` (each block's hidden states are a
/// DenseHidden): what the fused decode kernels take, as gate * a + gate * b = gate * (a + b).
torch::Tensor sum_of_hidden(const std::vector<std::vector<torch::Tensor>>& previous, size_t part);

/// Hidden fusion: norm(current + sum_j gate * previous_j). All tensors (B, T, width).
torch::Tensor hidden_fusion(const torch::Tensor& current, const torch::Tensor& gate,
                            const std::vector<torch::Tensor>& previous, RMSNorm& norm);

}  // namespace densessm
