// densessm-bench's shared machinery: timing with warm-up, rotated input sets and medians; the table of
// results with achieved bandwidth and arithmetic rate against the card's measured ceilings; and the
// registry through which each suite (one per operator family, in its own file) adds itself.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <torch/types.h>

namespace densessm::bench {

struct Options {
  torch::Device device{torch::kCPU};
  int warmup = 10;          ///< untimed runs before timing
  int repeats = 50;         ///< timed runs; the median is reported
  int rotate = 4;           ///< distinct input sets cycled through, so the L2 cache does not flatter
  double copy_gbps = 3000;  ///< device memory ceiling, GB/s (read + write); `ceilings` measures it
  double matmul_tflops = 790;  ///< bf16 tensor-core ceiling, TFLOP/s; `ceilings` measures it
  bool reference = true;    ///< also time the LibTorch reference forms, for the speed-up column
  std::string shapes = "all";  ///< which shapes a suite runs: "all", "train" or "decode"
};

struct Timing {
  double median_ms = 0;
  double min_ms = 0;
  double max_ms = 0;
};

/// Runs `run(set)` options.warmup times, then options.repeats times with set = 0, 1, ... modulo
/// options.rotate, timing each run alone (CUDA events on CUDA, a steady clock on the CPU).
Timing time_runs(const Options& options, const std::function<void(int64_t set)>& run);

struct Row {
  std::string suite;
  std::string name;   ///< the operator and shape, e.g. "selective_scan fwd bf16 B8 C4096 T2048 N16"
  Timing timing;
  double bytes = 0;   ///< fewest bytes the operation must move (each input read once, output written once)
  double flops = 0;   ///< floating-point operations
  double reference_ms = std::numeric_limits<double>::quiet_NaN();  ///< the LibTorch reference form's median
};

class Report {
 public:
  explicit Report(const Options& options) : options_(options) {}
  void add(Row row);
  /// The table: median (min-max) ms, GB/s and % of the copy ceiling, TFLOP/s and % of the matmul
  /// ceiling, speed-up over the reference.
  void print() const;
  /// The same rows as CSV, written to a temporary file and renamed.
  void write_csv(const std::string& path) const;
  const std::vector<Row>& rows() const { return rows_; }

 private:
  const Options& options_;
  std::vector<Row> rows_;
};

using Suite = std::function<void(const Options& options, Report& report)>;

struct SuiteInfo {
  std::string name;
  std::string description;
  Suite run;
};

/// The suites linked into the executable, in registration order.
std::vector<SuiteInfo>& suites();

/// A suite's file registers it with a namespace-scope `const Registrar registrar{"name", "what", fn};`.
struct Registrar {
  Registrar(std::string name, std::string description, Suite run);
};

/// Random normal values of `sizes` on the options' device (never zeros: they can run faster).
torch::Tensor random(torch::IntArrayRef sizes, const Options& options, torch::ScalarType dtype);

}  // namespace densessm::bench
