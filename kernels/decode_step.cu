#include "decode_step.h"

#include <algorithm>
#include <cstdint>

#include <cooperative_groups.h>

#include "device_math.cuh"

namespace densessm::kernels {
namespace {

// A decode step has a handful of rows of a few thousand elements: the kernels are bound by the latency of
// their loads, not by bandwidth. So every thread issues the loads of several elements before it uses any
// (kPer in a row-wide pass, kOut in an output pass), and the long rows (the retention values, the Mamba
// channels) are split over several blocks, each of which computes the row's sum of squares itself (the
// row is read again from L2) and writes its slice of kThreads * kOut elements.
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kPer = 8;
constexpr int kOut = 2;
constexpr int64_t kSlice = int64_t{kThreads} * kOut;

/// 1 / sqrt(mean(f(c)^2 for c < n) + eps) over the block. Nothing is stored in the pass, so the unrolled
/// loop's loads are all issued before the first use.
template <typename F>
__device__ float inverse_rms(F f, int64_t n, float eps, float* shared) {
  float squares = 0.0f;
  for (int64_t base = threadIdx.x; base < n; base += int64_t{kThreads} * kPer) {
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int64_t c = base + int64_t{u} * kThreads;
      if (c < n) {
        const float v = f(c);
        squares += v * v;
      }
    }
  }
  return rsqrtf(block_sum<kWarps>(squares, shared) / static_cast<float>(n) + eps);
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
  const float r = inverse_rms([&](int64_t i) { return to_float(x[i]); }, p.dim, p.eps, shared);
  T* out = static_cast<T*>(p.out) + blockIdx.x * p.dim;
  for (int64_t base = threadIdx.x; base < p.dim; base += int64_t{kThreads} * kPer) {
    float v[kPer], w[kPer];
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int64_t i = base + int64_t{u} * kThreads;
      v[u] = i < p.dim ? to_float(x[i]) : 0.0f;
      w[u] = i < p.dim ? load<T>(p.weight, i) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int64_t i = base + int64_t{u} * kThreads;
      if (i < p.dim) out[i] = from_float<T>(v[u] * r * w[u]);
    }
  }
}

