#include "chunk_retention.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "device_math.cuh"
#include "mma.cuh"

namespace densessm::kernels {
namespace {

constexpr int kChunk = static_cast<int>(kRetentionChunk);  // tokens per chunk
constexpr int kTile = 64;    // a block's tile of state rows/columns or of output columns
constexpr int kDepth = 64;   // width of one staged slice of a long reduction (dk or dv)
constexpr int kPad = 8;      // shared-memory row padding: fragment loads of 8 rows hit distinct banks
constexpr int kLd = kTile + kPad;      // row stride of every staged (64 x 64) slice
constexpr int kSlice = kChunk * kLd;   // elements of one staged slice
constexpr int kWarps = 4;    // each warp owns 16 rows of the block's 64-row tile
constexpr int kThreads = kWarps * 32;
static_assert(kChunk == kTile && kTile == kDepth && kTile == 16 * kWarps,
              "the warps' rows must cover a chunk and a tile, and every staged slice is (64 x 64)");

// A warp's 16 x (8 kN) float32 accumulator in the register layout of mma.m16n8k16: for n < kN and
// e = 0..3, v[n][e] is element (row(e), 8n + 2 (lane % 4) + e % 2) with row(e) = lane / 4 + 8 (e / 2).
// The float32 path keeps the same layout, so the epilogues are written once.
template <int kN>
struct Fragment {
  float v[kN][4];
  __device__ void zero() {
#pragma unroll
    for (int n = 0; n < kN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) v[n][e] = 0.0f;
  }
  __device__ void scale(float s) {
#pragma unroll
    for (int n = 0; n < kN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) v[n][e] *= s;
  }
  __device__ static int row(int e) { return (threadIdx.x & 31) / 4 + 8 * (e / 2); }
  __device__ static int col(int n, int e) { return 8 * n + 2 * (threadIdx.x & 3) + (e & 1); }
};
using Accumulator = Fragment<8>;  // a whole 16 x 64 tile

// Writes value(r, c, v) for each element v of the accumulator at (r, c) of the warp's tile to dst[r * ld + c],
// the rows r < rows and columns c < cols that exist; adjacent columns as one store when ld is even (the
// callers' dst then lies at an even offset in its allocation, a sum of multiples of ld and 64).
template <typename T, int kN, typename F>
__device__ __forceinline__ void store_tile(T* dst, int64_t ld, int64_t rows, int64_t cols, const Fragment<kN>& acc,
                                           F value) {
#pragma unroll
  for (int n = 0; n < kN; ++n)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = Accumulator::row(2 * h), c = Accumulator::col(n, 0);
      if (r >= rows || c >= cols) continue;
      T* at = dst + r * ld + c;
      const T v0 = from_float<T>(value(r, c, acc.v[n][2 * h]));
      const T v1 = from_float<T>(value(r, c + 1, acc.v[n][2 * h + 1]));
      if (ld % 2 == 0) {
        struct alignas(2 * sizeof(T)) Pair {
          T x, y;
        };
        *reinterpret_cast<Pair*>(at) = Pair{v0, v1};  // c is even, so c + 1 < cols too
      } else {
        at[0] = v0;
        if (c + 1 < cols) at[1] = v1;
      }
    }
}

// The accumulator's elements (r, c) of the warp's tile = src[r * ld + c] of a float32 matrix for the rows
// r < rows and columns c < cols that exist, zeros elsewhere.
__device__ __forceinline__ void load_tile(Accumulator& acc, const float* src, int64_t ld, int64_t rows, int64_t cols) {
#pragma unroll
  for (int n = 0; n < 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = Accumulator::row(e), c = Accumulator::col(n, e);
      acc.v[n][e] = r < rows && c < cols ? src[r * ld + c] : 0.0f;
    }
}

__device__ __forceinline__ uint32_t pair(const void* p) { return *static_cast<const uint32_t*>(p); }

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Asynchronous global -> shared copies (cp.async): no registers hold a slice in flight, so the next
// slice loads while the current one multiplies. One commit group per staged slice; wait_copies waits
// for all of this thread's groups, a __syncthreads after it for everyone's.
__device__ __forceinline__ void copy_async_16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_address(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void commit_copies() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void wait_copies() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// Four 8 x 8 blocks of 16-bit elements, transposed: lane i gives the address of row i % 8 of block i / 8
// and receives in r[m] the elements (2 (i % 4), i / 4) and (2 (i % 4) + 1, i / 4) of block m.
__device__ __forceinline__ void load_transposed(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}

// A pair of 16-bit elements times (w0, w1), rounded once as the element type (as staging them scaled would).
template <typename T>
__device__ __forceinline__ uint32_t weigh(uint32_t x, float w0, float w1) {
  T e[2];
  memcpy(e, &x, sizeof(x));
  e[0] = from_float<T>(to_float(e[0]) * w0);
  e[1] = from_float<T>(to_float(e[1]) * w1);
  memcpy(&x, e, sizeof(x));
  return x;
}

// acc += A B for the warp's 16 rows (kN even), both operands in shared memory, depth a multiple of 16:
//   A (16 x depth): a[i * lda + k], or with kAKMajor a[k * lda + i] times weight[k];
//   B (depth x 8 kN): b[n * ldb + k], or with kBKMajor b[k * ldb + n].
// The k-major operands are read with ldmatrix.trans, so they are staged as they lie in global memory.
// bfloat16/float16 run on the tensor cores; float32 runs on FMA (tf32 would miss the 1e-5 tolerance).
template <typename T, bool kAKMajor, bool kBKMajor, int kN>
__device__ __forceinline__ void warp_product(Fragment<kN>& acc, const T* a, int lda, const T* b, int ldb, int depth,
                                             const float* weight = nullptr) {
  const int lane = threadIdx.x & 31, g = lane / 4, t = lane & 3, m = lane / 8;
  if constexpr (std::is_same_v<T, float>) {
    for (int k = 0; k < depth; ++k) {
      float a0 = kAKMajor ? a[k * lda + g] : a[g * lda + k];
      float a1 = kAKMajor ? a[k * lda + g + 8] : a[(g + 8) * lda + k];
      if constexpr (kAKMajor) {
        a0 *= weight[k];
        a1 *= weight[k];
      }
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        const int j = 8 * n + 2 * t;
        const float b0 = kBKMajor ? b[k * ldb + j] : b[j * ldb + k];
        const float b1 = kBKMajor ? b[k * ldb + j + 1] : b[(j + 1) * ldb + k];
        acc.v[n][0] += a0 * b0;
        acc.v[n][1] += a0 * b1;
        acc.v[n][2] += a1 * b0;
        acc.v[n][3] += a1 * b1;
      }
    }
  } else {
#pragma unroll 2
    for (int k = 0; k < depth; k += 16) {
      uint32_t af[4];
      if constexpr (kAKMajor) {
        // Blocks (k 0-7, rows 0-7), (k 0-7, rows 8-15), (k 8-15, rows 0-7), (k 8-15, rows 8-15).
        load_transposed(af, a + (k + 8 * (m / 2) + lane % 8) * lda + 8 * (m % 2));
        const float w0 = weight[k + 2 * t], w1 = weight[k + 2 * t + 1];
        const float w8 = weight[k + 8 + 2 * t], w9 = weight[k + 9 + 2 * t];
        af[0] = weigh<T>(af[0], w0, w1);
        af[1] = weigh<T>(af[1], w0, w1);
        af[2] = weigh<T>(af[2], w8, w9);
        af[3] = weigh<T>(af[3], w8, w9);
      } else {
        af[0] = pair(a + g * lda + k + 2 * t);
        af[1] = pair(a + (g + 8) * lda + k + 2 * t);
        af[2] = pair(a + g * lda + k + 8 + 2 * t);
        af[3] = pair(a + (g + 8) * lda + k + 8 + 2 * t);
      }
#pragma unroll
      for (int n = 0; n < kN; n += 2) {
        uint32_t bf[2][2];
        if constexpr (kBKMajor) {
          // Blocks (k 0-7, columns 8n..), (k 8-15, 8n..), (k 0-7, 8n+8..), (k 8-15, 8n+8..).
          uint32_t r[4];
          load_transposed(r, b + (k + 8 * (m % 2) + lane % 8) * ldb + 8 * (n + m / 2));
          bf[0][0] = r[0];
          bf[0][1] = r[1];
          bf[1][0] = r[2];
          bf[1][1] = r[3];
        } else {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const T* col = b + (8 * (n + h) + g) * ldb + k + 2 * t;
            bf[h][0] = pair(col);
            bf[h][1] = pair(col + 8);
          }
        }
        mma_16x8x16<T>(acc.v[n], af, bf[0]);
        mma_16x8x16<T>(acc.v[n + 1], af, bf[1]);
      }
    }
  }
}

