// A standalone check of kernels/small_matmul.cu for the GPU machine when a whole build does not fit the
// time left: correctness against a float64 CPU product (relative error, every output written, the
// in-place sum, every depth split) and the kernel's speed at the decode shapes as a decode step sees it:
// launches captured in a CUDA graph, weights rotated over more than L2 holds, median of 15 replays; with
// -DPROBE_CUBLAS -lcublas also cuBLAS's (cublasGemmEx, as torch::mm calls it). The test suite's
// SmallMatmulKernel cases are the real tests. tools/small_matmul_probe.sh builds and runs variants.
//   nvcc -O3 -std=c++17 -arch=sm_90a -Ikernels tools/small_matmul_probe.cu kernels/small_matmul.cu -o /tmp/probe
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#ifdef PROBE_CUBLAS
#include <cublas_v2.h>
#endif

#include "small_matmul.h"
#include "probe_common.cuh"

using densessm::kernels::DType;
using densessm::kernels::SmallMatmulParams;

using probe::to_double;
using probe::to_storage;

// Relative error (norm) of the kernel against float64; with accumulate, out starts as `start`.
template <typename T>
double check(int64_t M, int64_t K, int64_t N, bool accumulate, int split, std::mt19937& rng) {
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
  const SmallMatmulParams p{dx + 8, dw, dout, M, N, K, stride, N, accumulate, dtype, split};
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

// Milliseconds per product inside a CUDA graph of kLaunches products over rotated weight copies.
// split < 0: cuBLAS.
double time_ms(int64_t M, int64_t K, int64_t N, int split, bool accumulate) {
  constexpr int kLaunches = 24, kReplays = 15;
  const size_t weight_bytes = size_t(N) * K * sizeof(__half);
  const int sets = std::clamp<int>(int(256e6 / weight_bytes) + 1, 2, kLaunches);
  std::vector<__half*> ws(sets);
  __half *dx, *dout;
  CHECK(cudaMalloc(&dx, M * K * sizeof(__half)));
  CHECK(cudaMalloc(&dout, M * N * sizeof(__half)));
  CHECK(cudaMemset(dx, 0x3c, M * K * sizeof(__half)));
  for (auto& w : ws) {
    CHECK(cudaMalloc(&w, weight_bytes));
    CHECK(cudaMemset(w, 0x1c, weight_bytes));
  }
#ifdef PROBE_CUBLAS
  static cublasHandle_t handle = nullptr;
  if (handle == nullptr && cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) std::exit(1);
#endif
  // The first call (before the capture) sets up cuBLAS's workspace and the kernel's attributes.
  const double ms = probe::graph_ms_per_launch(kLaunches, kReplays, [&](int i, cudaStream_t stream) -> cudaError_t {
    if (split < 0) {
#ifdef PROBE_CUBLAS
      // out (M x N, row-major) is N x M column-major: W^T (op T of the K x N column-major W) times x (K x M).
      const float one = 1.0f, zero = 0.0f, beta = accumulate ? one : zero;
      cublasSetStream(handle, stream);
      if (cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K), &one, ws[i % sets], CUDA_R_16F, int(K),
                       dx, CUDA_R_16F, int(K), &beta, dout, CUDA_R_16F, int(N), CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
        std::printf("cublasGemmEx failed\n");
        std::exit(1);
      }
#endif
      return cudaSuccess;
    }
    const SmallMatmulParams p{dx, ws[i % sets], dout, M, N, K, K, N, accumulate, DType::kFloat16, split};
    return densessm::kernels::small_matmul(p, stream);
  });
  for (auto* w : ws) CHECK(cudaFree(w));
  CHECK(cudaFree(dx));
  CHECK(cudaFree(dout));
  return ms;
}

int main(int argc, char** argv) {
  const bool sweep = argc > 1 && std::string(argv[1]) == "--sweep";  // every split, not only the chosen one
  std::mt19937 rng(7);
  int failures = 0;
  std::printf("correctness (relative error against float64; limit 1e-2; splits: chosen, 1, 2, 3, 8):\n");
  for (const int64_t M : {1, 6, 8}) {
    for (const auto [K, N] : {std::pair<int64_t, int64_t>{8, 17}, {40, 16}, {136, 15}, {2560, 160}, {4096, 33}}) {
      for (const int split : {0, 1, 2, 3, 8}) {
        for (const bool accumulate : {false, true}) {
          const double e16 = check<__half>(M, K, N, accumulate, split, rng);
          const double e_bf = check<__nv_bfloat16>(M, K, N, accumulate, split, rng);
          const bool ok = e16 < 1e-2 && e_bf < 1e-2;
          failures += !ok;
          if (!ok) {
            std::printf("  M %ld K %5ld N %5ld split %d %s: fp16 %.2e bf16 %.2e FAILED\n", M, K, N, split,
                        accumulate ? "sum" : "", e16, e_bf);
          }
        }
      }
    }
  }
  std::printf("  %s\n", failures == 0 ? "all correct" : "FAILURES");
  time_ms(6, 2560, 12960, 1, false);  // clocks up before the first figure
  std::printf("speed in a CUDA graph (fp16, us per product, GB/s of the weights; +: into the output, beta 1):\n");
  for (const auto [K, N] : {std::pair<int64_t, int64_t>{2560, 12960}, {5120, 2560}, {2560, 32000}, {2048, 8256},
                            {4096, 2048}, {4096, 160}, {128, 4096}}) {
    if (sweep && N > 4096) continue;
    for (const int64_t M : {1, 6}) {
      for (const bool accumulate : {false, true}) {
        if (accumulate && !sweep) continue;
        std::printf("  B %ld %5ld -> %5ld%s:", M, K, N, accumulate ? "+" : " ");
        std::vector<int> splits{0};
        if (sweep) splits = {0, 1, 2, 3, 4};
#ifdef PROBE_CUBLAS
        splits.push_back(-1);
#endif
        for (const int split : splits) {
          const double ms = time_ms(M, K, N, split, accumulate);
          const char* name = split < 0 ? "cublas" : split == 0 ? "auto" : "s";
          std::printf("  %s%s %.1f (%.0f)", name, split > 0 ? std::to_string(split).c_str() : "", ms * 1e3,
                      2.0 * K * N / (ms * 1e6));
        }
        std::printf("\n");
      }
    }
  }
  return failures == 0 ? 0 : 1;
}