// The earlier prepare (PrepareKernel::kRowwise). Block (b, 0): the queries and keys of row b (their pairs, kOut
// per thread at a time); block (b, 1 + s): slice s of the values and the gate. Every block with dense fusion
// reads its whole row for the norm; that pass used to wait on each load in turn, because the SiLU's IEEE
// division carried a slow-path branch that the compiler did not hoist loads over (sigmoid now uses the fast
// reciprocal).
template <typename T>
__global__ void __launch_bounds__(kThreads) retention_prepare_rowwise_kernel(RetentionPrepareParams p) {
  __shared__ float shared[kWarps];
  const int64_t b = blockIdx.x, K = p.key_dim, E = p.value_dim;
  const T* y = static_cast<const T*>(p.y) + b * p.y_stride;
  const bool fuse = p.k_gate != nullptr;
  if (blockIdx.y == 0) {
    const T* yk = y + K;
    const int64_t row = b * K;
    const T* gate = fuse ? static_cast<const T*>(p.k_gate) + row : nullptr;
    const T* earlier = fuse ? static_cast<const T*>(p.previous_k) + row : nullptr;
    const T* norm = static_cast<const T*>(p.k_norm);
    const float r = fuse ? inverse_rms(
                               [&](int64_t c) {
                                 return silu(to_float(yk[c])) * p.key_scale +
                                        silu(to_float(gate[c])) * to_float(earlier[c]);
                               },
                               K, p.eps, shared)
                         : 1.0f;
    const double position = static_cast<double>(p.position[b]);
    for (int64_t base = threadIdx.x; base < K / 2; base += int64_t{kThreads} * kOut) {
      // Loads first: q, k, and the fusion's gate, earlier key and norm weight of both elements of each pair.
      float q[kOut][2], k[kOut][2], g[kOut][2], e[kOut][2], w[kOut][2];
      double angle[kOut];
#pragma unroll
      for (int u = 0; u < kOut; ++u) {
        const int64_t pair = base + int64_t{u} * kThreads;
        if (pair >= K / 2) continue;
        const int64_t c = 2 * pair;
        angle[u] = p.angles[c % p.head_qk_dim];
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          q[u][j] = to_float(y[c + j]);
          k[u][j] = to_float(yk[c + j]);
          if (fuse) {
            g[u][j] = to_float(gate[c + j]);
            e[u][j] = to_float(earlier[c + j]);
            w[u][j] = to_float(norm[c + j]);
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kOut; ++u) {
        const int64_t pair = base + int64_t{u} * kThreads;
        if (pair >= K / 2) continue;
        const int64_t c = 2 * pair;
        // The angle in float64 (position x frequency loses nothing there), brought into [-pi, pi] in
        // float64, then sin and cos on the special-function unit (absolute error ~5e-7 on [-pi, pi]): the
        // float64 sincos carries a slow path for large arguments (a local-memory stack frame).
        constexpr double kTwoPi = 6.283185307179586;
        const double theta = position * angle[u];
        float sn, cs;
        __sincosf(static_cast<float>(theta - kTwoPi * rint(theta / kTwoPi)), &sn, &cs);
        float kk[2], qq[2];
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const float key = silu(k[u][j]) * p.key_scale;
          store<T>(p.hidden_k, row + c + j, key);
          kk[j] = fuse ? (key + silu(g[u][j]) * e[u][j]) * r * w[u][j] : key;
          qq[j] = silu(q[u][j]);
        }
        store<T>(p.q, row + c, qq[0] * cs - qq[1] * sn);
        store<T>(p.q, row + c + 1, qq[1] * cs + qq[0] * sn);
        store<T>(p.k, row + c, kk[0] * cs - kk[1] * sn);
        store<T>(p.k, row + c + 1, kk[1] * cs + kk[0] * sn);
      }
    }
  } else {
    const T* yv = y + 2 * K;
    const T* yg = yv + E;
    const int64_t row = b * E;
    const T* gate = fuse ? static_cast<const T*>(p.v_gate) + row : nullptr;
    const T* earlier = fuse ? static_cast<const T*>(p.previous_v) + row : nullptr;
    const T* norm = static_cast<const T*>(p.v_norm);
    const float r = fuse ? inverse_rms(
                               [&](int64_t c) {
                                 return silu(to_float(yv[c])) + silu(to_float(gate[c])) * to_float(earlier[c]);
                               },
                               E, p.eps, shared)
                         : 1.0f;
    const int64_t first = (blockIdx.y - 1) * kSlice;
    float v[kOut], og[kOut], g[kOut], e[kOut], w[kOut];
#pragma unroll
    for (int u = 0; u < kOut; ++u) {
      const int64_t c = first + threadIdx.x + int64_t{u} * kThreads;
      if (c >= E) continue;
      v[u] = to_float(yv[c]);
      og[u] = to_float(yg[c]);
      if (fuse) {
        g[u] = to_float(gate[c]);
        e[u] = to_float(earlier[c]);
        w[u] = to_float(norm[c]);
      }
    }
#pragma unroll
    for (int u = 0; u < kOut; ++u) {
      const int64_t c = first + threadIdx.x + int64_t{u} * kThreads;
      if (c >= E) continue;
      const float value = silu(v[u]);
      store<T>(p.hidden_v, row + c, value);
      store<T>(p.v, row + c, fuse ? (value + silu(g[u]) * e[u]) * r * w[u] : value);
      store<T>(p.g, row + c, silu(og[u]));
    }
  }
}

