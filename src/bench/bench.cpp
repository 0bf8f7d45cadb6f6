#include "bench/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <torch/torch.h>
#ifdef DENSESSM_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace densessm::bench {

Timing time_runs(const Options& options, const std::function<void(int64_t set)>& run) {
  const int64_t sets = std::max(1, options.rotate);
  for (int i = 0; i < options.warmup; ++i) run(i % sets);
  std::vector<double> ms(std::max(1, options.repeats));
  const bool cuda = options.device.is_cuda();
  if (cuda) {
#ifdef DENSESSM_WITH_CUDA
    torch::cuda::synchronize();
    at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
    for (size_t i = 0; i < ms.size(); ++i) {
      const auto stream = c10::cuda::getCurrentCUDAStream();
      start.record(stream);
      run(static_cast<int64_t>(i) % sets);
      stop.record(stream);
      stop.synchronize();
      ms[i] = start.elapsed_time(stop);
    }
#else
    throw std::runtime_error("this build has no CUDA");
#endif
  } else {
    for (size_t i = 0; i < ms.size(); ++i) {
      const auto begin = std::chrono::steady_clock::now();
      run(static_cast<int64_t>(i) % sets);
      ms[i] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - begin).count();
    }
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front(), ms.back()};
}

void Report::add(Row row) { rows_.push_back(std::move(row)); }

void Report::print() const {
  std::printf("%-58s %20s %9s %6s %9s %6s %8s\n", "operation", "median ms (min-max)", "GB/s", "%copy", "TFLOP/s",
              "%mma", "vs ref");
  for (const Row& r : rows_) {
    const double seconds = r.timing.median_ms * 1e-3;
    const double gbps = r.bytes / seconds / 1e9, tflops = r.flops / seconds / 1e12;
    char span[64];
    std::snprintf(span, sizeof(span), "%.4f (%.3f-%.3f)", r.timing.median_ms, r.timing.min_ms, r.timing.max_ms);
    char speedup[16] = "-";
    if (std::isfinite(r.reference_ms)) std::snprintf(speedup, sizeof(speedup), "%.1fx", r.reference_ms / r.timing.median_ms);
    std::printf("%-58s %20s %9.1f %5.1f%% %9.2f %5.1f%% %8s\n", r.name.c_str(), span, gbps,
                100 * gbps / options_.copy_gbps, tflops, 100 * tflops / options_.matmul_tflops, speedup);
  }
  std::fflush(stdout);
}

void Report::write_csv(const std::string& path) const {
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary);
    if (!out) throw std::runtime_error("cannot write " + temporary);
    out << "suite,name,median_ms,min_ms,max_ms,bytes,flops,gbps,tflops,reference_ms\n";
    for (const Row& r : rows_) {
      const double seconds = r.timing.median_ms * 1e-3;
      out << r.suite << ",\"" << r.name << "\"," << r.timing.median_ms << "," << r.timing.min_ms << ","
          << r.timing.max_ms << "," << r.bytes << "," << r.flops << "," << r.bytes / seconds / 1e9 << ","
          << r.flops / seconds / 1e12 << "," << r.reference_ms << "\n";
    }
    if (!out.flush()) throw std::runtime_error("cannot write " + temporary);
  }
  std::filesystem::rename(temporary, path);
}

std::vector<SuiteInfo>& suites() {
  static std::vector<SuiteInfo> all;
  return all;
}

Registrar::Registrar(std::string name, std::string description, Suite run) {
  suites().push_back({std::move(name), std::move(description), std::move(run)});
}

torch::Tensor random(torch::IntArrayRef sizes, const Options& options, torch::ScalarType dtype) {
  return torch::randn(sizes, torch::TensorOptions().device(options.device).dtype(dtype));
}

}  // namespace densessm::bench
