// The decoding state: everything a model needs to continue a batch of sequences one token at a time.
//
// Its size depends on the batch and the model, never on how many tokens were consumed. Dense hidden
// connections add nothing here: a layer's hidden states for the current token are computed in the same
// step before the later layers that read them.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

namespace densessm {

/// One layer's recurrent state. A RetNet layer uses `kv`; a Mamba layer uses `conv` and `ssm`.
struct LayerState {
  torch::Tensor kv;    ///< retention state (B, H, dk, dv), float32 (float64 for float64 models)
  torch::Tensor conv;  ///< last inputs of the causal convolution (B, d_inner, d_conv - 1), model dtype
  torch::Tensor ssm;   ///< selective-scan state (B, d_inner, N), float32 (float64 for float64 models)
};

struct DecodeState {
  torch::Tensor position;          ///< (B) int64: tokens consumed so far by each sequence
  std::vector<LayerState> layers;  ///< one per layer

  int64_t batch_size() const { return position.defined() ? position.size(0) : 0; }
  /// Bytes held by all tensors of the state.
  int64_t nbytes() const;
  /// A deep copy (for branching a generation, or snapshotting before a speculative step).
  DecodeState clone() const;
  /// Keeps the sequences at `indices` (int64, on any device), in that order.
  DecodeState select(const torch::Tensor& indices) const;
  /// The sequences of all `parts` in one batch, in order (parts of one model, prefilled separately).
  static DecodeState concat(const std::vector<DecodeState>& parts);
};

}  // namespace densessm