// Copies the (rows x cols) window at (row0, col0) of a row-major (nrows x ncols) global matrix into
// shared memory as s[r][c] (row stride ld), with zeros outside the matrix (so partial chunks and tiles
// need no other masking). When the rows are whole 16-byte vectors (ncols a multiple of the vector, cols
// always is) each thread issues cp.async copies of one vector, completed by wait_copies; otherwise it
// copies an element at a time, synchronously.
template <typename T, int kBlockThreads = kThreads>
__device__ __forceinline__ void stage(T* s, int ld, const T* src, int64_t nrows, int64_t ncols, int64_t row0,
                                      int64_t col0, int rows, int cols) {
  constexpr int kVector = 16 / sizeof(T);
  if (ncols % kVector == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0) {
    const int vectors = cols / kVector;
    for (int i = threadIdx.x; i < rows * vectors; i += kBlockThreads) {
      const int r = i / vectors, c = (i % vectors) * kVector;
      const int64_t gr = row0 + r, gc = col0 + c;
      T* dst = s + r * ld + c;
      if (gr < nrows && gc < ncols) {
        copy_async_16(dst, src + gr * ncols + gc);
      } else {
        *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);  // zero in every element type
      }
    }
    return;
  }
  for (int i = threadIdx.x; i < rows * cols; i += kBlockThreads) {
    const int r = i / cols, c = i % cols;  // c fastest: consecutive threads read consecutive addresses
    const int64_t gr = row0 + r, gc = col0 + c;
    s[r * ld + c] = gr < nrows && gc < ncols ? src[gr * ncols + gc] : from_float<T>(0.0f);
  }
}

// 1 / sqrt(w_n), w_n = (1 - g^(n+1)) / (1 - g), in float64 as the reference computes it.
__device__ double inverse_norm(double log_decay, int64_t n) {
  return rsqrt(expm1(static_cast<double>(n + 1) * log_decay) / expm1(log_decay));
}

struct Geometry {
  int64_t T, chunks, b, h;
  double log_decay;
  int64_t offset;
  __device__ Geometry(const RetentionShape& s, int64_t bh)
      : T(s.length), chunks((s.length + kChunk - 1) / kChunk), b(bh / s.heads), h(bh % s.heads),
        log_decay(log(s.decays[bh % s.heads])), offset(s.offset != nullptr ? s.offset[bh / s.heads] : 0) {}
  __device__ int length(int64_t chunk) const { return static_cast<int>(T - chunk * kChunk < kChunk ? T - chunk * kChunk : kChunk); }
  __device__ float power(double exponent) const { return static_cast<float>(exp(exponent * log_decay)); }
  // The fused forwards' weights of one chunk, written by threads 0..kChunk-1: weight[j] = g^(L-1-j) from
  // the table power[d] = g^d (0 past the chunk's end) and post[j] = 1 / sqrt(w_n) of its row j.
  __device__ void chunk_weights(int64_t chunk, const float* power, float* weight, float* post) const {
    if (threadIdx.x >= kChunk) return;
    const int j = threadIdx.x, L = length(chunk);
    weight[j] = j < L ? power[L - 1 - j] : 0.0f;
    post[j] = static_cast<float>(inverse_norm(log_decay, offset + chunk * kChunk + j));
  }
};

// The scan over chunks of one (batch, head) and one (64 x 64) tile of the (da x db) state:
//   forward:  S <- g^L S + A_c^T diag(g^(L-1-j)) B_c      (A = k, B = v: S is the state KV)
//   reverse:  S <- g^L S + A_c^T diag(g^(j+1) / sqrt(w_n)) B_c   (A = q, B = do: S is dL/dKV)
// walking the chunks forwards or backwards. Before each chunk's update the state is stored as that
// chunk's entry in `states` (B, H, chunks, da, db); the state after the last is `final_state`.
template <typename T>
struct ScanArgs {
  RetentionShape shape;
  const T* a;  // (B, H, T, da)
  const T* b;  // (B, H, T, db)
  int64_t da, db;
  const float* initial;  // (B, H, da, db) or null
  T* states;
  float* final_state;  // (B, H, da, db) or null
};

// Shared memory of the scan: two stages (the next chunk loads while this one multiplies), each the
// chunk's (tokens x 64) windows of A and B as they lie in memory, then each stage's token weights and
// the powers g^d, d = 0..64.
template <typename T>
constexpr int scan_shared_bytes() {
  return 4 * kSlice * sizeof(T) + (3 * kChunk + 1) * sizeof(float);
}

