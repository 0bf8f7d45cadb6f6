#include "small_matmul.h"

#include "device_math.cuh"
#include "mma.cuh"

namespace densessm::kernels {
namespace {

// A block computes 16 output columns (weight rows) for every token: its 8 warps split the k range (warp w
// takes the 32-deep steps w, w + 8, ...), each keeps a 16 x 8 float32 product, and the warps' products are
// summed through shared memory at the end. A lane loads, per step, 16 bytes of each of its two weight rows
// and of its token's row of x, and issues kUnroll steps' loads before it multiplies, so that a block
// keeps 32 KB of weight loads in flight.
constexpr int kWarps = 8;
constexpr int kColumns = 16;  // weight rows per block: the mma's m
constexpr int kDepth = 32;    // k per step: two mma of k 16
constexpr int kUnroll = 4;

__device__ __forceinline__ uint4 load_streaming(const void* p) { return __ldcs(static_cast<const uint4*>(p)); }
__device__ __forceinline__ uint4 load_cached(const void* p) { return __ldg(static_cast<const uint4*>(p)); }

template <typename T>
__global__ void __launch_bounds__(kWarps * 32) small_matmul_kernel(SmallMatmulParams p) {
  __shared__ float partial[kWarps][32][4];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t low = int64_t{blockIdx.x} * kColumns + g, high = low + 8;  // this lane's weight rows
  // Every load is made (from a clamped, valid address) and zeroed afterwards where it lies outside, so that
  // no branch stands between the loads and they can all be in flight at once.
  const bool low_in = low < p.n, high_in = high < p.n, token_in = g < p.rows;
  const T* w = static_cast<const T*>(p.w);
  const T* w_low = w + (low_in ? low : p.n - 1) * p.k;
  const T* w_high = w + (high_in ? high : p.n - 1) * p.k;
  const T* x = static_cast<const T*>(p.x) + (token_in ? int64_t{g} : 0) * p.x_stride;  // the mma's column g
  const int64_t steps = (p.k + kDepth - 1) / kDepth;
  const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
  float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int64_t first = warp; first < steps; first += int64_t{kWarps} * kUnroll) {
    uint4 a_low[kUnroll], a_high[kUnroll], b[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t k0 = (first + int64_t{u} * kWarps) * kDepth + 8 * t;  // this lane's 8 consecutive k
      const bool in = k0 < p.k;  // k % 8 == 0: a lane's 8 are all inside or all outside
      const int64_t k = in ? k0 : 0;
      a_low[u] = load_streaming(w_low + k);
      a_high[u] = load_streaming(w_high + k);
      b[u] = load_cached(x + k);
      if (!(in && low_in)) a_low[u] = zero;
      if (!(in && high_in)) a_high[u] = zero;
      if (!(in && token_in)) b[u] = zero;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      // The mma's k (2t, 2t + 1, 2t + 8, 2t + 9) are this lane's k0 + 0..3 in the first product and
      // k0 + 4..7 in the second, in A and B alike: the sum over k does not depend on its order.
      const uint32_t a_first[4] = {a_low[u].x, a_high[u].x, a_low[u].y, a_high[u].y};
      const uint32_t b_first[2] = {b[u].x, b[u].y};
      mma_16x8x16<T>(c, a_first, b_first);
      const uint32_t a_second[4] = {a_low[u].z, a_high[u].z, a_low[u].w, a_high[u].w};
      const uint32_t b_second[2] = {b[u].z, b[u].w};
      mma_16x8x16<T>(c, a_second, b_second);
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) partial[warp][lane][i] = c[i];
  __syncthreads();
  if (warp != 0) return;
  for (int v = 1; v < kWarps; ++v) {
#pragma unroll
    for (int i = 0; i < 4; ++i) c[i] += partial[v][lane][i];
  }
  // c holds (row low, tokens 2t and 2t + 1) and (row high, the same tokens).
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t column = i < 2 ? low : high, token = 2 * t + i % 2;
    if (column >= p.n || token >= p.rows) continue;
    T* o = static_cast<T*>(p.out) + token * p.out_stride + column;
    *o = from_float<T>((p.accumulate ? to_float(*o) : 0.0f) + c[i]);
  }
}

bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool small_matmul_supported(const SmallMatmulParams& p) {
  return (p.dtype == DType::kFloat16 || p.dtype == DType::kBFloat16) && p.rows >= 1 && p.rows <= kSmallMatmulRows &&
         p.n >= 1 && p.k >= 8 && p.k % 8 == 0 && p.x_stride % 8 == 0 && aligned(p.x) && aligned(p.w);
}

cudaError_t small_matmul(const SmallMatmulParams& p, cudaStream_t stream) {
  if (!small_matmul_supported(p)) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>((p.n + kColumns - 1) / kColumns));
  if (p.dtype == DType::kFloat16) {
    small_matmul_kernel<__half><<<grid, kWarps * 32, 0, stream>>>(p);
  } else {
    small_matmul_kernel<__nv_bfloat16><<<grid, kWarps * 32, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace densessm::kernels
