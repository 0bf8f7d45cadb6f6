#include "retention_step.h"

#include <cstdint>

#include "device_math.cuh"

namespace densessm::kernels {
namespace {

// A block covers 32 state columns of one (batch, head); its 8 rows of threads split the dk state rows
// and add their partial outputs in shared memory. Consecutive threads touch consecutive columns, so
// the state (the bulk of the bytes) is read and written in full 128-byte lines.
constexpr int kColumns = 32;
constexpr int kRowGroups = 8;

template <typename T>
__global__ void __launch_bounds__(kColumns * kRowGroups) retention_step_kernel(RetentionStepParams p) {
  __shared__ float partial[kRowGroups][kColumns];
  const int64_t bh = blockIdx.y, b = bh / p.heads, h = bh % p.heads;
  const int64_t j = int64_t{blockIdx.x} * kColumns + threadIdx.x;
  const float decay = static_cast<float>(p.decays[h]);
  const T* q = static_cast<const T*>(p.q) + bh * p.dk;
  const T* k = static_cast<const T*>(p.k) + bh * p.dk;
  float acc = 0.0f;
  if (j < p.dv) {
    const float v = to_float(static_cast<const T*>(p.v)[bh * p.dv + j]);
    float* state = p.state + bh * p.dk * p.dv + j;
    for (int64_t i = threadIdx.y; i < p.dk; i += kRowGroups) {
      const float kv = decay * state[i * p.dv] + to_float(k[i]) * v;
      state[i * p.dv] = kv;
      acc += to_float(q[i]) * kv;
    }
  }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || j >= p.dv) return;
  for (int r = 1; r < kRowGroups; ++r) acc += partial[r][threadIdx.x];
  const double log_decay = log(p.decays[h]);
  const int64_t n = p.position != nullptr ? p.position[b] : 0;
  const double norm = rsqrt(expm1(static_cast<double>(n + 1) * log_decay) / expm1(log_decay));
  static_cast<T*>(p.o)[bh * p.dv + j] = from_float<T>(static_cast<float>(acc * norm));
}

// The state at its bandwidth: each thread owns 4 adjacent columns (one 16-byte load and store per state
// row), q and k of the (batch, head) wait in shared memory, and every thread issues kInFlight row loads
// before it uses any, so that many independent loads are in flight per SM (the state is read once and
// written once per step; nothing else is large). Needs dv % 4 == 0 and a 16-byte aligned state.
constexpr int kVectorColumns = 4 * kColumns;
constexpr int kInFlight = 8;

template <typename T>
__global__ void __launch_bounds__(kColumns * kRowGroups) retention_step_vector_kernel(RetentionStepParams p) {
  extern __shared__ float qk[];  // q then k of this (batch, head), 2 dk floats
  __shared__ float4 partial[kRowGroups][kColumns];
  const int64_t bh = blockIdx.y, b = bh / p.heads, h = bh % p.heads, dk = p.dk, dv4 = p.dv / 4;
  const int thread = threadIdx.y * kColumns + threadIdx.x;
  for (int64_t i = thread; i < dk; i += kColumns * kRowGroups) {
    qk[i] = to_float(static_cast<const T*>(p.q)[bh * dk + i]);
    qk[dk + i] = to_float(static_cast<const T*>(p.k)[bh * dk + i]);
  }
  __syncthreads();
  const int64_t j4 = int64_t{blockIdx.x} * kColumns + threadIdx.x;  // this thread's group of 4 columns
  const float decay = static_cast<float>(p.decays[h]);
  float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (j4 < dv4) {
    const T* v_row = static_cast<const T*>(p.v) + bh * p.dv + 4 * j4;
    const float4 v = make_float4(to_float(v_row[0]), to_float(v_row[1]), to_float(v_row[2]), to_float(v_row[3]));
    float4* state = reinterpret_cast<float4*>(p.state + bh * dk * p.dv) + j4;
    for (int64_t i0 = threadIdx.y; i0 < dk; i0 += kInFlight * kRowGroups) {
      float4 s[kInFlight];
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {
        const int64_t i = i0 + u * kRowGroups;
        if (i < dk) s[u] = state[i * dv4];
      }
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {
        const int64_t i = i0 + u * kRowGroups;
        if (i >= dk) break;
        const float q = qk[i], k = qk[dk + i];
        float4 kv;
        kv.x = decay * s[u].x + k * v.x;
        kv.y = decay * s[u].y + k * v.y;
        kv.z = decay * s[u].z + k * v.z;
        kv.w = decay * s[u].w + k * v.w;
        state[i * dv4] = kv;
        acc.x += q * kv.x;
        acc.y += q * kv.y;
        acc.z += q * kv.z;
        acc.w += q * kv.w;
      }
    }
  }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || j4 >= dv4) return;
  for (int r = 1; r < kRowGroups; ++r) {
    acc.x += partial[r][threadIdx.x].x;
    acc.y += partial[r][threadIdx.x].y;
    acc.z += partial[r][threadIdx.x].z;
    acc.w += partial[r][threadIdx.x].w;
  }
  const double log_decay = log(p.decays[h]);
  const int64_t n = p.position != nullptr ? p.position[b] : 0;
  const float norm = static_cast<float>(rsqrt(expm1(static_cast<double>(n + 1) * log_decay) / expm1(log_decay)));
  T* o = static_cast<T*>(p.o) + bh * p.dv + 4 * j4;
  o[0] = from_float<T>(acc.x * norm);
  o[1] = from_float<T>(acc.y * norm);
  o[2] = from_float<T>(acc.z * norm);
  o[3] = from_float<T>(acc.w * norm);
}

template <typename T>
void launch(const RetentionStepParams& p, cudaStream_t stream) {
  const bool vector = p.dv % 4 == 0 && reinterpret_cast<uintptr_t>(p.state) % 16 == 0 && p.dk <= 4096;
  if (vector) {
    const dim3 grid(static_cast<unsigned>((p.dv + kVectorColumns - 1) / kVectorColumns),
                    static_cast<unsigned>(p.batch * p.heads));
    const size_t shared = 2 * static_cast<size_t>(p.dk) * sizeof(float);
    retention_step_vector_kernel<T><<<grid, dim3(kColumns, kRowGroups), shared, stream>>>(p);
    return;
  }
  const dim3 grid(static_cast<unsigned>((p.dv + kColumns - 1) / kColumns), static_cast<unsigned>(p.batch * p.heads));
  retention_step_kernel<T><<<grid, dim3(kColumns, kRowGroups), 0, stream>>>(p);
}

}  // namespace

cudaError_t retention_step(const RetentionStepParams& p, cudaStream_t stream) {
  if (p.batch * p.heads * p.dv == 0) return cudaSuccess;
  switch (p.dtype) {
    case DType::kFloat32: launch<float>(p, stream); break;
    case DType::kFloat16: launch<__half>(p, stream); break;
    case DType::kBFloat16: launch<__nv_bfloat16>(p, stream); break;
  }
  return cudaGetLastError();
}

}  // namespace densessm::kernels