// The prepare on one cluster of kPrepareCluster blocks per sequence (PrepareKernel::kCluster): block r of
// sequence b takes chunk r of the key pairs and chunk r of the values, so every element is read once, and a
// thread issues all its loads (kPreparePairs pairs, kPrepareValues values) before it uses any. With dense
// fusion each warp leaves its sums of squares (keys, values) in shared memory; after one cluster barrier
// every warp adds the cluster's partial sums over distributed shared memory, in the same order in every
// warp. The critical path is one L2 round, one cluster barrier and one distributed-shared-memory read.
constexpr int kPrepareCluster = 8;  // blocks per sequence: the portable maximum of a cluster
constexpr int kPrepareThreads = 512;
constexpr int kPrepareWarps = kPrepareThreads / 32;
constexpr int kPreparePairs = 1;
constexpr int kPrepareValues = 4;

template <typename T>
__global__ void __cluster_dims__(kPrepareCluster, 1, 1) __launch_bounds__(kPrepareThreads)
    retention_prepare_cluster_kernel(RetentionPrepareParams p) {
  namespace cg = cooperative_groups;
  __shared__ float partial[2][kPrepareWarps];  // [keys, values][warp]: the warp's sum of squares
  // In-row indices are 32-bit (the launch takes rows of at most kPrepareCluster * kPrepareThreads * per-thread
  // elements), so the head's angle is a 32-bit remainder.
  const int rank = static_cast<int>(blockIdx.x), threads = static_cast<int>(blockDim.x);
  const int K = static_cast<int>(p.key_dim), E = static_cast<int>(p.value_dim), pairs = K / 2;
  const unsigned dk = static_cast<unsigned>(p.head_qk_dim);
  const int pair_chunk = (pairs + kPrepareCluster - 1) / kPrepareCluster;
  const int value_chunk = (E + kPrepareCluster - 1) / kPrepareCluster;
  const int pair_end = min(pairs, (rank + 1) * pair_chunk), value_end = min(E, (rank + 1) * value_chunk);
  const int first_pair = rank * pair_chunk + static_cast<int>(threadIdx.x);
  const int first_value = rank * value_chunk + static_cast<int>(threadIdx.x);
  const int64_t b = blockIdx.y;
  const T* yq = static_cast<const T*>(p.y) + b * p.y_stride;
  const T* yk = yq + K;
  const T* yv = yq + 2 * K;
  const T* yg = yv + E;
  const bool fuse = p.k_gate != nullptr;
  const T* k_gate = fuse ? static_cast<const T*>(p.k_gate) + b * K : nullptr;
  const T* k_earlier = fuse ? static_cast<const T*>(p.previous_k) + b * K : nullptr;
  const T* k_norm = static_cast<const T*>(p.k_norm);
  const T* v_gate = fuse ? static_cast<const T*>(p.v_gate) + b * E : nullptr;
  const T* v_earlier = fuse ? static_cast<const T*>(p.previous_v) + b * E : nullptr;
  const T* v_norm = static_cast<const T*>(p.v_norm);

  // Loads, all of them before the first use; elements past the chunk stay 0 (and add 0 to the squares).
  const int64_t position = p.position[b];
  double angle[kPreparePairs] = {};
  float q[kPreparePairs][2] = {}, k[kPreparePairs][2] = {}, kg[kPreparePairs][2] = {}, ke[kPreparePairs][2] = {},
        kw[kPreparePairs][2] = {};
#pragma unroll
  for (int u = 0; u < kPreparePairs; ++u) {
    const int pair = first_pair + u * threads;
    if (pair >= pair_end) continue;
    const int c = 2 * pair;
    angle[u] = p.angles[static_cast<unsigned>(c) % dk];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      q[u][j] = to_float(yq[c + j]);
      k[u][j] = to_float(yk[c + j]);
      if (fuse) {
        kg[u][j] = to_float(k_gate[c + j]);
        ke[u][j] = to_float(k_earlier[c + j]);
        kw[u][j] = to_float(k_norm[c + j]);
      }
    }
  }
  float v[kPrepareValues] = {}, og[kPrepareValues] = {}, vg[kPrepareValues] = {}, ve[kPrepareValues] = {},
        vw[kPrepareValues] = {};
