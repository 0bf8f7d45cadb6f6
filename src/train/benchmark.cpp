#include <chrono>
#include <cmath>
#include <filesystem>

#include <torch/torch.h>

#include "densessm/log.h"
#include "densessm/model.h"
#include "densessm/profiler.h"
#include "densessm/train_benchmark.h"
#include "train/batch_search.h"
#include "train/device_memory.h"
#include "train/lm_loss.h"
#include "train/loss_scaler.h"
#include "train/optimizer.h"

namespace densessm {
namespace {

using Clock = std::chrono::steady_clock;

// Builds the model and optimizer at `batch`, runs the warm-up steps, then times the others. Everything it
// allocates is freed when it returns or throws, so an out-of-memory attempt leaves the device clean.
BenchmarkResult time_batch(const RunConfig& c, torch::Device device, int64_t batch, const BenchmarkOptions& o) {
  BenchmarkResult r;
  r.model = c.model.name;
  r.batch_size = batch;
  r.block_size = c.block_size;
  r.flops_per_token = training_flops(c.model).per_token;
  torch::manual_seed(c.seed);
  CausalLM model(c.model);
  model->to(device);
  model->train();
  r.parameters = model->num_parameters();
  auto optimizer = make_adamw(model->named_parameters(), c.optimizer);
  const auto parameters = model->parameters();
  LossScaler scaler = c.precision == "fp16" ? LossScaler(c.initial_loss_scale, c.loss_scale_growth_interval) : LossScaler();
  ForwardOptions forward;
  forward.form = c.form == "parallel" ? SequenceForm::kParallel : SequenceForm::kChunkwise;
  // Random tokens: the content does not change the work. (B, T+1)
  const auto tokens = torch::randint(c.model.vocab_size, {batch, c.block_size + 1},
                                     torch::TensorOptions().dtype(torch::kLong).device(device));
  auto step = [&] {
    optimizer->zero_grad();
    (next_token_loss(model, tokens, c.precision, forward) * scaler.scale()).backward();
    if (scaler.unscale(parameters)) {
      if (c.optimizer.grad_clip > 0) torch::nn::utils::clip_grad_norm_(parameters, c.optimizer.grad_clip);
      optimizer->step();
    }
  };
  for (int i = 0; i < o.warmup_steps; ++i) step();
  DeviceMemory memory(device);
  memory.synchronize();
  const auto start = Clock::now();
  for (int i = 0; i < o.timed_steps; ++i) step();
  memory.synchronize();
  r.step_seconds = std::chrono::duration<double>(Clock::now() - start).count() / o.timed_steps;
  r.tokens_per_second = static_cast<double>(batch * c.block_size) / r.step_seconds;
  std::tie(r.peak_allocated_bytes, r.peak_reserved_bytes) = memory.peak_allocated_and_reserved();
  r.mfu = r.flops_per_token * r.tokens_per_second / o.peak_flops;
  if (!o.profile_dir.empty()) {
    Profile profile(device.is_cuda());
    for (int i = 0; i < o.profile_steps; ++i) step();
    const auto trace = std::filesystem::path(o.profile_dir) / (c.model.name + "-batch" + std::to_string(batch) + ".trace.json");
    r.profile = format_profile(profile.stop(trace.string()), 30, o.profile_steps) + "trace: " + trace.string() + "\n";
  }
  return r;
}

// One attempt; an out-of-memory error is a result (marked), not a failure.
BenchmarkResult attempt(const RunConfig& c, torch::Device device, int64_t batch, const BenchmarkOptions& o) {
  DeviceMemory memory(device);
  memory.reset();
  try {
    BenchmarkResult r = time_batch(c, device, batch, o);
    log::info(c.model.name, " batch ", batch, ": ", static_cast<int64_t>(r.tokens_per_second), " tokens/s");
    return r;
  } catch (const c10::OutOfMemoryError&) {
    memory.reset();  // the attempt's tensors are gone: give their cached blocks back
    log::info(c.model.name, " batch ", batch, ": out of memory");
    BenchmarkResult r;
    r.model = c.model.name;
    r.batch_size = batch;
    r.block_size = c.block_size;
    r.out_of_memory = true;
    return r;
  }
}

}  // namespace

TrainingFlops training_flops(const ModelConfig& c) {
  const ParameterCount count = count_parameters(c);
  TrainingFlops f;
  // Layer 0 owns the dense transition and fusion norms but has no earlier layer to fuse.
  f.matmul_parameters = static_cast<double>(c.num_layers * count.per_layer - count.dense_per_layer + count.final_norm +
                                            c.vocab_size * c.hidden_size);
  if (c.architecture == Architecture::kRetNet) {
    const double C = static_cast<double>(c.retention.chunk_size), K = static_cast<double>(c.retention.query_key_dim),
                 E = static_cast<double>(c.value_dim()), H = static_cast<double>(c.retention.num_heads);
    f.mixing_forward_per_layer = 2 * C * (K + E) + 4 * K * E / H;
  } else {
    f.mixing_forward_per_layer = 8.0 * static_cast<double>(c.d_inner() * c.mamba.d_state);
  }
  f.per_token = 6 * f.matmul_parameters + 3 * static_cast<double>(c.num_layers) * f.mixing_forward_per_layer;
  return f;
}

std::vector<BenchmarkResult> benchmark_training(const RunConfig& config, const BenchmarkOptions& o) {
  const torch::Device device(config.device);
  if (device.is_cuda() && !torch::cuda::is_available()) {
    throw std::runtime_error("device \"" + config.device + "\": no CUDA device is available");
  }
  if (o.warmup_steps < 0 || o.timed_steps < 1 || !(o.peak_flops > 0)) {
    throw std::runtime_error("benchmark: warm-up steps >= 0, timed steps >= 1 and a positive peak are needed");
  }
  std::vector<BenchmarkResult> results;
  if (!o.batch_sizes.empty()) {
    for (int64_t batch : o.batch_sizes) {
      if (batch < 1) throw std::runtime_error("benchmark: batch sizes must be positive, got " + std::to_string(batch));
      results.push_back(attempt(config, device, batch, o));
    }
    return results;
  }
  if (!device.is_cuda()) {
    throw std::runtime_error("benchmark: finding the largest batch that fits needs a CUDA device (it stops at the "
                             "first out-of-memory error); give the batch sizes on the CPU");
  }
  largest_fitting_batch([&](int64_t batch) {
    results.push_back(attempt(config, device, batch, o));
    return !results.back().out_of_memory;
  });
  return results;
}

}  // namespace densessm
