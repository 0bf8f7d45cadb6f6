// densessm-bench: times the operators (CUDA kernels against the LibTorch reference forms) and prints
// achieved bandwidth and arithmetic rate against the card's measured ceilings. Timings never go into
// the unit tests; they are recorded in docs/PERFORMANCE.md with the command that produced them.
#include <iostream>

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include "bench/bench.h"

int main(int argc, char** argv) {
  using namespace densessm::bench;
  CLI::App app{"densessm-bench: time DenseSSM's operators (CUDA-event timing, warm-up, median of repeats, "
               "rotated inputs) against the card's measured ceilings and the LibTorch reference forms"};
  std::vector<std::string> selected;
  std::string device = torch::cuda::is_available() ? "cuda" : "cpu";
  std::string csv;
  bool list = false, measure = true;
  Options options;
  app.add_option("suites", selected, "Suites to run (default: all; see --list)");
  app.add_flag("--list", list, "List the suites and exit");
  app.add_option("--device", device, "cuda or cpu")->capture_default_str();
  app.add_option("--warmup", options.warmup, "Untimed runs before timing")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--repeats", options.repeats, "Timed runs (the median is reported)")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--rotate", options.rotate, "Input sets cycled through against L2 caching")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--shapes", options.shapes, "Which shapes: all, train or decode")->capture_default_str()
      ->check(CLI::IsMember({"all", "train", "decode"}));
  app.add_flag("!--no-reference", options.reference, "Do not time the LibTorch reference forms");
  app.add_flag("!--no-ceilings", measure, "Use the nominal ceilings (3000 GB/s, 790 TFLOP/s) instead of measuring");
  app.add_option("--csv", csv, "Also write the results as CSV to this file");
  CLI11_PARSE(app, argc, argv);

  if (list) {
    for (const SuiteInfo& s : suites()) std::cout << "  " << s.name << "  " << s.description << "\n";
    return 0;
  }
  for (const std::string& name : selected) {
    bool known = false;
    for (const SuiteInfo& s : suites()) known = known || s.name == name;
    if (!known) {
      std::cerr << "densessm-bench: unknown suite '" << name << "' (--list shows them)\n";
      return 2;
    }
  }
  try {
    options.device = torch::Device(device);
    if (options.device.is_cuda() && !torch::cuda::is_available()) {
      std::cerr << "densessm-bench: --device cuda, but no CUDA device is available\n";
      return 2;
    }
    torch::NoGradGuard no_grad_for_ceilings;
    if (measure) {
      Report ceilings(options);
      for (const SuiteInfo& s : suites())
        if (s.name == "ceilings") s.run(options, ceilings);
      const auto& rows = ceilings.rows();
      options.copy_gbps = rows.at(0).bytes / (rows.at(0).timing.median_ms * 1e-3) / 1e9;
      options.matmul_tflops = rows.at(1).flops / (rows.at(1).timing.median_ms * 1e-3) / 1e12;
      std::cout << "measured ceilings on " << device << ": copy " << options.copy_gbps << " GB/s, matmul "
                << options.matmul_tflops << " TFLOP/s\n";
    }
    Report report(options);
    for (const SuiteInfo& s : suites()) {
      const bool wanted = selected.empty() ? s.name != "ceilings" : std::count(selected.begin(), selected.end(), s.name) > 0;
      if (wanted) s.run(options, report);
    }
    report.print();
    if (!csv.empty()) report.write_csv(csv);
  } catch (const std::exception& e) {
    std::cerr << "densessm-bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
