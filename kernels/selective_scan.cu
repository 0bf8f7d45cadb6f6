// The selective scan, forward and backward (see selective_scan.h for the formulas and layouts).
//
// Work split: a block takes one batch row and a run of channels; each thread owns one channel and a slice
// of NS of its N states, held in registers, and runs the recurrence sequentially over time. Time is walked
// in chunks: the block stores a chunk of u, delta (with bias and softplus applied once per element), Bm and
// Cm in shared memory, runs the chunk, and writes the chunk's outputs; the next chunk's loads are issued
// before the current chunk's arithmetic so that their latency hides behind it.
// - Forward: the G = N / 4 threads of a channel are neighbouring lanes of one warp; each also owns K / G
//   consecutive steps of the chunk for the I/O (16-byte loads and stores where aligned), and the per-step
//   sums Cm . h meet through a reduce-scatter of shuffles that leaves each lane its own steps' sums.
// - Backward: the G threads that share a channel sit in different warps, so the 32 lanes of a warp are 32
//   channels of the same batch row with the same state slice: Bm_t and Cm_t are one shared-memory
//   broadcast per step, and per-channel sums meet in shared memory (ChunkShare for the prefetch).
// The forward pass does B*C*T*N exponentials: the special-function unit bounds it at about 0.26 ms for
// B 8, C 4096, T 2048, N 16 on an H200 (docs/kernels/selective_scan.md has the figures).
#include "selective_scan.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>

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

// Forward: 4 states per thread and G = N / 4 threads per channel on neighbouring lanes of one warp (their
// sums of Cm . h meet through shuffles), chunks of 16 steps, blocks of 128 threads. At N 16 that is
// 4 B C threads, held to 64 registers so that 8 blocks (32 warps) fit on an SM: the training shape's grid
// (B 8, C 4096) is then resident in one wave, with four times the warps of one thread per channel to hide
// the latency of the exponentials and of the shared-memory loads.
constexpr int kForwardStates = 4;
constexpr int kForwardChunk = 16;
constexpr int kForwardThreads = 128;
// Backward: 4 states per thread so that a chunk of 16 steps of states fits in registers; 256 threads.
constexpr int kBackwardStates = 4;
constexpr int kBackwardChunk = 16;
constexpr int kBackwardThreads = 256;

// The forward's split: G threads per channel, each with kForwardStates states and, for loading and storing,
// K / G consecutive steps of the chunk.
template <int G>
struct ForwardLayout {
  static constexpr int kStates = kForwardStates * G;     // padded N
  static constexpr int kChannels = kForwardThreads / G;  // per block
  static constexpr int kOwnSteps = kForwardChunk / G;
  static constexpr int kRow = 2 * kForwardChunk + 2;     // floats per channel of (delta, u) pairs: +2 spreads the banks
};

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
// it, so their latency hides behind the arithmetic (the blocks are few). A thread
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

// The raw bits of one element of a storage type (16-bit types in the low half) as float, and back.
template <typename T>
__device__ __forceinline__ float float_of_bits(unsigned bits) {
  if constexpr (std::is_same_v<T, float>) {
    return __uint_as_float(bits);
  } else if constexpr (std::is_same_v<T, __half>) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
  } else {
    return __bfloat162float(__ushort_as_bfloat16(static_cast<unsigned short>(bits)));
  }
}
template <typename T>
__device__ __forceinline__ unsigned bits_of_float(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return __float_as_uint(v);
  } else if constexpr (std::is_same_v<T, __half>) {
    return __half_as_ushort(__float2half_rn(v));
  } else {
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  }
}

// K consecutive elements of one row, kept as raw 32-bit words (16-bit types two to a word): a thread's own
// steps of a chunk. Moved with one access of up to 16 bytes per 16 bytes when the run is whole and its
// address aligned (row lengths that are a multiple of K, as in training), element by element otherwise.
template <typename T, int K>
struct Run {
  static constexpr int kBytes = K * static_cast<int>(sizeof(T));
  static constexpr int kWords = (kBytes + 3) / 4;
  static constexpr int kPerWord = 4 / static_cast<int>(sizeof(T));
  unsigned w[kWords];

