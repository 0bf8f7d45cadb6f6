#include "generate/speed_test.h"

#include <random>
#include <sstream>

#include <torch/torch.h>

#include "densessm/generate.h"
#include "densessm/profiler.h"
#include "generate/device.h"

namespace densessm {
namespace {

// The speed test's prompts: random ordinary tokens (ids 3 and up: past LLaMA's unk, bos, eos).
std::vector<std::vector<int32_t>> random_prompts(const CausalLM& model, const SpeedTestOptions& options) {
  std::mt19937_64 random(options.seed);
  std::uniform_int_distribution<int32_t> token(3, static_cast<int32_t>(model->config().vocab_size) - 1);
  std::vector<std::vector<int32_t>> prompts(options.batch_size);
  for (auto& prompt : prompts) {
    for (int64_t t = 0; t < options.prompt_tokens; ++t) prompt.push_back(token(random));
  }
  return prompts;
}

// Greedy decoding of `length` new tokens whatever comes (no stop at eos), as the reference's test does.
GenerateOptions speed_test_generation(const SpeedTestOptions& options, int64_t length) {
  GenerateOptions g;
  g.max_new_tokens = length;
  g.temperature = 0;
  g.stop_at_eos = false;
  g.cuda_graph = options.cuda_graph;
  return g;
}

}  // namespace

DecodeFloor decode_floor(const CausalLM& model, int64_t batch_size, double bandwidth) {
  DecodeFloor floor;
  for (const auto& parameter : model->named_parameters()) {
    if (parameter.key() == "embed_tokens.weight" && !model->config().tie_embeddings) continue;
    floor.weight_bytes += static_cast<int64_t>(parameter.value().nbytes());
  }
  floor.state_bytes = 2 * model->initial_state(batch_size).nbytes();
  floor.ms = 1e3 * static_cast<double>(floor.weight_bytes + floor.state_bytes) / bandwidth;
  return floor;
}

std::vector<SpeedResult> run_speed_test(CausalLM model, const SpeedTestOptions& options,
                                        const std::function<void(const SpeedResult&)>& report) {
  const torch::Device device = model->parameters().front().device();
  const auto prompts = random_prompts(model, options);
  std::vector<SpeedResult> results;
  for (int64_t length : options.lengths) {
    Generator generator(model, std::nullopt, speed_test_generation(options, length));
    generator.generate_tokens(prompts);  // warm-up (and graph capture)
    reset_peak_memory(device);
    const GenerationStats stats = generator.generate_tokens(prompts).stats;
    SpeedResult r;
    r.new_tokens = length;
    r.prefill_seconds = stats.prefill_seconds;
    r.seconds = stats.prefill_seconds + stats.decode_seconds;
    r.ms_per_step = 1e3 * stats.decode_seconds / static_cast<double>(stats.decode_steps);
    r.tokens_per_second_per_sequence = static_cast<double>(length) / r.seconds;
    r.tokens_per_second = static_cast<double>(length * options.batch_size) / r.seconds;
    r.peak_memory_bytes = peak_memory_bytes(device);
    r.cuda_graph = stats.cuda_graph;
    results.push_back(r);
    if (report) report(r);
  }
  return results;
}

std::string profile_decoding(CausalLM model, const SpeedTestOptions& options, int64_t new_tokens,
                             const std::string& trace_path, int top) {
  const torch::Device device = model->parameters().front().device();
  const auto prompts = random_prompts(model, options);
  Generator generator(model, std::nullopt, speed_test_generation(options, new_tokens));
  generator.generate_tokens(prompts);  // warm-up (and graph capture), outside the profile
  Profile profile(device.is_cuda());
  const GenerationStats stats = generator.generate_tokens(prompts).stats;
  const ProfileSummary summary = profile.stop(trace_path);
  std::ostringstream out;
  out << "decoding " << new_tokens << " tokens at batch " << options.batch_size << " ("
      << (stats.cuda_graph ? "CUDA graph" : "eager steps") << "), per decode step (the prefill is included once):\n"
      << format_profile(summary, top, static_cast<int>(std::max<int64_t>(stats.decode_steps, 1)));
  return out.str();
}

}  // namespace densessm