template <typename T, bool kReverse>
__global__ void __launch_bounds__(kThreads, kReverse ? 3 : 4) state_scan_kernel(ScanArgs<T> p) {
  extern __shared__ __align__(16) unsigned char shared[];
  T* windows = reinterpret_cast<T*>(shared);                        // [stage][A, B] (chunk tokens, kLd)
  float* weights = reinterpret_cast<float*>(windows + 4 * kSlice);  // [stage] (chunk tokens)
  float* power = weights + 2 * kChunk;                              // g^d, d = 0..64

  const int64_t bh = blockIdx.z;
  const Geometry geo(p.shape, bh);
  const int64_t row0 = int64_t{blockIdx.y} * kTile, col0 = int64_t{blockIdx.x} * kTile;
  const int warp = threadIdx.x / 32;
  const T* a = p.a + bh * geo.T * p.da;
  const T* b = p.b + bh * geo.T * p.db;
  const int64_t state_size = p.da * p.db;
  const int64_t warp_row0 = row0 + 16 * warp;  // the warp's first state row
  const auto identity = [](int, int, float v) { return v; };

  // Issues the copies of the chunk of `step` into stage step % 2 and computes its weights.
  auto load = [&](int64_t step) {
    const int64_t chunk = kReverse ? geo.chunks - 1 - step : step;
    const int L = geo.length(chunk);
    T* as = windows + 2 * (step & 1) * kSlice;
    stage<T>(as, kLd, a, geo.T, p.da, chunk * kChunk, row0, kChunk, kTile);
    stage<T>(as + kSlice, kLd, b, geo.T, p.db, chunk * kChunk, col0, kChunk, kTile);
    commit_copies();
    if (threadIdx.x < kChunk) {
      const int j = threadIdx.x;
      const int64_t n = geo.offset + chunk * kChunk + j;
      weights[(step & 1) * kChunk + j] =
          j >= L     ? 0.0f
          : kReverse ? static_cast<float>(exp((j + 1) * geo.log_decay) * inverse_norm(geo.log_decay, n))
                     : power[L - 1 - j];
    }
  };

  Accumulator s;
  s.zero();
  if (p.initial != nullptr) {
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t r = row0 + 16 * warp + Accumulator::row(e), c = col0 + Accumulator::col(n, e);
        if (r < p.da && c < p.db) s.v[n][e] = p.initial[bh * state_size + r * p.db + c];
      }
  }
  for (int d = threadIdx.x; d <= kChunk; d += kThreads) power[d] = geo.power(d);
  __syncthreads();
  load(0);
  for (int64_t step = 0; step < geo.chunks; ++step) {
    const int64_t chunk = kReverse ? geo.chunks - 1 - step : step;
    const int L = geo.length(chunk);
    store_tile(p.states + (bh * geo.chunks + chunk) * state_size + warp_row0 * p.db + col0, p.db, p.da - warp_row0,
               p.db - col0, s, identity);
    // This chunk's windows have landed, and every warp is done with the other stage (the previous chunk).
    wait_copies();
    __syncthreads();
    if (step + 1 < geo.chunks) load(step + 1);
    const T* as = windows + 2 * (step & 1) * kSlice;
    s.scale(power[L]);
    warp_product<T, true, true>(s, as + 16 * warp, kLd, as + kSlice, kLd, kChunk, weights + (step & 1) * kChunk);
  }
  if (p.final_state != nullptr) {
    store_tile(p.final_state + bh * state_size + warp_row0 * p.db + col0, p.db, p.da - warp_row0, p.db - col0, s,
               identity);
  }
}

// One chunk's rows of  out = post * ( (A B^T o M) C + diag(u) A S ),  one block per (batch, head, chunk,
// group of 64-column output tiles):
//   forward roles (o and dq):   M[i][j] = g^(i-j) for j <= i,          u_i = g^(i+1),   post_i = 1/sqrt(w_n)
//   backward roles (dk and dv): M[i][j] = g^(j-i) / sqrt(w_n(j)), j >= i, u_i = g^(L-1-i), post_i = 1
// where S is the chunk's entry of `states`, stored (da x dc) when kStateRowsReduce, else (dc x da).
//   o  = forward roles  with A = q,  B = k,  C = v, S = KV entering the chunk (dk x dv)
//   dq = forward roles  with A = do, B = v,  C = k, S = KV^T
//   dk = backward roles with A = v,  B = do, C = q, S = (dL/dKV after the chunk)^T
//   dv = backward roles with A = k,  B = q,  C = do, S = dL/dKV after the chunk
template <typename T>
struct ChunkArgs {
  RetentionShape shape;
  const T* a;  // (B, H, T, da)
  const T* b;  // (B, H, T, da)
  const T* c;  // (B, H, T, dc)
  int64_t da, dc;
  const T* states;  // (B, H, chunks, da x dc or dc x da)
  T* out;           // (B, H, T, dc)
};

// How a block of chunk_output_kernel holds A: resident (the chunk's rows of A staged once, row stride
// resident_ld, for the scores and every output tile) when that fits in kResidentBytes, else staged a
// slice at a time beside each slice of B or S.
constexpr int kResidentBytes = 64 * 1024;
constexpr int kTilesPerBlock = 4;  // at most; the scores are recomputed once per group of output tiles

struct ChunkLayout {
  int resident_ld;  // 0 when A is staged per slice
  __host__ __device__ int buffers() const { return resident_ld > 0 ? 2 : 4; }  // [stage][B or S or C, A]
  __host__ __device__ int elements() const { return (buffers() + 1) * kSlice + kChunk * resident_ld; }
};

template <typename T>
ChunkLayout chunk_layout(int64_t da) {
  const int64_t ld = (da + kDepth - 1) / kDepth * kDepth + kPad;
  return {kChunk * ld * static_cast<int64_t>(sizeof(T)) <= kResidentBytes ? static_cast<int>(ld) : 0};
}

