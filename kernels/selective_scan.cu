// The selective scan, forward and backward (see selective_scan.h for the formulas and layouts).
//
// Work split: a block takes one batch row and a run of channels; each thread owns one channel and a slice
// of NS of its N states, held in registers, and runs the recurrence sequentially over time. The G threads
// that share a channel (N > NS) sit in different warps, so the 32 lanes of a warp are 32 channels of the
// same batch row with the same state slice: Bm_t and Cm_t are then one shared-memory broadcast per step.
// Time is walked in chunks: the block stores a chunk of u, delta (with bias and softplus applied once per
// element), Bm and Cm in shared memory, runs the chunk, and writes the chunk's outputs; the next chunk's
// loads are issued before the current chunk's arithmetic (ChunkShare) so that their latency hides behind
// it. The forward pass does B*C*T*N exponentials: the special-function unit bounds it at about 0.26 ms
// for B 8, C 4096, T 2048, N 16 on an H200 (docs/kernels/selective_scan.md has the figures).
#include "selective_scan.h"

#include <algorithm>

#include "device_math.cuh"

namespace densessm::kernels {
namespace {

constexpr float kLog2e = 1.4426950408889634f;

/// NS states per thread, G threads per channel (padded N = NS * G), a block of about `threads` threads.
template <int NS, int G, int kTargetThreads>
struct Layout {
  static constexpr int kStates = NS * G;
  static constexpr int kRows = kTargetThreads / (32 * G) > 0 ? kTargetThreads / (32 * G) : 1;  // warps per state slice
  static constexpr int kChannels = 32 * kRows;
  static constexpr int kThreads = kChannels * G;
};

// Forward: 16 states per thread, chunks of 16 steps, blocks of 64 threads (B*C/64 blocks of two warps: the
// work has one thread per channel, and more, smaller blocks keep their load phases out of step).
constexpr int kForwardChunk = 16;
constexpr int kForwardThreads = 64;
// Backward: 4 states per thread so that a chunk of 16 steps of states fits in registers; 256 threads.
constexpr int kBackwardStates = 4;
constexpr int kBackwardChunk = 16;
constexpr int kBackwardThreads = 256;

struct ThreadPlace {
  int lane, slice, local_channel;
};

template <int G>
__device__ __forceinline__ ThreadPlace place() {
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  return {lane, warp % G, (warp / G) * 32 + lane};
}

// One thread's share of a chunk of `kRows` rows x K steps of a (rows, steps) tensor, kept in registers as
// loaded: the next chunk's loads are issued before the current chunk is computed and only consumed after
// it, so their latency hides behind the arithmetic (the blocks are few: one thread per channel). A thread
// always takes the same step of the chunk and every (kThreads / K)-th row, so its offsets are few and
// 32-bit (selective_scan_forward checks that a row block of steps fits).
template <typename T, int kRows, int K, int kThreads>
struct ChunkShare {
  static_assert(kThreads % K == 0, "a thread keeps one step of the chunk");
  static constexpr int kElements = kRows * K;
  static constexpr int kPer = (kElements + kThreads - 1) / kThreads;
  static constexpr int kRowStep = kThreads / K;
  static constexpr int kRowsTotal = kRows;
  T v[kPer];

