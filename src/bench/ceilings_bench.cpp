// The card's own ceilings: a large device-to-device copy (bytes read plus written) and a large bf16
// matrix product through cuBLAS. Other suites' percentages are relative to what this measures.
#include <torch/torch.h>

#include "bench/bench.h"

namespace densessm::bench {
namespace {

void run_ceilings(const Options& options, Report& report) {
  const bool cuda = options.device.is_cuda();
  const int64_t elements = cuda ? (int64_t{1} << 28) : (int64_t{1} << 24);  // 1 GiB / 64 MiB of float32
  std::vector<torch::Tensor> sources;
  for (int i = 0; i < std::max(1, options.rotate); ++i) sources.push_back(random({elements}, options, torch::kFloat));
  torch::Tensor target = torch::empty_like(sources[0]);
  const Timing copy = time_runs(options, [&](int64_t set) { target.copy_(sources[set]); });
  report.add({"ceilings", "copy float32 " + std::to_string(elements * 4 >> 20) + " MiB", copy,
              2.0 * 4 * static_cast<double>(elements), 0});

  const int64_t n = cuda ? 8192 : 1024;
  const auto dtype = cuda ? torch::kBFloat16 : torch::kFloat;
  std::vector<torch::Tensor> a, b;
  for (int i = 0; i < std::max(1, options.rotate); ++i) {
    a.push_back(random({n, n}, options, dtype));
    b.push_back(random({n, n}, options, dtype));
  }
  torch::Tensor c = torch::empty({n, n}, a[0].options());
  const Timing mm = time_runs(options, [&](int64_t set) { torch::mm_out(c, a[set], b[set]); });
  report.add({"ceilings", std::string("matmul ") + (cuda ? "bf16 " : "float32 ") + std::to_string(n) + "^3", mm,
              3.0 * n * n * c.element_size(), 2.0 * n * n * n});
}

const Registrar registrar{"ceilings", "device copy bandwidth and matmul rate (the ceilings of the other tables)",
                          run_ceilings};

}  // namespace
}  // namespace densessm::bench