// The block walks one stream of (64 x 64) slices, each staged while the previous one multiplies:
//   the depth slices of B (the scores A B^T, masked into shared memory as P),
//   then per output tile the depth slices of S (A S, then each row times u_i) and the tile of C (+ P C).
template <typename T, bool kBackwardRoles, bool kStateRowsReduce>
__global__ void __launch_bounds__(kThreads, 4) chunk_output_kernel(ChunkArgs<T> p, ChunkLayout layout, int tiles_per_block) {
  extern __shared__ __align__(16) unsigned char shared[];
  const bool resident = layout.resident_ld > 0;
  T* slices = reinterpret_cast<T*>(shared);  // [stage] (64, kLd): B, S or C; then [stage] A when not resident
  T* ps = slices + layout.buffers() * kSlice;  // (chunk tokens, kLd): the masked scores P
  T* ar = ps + kSlice;                         // (chunk tokens, resident_ld): A, when resident
  float* u = reinterpret_cast<float*>(slices + layout.elements());  // (chunk tokens) each
  float* post = u + kChunk;
  float* column = post + kChunk;
  float* power = column + kChunk;  // g^d, d = 0..63

  const int64_t bh = blockIdx.z, chunk = blockIdx.x;
  const Geometry geo(p.shape, bh);
  const int L = geo.length(chunk);
  const int64_t t0 = chunk * kChunk;
  const int warp = threadIdx.x / 32;
  const T* a = p.a + bh * geo.T * p.da;
  const T* b = p.b + bh * geo.T * p.da;
  const T* c = p.c + bh * geo.T * p.dc;
  const T* state = p.states + (bh * geo.chunks + chunk) * p.da * p.dc;
  T* out = p.out + bh * geo.T * p.dc;

  const int depth_slices = static_cast<int>((p.da + kDepth - 1) / kDepth);
  const int64_t tile0 = int64_t{blockIdx.y} * tiles_per_block;
  const int64_t tiles_left = (p.dc + kTile - 1) / kTile - tile0;
  const int tiles = static_cast<int>(tiles_left < tiles_per_block ? tiles_left : tiles_per_block);
  const int slice_count = depth_slices + tiles * (depth_slices + 1);

  // Slice s of the stream: the depth index i (depth_slices for the tile of C) and the output tile
  // (-1 for the scores).
  struct Slice {
    int i, tile;
  };
  auto decode = [&](int s) -> Slice {
    if (s < depth_slices) return {s, -1};
    const int r = s - depth_slices;
    return {r % (depth_slices + 1), r / (depth_slices + 1)};
  };
  auto load = [&](int s) {
    const Slice at = decode(s);
    T* slice = slices + (s & 1) * kSlice;
    const int64_t k0 = int64_t{at.i} * kDepth, c0 = (tile0 + at.tile) * kTile;
    if (at.tile < 0) {
      stage<T>(slice, kLd, b, geo.T, p.da, t0, k0, kChunk, kDepth);
    } else if (at.i == depth_slices) {
      stage<T>(slice, kLd, c, geo.T, p.dc, t0, c0, kChunk, kTile);
    } else if constexpr (kStateRowsReduce) {
      stage<T>(slice, kLd, state, p.da, p.dc, k0, c0, kDepth, kTile);
    } else {
      stage<T>(slice, kLd, state, p.dc, p.da, c0, k0, kTile, kDepth);
    }
    if (!resident && at.i < depth_slices) stage<T>(slice + 2 * kSlice, kLd, a, geo.T, p.da, t0, k0, kChunk, kDepth);
    commit_copies();
  };

  if (threadIdx.x < kChunk) {
    const int i = threadIdx.x;
    const float norm = static_cast<float>(inverse_norm(geo.log_decay, geo.offset + t0 + i));
    u[i] = kBackwardRoles ? geo.power(L - 1 - i) : geo.power(i + 1);
    post[i] = kBackwardRoles ? 1.0f : norm;
    column[i] = kBackwardRoles ? norm : 1.0f;
    power[i] = geo.power(i);
  }
  if (resident) stage<T>(ar, layout.resident_ld, a, geo.T, p.da, t0, 0, kChunk, layout.resident_ld - kPad);
  load(0);

  Accumulator acc;
  acc.zero();
  for (int s = 0; s < slice_count; ++s) {
    // Slice s has landed, and every warp is done with the other stage (slice s - 1).
    wait_copies();
    __syncthreads();
    if (s + 1 < slice_count) load(s + 1);

    const Slice at = decode(s);
    const int i = at.i;
    const T* slice = slices + (s & 1) * kSlice;
    const T* as = resident ? ar + 16 * warp * layout.resident_ld + int64_t{i} * kDepth : slice + 2 * kSlice + 16 * warp * kLd;
    const int lda = resident ? layout.resident_ld : kLd;
    if (at.tile < 0) {
      warp_product<T, false, false>(acc, as, lda, slice, kLd, kDepth);
      if (i + 1 == depth_slices) {
        // The scores, masked and decayed, into shared memory as the operand of the P C products (read
        // only after the next barrier).
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int r = 16 * warp + Accumulator::row(e), j = Accumulator::col(n, e);
            const bool kept = kBackwardRoles ? j >= r : j <= r;
            ps[r * kLd + j] =
                from_float<T>(kept ? acc.v[n][e] * power[kBackwardRoles ? j - r : r - j] * column[j] : 0.0f);
          }
        acc.zero();
      }
    } else if (i < depth_slices) {
      warp_product<T, false, kStateRowsReduce>(acc, as, lda, slice, kLd, kDepth);
      if (i + 1 == depth_slices) {
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc.v[n][e] *= u[16 * warp + Accumulator::row(e)];
      }
    } else {
      warp_product<T, false, true>(acc, ps + 16 * warp * kLd, kLd, slice, kLd, kChunk);
      const int64_t c0 = (tile0 + at.tile) * kTile;
      const float* warp_post = post + 16 * warp;
      store_tile(out + (t0 + 16 * warp) * p.dc + c0, p.dc, L - 16 * warp, p.dc - c0, acc,
                 [warp_post](int r, int, float v) { return warp_post[r] * v; });
      acc.zero();
    }
  }
}

// The fused forwards: one block per (batch, head, 64-column tile of v) walks the chunks in order, keeping
// its (dk x 64) tile of the state in float32 registers, so that no per-chunk state leaves the chip:
//   O_c     = diag(r) [ (Q_c K_c^T o D) V_c + diag(g^(i+1)) Q_c S_c ]
//   S_{c+1} = g^L S_c + K_c^T diag(g^(L-1-j)) V_c
// Eight warps; the state's 16-row tile m belongs to warp m % 8, which advances it and writes it, rounded to
// the inputs' dtype, into shared memory as the next chunk's operand S_c. Two forms of the output side:
//
// fused_forward_kernel recomputes the scores Q_c K_c^T in every column tile's block: warps 0-3 compute the
// scores of rows 16w.. while warps 4-7 compute Q_c S_c for the same rows (as many products); after a
// barrier warps 4-7 add P V_c and store their rows of O_c while every warp advances its state tiles.
//
// fused_scores_forward_kernel (from dk 129 on; see forward_plan) stages the masked scores P, computed once per
// (batch, head, chunk) by chunk_scores_kernel into the workspace, beside k and v: at dv 1280 the first form
// recomputes them in the 20 blocks of a head (a third of its products, on half its warps). All eight warps
// compute Q_c S_c for a 16 x 32 piece of O_c each (rows 16 (w % 4), columns 32 (w / 4)); after a barrier
// they add P V_c to it, store it and advance their state tiles. Its products are the first form's,
// element by element in the same order, so the two give the same bits.
//
// Shared memory: the chunk's q (one stage: the next chunk's loads once Q S is done), k, the v tile and
// (second form) the scores (two stages: the next chunk's load during the whole chunk), the rounded state,
// the scores (first form: computed in place).
constexpr int kFusedWarps = 8;
constexpr int kFusedThreads = 32 * kFusedWarps;
constexpr int64_t kFusedMaxDk = 320;  // the state tiles of a warp (at most 3 x 32 floats) stay in registers
static_assert(kFusedWarps == 2 * kWarps, "warps 0-3 and 4-7 each cover the chunk's rows");
static_assert((kFusedMaxDk + 15) / 16 <= 3 * kFusedWarps, "a warp holds at most 3 tiles of the state");

