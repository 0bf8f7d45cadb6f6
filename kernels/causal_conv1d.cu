// The causal depthwise convolution with SiLU, forward and backward (see causal_conv1d.h). Memory-bound:
// one thread per output element, a block per (batch, channel, tile of 256 steps) so that the weight row
// is shared and the reads along time coalesce; the W-1 neighbours each element needs come through L1.
#include "causal_conv1d.h"

#include "device_math.cuh"

namespace densessm::kernels {
namespace {

constexpr int kTile = 256;  // steps per block, one per thread
constexpr int kMaxWidth = 4;

// x at step s of row (b, c), s possibly negative: then the initial state or zero.
template <typename T>
__device__ __forceinline__ float padded_input(const ConvParams& p, const T* x_row, int64_t row, int64_t s) {
  if (s >= 0) return to_float(x_row[s]);
  const int64_t past = p.width - 1;
  return p.initial ? to_float(static_cast<const T*>(p.initial)[row * past + past + s]) : 0.0f;
}

// bias + sum_j weight[j] x[t + j - (W-1)]: the convolution before its SiLU.
template <typename T>
__device__ __forceinline__ float convolve(const ConvParams& p, const T* x_row, int64_t row, const float* w, float bias,
                                          int64_t t) {
  float acc = bias;
#pragma unroll
  for (int j = 0; j < kMaxWidth; ++j) {
    if (j < p.width) acc += w[j] * padded_input(p, x_row, row, t + j - (p.width - 1));
  }
  return acc;
}

template <typename T>
__global__ void __launch_bounds__(kTile) conv_forward_kernel(const ConvParams p) {
  const int64_t c = blockIdx.y, b = blockIdx.z, row = b * p.channels + c;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.x;
  if (t >= p.length) return;
  float w[kMaxWidth];
#pragma unroll
  for (int j = 0; j < kMaxWidth; ++j) w[j] = j < p.width ? p.weight[c * p.width + j] : 0.0f;
  const T* x_row = static_cast<const T*>(p.x) + row * p.length;
  const float bias = p.bias ? p.bias[c] : 0.0f;
  static_cast<T*>(p.out)[row * p.length + t] = from_float<T>(silu(convolve(p, x_row, row, w, bias, t)));
}

template <typename T>
__global__ void __launch_bounds__(kTile) conv_backward_kernel(const ConvBackwardParams q) {
  const ConvParams& p = q.forward;
  __shared__ float g_pre[kTile + kMaxWidth - 1];     // dL/d(pre-activation) of the tile and W-1 steps after it
  __shared__ float partial[kTile / 32][kMaxWidth + 1];  // per warp: weight grads, bias grad
  const int64_t c = blockIdx.y, b = blockIdx.z, row = b * p.channels + c;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int W = static_cast<int>(p.width);
  float w[kMaxWidth];
#pragma unroll
  for (int j = 0; j < kMaxWidth; ++j) w[j] = j < W ? p.weight[c * W + j] : 0.0f;
  const float bias = p.bias ? p.bias[c] : 0.0f;
  const T* x_row = static_cast<const T*>(p.x) + row * p.length;
  const T* gy_row = static_cast<const T*>(q.grad_out) + row * p.length;
  for (int i = threadIdx.x; i < kTile + W - 1; i += kTile) {
    const int64_t t = t0 + i;
    g_pre[i] = t < p.length ? to_float(gy_row[t]) * silu_grad(convolve(p, x_row, row, w, bias, t)) : 0.0f;
  }
  __syncthreads();

  const int64_t t = t0 + threadIdx.x;
  float sums[kMaxWidth + 1] = {};
  if (t < p.length) {
    // x_t feeds the outputs t .. t+W-1, output t+W-1-j through tap j.
    float gx = 0.0f;
#pragma unroll
    for (int j = 0; j < kMaxWidth; ++j) {
      if (j < W) gx += w[j] * g_pre[threadIdx.x + W - 1 - j];
    }
    static_cast<T*>(q.grad_x)[row * p.length + t] = from_float<T>(gx);
    const float g = g_pre[threadIdx.x];
#pragma unroll
    for (int j = 0; j < kMaxWidth; ++j) {
      if (j < W) sums[j] = g * padded_input(p, x_row, row, t + j - (W - 1));
    }
    sums[kMaxWidth] = g;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int j = 0; j <= kMaxWidth; ++j) {
    for (int offset = 16; offset >= 1; offset >>= 1) sums[j] += __shfl_xor_sync(0xffffffffu, sums[j], offset);
    if (lane == 0) partial[warp][j] = sums[j];
  }
  __syncthreads();
  if (threadIdx.x <= W) {
    const int j = threadIdx.x == W ? kMaxWidth : threadIdx.x;  // the bias's sum is in the last column
    float sum = 0.0f;
    for (int v = 0; v < kTile / 32; ++v) sum += partial[v][j];
    q.grad_weight[(row * gridDim.x + blockIdx.x) * (W + 1) + threadIdx.x] = sum;
  }
}

bool valid(const ConvParams& p) {
  return p.batch > 0 && p.channels > 0 && p.length > 0 && p.width >= 2 && p.width <= kMaxWidth &&
         p.channels <= 65535 && p.batch <= 65535;
}

dim3 grid_of(const ConvParams& p) {
  return dim3(static_cast<unsigned>(causal_conv1d_backward_tiles(p.length)), static_cast<unsigned>(p.channels),
              static_cast<unsigned>(p.batch));
}

}  // namespace

int64_t causal_conv1d_backward_tiles(int64_t length) { return (length + kTile - 1) / kTile; }

cudaError_t causal_conv1d_forward(const ConvParams& p, cudaStream_t stream) {
  if (!valid(p)) return cudaErrorInvalidValue;
  with_storage_type(p.dtype, [&](auto tag) {
    conv_forward_kernel<decltype(tag)><<<grid_of(p), kTile, 0, stream>>>(p);
  });
  return cudaGetLastError();
}

cudaError_t causal_conv1d_backward(const ConvBackwardParams& q, cudaStream_t stream) {
  if (!valid(q.forward)) return cudaErrorInvalidValue;
  with_storage_type(q.forward.dtype, [&](auto tag) {
    conv_backward_kernel<decltype(tag)><<<grid_of(q.forward), kTile, 0, stream>>>(q);
  });
  return cudaGetLastError();
}

}  // namespace densessm::kernels
