// densessm-generate: continue prompts with a trained checkpoint, streaming tokens as they come, and report
// prefill and decode speed; --benchmark runs the decoding speed test instead.
#include <cstdio>
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include "densessm/generate.h"
#include "generate/speed_test.h"

namespace {

using densessm::GenerateError;

struct Settings {
  std::string checkpoint, config, prompt_file, dtype = "auto", device = "auto";
  std::vector<std::string> prompts;
  int64_t batch_size = 1;
  bool greedy = false, ignore_eos = false, no_cuda_graph = false, benchmark = false;
  densessm::SpeedTestOptions speed;
  std::string profile;  ///< --profile: trace path
  int64_t profile_tokens = 32;
};

std::vector<std::string> read_prompts(std::istream& in, const std::string& source) {
  std::vector<std::string> prompts;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) prompts.push_back(line);
  }
  if (prompts.empty()) throw GenerateError(source + ": no prompts (one a line; blank lines are skipped)");
  return prompts;
}

std::vector<std::string> gather_prompts(const Settings& s) {
  if (!s.prompts.empty()) return s.prompts;
  if (!s.prompt_file.empty()) {
    std::ifstream in(s.prompt_file);
    if (!in) throw GenerateError(s.prompt_file + ": cannot open the prompt file");
    return read_prompts(in, s.prompt_file);
  }
  return read_prompts(std::cin, "standard input");
}

torch::Device pick_device(const std::string& name) {
  if (name == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(name);
  } catch (const c10::Error&) {
    throw GenerateError("unknown device '" + name + "' (cpu, cuda or cuda:N)");
  }
  if (device.is_cuda() && !torch::cuda::is_available()) throw GenerateError("--device " + name + ": no CUDA device is available");
  return device;
}

torch::ScalarType pick_dtype(const std::string& name, torch::Device device) {
  if (name == "auto") return device.is_cuda() ? torch::kBFloat16 : torch::kFloat;
  return densessm::parse_dtype(name);
}

std::string significant(double value) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.4g", value);
  return text;
}

std::string fixed(double value, int digits) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.*f", digits, value);
  return text;
}

void print_stats(const densessm::GenerationStats& s) {
  const double prefill_ms = 1e3 * s.prefill_seconds, decode_ms = 1e3 * s.decode_seconds;
  std::cerr << "\nprompt: " << s.prompt_tokens << " tokens, prefill " << fixed(prefill_ms, 1) << " ms ("
            << fixed(static_cast<double>(s.prompt_tokens) / s.prefill_seconds, 1) << " tokens/s)\n"
            << "decode: " << s.generated_tokens << " tokens in " << s.decode_steps << " steps of batch " << s.batch_size
            << ", " << fixed(decode_ms, 1) << " ms (" << fixed(static_cast<double>(s.generated_tokens) / s.decode_seconds, 1)
            << " tokens/s, " << fixed(decode_ms / static_cast<double>(s.decode_steps), 3) << " ms/step"
            << (s.cuda_graph ? ", CUDA graph" : "") << ")\n";
}

int generate(const Settings& s, densessm::GenerateOptions options) {
  const std::vector<std::string> prompts = gather_prompts(s);
  densessm::Checkpoint checkpoint = densessm::load_checkpoint(s.checkpoint);
  densessm::Generator generator(checkpoint.model, checkpoint.tokenizer, options);
  const densessm::ModelConfig& c = checkpoint.config;
  std::cerr << c.name << " (" << densessm::to_string(c.architecture) << (c.dense() ? ", dense" : "") << ", "
            << checkpoint.model->num_parameters() << " parameters) from " << s.checkpoint << " on " << *options.device
            << ", " << torch::toString(*options.dtype) << " | "
            << (options.temperature == 0 ? std::string("greedy")
                                         : "temperature " + significant(options.temperature) + ", top-k " +
                                               std::to_string(options.top_k) + ", top-p " + significant(options.top_p) +
                                               ", seed " + std::to_string(options.seed))
            << ", repetition penalty " << significant(options.repetition_penalty) << " | up to " << options.max_new_tokens
            << " new tokens" << (options.stop_at_eos ? ", stop at eos" : "") << "\n";
  for (size_t first = 0; first < prompts.size(); first += static_cast<size_t>(s.batch_size)) {
    const std::vector<std::string> batch(prompts.begin() + static_cast<std::ptrdiff_t>(first),
                                         prompts.begin() + static_cast<std::ptrdiff_t>(std::min(prompts.size(), first + s.batch_size)));
    // One sequence streams as it goes; a batch prints each sequence whole when it ends.
    std::vector<std::string> texts(batch.size());
    const bool stream = batch.size() == 1;
    if (stream) std::cout << batch[0] << std::flush;
    auto on_token = [&](const densessm::TokenEvent& e) {
      if (stream) {
        std::cout << e.text << (e.last ? "\n" : "") << std::flush;
        return;
      }
      texts[e.sequence] += e.text;
      if (e.last) std::cout << "[" << first + e.sequence + 1 << "] " << batch[e.sequence] << texts[e.sequence] << "\n" << std::flush;
    };
    print_stats(generator.generate(batch, on_token).stats);
  }
  return 0;
}

