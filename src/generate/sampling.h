// Choosing the next token from logits, on the logits' device, in tensor ops only (no host round trip, so
// that a decode step with its sampling can be captured in a CUDA graph).
//
// Order (as in Hugging Face's generate): repetition penalty, temperature, top-k, top-p, then a draw. The
// draw is an exponential race: argmax_v p_v / E_v with E_v ~ Exp(1) independent, which picks v with
// probability p_v. The noise E comes in as a tensor, so the same seed gives the same tokens whether the
// step runs eagerly or as a graph replay.
#pragma once

#include <cstdint>

#include <torch/types.h>

namespace densessm {

struct SamplingParams {
  double temperature = 1.0;  ///< 0: greedy
  int64_t top_k = 0;         ///< 0: off
  double top_p = 1.0;        ///< 1: off
  double repetition_penalty = 1.0;  ///< 1: off

  bool greedy() const { return temperature == 0; }
};

/// logits (B, V); seen (B, V) bool, true for tokens already in the sequence. Seen logits are divided by
/// `penalty` when positive and multiplied by it otherwise (both lower a token's odds for penalty > 1).
torch::Tensor apply_repetition_penalty(const torch::Tensor& logits, const torch::Tensor& seen, double penalty);

/// Keeps the k largest logits of each row (ties with the k-th kept too); the others become -inf.
torch::Tensor filter_top_k(const torch::Tensor& logits, int64_t k);

/// Keeps, per row, the most likely tokens whose probabilities sum to at least p (the smallest such set in
/// descending order; the most likely token always stays); the others become -inf.
torch::Tensor filter_top_p(const torch::Tensor& logits, double p);

/// logits (B, V) -> next tokens (B) int64. `noise` (B, V) float32 Exp(1) draws, unused when greedy. Marks
/// the chosen tokens in `seen` (B, V) bool, in place.
torch::Tensor choose_next(const torch::Tensor& logits, torch::Tensor& seen, const torch::Tensor& noise,
                          const SamplingParams& params);

}  // namespace densessm
