// The causal depthwise convolution with SiLU, forward and backward (see causal_conv1d.h). Memory-bound: a
// block per (batch, channel, tile of 2048 steps), each thread 8 consecutive steps, so that the W-1
// neighbours a step needs are mostly the thread's own loads and the weight row is read once per block.
// The taps are kept right-aligned in four registers (w4[4 - W + j] = weight[j], zeros before), so every
// index below is a compile-time constant whatever W is.
#include "causal_conv1d.h"

#include <cstdint>

#include "device_math.cuh"

namespace densessm::kernels {
namespace {

constexpr int kMaxWidth = 4;
constexpr int kThreads = 256;
constexpr int kSteps = 8;                    // consecutive steps per thread
constexpr int kTile = kThreads * kSteps;     // steps per block
constexpr int kWindow = kSteps + kMaxWidth - 1;  // inputs a thread's steps read

// x at step s of a row, s possibly negative: then the initial state or zero; past the end, zero.
template <typename T>
__device__ __forceinline__ float padded_input(const ConvParams& p, const T* x_row, int64_t row, int64_t s) {
  if (s >= p.length) return 0.0f;
  if (s >= 0) return to_float(x_row[s]);
  const int64_t past = p.width - 1;
  if (s < -past) return 0.0f;
  return p.initial ? to_float(static_cast<const T*>(p.initial)[row * past + past + s]) : 0.0f;
}

struct Taps {
  float w[kMaxWidth];  // right-aligned weights
  float bias;
};

__device__ __forceinline__ Taps load_taps(const ConvParams& p, int64_t c) {
  Taps taps;
  const int W = static_cast<int>(p.width);
#pragma unroll
  for (int j = 0; j < kMaxWidth; ++j) {
    const int tap = j - (kMaxWidth - W);
    taps.w[j] = tap >= 0 ? p.weight[c * W + tap] : 0.0f;
  }
  taps.bias = p.bias ? p.bias[c] : 0.0f;
  return taps;
}

// The inputs x[t - 3 .. t + kSteps - 1] for the thread's steps t .. t + kSteps - 1.
template <typename T>
__device__ __forceinline__ void load_window(const ConvParams& p, const T* x_row, int64_t row, int64_t t,
                                            float (&window)[kWindow]) {
#pragma unroll
  for (int i = 0; i < kWindow; ++i) window[i] = padded_input(p, x_row, row, t - (kMaxWidth - 1) + i);
}

// The pre-activation of step t + k, from the window.
__device__ __forceinline__ float convolve(const Taps& taps, const float (&window)[kWindow], int k) {
  float acc = taps.bias;
#pragma unroll
  for (int j = 0; j < kMaxWidth; ++j) acc += taps.w[j] * window[k + j];
  return acc;
}

// A thread's kSteps steps as 16-byte words (one for 16-bit types, two for float): the forward moves them
// with vector loads and stores when they lie inside the row and are 16-byte aligned.
template <typename T>
struct StepWords {
  static constexpr int kWords = kSteps * static_cast<int>(sizeof(T)) / 16;
  static constexpr int kPerWord = kSteps / kWords;