int benchmark(const Settings& s, torch::Device device, torch::ScalarType dtype) {
  if (s.checkpoint.empty() == s.config.empty()) throw GenerateError("--benchmark needs exactly one of --checkpoint or --config");
  densessm::CausalLM model = s.config.empty() ? densessm::load_checkpoint(s.checkpoint).model
                                              : densessm::CausalLM(densessm::load_model_config(s.config));
  model->to(dtype);
  model->to(device);
  model->eval();
  const auto floor = densessm::decode_floor(model, s.speed.batch_size, s.speed.bandwidth);
  std::cout << model->config().name << ": " << model->num_parameters() << " parameters, " << device << ", "
            << torch::toString(dtype) << ", batch " << s.speed.batch_size << ", prompt " << s.speed.prompt_tokens
            << " tokens, greedy, one warm-up call per length\n"
            << "floor per step: " << fixed(static_cast<double>(floor.weight_bytes) / 1e6, 1) << " MB weights + "
            << fixed(static_cast<double>(floor.state_bytes) / 1e6, 2) << " MB state (read + written) at "
            << fixed(s.speed.bandwidth / 1e12, 2) << " TB/s = " << significant(floor.ms) << " ms\n"
            << "new tokens | seconds | tokens/s per sequence | tokens/s all | ms/token | x floor | peak MiB\n";
  densessm::run_speed_test(model, s.speed, [&](const densessm::SpeedResult& r) {
    std::cout << r.new_tokens << " | " << fixed(r.seconds, 3) << " | " << fixed(r.tokens_per_second_per_sequence, 1)
              << " | " << fixed(r.tokens_per_second, 1) << " | " << fixed(r.ms_per_step, 3) << " | "
              << significant(r.ms_per_step / floor.ms) << " | " << fixed(static_cast<double>(r.peak_memory_bytes) / 1048576.0, 1)
              << (r.cuda_graph ? " | CUDA graph" : "")
              << (r.new_tokens == 2048 && s.speed.batch_size == 6 && s.speed.prompt_tokens == 2 ? " | the reference's test" : "")
              << "\n" << std::flush;
  });
  if (!s.profile.empty()) {
    std::cout << densessm::profile_decoding(model, s.speed, s.profile_tokens, s.profile) << "trace: " << s.profile
              << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"densessm-generate: continue prompts with a trained DenseRetNet / DenseMamba checkpoint.\n"
               "The prompt is prefilled in one chunkwise pass, then each token costs one recurrent step\n"
               "(O(1) time and memory); on CUDA the step runs as a CUDA graph. Prompts: --prompt, --prompt-file\n"
               "(one a line) or standard input. Speed and the prefill/decode rates go to standard error."};
  Settings s;
  densessm::GenerateOptions o;
  o.temperature = 0.8;
  o.top_k = 40;
  o.top_p = 0.95;
  o.seed = 1234;
  app.add_option("--checkpoint", s.checkpoint,
                 "Checkpoint folder of densessm-train (model.json, model.pt, tokenizer.model), or its output_dir "
                 "(the newest checkpoint)");
  app.add_option("-p,--prompt", s.prompts, "Prompt text (repeat for several prompts)");
  app.add_option("-f,--prompt-file", s.prompt_file, "File with one prompt per line (blank lines skipped)");
  app.add_option("-n,--max-new-tokens", o.max_new_tokens, "Tokens to generate per prompt")->capture_default_str();
  app.add_option("-t,--temperature", o.temperature, "Sampling temperature; 0 is greedy")->capture_default_str();
  app.add_flag("--greedy", s.greedy, "Always take the most likely token (same as --temperature 0)");
  app.add_option("--top-k", o.top_k, "Sample among the k most likely tokens; 0 keeps all")->capture_default_str();
  app.add_option("--top-p", o.top_p, "Sample among the most likely tokens whose probabilities reach p, in (0, 1]")
      ->capture_default_str();
  app.add_option("--repetition-penalty", o.repetition_penalty,
                 "Lower the odds of tokens already in the sequence (1 is none; 1.1 is mild)")->capture_default_str();
  app.add_option("-s,--seed", o.seed, "Random seed of the draws (same seed, same text)")->capture_default_str();
  app.add_flag("--ignore-eos", s.ignore_eos, "Keep generating after the end-of-sequence token");
  app.add_option("--stop", o.stop_strings, "End a sequence when its text contains this string (repeatable)");
  app.add_flag("--bos", o.add_bos, "Put the tokenizer's bos before each prompt (if the training data had it)");
  app.add_option("-b,--batch-size", s.batch_size, "Prompts decoded together (one streams; several print when done)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--dtype", s.dtype, "fp32, bf16, fp16 (or fp64); auto: bf16 on CUDA, fp32 on the CPU")
      ->capture_default_str()->check(CLI::IsMember({"auto", "fp32", "bf16", "fp16", "fp64"}));
  app.add_option("--device", s.device, "cpu, cuda or cuda:N; auto: CUDA when available")->capture_default_str();
  app.add_flag("--no-cuda-graph", s.no_cuda_graph, "Run each decode step eagerly instead of replaying a CUDA graph");
  auto* bench = app.add_option_group("speed mode");
  bench->add_flag("--benchmark", s.benchmark,
                  "Decoding speed test instead of text: the reference's (batch 6, 2-token prompt, 2048 new tokens, "
                  "greedy, one warm-up) and the --lengths sweep");
  bench->add_option("--config", s.config, "With --benchmark: a model config JSON with random weights instead of a checkpoint");
  bench->add_option("--lengths", s.speed.lengths, "With --benchmark: new tokens per run")->capture_default_str()
      ->check(CLI::PositiveNumber);
  bench->add_option("--prompt-tokens", s.speed.prompt_tokens, "With --benchmark: random prompt length")
      ->capture_default_str()->check(CLI::PositiveNumber);
  bench->add_option("--bandwidth", s.speed.bandwidth,
                    "With --benchmark: memory bandwidth in bytes/s for the floor (H200 measured copy: 4.3e12)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  bench->add_option("--profile", s.profile,
                    "With --benchmark: then profile one call of --profile-tokens new tokens and write its Chrome "
                    "trace to this file (chrome://tracing, ui.perfetto.dev); prints the longest kernels per step");
  bench->add_option("--profile-tokens", s.profile_tokens, "With --profile: new tokens of the profiled call")
      ->capture_default_str()->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  try {
    const torch::Device device = pick_device(s.device);
    o.device = device;
    o.dtype = pick_dtype(s.dtype, device);
    if (s.greedy) o.temperature = 0;
    o.stop_at_eos = !s.ignore_eos;
    o.cuda_graph = !s.no_cuda_graph;
    densessm::validate(o);
    if (s.benchmark) {
      s.speed.batch_size = app.count("--batch-size") > 0 ? s.batch_size : 6;
      s.speed.cuda_graph = o.cuda_graph;
      return benchmark(s, device, *o.dtype);
    }
    if (s.checkpoint.empty()) throw GenerateError("--checkpoint is required (or --benchmark with --config)");
    if (!s.config.empty()) throw GenerateError("--config goes with --benchmark only");
    if (!s.profile.empty()) throw GenerateError("--profile goes with --benchmark only");
    if (!s.prompts.empty() && !s.prompt_file.empty()) throw GenerateError("give --prompt or --prompt-file, not both");
    return generate(s, o);
  } catch (const std::exception& e) {
    std::cerr << "densessm-generate: error: " << e.what() << "\n";
    return 1;
  }
}