#pragma unroll
  for (int u = 0; u < kPrepareValues; ++u) {
    const int c = first_value + u * threads;
    if (c >= value_end) continue;
    v[u] = to_float(yv[c]);
    og[u] = to_float(yg[c]);
    if (fuse) {
      vg[u] = to_float(v_gate[c]);
      ve[u] = to_float(v_earlier[c]);
      vw[u] = to_float(v_norm[c]);
    }
  }

  // Everything that does not wait for the norms: the activations, the fusion's sums and their squares, and
  // the rotation's sin and cos: the angle position x frequency in float64 (it loses nothing there) brought
  // into [-pi, pi] in float64 (by a product with 1 / 2pi: where that rounds the other way the angle is pi or
  // -pi either way), then sin and cos on the special-function unit (absolute error ~5e-7 on [-pi, pi]).
  constexpr double kTwoPi = 6.283185307179586, kInverseTwoPi = 0.15915494309189535;
  float sn[kPreparePairs], cs[kPreparePairs], hidden_key[kPreparePairs][2], key[kPreparePairs][2];
  float key_squares = 0.0f, value_squares = 0.0f;
#pragma unroll
  for (int u = 0; u < kPreparePairs; ++u) {
    const double theta = static_cast<double>(position) * angle[u];
    __sincosf(static_cast<float>(fma(-kTwoPi, rint(theta * kInverseTwoPi), theta)), &sn[u], &cs[u]);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      q[u][j] = silu(q[u][j]);
      hidden_key[u][j] = silu(k[u][j]) * p.key_scale;
      key[u][j] = fuse ? hidden_key[u][j] + silu(kg[u][j]) * ke[u][j] : hidden_key[u][j];
      key_squares += key[u][j] * key[u][j];
    }
  }
  float hidden_value[kPrepareValues], value[kPrepareValues];
#pragma unroll
  for (int u = 0; u < kPrepareValues; ++u) {
    og[u] = silu(og[u]);
    hidden_value[u] = silu(v[u]);
    value[u] = fuse ? hidden_value[u] + silu(vg[u]) * ve[u] : hidden_value[u];
    value_squares += value[u] * value[u];
  }

  // The norms' scales over the whole rows (fuse is the same in every block: all or none take the barriers).
  // The cluster barrier's release is a GPU-scope fence that waits for the thread's stores, so every global
  // store comes after it.
  float key_scale = 1.0f, value_scale = 1.0f;
  const cg::cluster_group cluster = cg::this_cluster();
  if (fuse) {
    const int lane = static_cast<int>(threadIdx.x) % 32, warps = threads / 32;
    key_squares = warp_sum(key_squares);
    value_squares = warp_sum(value_squares);
    if (lane == 0) {
      partial[0][threadIdx.x / 32] = key_squares;
      partial[1][threadIdx.x / 32] = value_squares;
    }
    cluster.sync();  // every block of the cluster has started and left its partial sums
    float keys = 0.0f, values = 0.0f;
    for (int i = lane; i < kPrepareCluster * warps; i += 32) {
      const float* remote = cluster.map_shared_rank(&partial[0][0], i / warps);
      keys += remote[i % warps];
      values += remote[kPrepareWarps + i % warps];
    }
    keys = warp_sum(keys);
    values = warp_sum(values);
    // The other blocks' shared memory has been read; the arrive (release: the reads above are ordered
    // before it, which a relaxed arrive would not promise) and barrier_wait at the end keep every block until
    // all have read. No global store precedes it, so its fence waits on nothing.
    __cluster_barrier_arrive();
    key_scale = rsqrtf(keys / static_cast<float>(K) + p.eps);
    value_scale = rsqrtf(values / static_cast<float>(E) + p.eps);
  }

  // The outputs, the keys and queries rotated.
  const int64_t key_row = b * K, value_row = b * E;
