// The decoding speed test (densessm-generate --benchmark): the reference's measurement (batch 6, a 2-token
// prompt, 2048 new tokens, greedy, one warm-up call) and a sweep of generated lengths, on any model, with
// the floor a memory-bound step cannot beat: bytes of weights and state read per step over the bandwidth.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "densessm/model.h"

namespace densessm {

struct SpeedTestOptions {
  int64_t batch_size = 6;
  int64_t prompt_tokens = 2;
  std::vector<int64_t> lengths = {128, 512, 2048};  ///< new tokens per run (2048 at batch 6: the reference test)
  double bandwidth = 4.3e12;  ///< bytes/s: the H200's measured copy bandwidth
  uint64_t seed = 0;          ///< of the random prompts
  bool cuda_graph = true;
};

struct SpeedResult {
  int64_t new_tokens = 0;
  double seconds = 0;          ///< one generate call: prefill and decode
  double prefill_seconds = 0;
  double ms_per_step = 0;      ///< decode time per batched step (one token for each sequence)
  double tokens_per_second_per_sequence = 0;  ///< new_tokens / seconds (the reference's figure)
  double tokens_per_second = 0;               ///< all sequences together
  int64_t peak_memory_bytes = 0;              ///< CUDA only
  bool cuda_graph = false;
};

/// What one decode step must at least read: weights (an untied embedding table only by its B rows, left
/// out) and the state (read and written).
struct DecodeFloor {
  int64_t weight_bytes = 0;
  int64_t state_bytes = 0;  ///< read + written
  double ms = 0;            ///< (weights + state) / bandwidth
};
DecodeFloor decode_floor(const CausalLM& model, int64_t batch_size, double bandwidth);

/// Runs each length once as a warm-up and once measured, calling `report` after each.
std::vector<SpeedResult> run_speed_test(CausalLM model, const SpeedTestOptions& options,
                                        const std::function<void(const SpeedResult&)>& report = {});

/// Where a decode step's time goes: after a warm-up call (and graph capture), one call of `new_tokens`
/// tokens at the speed test's batch and prompt, recorded by the profiler (densessm/profiler.h). Returns the
/// table of the `top` longest kernels (CUDA) or operators (CPU) per decode step; with `trace_path`, the
/// Chrome trace is written there.
std::string profile_decoding(CausalLM model, const SpeedTestOptions& options, int64_t new_tokens,
                             const std::string& trace_path, int top = 25);

}  // namespace densessm