  __device__ static int row(int j) { return static_cast<int>(threadIdx.x) / K + j * kRowStep; }
  __device__ static int step() { return static_cast<int>(threadIdx.x) % K; }
  /// Whether element j lies inside the tensor, given how many rows and steps are left from the chunk's
  /// corner.
  __device__ static bool inside(int j, int64_t rows_left, int64_t steps_left) {
    return row(j) < kRows && row(j) < rows_left && step() < steps_left;
  }
  /// `corner` points at the chunk's first row and step.
  __device__ void load(const T* corner, int64_t steps, int64_t rows_left, int64_t steps_left) {
    const int stride = static_cast<int>(steps);
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      if (inside(j, rows_left, steps_left)) v[j] = corner[row(j) * stride + step()];
    }
  }
  /// Element j as float, zero outside the tensor.
  __device__ float get(int j, int64_t rows_left, int64_t steps_left) const {
    return inside(j, rows_left, steps_left) ? to_float(v[j]) : 0.0f;
  }
};

// Writes a chunk share of u and delta to shared rows (channel, step) of `stride` floats: u, the effective
// delta (bias and softplus applied once per element) and, when wanted, d delta_eff / d delta. Zeros past
// the sequence's end or the last channel, so a padded step leaves the state unchanged (delta 0: decay 1,
// input 0).
template <typename Share>
__device__ void store_channels(const ScanParams& p, const Share& u, const Share& delta, int64_t c0, int64_t t0,
                               int stride, float* su, float* sd, float* delta_grad) {
  const int tt = Share::step();
#pragma unroll
  for (int j = 0; j < Share::kPer; ++j) {
    const int cc = Share::row(j);
    if (cc >= Share::kRowsTotal) continue;
    const bool in = Share::inside(j, p.channels - c0, p.length - t0);
    float uv = 0.0f, dv = 0.0f, grad = 0.0f;
    if (in) {
      uv = to_float(u.v[j]);
      const float raw = to_float(delta.v[j]) + (p.delta_bias ? p.delta_bias[c0 + cc] : 0.0f);
      dv = p.delta_softplus ? softplus(raw) : raw;
      if (delta_grad) grad = p.delta_softplus ? sigmoid(raw) : 1.0f;
    }
    su[cc * stride + tt] = uv;
    sd[cc * stride + tt] = dv;
    if (delta_grad) delta_grad[cc * stride + tt] = grad;
  }
}

// Writes a chunk share of Bm (and Cm when given) as [step][state] rows of `states` floats, zero-padded.
template <typename Share>
__device__ void store_states(const ScanParams& p, const Share& Bm, const Share* Cm, int64_t t0, int states,
                             float* sb, float* sc) {
  const int tt = Share::step();
#pragma unroll
  for (int j = 0; j < Share::kPer; ++j) {
    const int n = Share::row(j);
    if (n >= Share::kRowsTotal) continue;
    sb[tt * states + n] = Bm.get(j, p.state_size, p.length - t0);
    if (Cm) sc[tt * states + n] = Cm->get(j, p.state_size, p.length - t0);
  }
}

template <typename T, int NS, int G>
__global__ void __launch_bounds__(Layout<NS, G, kForwardThreads>::kThreads)
scan_forward_kernel(const ScanParams p) {
  using L = Layout<NS, G, kForwardThreads>;
  constexpr int K = kForwardChunk, S = K + 1, NP = L::kStates, CH = L::kChannels;
  extern __shared__ float4 shared4[];
  float* su = reinterpret_cast<float*>(shared4);  // (CH, S) u
  float* sd = su + CH * S;                        // (CH, S) effective delta
  float* sz = sd + CH * S;                        // (CH, S) z
  float* sy = sz + CH * S;                        // (CH, S) Cm . h, summed over the slices
  float* sb = sy + CH * S;                        // (K, NP) Bm
  float* sc = sb + K * NP;                        // (K, NP) Cm

  const ThreadPlace at = place<G>();
  const int64_t b = blockIdx.y, c0 = static_cast<int64_t>(blockIdx.x) * CH, c = c0 + at.local_channel;
  const int64_t C = p.channels, steps = p.length, N = p.state_size;
  const bool active = c < C;
  float A2[NS], h[NS];  // A in log2 units; the state slice
#pragma unroll
  for (int n = 0; n < NS; ++n) {
    const int64_t state = at.slice * NS + n;
    const bool valid = active && state < N;
    A2[n] = valid ? p.A[c * N + state] * kLog2e : 0.0f;
    h[n] = valid && p.initial_state ? p.initial_state[(b * C + c) * N + state] : 0.0f;
  }
  const T* u = static_cast<const T*>(p.u) + b * C * steps;
  const T* delta = static_cast<const T*>(p.delta) + b * C * steps;
  const T* z = p.z ? static_cast<const T*>(p.z) + b * C * steps : nullptr;
  const T* Bm = static_cast<const T*>(p.Bm) + b * N * steps;
  const T* Cm = static_cast<const T*>(p.Cm) + b * N * steps;
  T* out = static_cast<T*>(p.out);

  ChunkShare<T, CH, K, L::kThreads> next_u, next_delta, next_z;
  ChunkShare<T, NP, K, L::kThreads> next_B, next_C;
  auto prefetch = [&](int64_t t0) {
    next_u.load(u + c0 * steps + t0, steps, C - c0, steps - t0);
    next_delta.load(delta + c0 * steps + t0, steps, C - c0, steps - t0);
    if (z) next_z.load(z + c0 * steps + t0, steps, C - c0, steps - t0);
    next_B.load(Bm + t0, steps, N, steps - t0);
    next_C.load(Cm + t0, steps, N, steps - t0);
  };
  prefetch(0);
  for (int64_t t0 = 0; t0 < steps; t0 += K) {
    __syncthreads();  // the previous chunk's epilogue is done with the shared rows
    store_channels(p, next_u, next_delta, c0, t0, S, su, sd, nullptr);
#pragma unroll
    for (int j = 0; j < decltype(next_z)::kPer; ++j) {
      const int cc = decltype(next_z)::row(j), tt = decltype(next_z)::step();
      if (cc < CH) sz[cc * S + tt] = z ? next_z.get(j, C - c0, steps - t0) : 0.0f;
    }
    store_states(p, next_B, &next_C, t0, NP, sb, sc);
    if (G > 1) {
      for (int i = threadIdx.x; i < CH * S; i += blockDim.x) sy[i] = 0.0f;
    }
    __syncthreads();
    if (t0 + K < steps) prefetch(t0 + K);
    const float* row_u = su + at.local_channel * S;
    const float* row_d = sd + at.local_channel * S;
#pragma unroll 2
    for (int tt = 0; tt < K; ++tt) {
      const float dt = row_d[tt], du = dt * row_u[tt];
      const float4* bq = reinterpret_cast<const float4*>(sb + tt * NP + at.slice * NS);
      const float4* cq = reinterpret_cast<const float4*>(sc + tt * NP + at.slice * NS);
      float ys[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // four partial sums: no chain of NS dependent adds
#pragma unroll
      for (int q = 0; q < NS / 4; ++q) {
        const float4 bv = bq[q], cv = cq[q];
        const float bs[4] = {bv.x, bv.y, bv.z, bv.w}, cs[4] = {cv.x, cv.y, cv.z, cv.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int n = 4 * q + j;
          h[n] = fast_exp2(dt * A2[n]) * h[n] + du * bs[j];
          ys[j] += cs[j] * h[n];
        }
      }
      const float y = (ys[0] + ys[1]) + (ys[2] + ys[3]);
      if (G == 1) {
        sy[at.local_channel * S + tt] = y;
      } else {
        atomicAdd(sy + at.local_channel * S + tt, y);
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < CH * K; i += blockDim.x) {
      const int cc = i / K, tt = i % K;
      const int64_t cg = c0 + cc, t = t0 + tt;
      if (cg >= C || t >= steps) continue;
      float y = sy[cc * S + tt] + (p.D ? p.D[cg] * su[cc * S + tt] : 0.0f);
      if (z) y *= silu(sz[cc * S + tt]);
      out[(b * C + cg) * steps + t] = from_float<T>(y);
    }
  }
  if (p.final_state && active) {
#pragma unroll
    for (int n = 0; n < NS; ++n) {
      const int64_t state = at.slice * NS + n;
      if (state < N) p.final_state[(b * C + c) * N + state] = h[n];
    }
  }
}

// Sums v[] over the 32 lanes of a warp, scattering the results: afterwards lane l holds in v[0] the sum of
// element ((l >> 4) & 1) * 4 + ((l >> 3) & 1) * 2 + ((l >> 2) & 1) (for 8 elements), identical across the
// lanes that differ only in their lowest two bits. Nine shuffles for eight sums.
__device__ __forceinline__ void reduce_scatter8(float (&v)[8], int lane) {
  int count = 8;
#pragma unroll
  for (int offset = 16; offset >= 4; offset >>= 1) {
    const bool upper = lane & offset;
    const int half = count / 2;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if (i < half) {
        const float keep = upper ? v[i + half] : v[i];
        const float send = upper ? v[i] : v[i + half];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, offset);
      }
    }
    count = half;
  }
  v[0] += __shfl_xor_sync(0xffffffffu, v[0], 2);
  v[0] += __shfl_xor_sync(0xffffffffu, v[0], 1);
}

__device__ __forceinline__ int scattered_element(int lane) {
  return ((lane >> 4) & 1) * 4 + ((lane >> 3) & 1) * 2 + ((lane >> 2) & 1);
}

template <int G>
using BackwardLayout = Layout<kBackwardStates, G, kBackwardThreads>;

// Floats of the backward kernel's dynamic shared memory.
template <int G>
constexpr int backward_shared_floats() {
  using L = BackwardLayout<G>;
  constexpr int S = kBackwardChunk + 1;
  return 8 * L::kChannels * S + 2 * kBackwardChunk * L::kStates + L::kRows * kBackwardChunk * 2 * L::kStates +
         2 * L::kChannels;
}

template <typename T, int G>
__global__ void __launch_bounds__(BackwardLayout<G>::kThreads, G == 4 || G == 8 ? 2 : 1)
scan_backward_kernel(const ScanBackwardParams q) {
  using L = BackwardLayout<G>;
  constexpr int NS = kBackwardStates, K = kBackwardChunk, S = K + 1, NP = L::kStates, CH = L::kChannels;
  const ScanParams& p = q.forward;
  extern __shared__ float4 shared4[];
  float* su = reinterpret_cast<float*>(shared4);  // (CH, S) u
  float* sd = su + CH * S;                        // (CH, S) effective delta
  float* sdd = sd + CH * S;                       // (CH, S) d delta_eff / d delta
  float* sgs = sdd + CH * S;                      // (CH, S) dL/ds, s = Cm . h + D u (before the gate)
  float* sgz = sgs + CH * S;                      // (CH, S) dL/dy * silu'(z): dL/dz = that * s
  float* ss = sgz + CH * S;                       // (CH, S) Cm . h, summed over the slices
  float* sgd = ss + CH * S;                       // (CH, S) dL/d delta_eff, summed over the slices
  float* sgu = sgd + CH * S;                      // (CH, S) dL/du through the states, summed over the slices
  float* sb = sgu + CH * S;                       // (K, NP) Bm
  float* sc = sb + K * NP;                        // (K, NP) Cm
  float* sbc = sc + K * NP;                       // (rows, K, 2, NP) dL/dBm, dL/dCm summed over a warp's channels
  float* sacc = sbc + L::kRows * K * 2 * NP;      // (2, CH) dL/dD and dL/d delta_bias, summed over time

  const ThreadPlace at = place<G>();
  const int row = (threadIdx.x >> 5) / G;
  const int64_t b = blockIdx.y, c0 = static_cast<int64_t>(blockIdx.x) * CH, c = c0 + at.local_channel;
  const int64_t C = p.channels, steps = p.length, N = p.state_size;
  const int64_t chunks = (steps + K - 1) / K;
  const bool active = c < C;
  float A[NS];  // registers are tight here: A only, scaled to log2 units per step
#pragma unroll
  for (int n = 0; n < NS; ++n) {
    const int64_t state = at.slice * NS + n;
    A[n] = active && state < N ? p.A[c * N + state] : 0.0f;
  }
  for (int i = threadIdx.x; i < 2 * CH; i += blockDim.x) sacc[i] = 0.0f;
  // Checkpoint of chunk k: the state before its first step, (B, chunks, G, C, NS).
  auto checkpoint = [&](int64_t k) {
    return reinterpret_cast<float4*>(q.scratch + (((b * chunks + k) * G + at.slice) * C + c) * NS);
  };
  const float* row_u = su + at.local_channel * S;
  const float* row_d = sd + at.local_channel * S;
  // The state before chunk k: the initial state (or zeros) or the chunk's checkpoint.
  auto chunk_start = [&](int64_t k) {
    if (k > 0) return active ? *checkpoint(k) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float h[NS];
#pragma unroll
    for (int n = 0; n < NS; ++n) {
      const int64_t state = at.slice * NS + n;
      h[n] = active && state < N && p.initial_state ? p.initial_state[(b * C + c) * N + state] : 0.0f;
    }
    return make_float4(h[0], h[1], h[2], h[3]);
  };
  const T* u = static_cast<const T*>(p.u) + b * C * steps;
  const T* delta = static_cast<const T*>(p.delta) + b * C * steps;
  const T* z = p.z ? static_cast<const T*>(p.z) + b * C * steps : nullptr;
  const T* gy = static_cast<const T*>(q.grad_out) + b * C * steps;
  const T* Bm = static_cast<const T*>(p.Bm) + b * N * steps;
  const T* Cm = static_cast<const T*>(p.Cm) + b * N * steps;
  ChunkShare<T, CH, K, L::kThreads> next_u, next_delta, next_gy, next_z;
  ChunkShare<T, NP, K, L::kThreads> next_B, next_C;

  // Pass 1: the states at the chunk boundaries.
  {
    auto prefetch = [&](int64_t t0) {
      next_u.load(u + c0 * steps + t0, steps, C - c0, steps - t0);
      next_delta.load(delta + c0 * steps + t0, steps, C - c0, steps - t0);
      next_B.load(Bm + t0, steps, N, steps - t0);
    };
    const float4 initial = chunk_start(0);
    float h[NS] = {initial.x, initial.y, initial.z, initial.w};
    if (chunks > 1) prefetch(0);
    for (int64_t k = 0; k + 1 < chunks; ++k) {
      __syncthreads();
      store_channels(p, next_u, next_delta, c0, k * K, S, su, sd, nullptr);
      store_states(p, next_B, static_cast<decltype(next_C)*>(nullptr), k * K, NP, sb, nullptr);
      __syncthreads();
      if (k + 2 < chunks) prefetch((k + 1) * K);
#pragma unroll 4
      for (int tt = 0; tt < K; ++tt) {
        const float dt = row_d[tt], du = dt * row_u[tt], dt2 = dt * kLog2e;
        const float4 bv = *reinterpret_cast<const float4*>(sb + tt * NP + at.slice * NS);
        const float bs[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
        for (int n = 0; n < NS; ++n) h[n] = fast_exp2(dt2 * A[n]) * h[n] + du * bs[n];
      }
      if (active) *checkpoint(k + 1) = make_float4(h[0], h[1], h[2], h[3]);
    }
  }

  // Pass 2: the chunks backwards. carry = exp(delta_{t+1} A) dL/dh_{t+1}, the state gradient flowing back.
  auto prefetch = [&](int64_t t0) {
    next_u.load(u + c0 * steps + t0, steps, C - c0, steps - t0);
    next_delta.load(delta + c0 * steps + t0, steps, C - c0, steps - t0);
    next_gy.load(gy + c0 * steps + t0, steps, C - c0, steps - t0);
    if (z) next_z.load(z + c0 * steps + t0, steps, C - c0, steps - t0);
    next_B.load(Bm + t0, steps, N, steps - t0);
    next_C.load(Cm + t0, steps, N, steps - t0);
  };
  float carry[NS], gA[NS];
#pragma unroll
  for (int n = 0; n < NS; ++n) carry[n] = gA[n] = 0.0f;
  prefetch((chunks - 1) * K);
  float4 next_start = chunk_start(chunks - 1);
  for (int64_t k = chunks - 1; k >= 0; --k) {
    const int64_t t0 = k * K;
    __syncthreads();
    store_channels(p, next_u, next_delta, c0, t0, S, su, sd, sdd);
    store_states(p, next_B, &next_C, t0, NP, sb, sc);
#pragma unroll
    for (int j = 0; j < decltype(next_gy)::kPer; ++j) {
      const int cc = decltype(next_gy)::row(j), tt = decltype(next_gy)::step();
      if (cc >= CH) continue;
      const float g = next_gy.get(j, C - c0, steps - t0);
      float gs = g, gz = 0.0f;
      if (z) {
        const float zv = next_z.get(j, C - c0, steps - t0);
        gs = g * silu(zv);
        gz = g * silu_grad(zv);
      }
      const int at_row = cc * S + tt;
      sgs[at_row] = gs;
      sgz[at_row] = gz;
      ss[at_row] = sgd[at_row] = sgu[at_row] = 0.0f;
    }
    __syncthreads();
    const float4 start = next_start;
    if (k > 0) {
      prefetch(t0 - K);
      next_start = chunk_start(k - 1);
    }

    // Recompute the chunk's states from its checkpoint.
    float hs[K][NS];
    {
      float h[NS] = {start.x, start.y, start.z, start.w};
#pragma unroll
      for (int tt = 0; tt < K; ++tt) {
        const float dt = row_d[tt], du = dt * row_u[tt], dt2 = dt * kLog2e;
        const float4 bv = *reinterpret_cast<const float4*>(sb + tt * NP + at.slice * NS);
        const float4 cv = *reinterpret_cast<const float4*>(sc + tt * NP + at.slice * NS);
        const float bs[4] = {bv.x, bv.y, bv.z, bv.w}, cs[4] = {cv.x, cv.y, cv.z, cv.w};
        float y = 0.0f;
#pragma unroll
        for (int n = 0; n < NS; ++n) {
          h[n] = fast_exp2(dt2 * A[n]) * h[n] + du * bs[n];
          hs[tt][n] = h[n];
          y += cs[n] * h[n];
        }
        if (z) atomicAdd(ss + at.local_channel * S + tt, y);
      }
      // hs[-1]: the state before the chunk, for the first step's gradient.
      h[0] = start.x, h[1] = start.y, h[2] = start.z, h[3] = start.w;
      // Walk the chunk backwards.
      const float* row_gs = sgs + at.local_channel * S;
#pragma unroll
      for (int tt = K - 1; tt >= 0; --tt) {
        const float dt = row_d[tt], uu = row_u[tt], gs = row_gs[tt], du = dt * uu, dt2 = dt * kLog2e;
        const float4 bv = *reinterpret_cast<const float4*>(sb + tt * NP + at.slice * NS);
        const float4 cv = *reinterpret_cast<const float4*>(sc + tt * NP + at.slice * NS);
        const float bs[4] = {bv.x, bv.y, bv.z, bv.w}, cs[4] = {cv.x, cv.y, cv.z, cv.w};
        float gd = 0.0f, gu = 0.0f, bc[8];
#pragma unroll
        for (int n = 0; n < NS; ++n) {
          const float gh = gs * cs[n] + carry[n];  // dL/dh_t
          const float previous = tt > 0 ? hs[tt > 0 ? tt - 1 : 0][n] : h[n];
          const float decay = fast_exp2(dt2 * A[n]);
          const float g_exponent = gh * previous * decay;  // dL/d(delta_t A)
          gd += g_exponent * A[n] + gh * bs[n] * uu;
          gA[n] += g_exponent * dt;
          gu += gh * bs[n] * dt;
          bc[n] = gh * du;              // dL/dBm_t
          bc[NS + n] = gs * hs[tt][n];  // dL/dCm_t
          carry[n] = gh * decay;
        }
        if (G == 1) {
          sgd[at.local_channel * S + tt] = gd;
          sgu[at.local_channel * S + tt] = gu;
        } else {
          atomicAdd(sgd + at.local_channel * S + tt, gd);
          atomicAdd(sgu + at.local_channel * S + tt, gu);
        }
        reduce_scatter8(bc, at.lane);
        if ((at.lane & 3) == 0) {
          const int e = scattered_element(at.lane);
          sbc[((row * K + tt) * 2 + e / NS) * NP + at.slice * NS + e % NS] = bc[0];
        }
      }
    }
    __syncthreads();

    // Per (channel, step): the outputs, and the sums over time for D and delta_bias.
    T* grad_u = static_cast<T*>(q.grad_u);
    T* grad_delta = static_cast<T*>(q.grad_delta);
    T* grad_z = static_cast<T*>(q.grad_z);
    for (int i = threadIdx.x; i < CH * K; i += blockDim.x) {  // CH * K is a multiple of the block size
      const int cc = i / K, tt = i % K;
      const int64_t cg = c0 + cc, t = t0 + tt;
      const int at_row = cc * S + tt;
      const float D = p.D && cg < C ? p.D[cg] : 0.0f;
      const float uu = su[at_row], gs = sgs[at_row];
      const float g_delta = sgd[at_row] * sdd[at_row];
      float gD = gs * uu, gbias = g_delta;
      // The 16 steps of a channel are 16 consecutive lanes.
#pragma unroll
      for (int offset = 8; offset >= 1; offset >>= 1) {
        gD += __shfl_xor_sync(0xffffffffu, gD, offset);
        gbias += __shfl_xor_sync(0xffffffffu, gbias, offset);
      }
      if (tt == 0) {
        sacc[cc] += gD;
        sacc[CH + cc] += gbias;
      }
      if (cg >= C || t >= steps) continue;
      const int64_t o = (b * C + cg) * steps + t;
      grad_u[o] = from_float<T>(sgu[at_row] + gs * D);
      grad_delta[o] = from_float<T>(g_delta);
      if (grad_z) grad_z[o] = from_float<T>(sgz[at_row] * (ss[at_row] + D * uu));
    }
    // dL/dBm and dL/dCm of the chunk, summed over the block's channels.
    const int64_t blocks = gridDim.x;
    for (int i = threadIdx.x; i < 2 * NP * K; i += blockDim.x) {
      const int which = i / (NP * K), n = (i / K) % NP, tt = i % K;
      const int64_t t = t0 + tt;
      if (n >= N || t >= steps) continue;
      float sum = 0.0f;
      for (int r = 0; r < L::kRows; ++r) sum += sbc[((r * K + tt) * 2 + which) * NP + n];
      float* target = which == 0 ? q.grad_Bm : q.grad_Cm;
      target[((b * blocks + blockIdx.x) * N + n) * steps + t] = sum;
    }
  }
  __syncthreads();
  if (active) {
#pragma unroll
    for (int n = 0; n < NS; ++n) {
      const int64_t state = at.slice * NS + n;
      if (state < N) q.grad_A[(b * C + c) * N + state] = gA[n];
    }
    if (at.slice == 0) {
      if (q.grad_D) q.grad_D[b * C + c] = sacc[at.local_channel];
      if (q.grad_delta_bias) q.grad_delta_bias[b * C + c] = sacc[CH + at.local_channel];
    }
  }
}

template <typename T, int NS, int G>
cudaError_t launch_forward(const ScanParams& p, cudaStream_t stream) {
  using L = Layout<NS, G, kForwardThreads>;
  const int shared = static_cast<int>(sizeof(float)) * (4 * L::kChannels * (kForwardChunk + 1) + 2 * kForwardChunk * L::kStates);
  auto kernel = scan_forward_kernel<T, NS, G>;
  if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared)) return e;
  const dim3 grid(static_cast<unsigned>((p.channels + L::kChannels - 1) / L::kChannels), static_cast<unsigned>(p.batch));
  kernel<<<grid, L::kThreads, shared, stream>>>(p);
  return cudaGetLastError();
}

