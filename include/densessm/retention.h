// Multi-scale retention: one function signature, three forms (parallel, chunkwise, recurrent).
//
// What every form computes, per batch b and head h with decay g = gamma_h, for the token at absolute
// position n = offset[b] + t (t counts the tokens of this call):
//
//   o_t = ( sum_{s <= t} g^(t-s) (q_t . k_s) v_s  +  g^(t+1) q_t . KV ) / sqrt(w_n),
//   w_n = sum_{i=0..n} g^i = (1 - g^(n+1)) / (1 - g),
//
// where KV (dk x dv) is the state carried in from earlier tokens. The 1/sqrt(w_n) factor is the
// reference's decay-mask row normalisation (and its recurrent `scale`); it keeps outputs bounded for
// float16/bfloat16. The reference's parallel form also divides each row by clamp(sum |row|, 1, 5e4),
// which has no recurrent equivalent; our forms leave it out so that all three agree exactly (the
// group norm after retention is scale invariant, so the model's function changes only through the
// norm's epsilon). The state after the call is KV' = g^T KV + sum_s g^(T-1-s) k_s v_s^T.
//
// Inputs are (B, H, T, dk) queries and keys (already rotated; keys already scaled by dk^-0.5) and
// (B, H, T, dv) values, in float32, float64, bfloat16 or float16. Accumulation and the state are
// float32 (float64 for float64 inputs); the output has the inputs' dtype.
#pragma once

#include <torch/types.h>

namespace densessm {

/// Per-head decays gamma_h = 1 - 2^(-5-h), h = 0..H-1, as a float64 tensor (H).
torch::Tensor retention_decays(int64_t num_heads);

struct RetentionArgs {
  torch::Tensor q;       ///< (B, H, T, dk)
  torch::Tensor k;       ///< (B, H, T, dk)
  torch::Tensor v;       ///< (B, H, T, dv)
  torch::Tensor decays;  ///< (H) float64, from retention_decays()
  torch::Tensor offset;  ///< (B) int64 absolute position of the first token; undefined means 0
  int64_t chunk_size = 64;  ///< used by the chunkwise form only
};

/// The state KV is (B, H, dk, dv) in the accumulation dtype. `state` may be null (start from zero and
/// discard the final state); otherwise an undefined tensor means zero, and the final state is written
/// back. Returns o (B, H, T, dv).
using RetentionForm = torch::Tensor (*)(const RetentionArgs& args, torch::Tensor* state);

/// The reference: the full (T x T) decay-masked score matrix, as the reference code computes it.
torch::Tensor retention_parallel(const RetentionArgs& args, torch::Tensor* state);
/// Chunks of args.chunk_size tokens: masked products inside a chunk, the decayed state between chunks.
torch::Tensor retention_chunkwise(const RetentionArgs& args, torch::Tensor* state);
/// One token at a time through the state (the decoding form), looped over T.
torch::Tensor retention_recurrent(const RetentionArgs& args, torch::Tensor* state);

}  // namespace densessm
