// Pretraining: the run configuration (JSON) and the training loop behind densessm-train.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "densessm/config.h"

namespace densessm {

struct OptimizerConfig {
  double lr = 6e-4;  ///< peak learning rate (the reference's)
  double beta1 = 0.9;
  double beta2 = 0.98;
  double eps = 1e-8;
  double weight_decay = 0.01;  ///< not applied to norms, biases, A_log and D
  double grad_clip = 1.0;      ///< global gradient-norm clipping; 0 disables
};

struct ScheduleConfig {
  std::string type = "polynomial";  ///< polynomial, cosine or constant (after warmup)
  double warmup_ratio = 0.015;      ///< share of the steps with linear warmup (the reference's 1.5%)
  double final_lr_ratio = 0.0;      ///< the learning rate at the last step, as a share of the peak
  double power = 1.0;               ///< polynomial decay power (1: linear)
};

struct RunConfig {
  ModelConfig model;
  std::string model_source;  ///< the model config's file, or "(embedded)"
  std::string data;          ///< dataset folder from densessm-prepare-data
  std::string output_dir;
  /// Initial weights: a model folder (densessm-convert import) or a training checkpoint, of the same model
  /// shape; empty: random initialisation. --resume from a checkpoint of this run takes precedence.
  std::string init_from;
  std::string device = "cpu";      ///< cpu, cuda or cuda:N
  std::string precision = "fp32";  ///< fp32, bf16 (autocast) or fp16 (autocast + dynamic loss scaling)
  std::string form = "chunkwise";  ///< retention form for training: chunkwise or parallel
  uint64_t seed = 1995;
  int64_t batch_size = 2;             ///< per device
  int64_t gradient_accumulation = 16;
  int64_t block_size = 2048;
  int64_t max_steps = 0;              ///< optimizer steps; or derived from max_tokens
  int64_t max_tokens = 0;
  double dropout = -1;                ///< overrides the model config's when >= 0
  int64_t log_every = 10;
  int64_t eval_every = 200;
  int64_t eval_batches = 20;
  int64_t checkpoint_every = 500;
  int64_t keep_checkpoints = 3;
  double initial_loss_scale = 65536;
  int64_t loss_scale_growth_interval = 2000;
  int64_t distributed_timeout_s = 300;  ///< a multi-process run stops with an error when a rank is silent this long
  /// Multi-process runs: each rank keeps the AdamW state of its share of the parameters only (ZeRO stage 1)
  /// and sends the parameters it updated to the others after each step. Checkpoints hold the whole state
  /// either way, so a run can resume with or without it, under the world-size rule.
  bool shard_optimizer = false;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;

  /// Tokens of one optimizer step over all ranks: world_size x batch_size x gradient_accumulation x block_size.
  int64_t tokens_per_step(int64_t world_size = 1) const { return world_size * batch_size * gradient_accumulation * block_size; }
  /// Optimizer steps of the whole run (max_steps, or max_tokens over the tokens of one step).
  int64_t total_steps(int64_t world_size = 1) const;
};

/// Parses a run configuration. "model" is a path (relative to the run config's folder) or an embedded
/// model object. Errors name the file, the key and the reason (ConfigError).
RunConfig parse_run_config(const std::string& json_text, const std::string& source, const std::string& base_dir = ".");
RunConfig load_run_config(const std::string& path);
std::string to_json(const RunConfig& config);

/// The learning-rate multiplier (of the peak) for optimizer step `step` (0-based) of `total`.
double lr_factor(const ScheduleConfig& schedule, int64_t step, int64_t total);

struct TrainOptions {
  bool resume = false;       ///< continue from the latest checkpoint in output_dir
  int64_t stop_after = 0;    ///< stop (with a checkpoint) after this many steps of this invocation; 0: run to the end
};

/// Trains; returns the number of optimizer steps completed in total. Throws std::runtime_error (or
/// ConfigError) with a clear message on bad input. SIGINT/SIGTERM save a checkpoint and return.
/// With torchrun's variables set (WORLD_SIZE > 1, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) this process
/// is one rank of a data-parallel job: batch_size is per rank, rank 0 writes metrics and checkpoints.
int64_t train(const RunConfig& config, const TrainOptions& options);

}  // namespace densessm
