// Checks both retention prepare kernels of kernels/decode_step.cu against float64 at the dense RetNet 1.3B decode
// shape (B 6, K 1280, E 5120, 4 heads, fusion), then times each in a CUDA graph (no LibTorch; on the GPU machine):
//   nvcc -O3 -std=c++17 -arch=sm_90a -Ikernels tools/decode_prepare_probe.cu kernels/decode_step.cu -o /tmp/p && /tmp/p
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <type_traits>
#include <vector>

#include <cuda_fp16.h>

#include "decode_step.h"
#include "probe_common.cuh"

using probe::upload;

using densessm::kernels::DType;
using densessm::kernels::PrepareKernel;
using densessm::kernels::RetentionPrepareParams;

constexpr int64_t kBatch = 6, kHeads = 4, kKeys = 1280, kValues = 5120, kHeadKeys = kKeys / kHeads;
constexpr int64_t kWidth = 2 * kKeys + 2 * kValues + 160;  // y's row: q, k, v, gate, the transitions' inner

using probe::to_double;
using probe::to_storage;

double silu(double v) { return v / (1.0 + std::exp(-v)); }

// The inputs on the host (rounded to T) and the device, and the outputs on the device (q, k, v, g, hidden_k,
// hidden_v).
template <typename T>
struct Problem {
  std::vector<T> y, k_gate, v_gate, previous_k, previous_v, k_norm, v_norm;
  std::vector<double> angles;
  std::vector<int64_t> position;
  RetentionPrepareParams p{};
  T* out[6];
  std::vector<void*> owned;

  explicit Problem(std::mt19937& rng) {
    std::normal_distribution<float> normal;
    const auto fill = [&](std::vector<T>& v, int64_t n, float offset, float scale) {
      v.resize(n);
      for (auto& x : v) x = to_storage<T>(offset + scale * normal(rng));
    };
    fill(y, kBatch * kWidth, 0, 1);
    fill(k_gate, kBatch * kKeys, 0, 1);
    fill(v_gate, kBatch * kValues, 0, 1);
    fill(previous_k, kBatch * kKeys, 0, 1);
    fill(previous_v, kBatch * kValues, 0, 1);
    fill(k_norm, kKeys, 1, 0.1f);
    fill(v_norm, kValues, 1, 0.1f);
    for (int64_t d = 0; d < kHeadKeys; ++d) angles.push_back(std::pow(1e4, -double(d / 2 * 2) / kHeadKeys));
    std::uniform_int_distribution<int64_t> positions(0, 60000);
    for (int64_t b = 0; b < kBatch; ++b) position.push_back(b == 0 ? 50000 : positions(rng));
    p.y = own(upload(y));
    p.k_gate = own(upload(k_gate));
    p.v_gate = own(upload(v_gate));
    p.previous_k = own(upload(previous_k));
    p.previous_v = own(upload(previous_v));
    p.k_norm = own(upload(k_norm));
    p.v_norm = own(upload(v_norm));
    p.angles = static_cast<const double*>(own(upload(angles)));
    p.position = static_cast<const int64_t*>(own(upload(position)));
    for (int i = 0; i < 6; ++i) out[i] = static_cast<T*>(own(upload(std::vector<T>(kBatch * size(i)))));
    p.q = out[0], p.k = out[1], p.v = out[2], p.g = out[3], p.hidden_k = out[4], p.hidden_v = out[5];
    p.batch = kBatch;
    p.y_stride = kWidth;
    p.key_dim = kKeys;
    p.value_dim = kValues;
    p.head_qk_dim = kHeadKeys;
    p.key_scale = float(1.0 / std::sqrt(double(kHeadKeys)));
    p.eps = 1e-6f;
    p.dtype = std::is_same_v<T, __half> ? DType::kFloat16 : DType::kFloat32;
  }
  ~Problem() {
    for (void* d : owned) cudaFree(d);
  }
  void* own(void* d) {
    owned.push_back(d);
    return d;
  }
  static int64_t size(int i) { return i == 0 || i == 1 || i == 4 ? kKeys : kValues; }