#pragma unroll
  for (int u = 0; u < kPreparePairs; ++u) {
    const int pair = first_pair + u * threads;
    if (pair >= pair_end) continue;
    const int64_t c = key_row + 2 * pair;
    float kk[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      store<T>(p.hidden_k, c + j, hidden_key[u][j]);
      kk[j] = fuse ? key[u][j] * key_scale * kw[u][j] : key[u][j];
    }
    store<T>(p.q, c, q[u][0] * cs[u] - q[u][1] * sn[u]);
    store<T>(p.q, c + 1, q[u][1] * cs[u] + q[u][0] * sn[u]);
    store<T>(p.k, c, kk[0] * cs[u] - kk[1] * sn[u]);
    store<T>(p.k, c + 1, kk[1] * cs[u] + kk[0] * sn[u]);
  }
#pragma unroll
  for (int u = 0; u < kPrepareValues; ++u) {
    const int c = first_value + u * threads;
    if (c >= value_end) continue;
    store<T>(p.hidden_v, value_row + c, hidden_value[u]);
    store<T>(p.v, value_row + c, fuse ? value[u] * value_scale * vw[u] : value[u]);
    store<T>(p.g, value_row + c, og[u]);
  }
  if (fuse) cluster.barrier_wait();  // no block leaves while another may still read its partial sums
}

// One output row n (of the parts laid end to end) per thread, for every token. The loads of a row's weights
// are all issued before the first product (kTransitionChunk 16-byte loads at a time), and so are a thread's
// loads of the first layers' outputs: a loop that waited on one load per turn made the kernel a chain of L2
// latencies (7.8 us for 1 MB of weights at batch 6). The SiLU of those outputs waits in shared memory with
// the tokens innermost, two float4 reads per depth. Small blocks spread the rows over more SMs. The parts'
// parameters are picked with constant indices (a runtime index put the parameter struct on the stack).
constexpr int kTransitionThreads = 128;
constexpr int kTransitionChunk = 16;  // 16-byte loads of a row in flight at once (a rank of 128 halves)
constexpr int kTransitionPrologue = 8;  // loads of the first layers' outputs in flight per thread

template <typename T>
__device__ __forceinline__ void transition_madd(float (&acc)[kTransitionBatch], float w, const float* in) {
  const float4 low = *reinterpret_cast<const float4*>(in), high = *reinterpret_cast<const float4*>(in + 4);
  acc[0] += w * low.x;
  acc[1] += w * low.y;
  acc[2] += w * low.z;
  acc[3] += w * low.w;
  acc[4] += w * high.x;
  acc[5] += w * high.y;
  acc[6] += w * high.z;
  acc[7] += w * high.w;
}

