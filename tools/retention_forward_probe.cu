// A standalone check of the chunkwise retention forwards of kernels/chunk_retention.cu for the GPU machine
// when a whole build does not fit the time left: each forward that DENSESSM_RETENTION_FUSED selects (0: the
// two passes, 1: the fused kernel, 2: the fused kernel with precomputed scores) against a float64 CPU
// recurrence (relative error of the output and the final state, bfloat16, outputs poisoned with NaN), the
// two fused forwards against each other (they should agree to the bit), and each forward's speed at the
// training shapes (bfloat16, B 8, T 2048; H 4 dk 320 dv 1280 and H 16 dk = dv = 128; CUDA events around
// each call, 3 warm-up calls, median of 20, inputs rotated over 3 copies so L2 does not flatter). The test
// suite's ChunkRetentionKernel cases are the real tests.
//   nvcc -O3 -std=c++17 -arch=sm_90a -Ikernels tools/retention_forward_probe.cu kernels/chunk_retention.cu -o /tmp/rp
//   /tmp/rp
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include <cuda_bf16.h>

#include "chunk_retention.h"
#include "probe_common.cuh"

using probe::download;
using probe::upload;

using densessm::kernels::DType;
using densessm::kernels::RetentionForwardParams;
using densessm::kernels::RetentionShape;

using bf16 = __nv_bfloat16;

struct Shape {
  int64_t B, H, T, dk, dv;
};

struct Variant {
  const char* name;
  const char* env;  // DENSESSM_RETENTION_FUSED
};
const Variant kVariants[] = {{"two passes", "0"}, {"fused", "1"}, {"fused, scores", "2"}};

// The decays of the model's heads, g_h = 1 - 2^(-5-h).
std::vector<double> decays(int64_t H) {
  std::vector<double> g(H);
  for (int64_t h = 0; h < H; ++h) g[h] = 1.0 - std::pow(2.0, -5.0 - static_cast<double>(h));
  return g;
}

// One forward as DENSESSM_RETENTION_FUSED=env selects, with a workspace of the size it asks for.
cudaError_t run_forward(const Variant& variant, RetentionForwardParams p, cudaStream_t stream, void** workspace,
                        size_t* workspace_bytes) {
  setenv("DENSESSM_RETENTION_FUSED", variant.env, 1);
  const size_t bytes = densessm::kernels::chunk_retention_forward_workspace(p.shape) * sizeof(bf16);
  if (bytes > *workspace_bytes) {
    CHECK(cudaFree(*workspace));
    CHECK(cudaMalloc(workspace, bytes));
    CHECK(cudaMemset(*workspace, 0xff, bytes));  // NaN in bfloat16
    *workspace_bytes = bytes;
  }
  p.workspace = bytes > 0 ? *workspace : nullptr;
  return densessm::kernels::chunk_retention_forward(p, stream);
}

double relative_error(const std::vector<double>& got, const std::vector<double>& exact) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    diff += (got[i] - exact[i]) * (got[i] - exact[i]);
    norm += exact[i] * exact[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-300));
}