  // The outputs in float64 (the kernel's formulas in kernels/decode_step.h), in the order of `out`.
  std::vector<std::vector<double>> reference() const {
    std::vector<std::vector<double>> exact(6);
    for (int64_t b = 0; b < kBatch; ++b) {
      const T* row = y.data() + b * kWidth;
      std::vector<double> q(kKeys), hk(kKeys), k(kKeys), hv(kValues), v(kValues), g(kValues);
      double key_squares = 0, value_squares = 0;
      for (int64_t c = 0; c < kKeys; ++c) {
        q[c] = silu(to_double(row[c]));
        hk[c] = silu(to_double(row[kKeys + c])) / std::sqrt(double(kHeadKeys));
        k[c] = hk[c] + silu(to_double(k_gate[b * kKeys + c])) * to_double(previous_k[b * kKeys + c]);
        key_squares += k[c] * k[c];
      }
      for (int64_t c = 0; c < kValues; ++c) {
        hv[c] = silu(to_double(row[2 * kKeys + c]));
        g[c] = silu(to_double(row[2 * kKeys + kValues + c]));
        v[c] = hv[c] + silu(to_double(v_gate[b * kValues + c])) * to_double(previous_v[b * kValues + c]);
        value_squares += v[c] * v[c];
      }
      const double rk = 1 / std::sqrt(key_squares / kKeys + 1e-6), rv = 1 / std::sqrt(value_squares / kValues + 1e-6);
      for (int64_t c = 0; c < kKeys; ++c) k[c] *= rk * to_double(k_norm[c]);
      for (int64_t c = 0; c < kValues; ++c) v[c] *= rv * to_double(v_norm[c]);
      for (int64_t c = 0; c < kKeys; c += 2) {
        const double theta = double(position[b]) * angles[c % kHeadKeys], cs = std::cos(theta), sn = std::sin(theta);
        for (auto* x : {&q, &k}) {
          const double x0 = (*x)[c], x1 = (*x)[c + 1];
          (*x)[c] = x0 * cs - x1 * sn;
          (*x)[c + 1] = x1 * cs + x0 * sn;
        }
      }
      for (int i = 0; i < 6; ++i) {
        const std::vector<double>* part[] = {&q, &k, &v, &g, &hk, &hv};
        exact[i].insert(exact[i].end(), part[i]->begin(), part[i]->end());
      }
    }
    return exact;
  }
};

// The largest relative error (norm) over the six outputs of `kernel` against float64.
template <typename T>
double check(PrepareKernel kernel, std::mt19937& rng) {
  Problem<T> problem(rng);
  for (int i = 0; i < 6; ++i) CHECK(cudaMemset(problem.out[i], 0xff, kBatch * Problem<T>::size(i) * sizeof(T)));  // NaN
  CHECK(densessm::kernels::retention_decode_prepare(problem.p, nullptr, kernel));
  CHECK(cudaDeviceSynchronize());
  const auto exact = problem.reference();
  double worst = 0;
  for (int i = 0; i < 6; ++i) {
    std::vector<T> got(exact[i].size());
    CHECK(cudaMemcpy(got.data(), problem.out[i], got.size() * sizeof(T), cudaMemcpyDeviceToHost));
    double diff = 0, norm = 0;
    for (size_t j = 0; j < got.size(); ++j) {
      const double g = to_double(got[j]);
      if (!std::isfinite(g)) return INFINITY;
      diff += (g - exact[i][j]) * (g - exact[i][j]);
      norm += exact[i][j] * exact[i][j];
    }
    worst = std::max(worst, std::sqrt(diff / std::max(norm, 1e-300)));
  }
  return worst;
}

// Microseconds per launch (fp16) inside a CUDA graph of 24 launches, median of 15 replays.
double time_us(PrepareKernel kernel, std::mt19937& rng) {
  Problem<__half> problem(rng);
  return 1e3 * probe::graph_ms_per_launch(24, 15, [&](int, cudaStream_t stream) {
    return densessm::kernels::retention_decode_prepare(problem.p, stream, kernel);
  });
}

int main() {
  std::mt19937 rng(11);
  int failures = 0;
  std::printf("retention prepare, B %ld K %ld E %ld, %ld heads, dense fusion, positions up to 60000\n", kBatch, kKeys,
              kValues, kHeads);
  std::printf("correctness (largest relative error of q, k, v, g, hidden_k, hidden_v against float64):\n");
  for (const auto [kernel, name] : {std::pair{PrepareKernel::kCluster, "cluster"}, std::pair{PrepareKernel::kRowwise, "rowwise"}}) {
    const double e16 = check<__half>(kernel, rng), e32 = check<float>(kernel, rng);
    const bool ok = e16 < 1e-2 && e32 < 1e-5;
    failures += !ok;
    std::printf("  %-8s fp16 %.2e (limit 1e-2)  fp32 %.2e (limit 1e-5)  %s\n", name, e16, e32, ok ? "ok" : "FAILED");
  }
  time_us(PrepareKernel::kCluster, rng);  // clocks up before the first figure
  std::printf("speed in a CUDA graph (fp16, us per launch, median of 15 replays of 24 launches):\n");
  for (const auto [kernel, name] : {std::pair{PrepareKernel::kCluster, "cluster"}, std::pair{PrepareKernel::kRowwise, "rowwise"}}) {
    std::printf("  %-8s %.2f\n", name, time_us(kernel, rng));
  }
  return failures == 0 ? 0 : 1;
}
