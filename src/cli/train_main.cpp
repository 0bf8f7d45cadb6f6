// densessm-train: pretrain a DenseRetNet / DenseMamba (or plain) model from a JSON run config, or, with
// --benchmark, time its training step (tokens/s, peak memory, MFU).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>

#include "densessm/log.h"
#include "densessm/train.h"
#include "densessm/train_benchmark.h"
#include "launcher.h"

namespace {

// argv without the launcher's own option, for the processes it starts.
std::vector<std::string> rank_arguments(int argc, char** argv) {
  std::vector<std::string> result;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--nproc-per-node") {
      ++i;
    } else if (a.rfind("--nproc-per-node=", 0) != 0) {
      result.push_back(a);
    }
  }
  return result;
}

void print_benchmark(const densessm::RunConfig& c, const std::vector<densessm::BenchmarkResult>& results, double peak) {
  std::printf("\n%-22s %9s %6s %6s %10s %12s %14s %9s %7s\n", "model", "params", "batch", "block", "step ms", "tokens/s",
              "peak GiB a/r", "TFLOP/s", "MFU");
  for (const auto& r : results) {
    if (r.out_of_memory) {
      std::printf("%-22s %9s %6lld %6lld   out of memory\n", r.model.c_str(), "", static_cast<long long>(r.batch_size),
                  static_cast<long long>(r.block_size));
      continue;
    }
    const double gib = 1024.0 * 1024 * 1024;
    char memory[32] = "-";  // no allocator statistics on the CPU
    if (r.peak_reserved_bytes > 0) {
      std::snprintf(memory, sizeof(memory), "%.1f/%.1f", r.peak_allocated_bytes / gib, r.peak_reserved_bytes / gib);
    }
    std::printf("%-22s %8.1fM %6lld %6lld %10.1f %12.0f %14s %9.2f %6.1f%%\n", r.model.c_str(), r.parameters / 1e6,
                static_cast<long long>(r.batch_size), static_cast<long long>(r.block_size), r.step_seconds * 1e3,
                r.tokens_per_second, memory, r.flops_per_token * r.tokens_per_second / 1e12, r.mfu * 100);
  }
  std::printf("(%s, %s, %s form; model FLOPs per token from docs/PERFORMANCE.md; MFU against %.0f TFLOP/s)\n",
              c.device.c_str(), c.precision.c_str(), c.form.c_str(), peak / 1e12);
  for (const auto& r : results) {
    if (!r.profile.empty()) std::printf("\n%s batch %lld: %s", r.model.c_str(), static_cast<long long>(r.batch_size), r.profile.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"densessm-train: pretrain a model described by a JSON run config (see configs/runs/*.json)"};
  std::string config_path;
  densessm::TrainOptions options;
  int nproc_per_node = 0;
  bool benchmark = false;
  std::vector<std::string> models;
  densessm::BenchmarkOptions bench;
  double peak_tflops = bench.peak_flops / 1e12;
  app.add_option("--config", config_path, "run config JSON")->required();
  auto* resume_flag = app.add_flag("--resume", options.resume, "continue from the latest checkpoint in the run's output_dir");
  auto* stop_option = app.add_option("--stop-after", options.stop_after, "stop with a checkpoint after this many steps of this invocation")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--nproc-per-node", nproc_per_node,
                 "start this many processes here, one rank each (one GPU each for a CUDA device), as torchrun does")
      ->check(CLI::PositiveNumber);
  auto* benchmark_flag = app.add_flag("--benchmark", benchmark,
               "time the training step instead of training (random tokens; the config's data is not read)")
      ->excludes(resume_flag)->excludes(stop_option);
  app.add_option("--model", models, "benchmark: model configs to time in turn instead of the run config's")
      ->check(CLI::ExistingFile)
      ->needs(benchmark_flag);
  app.add_option("--batch", bench.batch_sizes, "benchmark: batch sizes, comma separated (default: the largest that fits)")
      ->delimiter(',')->check(CLI::PositiveNumber)
      ->needs(benchmark_flag);
  app.add_option("--warmup", bench.warmup_steps, "benchmark: untimed steps first")->capture_default_str()
      ->check(CLI::NonNegativeNumber)
      ->needs(benchmark_flag);
  app.add_option("--steps", bench.timed_steps, "benchmark: timed steps")->capture_default_str()->check(CLI::PositiveNumber)
      ->needs(benchmark_flag);
  app.add_option("--peak-tflops", peak_tflops, "benchmark: the device's peak for MFU (H100/H200 dense bf16: 989)")
      ->capture_default_str()->check(CLI::PositiveNumber)
      ->needs(benchmark_flag);
  app.add_option("--profile", bench.profile_dir,
                 "benchmark: then profile 2 more steps of each batch: the longest kernels per step, and a Chrome "
                 "trace per batch in this folder (chrome://tracing, ui.perfetto.dev)")
      ->needs(benchmark_flag);
  CLI11_PARSE(app, argc, argv);
  try {
    if (nproc_per_node > 0) return densessm::cli::launch_local(nproc_per_node, rank_arguments(argc, argv), 30);
    // Ranks other than 0 repeat rank 0's progress lines; their warnings and errors still show.
    const char* rank = std::getenv("RANK");
    if (rank && std::atoi(rank) > 0) densessm::log::set_level(densessm::log::Level::kWarn);
    densessm::RunConfig config = densessm::load_run_config(config_path);
    if (!benchmark) {
      densessm::train(config, options);
      return 0;
    }
    bench.peak_flops = peak_tflops * 1e12;
    std::vector<densessm::BenchmarkResult> results;
    for (size_t i = 0; i < std::max<size_t>(1, models.size()); ++i) {
      if (!models.empty()) {
        config.model = densessm::load_model_config(models[i]);
        if (config.dropout >= 0) config.model.dropout = config.dropout;
      }
      for (auto& r : densessm::benchmark_training(config, bench)) results.push_back(r);
    }
    print_benchmark(config, results, bench.peak_flops);
  } catch (const std::exception& e) {
    std::cerr << "densessm-train: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