struct FusedLayout {
  int dk_rows;         // dk rounded up to 16: the depth of the products over dk, the rows of the state
  int ld;              // row stride of the staged q and k
  bool staged_scores;  // the scores come from chunk_scores_kernel, in two stages
  // 16-bit elements: q, k [stage], v [stage], the scores ([stage] when staged), the state (dk_rows x kLd);
  // then float32 token weights, 1/sqrt(w_n) and g^d, d = 0..64.
  int elements() const { return 3 * kChunk * ld + (staged_scores ? 4 : 3) * kSlice + dk_rows * kLd; }
  int bytes() const { return elements() * 2 + (3 * kChunk + 1) * static_cast<int>(sizeof(float)); }
  // chunk_scores_kernel: q, k (chunk tokens, ld) and g^d, d = 0..63.
  int scores_bytes() const { return 2 * kChunk * ld * 2 + kChunk * static_cast<int>(sizeof(float)); }
};

FusedLayout fused_layout(int64_t dk, bool staged_scores) {
  const int dk_rows = static_cast<int>((dk + 15) / 16 * 16);
  return {dk_rows, dk_rows + kPad, staged_scores};
}

// The mask and decay of the scores as a store_tile value for a warp's 16 rows from chunk row `rows`: element
// (r, j) of Q K^T becomes g^(i-j) (q_i . k_j) for j <= i = rows + r, else 0; power[d] = g^d.
struct CausalDecay {
  const float* power;
  int rows;
  __device__ __forceinline__ float operator()(int r, int j, float x) const {
    return j <= rows + r ? x * power[rows + r - j] : 0.0f;
  }
};

// P[i][j] = g^(i-j) (q_i . k_j) for j <= i, else 0, of one (batch, head, chunk), rounded to T as the operand
// of P V: scores (B, H, chunks, chunk tokens, chunk tokens), rows and columns past T zero (q and k are
// staged with zeros there). Four warps of 16 rows.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    chunk_scores_kernel(RetentionForwardParams p, FusedLayout layout, T* scores) {
  extern __shared__ __align__(16) unsigned char shared[];
  const int ld = layout.ld;
  T* qs = reinterpret_cast<T*>(shared);                       // (chunk tokens, ld)
  T* ks = qs + kChunk * ld;                                   // (chunk tokens, ld)
  float* power = reinterpret_cast<float*>(ks + kChunk * ld);  // g^d, d = 0..63

  const int64_t bh = blockIdx.z, chunk = blockIdx.x;
  const Geometry geo(p.shape, bh);
  const int64_t dk = p.shape.dk;
  const int rows = 16 * (threadIdx.x / 32);
  stage<T>(qs, ld, static_cast<const T*>(p.q) + bh * geo.T * dk, geo.T, dk, chunk * kChunk, 0, kChunk, layout.dk_rows);
  stage<T>(ks, ld, static_cast<const T*>(p.k) + bh * geo.T * dk, geo.T, dk, chunk * kChunk, 0, kChunk, layout.dk_rows);
  commit_copies();
  if (threadIdx.x < kChunk) power[threadIdx.x] = geo.power(threadIdx.x);
  wait_copies();
  __syncthreads();

  Accumulator acc;
  acc.zero();
  warp_product<T, false, false>(acc, qs + rows * ld, ld, ks, ld, layout.dk_rows);
  T* out = scores + (bh * geo.chunks + chunk) * kChunk * kChunk + rows * kChunk;
  store_tile(out, kChunk, kChunk - rows, kChunk, acc,
             CausalDecay{power, rows});
}

// The block's (dk x 64) tile of the state, float32, in registers: the warp's 16-row tiles warp + 8 i.
template <int kStateTiles>
struct StateTiles {
  Accumulator s[kStateTiles];
  int warp, tiles;  // this warp; the 16-row tiles of the state (dk_rows / 16)

  __device__ StateTiles(int warp_, int tiles_) : warp(warp_), tiles(tiles_) {}
  __device__ int row0(int i) const { return 16 * (warp + kFusedWarps * i); }
  // From the (dk x dv) float32 state at `state` (the tile's first column), or zeros when null.
  __device__ void load(const float* state, int64_t dk, int64_t dv, int64_t cols) {
#pragma unroll
    for (int i = 0; i < kStateTiles; ++i) {
      s[i].zero();
      if (state != nullptr && row0(i) < dk) load_tile(s[i], state + row0(i) * dv, dv, dk - row0(i), cols);
    }
  }
  __device__ void store(float* state, int64_t dk, int64_t dv, int64_t cols) const {
#pragma unroll
    for (int i = 0; i < kStateTiles; ++i)
      if (row0(i) < dk)
        store_tile(state + row0(i) * dv, dv, dk - row0(i), cols, s[i], [](int, int, float x) { return x; });
  }
  // Rounded into ss (dk_rows x kLd) as the operand of the next chunk's Q S (read after the next barrier).
  template <typename T>
  __device__ void store_rounded(T* ss) const {
#pragma unroll
    for (int i = 0; i < kStateTiles; ++i)
      if (row0(i) / 16 < tiles)
        store_tile(ss + row0(i) * kLd, kLd, 16, kTile, s[i], [](int, int, float x) { return x; });
  }
  // S <- g^L S + K_c^T diag(weight) V_c, kc (chunk tokens, ld), vc (chunk tokens, kLd).
  template <typename T>
  __device__ void advance(float decay, const T* kc, int ld, const T* vc, const float* weight) {
#pragma unroll
    for (int i = 0; i < kStateTiles; ++i)
      if (row0(i) / 16 < tiles) {
        s[i].scale(decay);
        warp_product<T, true, true>(s[i], kc + row0(i), ld, vc, kLd, kChunk, weight);
      }
  }
};

