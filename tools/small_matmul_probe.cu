// A standalone check of kernels/small_matmul.cu for the GPU machine when a whole build does not fit the
// time left: correctness against a float64 CPU product (relative error, every output written, the
// in-place sum) and the kernel's speed at the decode shapes (CUDA events, median of 50, 4 rotated weight
// copies so that L2 does not flatter). The test suite's SmallMatmulKernel cases are the real tests.
//   nvcc -O3 -std=c++17 -arch=sm_90a -Ikernels tools/small_matmul_probe.cu kernels/small_matmul.cu -o /tmp/probe
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "small_matmul.h"

using densessm::kernels::DType;
using densessm::kernels::SmallMatmulParams;

#define CHECK(call)                                                                            \
  do {                                                                                         \
    cudaError_t e = (call);                                                                    \
    if (e != cudaSuccess) {                                                                    \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e), __FILE__, __LINE__);     \
      std::exit(1);                                                                            \
    }                                                                                          \
  } while (0)

template <typename T>
T to_storage(float v) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(v);
  else return __float2bfloat16_rn(v);
}
template <typename T>
double to_double(T v) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else return __bfloat162float(v);
}

// Relative error (norm) of the kernel against float64; with accumulate, out starts as `start`.
template <typename T>
double check(int64_t M, int64_t K, int64_t N, bool accumulate, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  const int64_t stride = K + 24;  // x's rows inside a wider matrix, 8 columns in
  std::vector<T> x(M * stride), w(N * K), out(M * N);
  for (auto& v : x) v = to_storage<T>(normal(rng));
  for (auto& v : w) v = to_storage<T>(normal(rng) / std::sqrt(static_cast<float>(K)));
  for (auto& v : out) v = accumulate ? to_storage<T>(normal(rng)) : to_storage<T>(NAN);
  T *dx, *dw, *dout;
  CHECK(cudaMalloc(&dx, x.size() * sizeof(T)));
  CHECK(cudaMalloc(&dw, w.size() * sizeof(T)));
  CHECK(cudaMalloc(&dout, out.size() * sizeof(T)));
  CHECK(cudaMemcpy(dx, x.data(), x.size() * sizeof(T), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dw, w.data(), w.size() * sizeof(T), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dout, out.data(), out.size() * sizeof(T), cudaMemcpyHostToDevice));
  const DType dtype = std::is_same_v<T, __half> ? DType::kFloat16 : DType::kBFloat16;
  const SmallMatmulParams p{dx + 8, dw, dout, M, N, K, stride, N, accumulate, dtype};
  if (!densessm::kernels::small_matmul_supported(p)) return INFINITY;
  CHECK(densessm::kernels::small_matmul(p, nullptr));
  std::vector<T> got(M * N);
  CHECK(cudaMemcpy(got.data(), dout, got.size() * sizeof(T), cudaMemcpyDeviceToHost));
  double diff = 0, norm = 0;
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double exact = accumulate ? to_double(out[m * N + n]) : 0.0;
      for (int64_t k = 0; k < K; ++k) exact += to_double(x[m * stride + 8 + k]) * to_double(w[n * K + k]);
      const double g = to_double(got[m * N + n]);
      if (!std::isfinite(g)) return INFINITY;
      diff += (g - exact) * (g - exact);
      norm += exact * exact;
    }
  }
  CHECK(cudaFree(dx));
  CHECK(cudaFree(dw));
  CHECK(cudaFree(dout));
  return std::sqrt(diff / std::max(norm, 1e-300));
}

double time_ms(int64_t M, int64_t K, int64_t N) {
  constexpr int kSets = 4, kWarmup = 10, kRepeats = 50;
  std::vector<__half*> ws(kSets);
  __half *dx, *dout;
  CHECK(cudaMalloc(&dx, M * K * sizeof(__half)));
  CHECK(cudaMalloc(&dout, M * N * sizeof(__half)));
  CHECK(cudaMemset(dx, 0x3c, M * K * sizeof(__half)));
  for (auto& w : ws) {
    CHECK(cudaMalloc(&w, N * K * sizeof(__half)));
    CHECK(cudaMemset(w, 0x1c, N * K * sizeof(__half)));
  }
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int r = 0; r < kWarmup + kRepeats; ++r) {
    const SmallMatmulParams p{dx, ws[r % kSets], dout, M, N, K, K, N, false, DType::kFloat16};
    CHECK(cudaEventRecord(start));
    CHECK(densessm::kernels::small_matmul(p, nullptr));
    CHECK(cudaEventRecord(stop));
    CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (r >= kWarmup) times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  for (auto* w : ws) CHECK(cudaFree(w));
  CHECK(cudaFree(dx));
  CHECK(cudaFree(dout));
  return times[times.size() / 2];
}

int main() {
  std::mt19937 rng(7);
  int failures = 0;
  std::printf("correctness (relative error against float64; limit 1e-2):\n");
  for (const int64_t M : {1, 3, 6, 8}) {
    for (const auto [K, N] : {std::pair<int64_t, int64_t>{8, 17}, {40, 16}, {80, 1000}, {136, 15}, {2560, 160}}) {
      for (const bool accumulate : {false, true}) {
        const double e16 = check<__half>(M, K, N, accumulate, rng), e_bf = check<__nv_bfloat16>(M, K, N, accumulate, rng);
        const bool ok = e16 < 1e-2 && e_bf < 1e-2;
        failures += !ok;
        std::printf("  M %ld K %5ld N %5ld %s: fp16 %.2e bf16 %.2e %s\n", M, K, N, accumulate ? "sum " : "    ", e16, e_bf,
                    ok ? "ok" : "FAILED");
      }
    }
  }
  std::printf("speed (fp16, median of 50, 4 rotated weight sets):\n");
  for (const auto [K, N] : {std::pair<int64_t, int64_t>{2560, 12960}, {5120, 2560}, {2560, 32000}, {2048, 8256},
                            {4096, 2048}, {4096, 160}, {128, 4096}, {80, 5120}}) {
    for (const int64_t M : {1, 6}) {
      const double ms = time_ms(M, K, N);
      std::printf("  B %ld  %5ld -> %5ld: %8.4f ms  %7.1f GB/s\n", M, K, N, ms, 2.0 * K * N / (ms * 1e6));
    }
  }
  std::printf("%s\n", failures == 0 ? "all correct" : "FAILURES");
  return failures == 0 ? 0 : 1;
}
