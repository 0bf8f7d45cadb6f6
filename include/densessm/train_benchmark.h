// The training benchmark behind `densessm-train --benchmark`: tokens/s, peak device memory and model FLOPs
// utilisation (MFU) of the training step, at a given batch size or the largest that fits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "densessm/config.h"
#include "densessm/train.h"

namespace densessm {

/// Model FLOPs of one training token (forward + backward), by formula from the config (docs/PERFORMANCE.md):
///   per_token = 6 N + 3 L F_mix
/// N: the parameters that multiply activations once per token: every layer's (less layer 0's dense
/// transition and fusion norm, which it owns but does not use), the final norm and the output projection
/// (V x D, tied or not); the input embedding is a table lookup and is not counted. 6 = 2 (multiply-add)
/// x 3 (forward, and a backward twice the forward). F_mix: forward FLOPs per token of one layer's sequence
/// mixing, which has no parameters: retention in its chunkwise form (chunk C, K = query_key_dim,
/// E = value width, H heads): 2 C (K + E) within the chunk (q k^T and its product with v over the C x C
/// block) + 4 K E / H across chunks (reading and updating each head's dk x dv state); the selective scan:
/// 8 d_inner N_state (exp(delta A) 2, delta B x 2, the state update 2, C . h 2). L: the layers.
/// Element-wise work (activations, norms, rotation, gating) is not counted, as is usual for MFU.
struct TrainingFlops {
  double matmul_parameters = 0;  ///< N
  double mixing_forward_per_layer = 0;  ///< F_mix
  double per_token = 0;
};
TrainingFlops training_flops(const ModelConfig& config);

struct BenchmarkOptions {
  /// Batch sizes to time; empty: the largest that fits, found by doubling from 1 until the device runs
  /// out of memory, then bisecting (CUDA only).
  std::vector<int64_t> batch_sizes;
  int warmup_steps = 3;
  int timed_steps = 10;
  double peak_flops = 989e12;  ///< dense bf16 tensor-core peak of an H100/H200 SXM (datasheet)
  /// When set: after the timed steps of each batch, `profile_steps` more steps are recorded by the profiler
  /// (densessm/profiler.h); the Chrome trace goes to PROFILE_DIR/MODEL-batchB.trace.json and the table of the
  /// longest kernels per step to BenchmarkResult::profile.
  std::string profile_dir;
  int profile_steps = 2;
};

struct BenchmarkResult {
  std::string model;
  int64_t parameters = 0;
  int64_t batch_size = 0;
  int64_t block_size = 0;
  bool out_of_memory = false;  ///< this batch did not fit; the figures below are not set
  double step_seconds = 0;
  double tokens_per_second = 0;
  double peak_allocated_bytes = 0;  ///< 0 on the CPU (no caching allocator statistics there)
  double peak_reserved_bytes = 0;
  double flops_per_token = 0;
  double mfu = 0;  ///< achieved model FLOP/s over options.peak_flops
  std::string profile;  ///< with options.profile_dir: where a step's time goes (format_profile's table)
};

/// Times the training step of `config` (its model, device, precision, form, optimizer and block size;
/// one micro-batch per optimizer step: forward, backward, gradient clipping, AdamW) on random tokens.
/// Returns one result per batch size tried, in the order tried; when searching, the attempts that ran
/// out of memory are included, marked. Throws std::runtime_error for a CPU search or a missing device.
std::vector<BenchmarkResult> benchmark_training(const RunConfig& config, const BenchmarkOptions& options);

}  // namespace densessm
