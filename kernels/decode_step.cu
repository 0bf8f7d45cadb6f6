#include "decode_step.h"

#include "device_math.cuh"

namespace densessm::kernels {
namespace {

// One block per row (per (row, part) in the retention prepare): a decode step has a handful of rows
// of a few thousand elements, so every row gets its own block and every reduction stays in the block.
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;

/// The sum of v over the block (every thread gets it). `shared` holds kWarps floats; the call ends
/// with a barrier, so the next call may reuse them.
__device__ float block_sum(float v, float* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = lane < kWarps ? shared[lane] : 0.0f;
  for (int offset = 16; offset > 0; offset >>= 1) total += __shfl_xor_sync(0xffffffffu, total, offset);
  __syncthreads();
  return total;
}

/// 1 / sqrt(mean of squares + eps) from a block's partial sums of squares over n elements.
__device__ float inverse_rms(float partial_squares, int64_t n, float eps, float* shared) {
  return rsqrtf(block_sum(partial_squares, shared) / static_cast<float>(n) + eps);
}

template <typename T>
__device__ __forceinline__ float load(const void* base, int64_t i) {
  return to_float(static_cast<const T*>(base)[i]);
}
template <typename T>
__device__ __forceinline__ void store(void* base, int64_t i, float v) {
  static_cast<T*>(base)[i] = from_float<T>(v);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) rms_norm_kernel(RmsNormParams p) {
  __shared__ float shared[kWarps];
  const T* x = static_cast<const T*>(p.x) + blockIdx.x * p.x_stride;
  float squares = 0.0f;
  for (int64_t i = threadIdx.x; i < p.dim; i += kThreads) {
    const float v = to_float(x[i]);
    squares += v * v;
  }
  const float r = inverse_rms(squares, p.dim, p.eps, shared);
  T* out = static_cast<T*>(p.out) + blockIdx.x * p.dim;
  for (int64_t i = threadIdx.x; i < p.dim; i += kThreads) {
    out[i] = from_float<T>(to_float(x[i]) * r * load<T>(p.weight, i));
  }
}

// Block (b, 0): queries and keys of row b; block (b, 1): values and the gate. The fused (pre-norm) value
// of an element is computed twice, once for the sum of squares and once for the output, instead of being
// kept: it is a few loads and a SiLU, and nothing limits the sizes.
template <typename T>
__global__ void __launch_bounds__(kThreads) retention_prepare_kernel(RetentionPrepareParams p) {
  __shared__ float shared[kWarps];
  const int64_t b = blockIdx.x, K = p.key_dim, E = p.value_dim;
  const T* y = static_cast<const T*>(p.y) + b * p.y_stride;
  const bool fuse = p.k_gate != nullptr;
  if (blockIdx.y == 0) {
    const T* yk = y + K;
    const int64_t row = b * K;
    auto key = [&](int64_t c) { return silu(to_float(yk[c])) * p.key_scale; };
    auto fused_key = [&](int64_t c) {
      return key(c) + silu(load<T>(p.k_gate, row + c)) * load<T>(p.previous_k, row + c);
    };
    float r = 1.0f;
    if (fuse) {
      float squares = 0.0f;
      for (int64_t c = threadIdx.x; c < K; c += kThreads) {
        const float f = fused_key(c);
        squares += f * f;
      }
      r = inverse_rms(squares, K, p.eps, shared);
    }
    const double position = static_cast<double>(p.position[b]);
    for (int64_t pair = threadIdx.x; pair < K / 2; pair += kThreads) {
      const int64_t c = 2 * pair;
      double sin_theta, cos_theta;
      sincos(position * p.angles[c % p.head_qk_dim], &sin_theta, &cos_theta);
      const float sn = static_cast<float>(sin_theta), cs = static_cast<float>(cos_theta);
      store<T>(p.hidden_k, row + c, key(c));
      store<T>(p.hidden_k, row + c + 1, key(c + 1));
      float k0, k1;
      if (fuse) {
        k0 = fused_key(c) * r * load<T>(p.k_norm, c);
        k1 = fused_key(c + 1) * r * load<T>(p.k_norm, c + 1);
      } else {
        k0 = key(c);
        k1 = key(c + 1);
      }
      const float q0 = silu(to_float(y[c])), q1 = silu(to_float(y[c + 1]));
      store<T>(p.q, row + c, q0 * cs - q1 * sn);
      store<T>(p.q, row + c + 1, q1 * cs + q0 * sn);
      store<T>(p.k, row + c, k0 * cs - k1 * sn);
      store<T>(p.k, row + c + 1, k1 * cs + k0 * sn);
    }
  } else {
    const T* yv = y + 2 * K;
    const T* yg = yv + E;
    const int64_t row = b * E;
    auto fused_value = [&](int64_t c) {
      return silu(to_float(yv[c])) + silu(load<T>(p.v_gate, row + c)) * load<T>(p.previous_v, row + c);
    };
    float r = 1.0f;
    if (fuse) {
      float squares = 0.0f;
      for (int64_t c = threadIdx.x; c < E; c += kThreads) {
        const float f = fused_value(c);
        squares += f * f;
      }
      r = inverse_rms(squares, E, p.eps, shared);
    }
    for (int64_t c = threadIdx.x; c < E; c += kThreads) {
      const float v = silu(to_float(yv[c]));
      store<T>(p.hidden_v, row + c, v);
      store<T>(p.v, row + c, fuse ? fused_value(c) * r * load<T>(p.v_norm, c) : v);
      store<T>(p.g, row + c, silu(to_float(yg[c])));
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) retention_output_kernel(RetentionOutputParams p) {
  __shared__ float shared[kWarps];
  const int64_t offset = static_cast<int64_t>(blockIdx.x) * p.dv;  // (b, h): o and g share the layout
  float squares = 0.0f;
  for (int64_t c = threadIdx.x; c < p.dv; c += kThreads) {
    const float v = load<T>(p.o, offset + c);
    squares += v * v;
  }
  const float r = inverse_rms(squares, p.dv, p.eps, shared);
  for (int64_t c = threadIdx.x; c < p.dv; c += kThreads) {
    store<T>(p.out, offset + c, load<T>(p.o, offset + c) * r * load<T>(p.norm, c) * load<T>(p.g, offset + c));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) mamba_prepare_kernel(MambaPrepareParams p) {
  __shared__ float shared[kWarps];
  const int64_t b = blockIdx.x, C = p.channels, row = b * C, past = p.width - 1;
  const T* x = static_cast<const T*>(p.y) + b * p.y_stride;
  const bool fuse = p.gate != nullptr;
  auto fused = [&](int64_t c) { return to_float(x[c]) + silu(load<T>(p.gate, row + c)) * load<T>(p.previous, row + c); };
  float r = 1.0f;
  if (fuse) {
    float squares = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += kThreads) {
      const float f = fused(c);
      squares += f * f;
    }
    r = inverse_rms(squares, C, p.eps, shared);
  }
  for (int64_t c = threadIdx.x; c < C; c += kThreads) {
    static_cast<T*>(p.hidden)[row + c] = x[c];
    // The convolution sees (and keeps) the fused input in the storage dtype, as the step form does.
    const T input = fuse ? from_float<T>(fused(c) * r * load<T>(p.norm, c)) : x[c];
    T* state = static_cast<T*>(p.conv_state) + (row + c) * past;
    const T* weight = static_cast<const T*>(p.conv_weight) + c * p.width;
    float acc = p.conv_bias ? load<T>(p.conv_bias, c) : 0.0f;
    for (int64_t j = 0; j < past; ++j) acc += to_float(weight[j]) * to_float(state[j]);
    acc += to_float(weight[past]) * to_float(input);
    for (int64_t j = 0; j + 1 < past; ++j) state[j] = state[j + 1];
    if (past > 0) state[past - 1] = input;
    store<T>(p.out, row + c, silu(acc));
  }
}

}  // namespace

cudaError_t rms_norm_rows(const RmsNormParams& p, cudaStream_t stream) {
  if (p.rows == 0 || p.dim == 0) return cudaSuccess;
  with_storage_type(p.dtype, [&](auto t) {
    rms_norm_kernel<decltype(t)><<<static_cast<unsigned>(p.rows), kThreads, 0, stream>>>(p);
  });
  return cudaGetLastError();
}

cudaError_t retention_decode_prepare(const RetentionPrepareParams& p, cudaStream_t stream) {
  if (p.batch == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(p.batch), 2);
  with_storage_type(p.dtype, [&](auto t) { retention_prepare_kernel<decltype(t)><<<grid, kThreads, 0, stream>>>(p); });
  return cudaGetLastError();
}

cudaError_t retention_decode_output(const RetentionOutputParams& p, cudaStream_t stream) {
  if (p.batch * p.heads == 0) return cudaSuccess;
  with_storage_type(p.dtype, [&](auto t) {
    retention_output_kernel<decltype(t)><<<static_cast<unsigned>(p.batch * p.heads), kThreads, 0, stream>>>(p);
  });
  return cudaGetLastError();
}

cudaError_t mamba_decode_prepare(const MambaPrepareParams& p, cudaStream_t stream) {
  if (p.batch == 0) return cudaSuccess;
  with_storage_type(p.dtype, [&](auto t) {
    mamba_prepare_kernel<decltype(t)><<<static_cast<unsigned>(p.batch), kThreads, 0, stream>>>(p);
  });
  return cudaGetLastError();
}

}  // namespace densessm::kernels
