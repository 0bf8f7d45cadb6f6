#include "retention_step.h"

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

template <typename T>
void launch(const RetentionStepParams& p, cudaStream_t stream) {
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