template <typename T, int kStateTiles>
__global__ void __launch_bounds__(kFusedThreads, 1)
    fused_forward_kernel(RetentionForwardParams p, FusedLayout layout) {
  static_assert(sizeof(T) == 2, "the fused forward runs on the tensor cores only");
  extern __shared__ __align__(16) unsigned char shared[];
  const int ld = layout.ld;
  T* qs = reinterpret_cast<T*>(shared);  // (chunk tokens, ld)
  T* ks = qs + kChunk * ld;              // [stage] (chunk tokens, ld)
  T* vs = ks + 2 * kChunk * ld;          // [stage] (chunk tokens, kLd)
  T* ps = vs + 2 * kSlice;               // (chunk tokens, kLd): the masked scores
  T* ss = ps + kSlice;                   // (dk_rows, kLd): the state entering the chunk
  float* weight = reinterpret_cast<float*>(ss + layout.dk_rows * kLd);  // (chunk tokens): g^(L-1-j), 0 past the chunk
  float* post = weight + kChunk;                                        // (chunk tokens): 1/sqrt(w_n)
  float* power = post + kChunk;                                         // g^d, d = 0..64

  const int64_t bh = blockIdx.z;
  const Geometry geo(p.shape, bh);
  const int64_t dk = p.shape.dk, dv = p.shape.dv, col0 = int64_t{blockIdx.x} * kTile;
  const int warp = threadIdx.x / 32;
  const int rows = 16 * (warp % kWarps);  // the chunk rows of the warp's scores or outputs
  const T* q = static_cast<const T*>(p.q) + bh * geo.T * dk;
  const T* k = static_cast<const T*>(p.k) + bh * geo.T * dk;
  const T* v = static_cast<const T*>(p.v) + bh * geo.T * dv;
  T* o = static_cast<T*>(p.o) + bh * geo.T * dv;
  const int64_t state0 = bh * dk * dv + col0;  // the tile's first element in the (B, H, dk, dv) states

  auto load_keys = [&](int64_t chunk) {  // k and the v tile of `chunk` into stage chunk % 2
    stage<T, kFusedThreads>(ks + (chunk & 1) * kChunk * ld, ld, k, geo.T, dk, chunk * kChunk, 0, kChunk,
                            layout.dk_rows);
    stage<T, kFusedThreads>(vs + (chunk & 1) * kSlice, kLd, v, geo.T, dv, chunk * kChunk, col0, kChunk, kTile);
    commit_copies();
  };
  auto load_queries = [&](int64_t chunk) {
    stage<T, kFusedThreads>(qs, ld, q, geo.T, dk, chunk * kChunk, 0, kChunk, layout.dk_rows);
    commit_copies();
  };

  load_queries(0);
  load_keys(0);
  StateTiles<kStateTiles> state(warp, layout.dk_rows / 16);
  state.load(p.initial_state != nullptr ? p.initial_state + state0 : nullptr, dk, dv, dv - col0);
  state.store_rounded(ss);
  for (int d = threadIdx.x; d <= kChunk; d += kFusedThreads) power[d] = geo.power(d);

  Accumulator acc;
  for (int64_t chunk = 0; chunk < geo.chunks; ++chunk) {
    const int L = geo.length(chunk);
    const int64_t t0 = chunk * kChunk;
    // This chunk's q, k, v have landed and the state entering it is in ss; every warp is done with the
    // previous chunk (its k and v stage, the scores, the weights).
    wait_copies();
    __syncthreads();
    if (chunk + 1 < geo.chunks) load_keys(chunk + 1);
    geo.chunk_weights(chunk, power, weight, post);
    const T* kc = ks + (chunk & 1) * kChunk * ld;
    const T* vc = vs + (chunk & 1) * kSlice;

    acc.zero();
    if (warp < kWarps) {
      warp_product<T, false, false>(acc, qs + rows * ld, ld, kc, ld, layout.dk_rows);
      // P[i][j] = g^(i-j) (q_i . k_j) for j <= i, else 0, as the operand of P V (read after the barrier).
      store_tile(ps + rows * kLd, kLd, kChunk - rows, kChunk, acc,
                 CausalDecay{power, rows});
    } else {
      warp_product<T, false, true>(acc, qs + rows * ld, ld, ss, kLd, layout.dk_rows);
#pragma unroll
      for (int n = 0; n < 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc.v[n][e] *= power[rows + Accumulator::row(e) + 1];
    }
    // The scores, weights and 1/sqrt(w_n) are in place; q and the rounded state are free.
    __syncthreads();
    if (chunk + 1 < geo.chunks) load_queries(chunk + 1);
    if (warp >= kWarps) {
      warp_product<T, false, true>(acc, ps + rows * kLd, kLd, vc, kLd, kChunk);
      const float* row_post = post + rows;
      store_tile(o + (t0 + rows) * dv + col0, dv, L - rows, dv - col0, acc,
                 [row_post](int r, int, float x) { return row_post[r] * x; });
    }
    state.advance(power[L], kc, ld, vc, weight);
    state.store_rounded(ss);
  }
  if (p.final_state != nullptr) state.store(p.final_state + state0, dk, dv, dv - col0);
}

template <typename T, int kStateTiles>
__global__ void __launch_bounds__(kFusedThreads, 1)
    fused_scores_forward_kernel(RetentionForwardParams p, FusedLayout layout, const T* scores) {
  static_assert(sizeof(T) == 2, "the fused forward runs on the tensor cores only");
  extern __shared__ __align__(16) unsigned char shared[];
  const int ld = layout.ld;
  T* qs = reinterpret_cast<T*>(shared);  // (chunk tokens, ld)
  T* ks = qs + kChunk * ld;              // [stage] (chunk tokens, ld)
  T* vs = ks + 2 * kChunk * ld;          // [stage] (chunk tokens, kLd)
  T* ps = vs + 2 * kSlice;               // [stage] (chunk tokens, kLd): the masked scores
  T* ss = ps + 2 * kSlice;               // (dk_rows, kLd): the state entering the chunk
  float* weight = reinterpret_cast<float*>(ss + layout.dk_rows * kLd);  // (chunk tokens): g^(L-1-j), 0 past the chunk
  float* post = weight + kChunk;                                        // (chunk tokens): 1/sqrt(w_n)
  float* power = post + kChunk;                                         // g^d, d = 0..64

  const int64_t bh = blockIdx.z;
  const Geometry geo(p.shape, bh);
  const int64_t dk = p.shape.dk, dv = p.shape.dv, col0 = int64_t{blockIdx.x} * kTile;
  const int warp = threadIdx.x / 32;
  const int rows = 16 * (warp % kWarps), cols = 32 * (warp / kWarps);  // the warp's piece of O_c
  const T* q = static_cast<const T*>(p.q) + bh * geo.T * dk;
  const T* k = static_cast<const T*>(p.k) + bh * geo.T * dk;
  const T* v = static_cast<const T*>(p.v) + bh * geo.T * dv;
  const T* scores_bh = scores + bh * geo.chunks * kChunk * kChunk;  // (chunks x chunk tokens, chunk tokens)
  T* o = static_cast<T*>(p.o) + bh * geo.T * dv;
  const int64_t state0 = bh * dk * dv + col0;  // the tile's first element in the (B, H, dk, dv) states

  auto load_keys = [&](int64_t chunk) {  // k, the v tile and the scores of `chunk` into stage chunk % 2
    stage<T, kFusedThreads>(ks + (chunk & 1) * kChunk * ld, ld, k, geo.T, dk, chunk * kChunk, 0, kChunk,
                            layout.dk_rows);
    stage<T, kFusedThreads>(vs + (chunk & 1) * kSlice, kLd, v, geo.T, dv, chunk * kChunk, col0, kChunk, kTile);
    stage<T, kFusedThreads>(ps + (chunk & 1) * kSlice, kLd, scores_bh, geo.chunks * kChunk, kChunk, chunk * kChunk, 0,
                            kChunk, kChunk);
    commit_copies();
  };
  auto load_queries = [&](int64_t chunk) {
    stage<T, kFusedThreads>(qs, ld, q, geo.T, dk, chunk * kChunk, 0, kChunk, layout.dk_rows);
    commit_copies();
  };

  load_queries(0);
  load_keys(0);
  StateTiles<kStateTiles> state(warp, layout.dk_rows / 16);
  state.load(p.initial_state != nullptr ? p.initial_state + state0 : nullptr, dk, dv, dv - col0);
  state.store_rounded(ss);
  for (int d = threadIdx.x; d <= kChunk; d += kFusedThreads) power[d] = geo.power(d);

  Fragment<4> acc;  // the warp's 16 x 32 piece of O_c
  for (int64_t chunk = 0; chunk < geo.chunks; ++chunk) {
    const int L = geo.length(chunk);
    const int64_t t0 = chunk * kChunk;
    // This chunk's q, k, v and scores have landed and the state entering it is in ss; every warp is done
    // with the previous chunk (its stage of k, v and the scores, the weights).
    wait_copies();
    __syncthreads();
    if (chunk + 1 < geo.chunks) load_keys(chunk + 1);
    geo.chunk_weights(chunk, power, weight, post);
    const T* kc = ks + (chunk & 1) * kChunk * ld;
    const T* vc = vs + (chunk & 1) * kSlice;
    const T* pc = ps + (chunk & 1) * kSlice;

    acc.zero();
    warp_product<T, false, true>(acc, qs + rows * ld, ld, ss + cols, kLd, layout.dk_rows);
#pragma unroll
    for (int n = 0; n < 4; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc.v[n][e] *= power[rows + Fragment<4>::row(e) + 1];
    // The weights and 1/sqrt(w_n) are in place; q and the rounded state are free.
    __syncthreads();
    if (chunk + 1 < geo.chunks) load_queries(chunk + 1);
    warp_product<T, false, true>(acc, pc + rows * kLd, kLd, vc + cols, kLd, kChunk);
    const float* row_post = post + rows;
    store_tile(o + (t0 + rows) * dv + col0 + cols, dv, L - rows, dv - col0 - cols, acc,
               [row_post](int r, int, float x) { return row_post[r] * x; });
    state.advance(power[L], kc, ld, vc, weight);
    state.store_rounded(ss);
  }
  if (p.final_state != nullptr) state.store(p.final_state + state0, dk, dv, dv - col0);
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename T, bool kReverse>
cudaError_t launch_scan(const ScanArgs<T>& args, cudaStream_t stream) {
  constexpr int bytes = scan_shared_bytes<T>();
  auto* kernel = state_scan_kernel<T, kReverse>;
  if (const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)) return e;
  const dim3 grid(static_cast<unsigned>(ceil_div(args.db, kTile)), static_cast<unsigned>(ceil_div(args.da, kTile)),
                  static_cast<unsigned>(args.shape.batch * args.shape.heads));
  kernel<<<grid, kThreads, bytes, stream>>>(args);
  return cudaGetLastError();
}

template <typename T, bool kBackwardRoles, bool kStateRowsReduce>
cudaError_t launch_chunks(const ChunkArgs<T>& args, cudaStream_t stream) {
  const ChunkLayout layout = chunk_layout<T>(args.da);
  const int bytes = layout.elements() * static_cast<int>(sizeof(T)) + 4 * kChunk * static_cast<int>(sizeof(float));
  const int64_t tiles = ceil_div(args.dc, kTile);
  const int tiles_per_block = static_cast<int>(ceil_div(tiles, ceil_div(tiles, kTilesPerBlock)));
  auto* kernel = chunk_output_kernel<T, kBackwardRoles, kStateRowsReduce>;
  if (const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)) return e;
  const dim3 grid(static_cast<unsigned>(ceil_div(args.shape.length, kChunk)),
                  static_cast<unsigned>(ceil_div(tiles, tiles_per_block)),
                  static_cast<unsigned>(args.shape.batch * args.shape.heads));
  kernel<<<grid, kThreads, bytes, stream>>>(args, layout, tiles_per_block);
  return cudaGetLastError();
}

// Which forward takes a call. The fused forwards need 16-bit inputs, dk <= kFusedMaxDk and their shared
// memory within the device's limit. Unset, the scores are precomputed from dk kScoresFromDk on (a head
// of dk 320 spends most of its products on the scores, which each of its 20 value tiles would otherwise
// recompute: 1.23 against 1.42 ms at the 1.3 B DenseRetNet's training shape on the H200) and recomputed
// below (dk 128: 0.336 against 0.352 ms; docs/kernels/retention.md). DENSESSM_RETENTION_FUSED in the
// environment: 0 forces the two passes, 1 the fused forward that recomputes the scores, 2 the one that
// precomputes them.
enum class ForwardPlan { kTwoPass, kFused, kFusedScores };
constexpr int64_t kScoresFromDk = 129;

ForwardPlan forward_plan(const RetentionShape& s) {
  if (s.dtype == DType::kFloat32 || s.dk > kFusedMaxDk) return ForwardPlan::kTwoPass;
  const char* choice = std::getenv("DENSESSM_RETENTION_FUSED");
  if (choice != nullptr && std::strcmp(choice, "0") == 0) return ForwardPlan::kTwoPass;
  bool scores = s.dk >= kScoresFromDk;
  if (choice != nullptr && std::strcmp(choice, "1") == 0) scores = false;
  if (choice != nullptr && std::strcmp(choice, "2") == 0) scores = true;
  int device = 0, limit = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
    cudaGetLastError();  // not this call's error: the two-pass forward runs instead
    return ForwardPlan::kTwoPass;
  }
  if (fused_layout(s.dk, scores).bytes() > limit) return ForwardPlan::kTwoPass;
  return scores ? ForwardPlan::kFusedScores : ForwardPlan::kFused;
}