  __device__ static bool vector(const T* at, int count) {
    constexpr int kAlign = kBytes < 16 ? kBytes : 16;
    return kBytes >= 4 && count == K && reinterpret_cast<uintptr_t>(at) % kAlign == 0;
  }
  /// Elements [0, count) from `at`, zeros after.
  __device__ void load(const T* at, int count) {
    if (vector(at, count)) {
      if constexpr (kBytes % 16 == 0) {
#pragma unroll
        for (int i = 0; i < kBytes / 16; ++i) {
          const uint4 q = __ldg(reinterpret_cast<const uint4*>(at) + i);
          w[4 * i] = q.x, w[4 * i + 1] = q.y, w[4 * i + 2] = q.z, w[4 * i + 3] = q.w;
        }
      } else if constexpr (kBytes == 8) {
        const uint2 q = __ldg(reinterpret_cast<const uint2*>(at));
        w[0] = q.x, w[1] = q.y;
      } else if constexpr (kBytes == 4) {
        w[0] = __ldg(reinterpret_cast<const unsigned*>(at));
      }
      return;
    }
#pragma unroll
    for (int i = 0; i < kWords; ++i) w[i] = 0;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      if (j >= count) continue;
      unsigned bits;
      if constexpr (sizeof(T) == 4) {
        bits = __ldg(reinterpret_cast<const unsigned*>(at) + j);
      } else {
        bits = __ldg(reinterpret_cast<const unsigned short*>(at) + j);
      }
      w[j / kPerWord] |= bits << (16 * (j % kPerWord));
    }
  }
  __device__ float get(int j) const { return float_of_bits<T>(w[j / kPerWord] >> (16 * (j % kPerWord))); }
  /// Writes v[0, count) to `at`.
  __device__ static void store(T* at, const float (&v)[K], int count) {
    if (vector(at, count)) {
      unsigned words[kWords] = {};
#pragma unroll
      for (int j = 0; j < K; ++j) words[j / kPerWord] |= bits_of_float<T>(v[j]) << (16 * (j % kPerWord));
      if constexpr (kBytes % 16 == 0) {
#pragma unroll
        for (int i = 0; i < kBytes / 16; ++i) {
          reinterpret_cast<uint4*>(at)[i] = make_uint4(words[4 * i], words[4 * i + 1], words[4 * i + 2], words[4 * i + 3]);
        }
      } else if constexpr (kBytes == 8) {
        *reinterpret_cast<uint2*>(at) = make_uint2(words[0], words[1]);
      } else if constexpr (kBytes == 4) {
        *reinterpret_cast<unsigned*>(at) = words[0];
      }
      return;
    }
#pragma unroll
    for (int j = 0; j < K; ++j) {
      if (j < count) at[j] = from_float<T>(v[j]);
    }
  }
};

// Sums v[] over the G neighbouring lanes of a channel (G a power of two up to K), scattering the sums: lane
// `slice` of the channel ends with the sums of steps [slice K / G, (slice + 1) K / G) in v[0, K / G).
// Round r halves the values a lane holds: it keeps one half of its steps (the upper one when bit
// G >> (r + 1) of its slice is set), adds the partner's same half and sends its other half. K - K / G
// shuffles. Round 0 only pairs v[i] with v[i + K / 2], so it can run pair by pair as the steps come
// (exchange_steps), which keeps fewer values live.
template <int G, int K>
struct StepSums {
  static constexpr int kRounds = G >= 16 ? 4 : G >= 8 ? 3 : G >= 4 ? 2 : G >= 2 ? 1 : 0;
  static_assert(1 << kRounds == G && G <= K, "G is a power of two up to K");