template <typename T, bool kVector>
__global__ void __launch_bounds__(kTransitionThreads) transition_kernel(TransitionParams p) {
  static_assert(kTransitionBatch == 8, "the products read the tokens as two float4");
  // inner[(part * rank + j) * 8 + b] = silu(y[b, offset_part + j]); tokens past `batch` hold zeros, so
  // every accumulator stays finite and only `batch` of them are stored.
  __shared__ __align__(16) float inner[2 * kTransitionRank * kTransitionBatch];
  const int64_t total = p.parts * p.rank * kTransitionBatch;
  for (int64_t base = threadIdx.x; base < total; base += int64_t{kTransitionThreads} * kTransitionPrologue) {
    float v[kTransitionPrologue];
#pragma unroll
    for (int u = 0; u < kTransitionPrologue; ++u) {
      const int64_t i = base + int64_t{u} * kTransitionThreads;
      const int64_t b = i % kTransitionBatch, j = i / kTransitionBatch % p.rank;
      const int64_t offset = i < p.rank * kTransitionBatch ? p.offset[0] : p.offset[1];
      v[u] = i < total && b < p.batch ? to_float(static_cast<const T*>(p.y)[b * p.y_stride + offset + j]) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kTransitionPrologue; ++u) {
      const int64_t i = base + int64_t{u} * kTransitionThreads;
      if (i < total) inner[i] = silu(v[u]);  // silu(0) = 0 for the padding tokens
    }
  }
  __syncthreads();
  const int64_t row = int64_t{blockIdx.x} * kTransitionThreads + threadIdx.x;
  const bool second = row >= p.n[0];
  const int64_t n = second ? row - p.n[0] : row, rows = second ? p.n[1] : p.n[0];
  if ((second && p.parts < 2) || n >= rows) return;
  const T* w = static_cast<const T*>(second ? p.weight[1] : p.weight[0]) + n * p.rank;
  const float* in = inner + (second ? p.rank * kTransitionBatch : 0);
  float acc[kTransitionBatch] = {};
  if constexpr (kVector) {
    constexpr int kWidth = static_cast<int>(sizeof(uint4) / sizeof(T));  // 8 halves or 4 floats
    for (int64_t j0 = 0; j0 < p.rank; j0 += int64_t{kWidth} * kTransitionChunk) {
      uint4 packed[kTransitionChunk];
#pragma unroll
      for (int c = 0; c < kTransitionChunk; ++c) {
        const int64_t j = j0 + int64_t{c} * kWidth;
        if (j < p.rank) packed[c] = *reinterpret_cast<const uint4*>(w + j);
      }
#pragma unroll
      for (int c = 0; c < kTransitionChunk; ++c) {
        const int64_t j = j0 + int64_t{c} * kWidth;
        if (j >= p.rank) break;
        const T* values = reinterpret_cast<const T*>(&packed[c]);
#pragma unroll
        for (int u = 0; u < kWidth; ++u) transition_madd<T>(acc, to_float(values[u]), in + (j + u) * kTransitionBatch);
      }
    }
  } else {
    for (int64_t j0 = 0; j0 < p.rank; j0 += kTransitionChunk) {
      float wj[kTransitionChunk];
#pragma unroll
      for (int c = 0; c < kTransitionChunk; ++c) wj[c] = j0 + c < p.rank ? to_float(w[j0 + c]) : 0.0f;
#pragma unroll
      for (int c = 0; c < kTransitionChunk; ++c) {
        if (j0 + c >= p.rank) break;
        transition_madd<T>(acc, wj[c], in + (j0 + c) * kTransitionBatch);
      }
    }
  }
  T* out = static_cast<T*>(second ? p.out[1] : p.out[0]);
#pragma unroll
  for (int b = 0; b < kTransitionBatch; ++b) {
    if (b < p.batch) out[b * rows + n] = from_float<T>(acc[b]);
  }
}

// The output pass takes kPer elements per thread, as the norm's pass does: a head's dv values (1280 in the
// 1.3B model) in one round of loads, not two.
template <typename T>
__global__ void __launch_bounds__(kThreads) retention_output_kernel(RetentionOutputParams p) {
  __shared__ float shared[kWarps];
  const int64_t offset = static_cast<int64_t>(blockIdx.x) * p.dv;  // (b, h): o and g share the layout
  const T* o = static_cast<const T*>(p.o) + offset;
  const float r = inverse_rms([&](int64_t c) { return to_float(o[c]); }, p.dv, p.eps, shared);
  for (int64_t base = threadIdx.x; base < p.dv; base += int64_t{kThreads} * kPer) {
    float v[kPer], w[kPer], g[kPer];
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int64_t c = base + int64_t{u} * kThreads;
      if (c >= p.dv) continue;
      v[u] = to_float(o[c]);
      w[u] = load<T>(p.norm, c);
      g[u] = load<T>(p.g, offset + c);
    }
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int64_t c = base + int64_t{u} * kThreads;
      if (c < p.dv) store<T>(p.out, offset + c, v[u] * r * w[u] * g[u]);
    }
  }
}