// Elements of the scores workspace of the fused forward with precomputed scores: (B, H, chunks, 64, 64).
int64_t scores_workspace(const RetentionShape& s) {
  return s.batch * s.heads * ceil_div(s.length, kChunk) * kChunk * kChunk;
}

template <typename T>
cudaError_t launch_fused_forward(const RetentionForwardParams& p, bool staged_scores, cudaStream_t stream) {
  const FusedLayout layout = fused_layout(p.shape.dk, staged_scores);
  const dim3 grid(static_cast<unsigned>(ceil_div(p.shape.dv, kTile)), 1,
                  static_cast<unsigned>(p.shape.batch * p.shape.heads));
  const int state_tiles = layout.dk_rows / 16;
  if (!staged_scores) {
    auto* kernel = state_tiles <= kFusedWarps       ? fused_forward_kernel<T, 1>
                   : state_tiles <= 2 * kFusedWarps ? fused_forward_kernel<T, 2>
                                                    : fused_forward_kernel<T, 3>;
    if (const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, layout.bytes()))
      return e;
    kernel<<<grid, kFusedThreads, layout.bytes(), stream>>>(p, layout);
    return cudaGetLastError();
  }
  auto* scores = static_cast<T*>(p.workspace);
  auto* score_kernel = chunk_scores_kernel<T>;
  if (const cudaError_t e =
          cudaFuncSetAttribute(score_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, layout.scores_bytes()))
    return e;
  const dim3 score_grid(static_cast<unsigned>(ceil_div(p.shape.length, kChunk)), 1,
                        static_cast<unsigned>(p.shape.batch * p.shape.heads));
  score_kernel<<<score_grid, kThreads, layout.scores_bytes(), stream>>>(p, layout, scores);
  if (const cudaError_t e = cudaGetLastError()) return e;
  auto* kernel = state_tiles <= kFusedWarps       ? fused_scores_forward_kernel<T, 1>
                 : state_tiles <= 2 * kFusedWarps ? fused_scores_forward_kernel<T, 2>
                                                  : fused_scores_forward_kernel<T, 3>;
  if (const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, layout.bytes()))
    return e;
  kernel<<<grid, kFusedThreads, layout.bytes(), stream>>>(p, layout, scores);
  return cudaGetLastError();
}