  __device__ static bool usable(const void* at, int64_t t, int64_t length) {
    return t + kSteps <= length && reinterpret_cast<uintptr_t>(at) % 16 == 0;
  }
  /// window[kFirst + k] = at[k] for the kSteps steps.
  template <int kFirst, int kSize>
  __device__ static void load(const T* at, float (&window)[kSize]) {
#pragma unroll
    for (int i = 0; i < kWords; ++i) {
      const uint4 word = __ldg(reinterpret_cast<const uint4*>(at) + i);
      const T* values = reinterpret_cast<const T*>(&word);
#pragma unroll
      for (int e = 0; e < kPerWord; ++e) window[kFirst + i * kPerWord + e] = to_float(values[e]);
    }
  }
  __device__ static void store(T* at, const float (&v)[kSteps]) {
#pragma unroll
    for (int i = 0; i < kWords; ++i) {
      uint4 word;
      T* values = reinterpret_cast<T*>(&word);
#pragma unroll
      for (int e = 0; e < kPerWord; ++e) values[e] = from_float<T>(v[i * kPerWord + e]);
      reinterpret_cast<uint4*>(at)[i] = word;
    }
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads) conv_forward_kernel(const ConvParams p) {
  const int64_t c = blockIdx.y, b = blockIdx.z, row = b * p.channels + c;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.x * kSteps;
  if (t >= p.length) return;
  const Taps taps = load_taps(p, c);
  const T* x_row = static_cast<const T*>(p.x) + row * p.length;
  T* out = static_cast<T*>(p.out) + row * p.length;
  // Whole, aligned runs of steps (rows of a length that is a multiple of 8, as in training) go through
  // 16-byte accesses; the 2-byte accesses at a 16-byte stride between lanes used a fraction of each
  // transaction.
  const bool vector = StepWords<T>::usable(x_row + t, t, p.length) && StepWords<T>::usable(out + t, t, p.length);
  float window[kWindow];
  if (vector) {
#pragma unroll
    for (int i = 0; i < kMaxWidth - 1; ++i) window[i] = padded_input(p, x_row, row, t - (kMaxWidth - 1) + i);
    StepWords<T>::template load<kMaxWidth - 1>(x_row + t, window);
  } else {
    load_window(p, x_row, row, t, window);
  }
  float y[kSteps];
#pragma unroll
  for (int k = 0; k < kSteps; ++k) y[k] = silu(convolve(taps, window, k));
  if (vector) {
    StepWords<T>::store(out + t, y);
    return;
  }
#pragma unroll
  for (int k = 0; k < kSteps; ++k) {
    if (t + k < p.length) out[t + k] = from_float<T>(y[k]);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) conv_backward_kernel(const ConvBackwardParams q) {
  const ConvParams& p = q.forward;
  // dL/d(pre-activation) of the tile and the 3 steps after it, padded to whole float4s.
  __shared__ __align__(16) float g_pre[kTile + 4];
  __shared__ float partial[kThreads / 32][kMaxWidth + 1];  // per warp: right-aligned tap grads, bias grad
  const int64_t c = blockIdx.y, b = blockIdx.z, row = b * p.channels + c;
  const int64_t tile = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t t = tile + threadIdx.x * kSteps;
  const Taps taps = load_taps(p, c);
  const T* x_row = static_cast<const T*>(p.x) + row * p.length;
  const T* gy_row = static_cast<const T*>(q.grad_out) + row * p.length;

  float window[kWindow], g[kSteps];
  load_window(p, x_row, row, t, window);
#pragma unroll
  for (int k = 0; k < kSteps; ++k) {
    g[k] = t + k < p.length ? to_float(gy_row[t + k]) * silu_grad(convolve(taps, window, k)) : 0.0f;
    g_pre[threadIdx.x * kSteps + k] = g[k];
  }
  if (threadIdx.x < 4) {
    // The steps after the tile, whose outputs also read this tile's last inputs.
    const int64_t s = tile + kTile + threadIdx.x;
    float after[kWindow];
    load_window(p, x_row, row, s, after);
    g_pre[kTile + threadIdx.x] = s < p.length ? to_float(gy_row[s]) * silu_grad(convolve(taps, after, 0)) : 0.0f;
  }
  __syncthreads();

  // x_s feeds the outputs s .. s+3 (right-aligned taps): dL/dx_s = sum_j w4[j] g_pre[s + 3 - j].
  float next[kWindow + 1];
  const float4* g4 = reinterpret_cast<const float4*>(g_pre + threadIdx.x * kSteps);
#pragma unroll
  for (int v = 0; v < 3; ++v) {
    const float4 q4 = g4[v];
    next[4 * v] = q4.x, next[4 * v + 1] = q4.y, next[4 * v + 2] = q4.z, next[4 * v + 3] = q4.w;
  }
  T* grad_x = static_cast<T*>(q.grad_x) + row * p.length;
  float sums[kMaxWidth + 1] = {};
#pragma unroll
  for (int k = 0; k < kSteps; ++k) {
    float gx = 0.0f;
#pragma unroll
    for (int j = 0; j < kMaxWidth; ++j) gx += taps.w[j] * next[k + kMaxWidth - 1 - j];
    if (t + k < p.length) grad_x[t + k] = from_float<T>(gx);
#pragma unroll
    for (int j = 0; j < kMaxWidth; ++j) sums[j] += g[k] * window[k + j];
    sums[kMaxWidth] += g[k];
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int j = 0; j <= kMaxWidth; ++j) {
    for (int offset = 16; offset >= 1; offset >>= 1) sums[j] += __shfl_xor_sync(0xffffffffu, sums[j], offset);
    if (lane == 0) partial[warp][j] = sums[j];
  }
  __syncthreads();
  const int W = static_cast<int>(p.width);
  if (threadIdx.x <= W) {
    // Output column threadIdx.x: weight tap threadIdx.x (right-aligned column + 4 - W), then the bias.
    const int column = threadIdx.x == W ? kMaxWidth : threadIdx.x + kMaxWidth - W;
    float sum = 0.0f;
    for (int v = 0; v < kThreads / 32; ++v) sum += partial[v][column];
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
    conv_forward_kernel<decltype(tag)><<<grid_of(p), kThreads, 0, stream>>>(p);
  });
  return cudaGetLastError();
}

cudaError_t causal_conv1d_backward(const ConvBackwardParams& q, cudaStream_t stream) {
  if (!valid(q.forward)) return cudaErrorInvalidValue;
  with_storage_type(q.forward.dtype, [&](auto tag) {
    conv_backward_kernel<decltype(tag)><<<grid_of(q.forward), kThreads, 0, stream>>>(q);
  });
  return cudaGetLastError();
}

}  // namespace densessm::kernels