// Each forward against the float64 recurrence S_t = g S_{t-1} + k_t^T v_t (S_{-1} the initial state),
// o_t = q_t S_t / sqrt(w_n), w_n = (1 - g^(n+1)) / (1 - g), n = offset[b] + t. Returns the failures.
int check(const Shape& s, bool with_state, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  const int64_t BH = s.B * s.H;
  std::vector<bf16> q(BH * s.T * s.dk), k(q.size()), v(BH * s.T * s.dv);
  for (auto& x : q) x = __float2bfloat16_rn(normal(rng));
  for (auto& x : k) x = __float2bfloat16_rn(normal(rng) / std::sqrt(static_cast<float>(s.dk)));
  for (auto& x : v) x = __float2bfloat16_rn(normal(rng));
  std::vector<float> initial(with_state ? BH * s.dk * s.dv : 0);
  for (auto& x : initial) x = normal(rng);
  std::vector<int64_t> offset(s.B);
  for (auto& x : offset) x = std::uniform_int_distribution<int64_t>(0, 999)(rng);
  const std::vector<double> g = decays(s.H);

  std::vector<double> o_exact(v.size()), state_exact(BH * s.dk * s.dv);
  for (int64_t bh = 0; bh < BH; ++bh) {
    const double gh = g[bh % s.H];
    double* S = state_exact.data() + bh * s.dk * s.dv;
    for (int64_t i = 0; i < s.dk * s.dv; ++i) S[i] = with_state ? initial[bh * s.dk * s.dv + i] : 0.0;
    for (int64_t t = 0; t < s.T; ++t) {
      const bf16* qt = q.data() + (bh * s.T + t) * s.dk;
      const bf16* kt = k.data() + (bh * s.T + t) * s.dk;
      const bf16* vt = v.data() + (bh * s.T + t) * s.dv;
      for (int64_t a = 0; a < s.dk; ++a) {
        const double ka = __bfloat162float(kt[a]);
        for (int64_t c = 0; c < s.dv; ++c) S[a * s.dv + c] = gh * S[a * s.dv + c] + ka * __bfloat162float(vt[c]);
      }
      const double n = static_cast<double>(offset[bh / s.H] + t);
      const double inverse_norm = 1.0 / std::sqrt((1.0 - std::pow(gh, n + 1.0)) / (1.0 - gh));
      double* ot = o_exact.data() + (bh * s.T + t) * s.dv;
      for (int64_t c = 0; c < s.dv; ++c) ot[c] = 0.0;
      for (int64_t a = 0; a < s.dk; ++a) {
        const double qa = __bfloat162float(qt[a]);
        for (int64_t c = 0; c < s.dv; ++c) ot[c] += qa * S[a * s.dv + c];
      }
      for (int64_t c = 0; c < s.dv; ++c) ot[c] *= inverse_norm;
    }
  }

  bf16 *dq = upload(q), *dk = upload(k), *dv = upload(v);
  float* dinitial = with_state ? upload(initial) : nullptr;
  int64_t* doffset = upload(offset);
  double* ddecays = upload(g);
  bf16* dout;
  float* dfinal;
  CHECK(cudaMalloc(&dout, v.size() * sizeof(bf16)));
  CHECK(cudaMalloc(&dfinal, state_exact.size() * sizeof(float)));
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  const RetentionShape shape{s.B, s.H, s.T, s.dk, s.dv, ddecays, doffset, DType::kBFloat16};
  std::printf("  B %ld H %ld T %ld dk %ld dv %ld %s:", s.B, s.H, s.T, s.dk, s.dv,
              with_state ? "with state" : "from zero");
  int failures = 0;
  std::vector<std::vector<bf16>> outputs;
  for (const Variant& variant : kVariants) {
    CHECK(cudaMemset(dout, 0xff, v.size() * sizeof(bf16)));  // NaN
    CHECK(cudaMemset(dfinal, 0xff, state_exact.size() * sizeof(float)));
    const RetentionForwardParams p{shape, dq, dk, dv, dinitial, dout, dfinal, nullptr};
    CHECK(run_forward(variant, p, nullptr, &workspace, &workspace_bytes));
    CHECK(cudaDeviceSynchronize());
    outputs.push_back(download(dout, v.size()));
    std::vector<double> o_got(v.size()), state_got(state_exact.size());
    for (size_t i = 0; i < o_got.size(); ++i) o_got[i] = __bfloat162float(outputs.back()[i]);
    const std::vector<float> final_state = download(dfinal, state_exact.size());
    std::copy(final_state.begin(), final_state.end(), state_got.begin());
    const double eo = relative_error(o_got, o_exact), es = relative_error(state_got, state_exact);
    const bool ok = eo < 1e-2 && es < 1e-2;
    failures += !ok;
    std::printf("  %s o %.1e state %.1e%s", variant.name, eo, es, ok ? "" : " FAILED");
  }
  double differ = 0;  // the fused forwards, [1] and [2]
  for (size_t i = 0; i < v.size(); ++i)
    differ = std::max(differ, std::fabs(static_cast<double>(__bfloat162float(outputs[1][i])) -
                                        static_cast<double>(__bfloat162float(outputs[2][i]))));
  std::printf("  | max |fused - fused, scores| %.1e\n", differ);
  for (void* x : {static_cast<void*>(dq), static_cast<void*>(dk), static_cast<void*>(dv), static_cast<void*>(dinitial),
                  static_cast<void*>(doffset), static_cast<void*>(ddecays), static_cast<void*>(dout),
                  static_cast<void*>(dfinal), workspace})
    CHECK(cudaFree(x));
  return failures;
}