// Block (b, s): slice s of row b's channels.
template <typename T>
__global__ void __launch_bounds__(kThreads) mamba_prepare_kernel(MambaPrepareParams p) {
  __shared__ float shared[kWarps];
  const int64_t b = blockIdx.x, C = p.channels, row = b * C, past = p.width - 1;
  const T* x = static_cast<const T*>(p.y) + b * p.y_stride;
  const bool fuse = p.gate != nullptr;
  const T* gate = fuse ? static_cast<const T*>(p.gate) + row : nullptr;
  const T* earlier = fuse ? static_cast<const T*>(p.previous) + row : nullptr;
  const float r =
      fuse ? inverse_rms([&](int64_t c) { return to_float(x[c]) + silu(to_float(gate[c])) * to_float(earlier[c]); }, C,
                         p.eps, shared)
           : 1.0f;
  const int64_t first = blockIdx.y * kSlice;
  for (int u = 0; u < kOut; ++u) {
    const int64_t c = first + threadIdx.x + int64_t{u} * kThreads;
    if (c >= C) break;
    const T xc = x[c];
    static_cast<T*>(p.hidden)[row + c] = xc;
    // The convolution sees (and keeps) the fused input in the storage dtype, as the step form does.
    const T input = fuse ? from_float<T>((to_float(xc) + silu(to_float(gate[c])) * to_float(earlier[c])) * r *
                                         load<T>(p.norm, c))
                         : xc;
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

cudaError_t retention_decode_prepare(const RetentionPrepareParams& p, cudaStream_t stream, PrepareKernel kernel) {
  if (p.batch == 0) return cudaSuccess;
  // A block of the cluster kernel takes ceil(K / 2 / 8) pairs and ceil(E / 8) values, kPreparePairs and
  // kPrepareValues per thread; rows longer than its largest block go to the row-wise kernel.
  const int64_t pair_chunk = (p.key_dim / 2 + kPrepareCluster - 1) / kPrepareCluster;
  const int64_t value_chunk = (p.value_dim + kPrepareCluster - 1) / kPrepareCluster;
  const int64_t needed = std::max((pair_chunk + kPreparePairs - 1) / kPreparePairs,
                                  (value_chunk + kPrepareValues - 1) / kPrepareValues);
  const int64_t threads = std::max<int64_t>(32, (needed + 31) / 32 * 32);
  if (kernel == PrepareKernel::kCluster && threads <= kPrepareThreads && p.batch <= 65535) {
    const dim3 grid(kPrepareCluster, static_cast<unsigned>(p.batch));
    with_storage_type(p.dtype, [&](auto t) {
      retention_prepare_cluster_kernel<decltype(t)><<<grid, static_cast<unsigned>(threads), 0, stream>>>(p);
    });
  } else {
    const dim3 grid(static_cast<unsigned>(p.batch), static_cast<unsigned>(1 + (p.value_dim + kSlice - 1) / kSlice));
    with_storage_type(p.dtype,
                      [&](auto t) { retention_prepare_rowwise_kernel<decltype(t)><<<grid, kThreads, 0, stream>>>(p); });
  }
  return cudaGetLastError();
}

cudaError_t transition_gates(const TransitionParams& p, cudaStream_t stream) {
  if (p.batch < 1 || p.batch > kTransitionBatch || p.rank < 1 || p.rank > kTransitionRank || p.parts < 1 ||
      p.parts > 2) {
    return cudaErrorInvalidValue;
  }
  const int64_t rows = p.n[0] + (p.parts > 1 ? p.n[1] : 0);
  if (rows == 0) return cudaSuccess;
  bool vector = p.rank % 8 == 0;
  for (int i = 0; i < p.parts; ++i) vector = vector && reinterpret_cast<uintptr_t>(p.weight[i]) % 16 == 0;
  const unsigned grid = static_cast<unsigned>((rows + kTransitionThreads - 1) / kTransitionThreads);
  with_storage_type(p.dtype, [&](auto t) {
    if (vector) {
      transition_kernel<decltype(t), true><<<grid, kTransitionThreads, 0, stream>>>(p);
    } else {
      transition_kernel<decltype(t), false><<<grid, kTransitionThreads, 0, stream>>>(p);
    }
  });
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
    const dim3 grid(static_cast<unsigned>(p.batch), static_cast<unsigned>((p.channels + kSlice - 1) / kSlice));
    mamba_prepare_kernel<decltype(t)><<<grid, kThreads, 0, stream>>>(p);
  });
  return cudaGetLastError();
}

}  // namespace densessm::kernels