template <typename T>
cudaError_t forward(const RetentionForwardParams& p, cudaStream_t stream) {
  if constexpr (sizeof(T) == 2) {
    const ForwardPlan plan = forward_plan(p.shape);
    if (plan != ForwardPlan::kTwoPass) return launch_fused_forward<T>(p, plan == ForwardPlan::kFusedScores, stream);
  }
  const RetentionShape& s = p.shape;
  const auto* q = static_cast<const T*>(p.q);
  const auto* k = static_cast<const T*>(p.k);
  const auto* v = static_cast<const T*>(p.v);
  auto* states = static_cast<T*>(p.workspace);
  if (const cudaError_t e = launch_scan<T, false>({s, k, v, s.dk, s.dv, p.initial_state, states, p.final_state}, stream))
    return e;
  return launch_chunks<T, false, true>({s, q, k, v, s.dk, s.dv, states, static_cast<T*>(p.o)}, stream);
}

template <typename T>
cudaError_t backward(const RetentionBackwardParams& p, cudaStream_t stream) {
  const RetentionShape& s = p.shape;
  const auto* q = static_cast<const T*>(p.q);
  const auto* k = static_cast<const T*>(p.k);
  const auto* v = static_cast<const T*>(p.v);
  const auto* grad_o = static_cast<const T*>(p.grad_o);
  auto* states = static_cast<T*>(p.workspace);
  auto* grad_states = states + chunk_retention_workspace(s);
  cudaError_t e = launch_scan<T, false>({s, k, v, s.dk, s.dv, p.initial_state, states, nullptr}, stream);
  if (e == cudaSuccess) e = launch_scan<T, true>({s, q, grad_o, s.dk, s.dv, p.grad_final, grad_states, p.grad_initial}, stream);
  if (e == cudaSuccess) e = launch_chunks<T, false, false>({s, grad_o, v, k, s.dv, s.dk, states, static_cast<T*>(p.grad_q)}, stream);
  if (e == cudaSuccess) e = launch_chunks<T, true, false>({s, v, grad_o, q, s.dv, s.dk, grad_states, static_cast<T*>(p.grad_k)}, stream);
  if (e == cudaSuccess) e = launch_chunks<T, true, true>({s, k, q, grad_o, s.dk, s.dv, grad_states, static_cast<T*>(p.grad_v)}, stream);
  return e;
}

}  // namespace

int64_t chunk_retention_workspace(const RetentionShape& s) {
  return s.batch * s.heads * ceil_div(s.length, kChunk) * s.dk * s.dv;
}

int64_t chunk_retention_forward_workspace(const RetentionShape& s) {
  switch (forward_plan(s)) {
    case ForwardPlan::kTwoPass: return chunk_retention_workspace(s);
    case ForwardPlan::kFused: return 0;
    case ForwardPlan::kFusedScores: return scores_workspace(s);
  }
  return chunk_retention_workspace(s);
}

cudaError_t chunk_retention_forward(const RetentionForwardParams& p, cudaStream_t stream) {
  if (p.shape.batch * p.shape.heads * p.shape.length == 0) return cudaSuccess;
  switch (p.shape.dtype) {
    case DType::kFloat32: return forward<float>(p, stream);
    case DType::kFloat16: return forward<__half>(p, stream);
    case DType::kBFloat16: return forward<__nv_bfloat16>(p, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t chunk_retention_backward(const RetentionBackwardParams& p, cudaStream_t stream) {
  if (p.shape.batch * p.shape.heads * p.shape.length == 0) return cudaSuccess;
  switch (p.shape.dtype) {
    case DType::kFloat32: return backward<float>(p, stream);
    case DType::kFloat16: return backward<__half>(p, stream);
    case DType::kBFloat16: return backward<__nv_bfloat16>(p, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace densessm::kernels