// Fills x with hashed values in [-scale, scale): inputs for the timings without a host round trip.
__global__ void fill(bf16* x, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    x[i] = __float2bfloat16_rn(scale * (static_cast<float>(h >> 8) * (2.0f / 16777216.0f) - 1.0f));
  }
}

// Median milliseconds per forward of each variant (no initial or final state, as the training forward).
void time_shape(const Shape& s) {
  constexpr int kCopies = 3, kWarmup = 3, kTimed = 20;
  const int64_t BH = s.B * s.H;
  const int64_t nq = BH * s.T * s.dk, nv = BH * s.T * s.dv;
  bf16 *q[kCopies], *k[kCopies], *v[kCopies], *out;
  for (int c = 0; c < kCopies; ++c) {
    CHECK(cudaMalloc(&q[c], nq * sizeof(bf16)));
    CHECK(cudaMalloc(&k[c], nq * sizeof(bf16)));
    CHECK(cudaMalloc(&v[c], nv * sizeof(bf16)));
    fill<<<1024, 256>>>(q[c], nq, 3 * c + 1, 1.7f);
    fill<<<1024, 256>>>(k[c], nq, 3 * c + 2, 1.7f / std::sqrt(static_cast<float>(s.dk)));
    fill<<<1024, 256>>>(v[c], nv, 3 * c + 3, 1.7f);
  }
  CHECK(cudaMalloc(&out, nv * sizeof(bf16)));
  int64_t* offset = upload(std::vector<int64_t>(s.B, 0));
  double* ddecays = upload(decays(s.H));
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  const RetentionShape shape{s.B, s.H, s.T, s.dk, s.dv, ddecays, offset, DType::kBFloat16};
  const double flops = static_cast<double>(BH * s.T) * (128.0 * (s.dk + s.dv) + 4.0 * s.dk * s.dv);
  std::printf("  B %ld H %2ld T %ld dk %3ld dv %4ld:", s.B, s.H, s.T, s.dk, s.dv);
  for (const Variant& variant : kVariants) {
    std::vector<float> times;
    for (int i = 0; i < kWarmup + kTimed; ++i) {
      const int c = i % kCopies;
      const RetentionForwardParams p{shape, q[c], k[c], v[c], nullptr, out, nullptr, nullptr};
      CHECK(cudaEventRecord(start, stream));
      CHECK(run_forward(variant, p, stream, &workspace, &workspace_bytes));
      CHECK(cudaEventRecord(stop, stream));
      CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      CHECK(cudaEventElapsedTime(&ms, start, stop));
      if (i >= kWarmup) times.push_back(ms);
    }
    std::sort(times.begin(), times.end());
    const double ms = times[times.size() / 2];
    std::printf("  %s %.3f ms (%.0f TFLOP/s)", variant.name, ms, flops / (ms * 1e9));
  }
  std::printf("\n");
  CHECK(cudaStreamDestroy(stream));
  for (int c = 0; c < kCopies; ++c) {
    CHECK(cudaFree(q[c]));
    CHECK(cudaFree(k[c]));
    CHECK(cudaFree(v[c]));
  }
  for (void* x : {static_cast<void*>(out), static_cast<void*>(offset), static_cast<void*>(ddecays), workspace})
    CHECK(cudaFree(x));
}

int main() {
  std::mt19937 rng(7);
  int failures = 0;
  std::printf("correctness (bfloat16, relative error against float64; limit 1e-2):\n");
  failures += check({2, 2, 130, 320, 1280}, true, rng);
  failures += check({2, 3, 150, 128, 128}, false, rng);
  failures += check({1, 2, 70, 37, 90}, true, rng);
  std::printf("  %s\n", failures == 0 ? "all correct" : "FAILURES");
  std::printf("speed (bfloat16, median ms per forward, CUDA events):\n");
  time_shape({8, 4, 2048, 320, 1280});
  time_shape({8, 16, 2048, 128, 128});
  return failures == 0 ? 0 : 1;
}