template <typename T, int G>
cudaError_t launch_backward(const ScanBackwardParams& q, cudaStream_t stream) {
  using L = BackwardLayout<G>;
  const int shared = static_cast<int>(sizeof(float)) * backward_shared_floats<G>();
  auto kernel = scan_backward_kernel<T, G>;
  if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared)) return e;
  const dim3 grid(static_cast<unsigned>((q.forward.channels + L::kChannels - 1) / L::kChannels),
                  static_cast<unsigned>(q.forward.batch));
  kernel<<<grid, L::kThreads, shared, stream>>>(q);
  return cudaGetLastError();
}

// Threads per channel in the backward pass.
int backward_slices(int64_t state_size) {
  int g = 1;
  while (g * kBackwardStates < state_size) g *= 2;
  return g;
}

bool valid(const ScanParams& p) {
  // A block's rows of steps are addressed with 32-bit offsets (ChunkShare).
  const int64_t max_block_rows = 512;
  return p.batch > 0 && p.channels > 0 && p.length > 0 && p.state_size > 0 && p.state_size <= kScanMaxStates &&
         p.batch <= 65535 && p.length < (int64_t{1} << 31) / max_block_rows;
}

}  // namespace

cudaError_t selective_scan_forward(const ScanParams& p, cudaStream_t stream) {
  if (!valid(p)) return cudaErrorInvalidValue;
  cudaError_t status = cudaSuccess;
  with_storage_type(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (p.state_size <= 4) status = launch_forward<T, 4, 1>(p, stream);
    else if (p.state_size <= 8) status = launch_forward<T, 8, 1>(p, stream);
    else if (p.state_size <= 16) status = launch_forward<T, 16, 1>(p, stream);
    else if (p.state_size <= 32) status = launch_forward<T, 16, 2>(p, stream);
    else status = launch_forward<T, 16, 4>(p, stream);
  });
  return status;
}

