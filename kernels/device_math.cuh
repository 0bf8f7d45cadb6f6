// Device helpers shared by the kernels: conversion between the storage dtypes and float32, the
// activations, warp- and block-wide sums, and the dispatch of a kernel template over the storage dtype.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "dtype.h"

namespace densessm::kernels {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

/// 1 / (1 + e^-v) with the fast reciprocal (about 2 ulp): an IEEE division carries a slow-path call that the
/// compiler will not move loads across, which turned the decode kernels' load batches into one L2 round trip
/// per element. For v < -87.3 the denominator passes 2^126 (inf below -88.7), where __fdividef returns 0:
/// sigmoid 0 in place of a subnormal, silu -0. NaN stays NaN; silu(-inf) is NaN, as with the division.
__device__ __forceinline__ float sigmoid(float v) { return __fdividef(1.0f, 1.0f + __expf(-v)); }
__device__ __forceinline__ float silu(float v) { return v * sigmoid(v); }
/// d silu(v) / dv
__device__ __forceinline__ float silu_grad(float v) {
  const float s = sigmoid(v);
  return s * (1.0f + v * (1.0f - s));
}
__device__ __forceinline__ float softplus(float v) { return v > 20.0f ? v : log1pf(__expf(v)); }

/// 2^x on the special-function unit (relative error about 2^-22): the scan's inner loops are bound by it.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/// The sum of v over a full warp (every lane gets it).
__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

/// The sum of v over a block of kWarps full warps (every thread gets it). `shared` holds kWarps floats; the
/// call ends with a barrier, so the next call may reuse them.
template <int kWarps>
__device__ float block_sum(float v, float* shared) {
  v = warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const float total = warp_sum(lane < kWarps ? shared[lane] : 0.0f);
  __syncthreads();
  return total;
}

/// Calls f(T{}) with T the storage type of `dtype`.
template <typename F>
void with_storage_type(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32: f(float{}); break;
    case DType::kFloat16: f(__half{}); break;
    case DType::kBFloat16: f(__nv_bfloat16{}); break;
  }
}

}  // namespace densessm::kernels