  /// Round r's exchange of pair i.
  __device__ static void exchange(float (&v)[K], int r, int i, int slice) {
    const int offset = G >> (r + 1), half = K >> (r + 1);
    const bool upper = slice & offset;
    const float keep = upper ? v[i + half] : v[i];
    const float send = upper ? v[i] : v[i + half];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, offset);
  }
  /// Rounds [first, kRounds).
  __device__ static void rounds(float (&v)[K], int first, int slice) {
#pragma unroll
    for (int r = 0; r < kRounds; ++r) {
      if (r < first) continue;
#pragma unroll
      for (int i = 0; i < K / 2; ++i) {
        if (i < K >> (r + 1)) exchange(v, r, i, slice);
      }
    }
  }
};

// 64 registers (8 blocks per SM) where N 16 needs it and N 32 spills little; N 64 keeps its Bm, Cm prefetch
// in registers at 4 blocks per SM.
template <typename T, int G>
__global__ void __launch_bounds__(kForwardThreads, G == 4 || G == 8 ? 8 : 4)
scan_forward_kernel(const ScanParams p) {
  using L = ForwardLayout<G>;
  constexpr int NS = kForwardStates, K = kForwardChunk, KG = L::kOwnSteps, NP = L::kStates, CH = L::kChannels;
  // Two of each, by chunk parity: a buffer is rewritten two chunks after it was read, with the barrier of
  // the chunk in between, so one barrier per chunk suffices.
  __shared__ __align__(16) float s_pairs[2][CH * L::kRow];  // (CH, K) pairs (effective delta, u)
  __shared__ __align__(16) float s_B[2][K * NP];            // (K, NP) Bm
  __shared__ __align__(16) float s_C[2][K * NP];            // (K, NP) Cm

  const int slice = static_cast<int>(threadIdx.x) % G, local_channel = static_cast<int>(threadIdx.x) / G;
  const int64_t b = blockIdx.y, c0 = static_cast<int64_t>(blockIdx.x) * CH, c = c0 + local_channel;
  const int64_t C = p.channels, steps = p.length, N = p.state_size;
  const bool active = c < C;
  float A2[NS], h[NS];  // A in log2 units; the state slice
#pragma unroll
  for (int n = 0; n < NS; ++n) {
    const int64_t state = slice * NS + n;
    const bool valid = active && state < N;
    A2[n] = valid ? p.A[c * N + state] * kLog2e : 0.0f;
    h[n] = valid && p.initial_state ? p.initial_state[(b * C + c) * N + state] : 0.0f;
  }
  const float D = active && p.D ? p.D[c] : 0.0f;
  const float bias = active && p.delta_bias ? p.delta_bias[c] : 0.0f;
  const int64_t row = active ? (b * C + c) * steps : 0;  // the channel's row of u, delta, z and out
  const int length = static_cast<int>(steps);              // valid() bounds it
  // The thread's own steps of the chunk at t0, for loading u, delta, z and storing out: t0 + slice KG + [0, own).
  const int own_end = active ? length - slice * KG : 0;
  auto own = [&](int t0) {
    const int left = own_end - t0;
    return left > 0 ? (left < KG ? left : KG) : 0;
  };

  Run<T, KG> u_run, delta_run, z_run;
  ChunkShare<T, NP, K, kForwardThreads> next_B, next_C;
  auto prefetch = [&](int t0) {
    const int64_t at = row + t0 + slice * KG;
    u_run.load(static_cast<const T*>(p.u) + at, own(t0));
    delta_run.load(static_cast<const T*>(p.delta) + at, own(t0));
    const int64_t corner = b * N * steps + t0;  // (b, 0, t0) of Bm and Cm
    next_B.load(static_cast<const T*>(p.Bm) + corner, steps, N, steps - t0);
    next_C.load(static_cast<const T*>(p.Cm) + corner, steps, N, steps - t0);
  };
  // z is only needed by the chunk's epilogue: loaded after the previous epilogue.
  auto prefetch_z = [&](int t0) {
    if (p.z) z_run.load(static_cast<const T*>(p.z) + row + t0 + slice * KG, own(t0));
  };
  prefetch(0);
  prefetch_z(0);
  int parity = 0;
  for (int t0 = 0; t0 < length; t0 += K, parity ^= 1) {
    const float* sb = s_B[parity];
    const float* sc = s_C[parity];
    store_states(p, next_B, &next_C, t0, NP, s_B[parity], s_C[parity]);
    // Bias and softplus once per element, by the element's owner; zeros past the end (decay 1, input 0).
    const int count = own(t0);
    float2* own_pairs = reinterpret_cast<float2*>(s_pairs[parity] + local_channel * L::kRow) + slice * KG;
#pragma unroll
    for (int j = 0; j < KG; ++j) {
      float dv = 0.0f, uv = 0.0f;
      if (j < count) {
        const float raw = delta_run.get(j) + bias;
        dv = p.delta_softplus ? softplus(raw) : raw;
        uv = u_run.get(j);
      }
      own_pairs[j] = make_float2(dv, uv);
    }
    __syncthreads();
    if (t0 + K < length) prefetch(t0 + K);

    // The recurrence over the chunk. The decays do not depend on the state, so with the steps unrolled the
    // exponentials of later steps are issued while earlier steps' updates wait.
    const float2* pairs = reinterpret_cast<const float2*>(s_pairs[parity] + local_channel * L::kRow);
    using Sums = StepSums<G, K>;
    float y[K];  // Cm_t . h_t over the thread's states, then summed over the channel's lanes
#pragma unroll
    for (int tt = 0; tt < K; ++tt) {
      const float2 pair = pairs[tt];
      const float dt = pair.x, du = dt * pair.y;
      const float4* bq = reinterpret_cast<const float4*>(sb + tt * NP + slice * NS);
      const float4* cq = reinterpret_cast<const float4*>(sc + tt * NP + slice * NS);
      float acc = 0.0f;
#pragma unroll
      for (int q = 0; q < NS / 4; ++q) {
        const float4 bv = bq[q], cv = cq[q];
        const float bs[4] = {bv.x, bv.y, bv.z, bv.w}, cs[4] = {cv.x, cv.y, cv.z, cv.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int n = 4 * q + j;
          h[n] = fast_exp2(dt * A2[n]) * h[n] + du * bs[j];
          acc += cs[j] * h[n];
        }
      }
      y[tt] = acc;
      if (G > 1 && tt >= K / 2) Sums::exchange(y, 0, tt - K / 2, slice);
    }
    Sums::rounds(y, 1, slice);

    // The thread's own steps: y = (Cm . h + D u) silu(z).
    float out[KG];
#pragma unroll
    for (int j = 0; j < KG; ++j) {
      out[j] = y[j] + D * own_pairs[j].y;
      if (p.z) out[j] *= silu(z_run.get(j));
    }
    Run<T, KG>::store(static_cast<T*>(p.out) + row + t0 + slice * KG, out, count);
    if (t0 + K < length) prefetch_z(t0 + K);
  }
  if (p.final_state && active) {
#pragma unroll
    for (int n = 0; n < NS; ++n) {
      const int64_t state = slice * NS + n;
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

template <typename T, int G>
cudaError_t launch_forward(const ScanParams& p, cudaStream_t stream) {
  using L = ForwardLayout<G>;
  auto kernel = scan_forward_kernel<T, G>;
  // Shared memory before L1: 8 blocks of 12.8 KB (N 16) need the larger carveouts, and the kernel's
  // global reads are streamed once.
  if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                           cudaSharedmemCarveoutMaxShared)) {
    return e;
  }
  const dim3 grid(static_cast<unsigned>((p.channels + L::kChannels - 1) / L::kChannels), static_cast<unsigned>(p.batch));
  kernel<<<grid, kForwardThreads, 0, stream>>>(p);
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
    if (p.state_size <= 4) status = launch_forward<T, 1>(p, stream);
    else if (p.state_size <= 8) status = launch_forward<T, 2>(p, stream);
    else if (p.state_size <= 16) status = launch_forward<T, 4>(p, stream);
    else if (p.state_size <= 32) status = launch_forward<T, 8>(p, stream);
    else status = launch_forward<T, 16>(p, stream);
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
