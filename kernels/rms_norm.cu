#include "rms_norm.h"

#include "device_math.cuh"

namespace densessm::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kPerThread = static_cast<int>(kRmsNormMaxDim / kThreads);  // a thread's columns, at most
constexpr int kBackwardBlocks = 1024;

// One row per block.
template <typename T, typename W>
__global__ void __launch_bounds__(kThreads) forward_kernel(RmsNormForwardParams p) {
  __shared__ float shared[kWarps];
  const int64_t row = blockIdx.x;
  const T* x = static_cast<const T*>(p.x) + row * p.dim;
  const W* w = static_cast<const W*>(p.weight);
  float squares = 0.0f;
  for (int64_t i = threadIdx.x; i < p.dim; i += kThreads) {
    const float v = to_float(x[i]);
    squares += v * v;
  }
  const float r = rsqrtf(block_sum<kWarps>(squares, shared) / static_cast<float>(p.dim) + p.eps);
  if (threadIdx.x == 0) p.rstd[row] = r;
  T* y = static_cast<T*>(p.y) + row * p.dim;
  for (int64_t i = threadIdx.x; i < p.dim; i += kThreads) y[i] = from_float<T>(to_float(x[i]) * r * to_float(w[i]));
}

// A block walks rows blockIdx.x, blockIdx.x + gridDim.x, ...; thread t owns columns t, t + kThreads, ... and
// keeps their dw sums in registers, written once at the end to the block's row of dweight_partial.
template <typename T, typename W>
__global__ void __launch_bounds__(kThreads) backward_kernel(RmsNormBackwardParams p) {
  __shared__ float shared[kWarps];
  const W* w = static_cast<const W*>(p.weight);
  const float inverse_dim = 1.0f / static_cast<float>(p.dim);
  float dw[kPerThread];
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) dw[j] = 0.0f;
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const T* x = static_cast<const T*>(p.x) + row * p.dim;
    const T* dy = static_cast<const T*>(p.dy) + row * p.dim;
    float dot = 0.0f;
    for (int64_t i = threadIdx.x; i < p.dim; i += kThreads) dot += to_float(dy[i]) * to_float(w[i]) * to_float(x[i]);
    const float r = p.rstd[row];
    const float correction = block_sum<kWarps>(dot, shared) * inverse_dim * r * r * r;
    T* dx = static_cast<T*>(p.dx) + row * p.dim;
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int64_t i = threadIdx.x + int64_t{j} * kThreads;
      if (i >= p.dim) break;
      const float xi = to_float(x[i]), gi = to_float(dy[i]);
      dx[i] = from_float<T>(r * to_float(w[i]) * gi - xi * correction);
      dw[j] += gi * xi * r;
    }
  }
  float* partial = p.dweight_partial + int64_t{blockIdx.x} * p.dim;
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int64_t i = threadIdx.x + int64_t{j} * kThreads;
    if (i >= p.dim) break;
    partial[i] = dw[j];
  }
}

// Calls f(T{}, W{}) for the supported (storage, weight) pairs; false for any other.
template <typename F>
bool with_types(DType dtype, DType weight_dtype, F&& f) {
  if (weight_dtype == dtype) {
    with_storage_type(dtype, [&](auto t) { f(t, t); });
    return true;
  }
  if (weight_dtype != DType::kFloat32) return false;
  with_storage_type(dtype, [&](auto t) { f(t, float{}); });
  return true;
}

}  // namespace

int64_t rms_norm_backward_blocks(int64_t rows) { return rows < kBackwardBlocks ? rows : kBackwardBlocks; }

cudaError_t rms_norm_forward(const RmsNormForwardParams& p, cudaStream_t stream) {
  if (p.dim < 1 || p.dim > kRmsNormMaxDim) return cudaErrorInvalidValue;
  if (p.rows == 0) return cudaSuccess;
  const bool ok = with_types(p.dtype, p.weight_dtype, [&](auto t, auto w) {
    forward_kernel<decltype(t), decltype(w)><<<static_cast<unsigned>(p.rows), kThreads, 0, stream>>>(p);
  });
  return ok ? cudaGetLastError() : cudaErrorInvalidValue;
}

cudaError_t rms_norm_backward(const RmsNormBackwardParams& p, cudaStream_t stream) {
  if (p.dim < 1 || p.dim > kRmsNormMaxDim) return cudaErrorInvalidValue;
  if (p.rows == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(rms_norm_backward_blocks(p.rows));
  const bool ok = with_types(p.dtype, p.weight_dtype, [&](auto t, auto w) {
    backward_kernel<decltype(t), decltype(w)><<<blocks, kThreads, 0, stream>>>(p);
  });
  return ok ? cudaGetLastError() : cudaErrorInvalidValue;
}

}  // namespace densessm::kernels