int64_t selective_scan_backward_channel_blocks(int64_t channels, int64_t state_size) {
  const int64_t rows = std::max(1, kBackwardThreads / (32 * backward_slices(state_size)));
  return (channels + 32 * rows - 1) / (32 * rows);
}

int64_t selective_scan_backward_scratch(int64_t batch, int64_t channels, int64_t length, int64_t state_size) {
  const int64_t chunks = (length + kBackwardChunk - 1) / kBackwardChunk;
  return batch * chunks * channels * backward_slices(state_size) * kBackwardStates;
}

cudaError_t selective_scan_backward(const ScanBackwardParams& q, cudaStream_t stream) {
  if (!valid(q.forward)) return cudaErrorInvalidValue;
  cudaError_t status = cudaSuccess;
  with_storage_type(q.forward.dtype, [&](auto tag) {
    using T = decltype(tag);
    switch (backward_slices(q.forward.state_size)) {
      case 1: status = launch_backward<T, 1>(q, stream); break;
      case 2: status = launch_backward<T, 2>(q, stream); break;
      case 4: status = launch_backward<T, 4>(q, stream); break;
      case 8: status = launch_backward<T, 8>(q, stream); break;
      default: status = launch_backward<T, 16>(q, stream); break;
    }
  });
  return status;
}

}  // namespace densessm::kernels
