#include "chunk_retention.h"

#include <cmath>
#include <type_traits>

#include "device_math.cuh"

namespace densessm::kernels {
namespace {

constexpr int kChunk = static_cast<int>(kRetentionChunk);  // tokens per chunk
constexpr int kTile = 64;    // a block's tile of state rows/columns or of output columns
constexpr int kDepth = 32;   // width of one staged slice of a long reduction (dk or dv)
constexpr int kPad = 8;      // shared-memory row padding: fragment loads of 8 rows hit distinct banks
constexpr int kWarps = 4;    // each warp owns 16 rows of the block's 64-row tile
constexpr int kThreads = kWarps * 32;
static_assert(kChunk == kTile && kTile == 16 * kWarps, "the warps' rows must cover a chunk and a tile");

// A warp's 16 x 64 float32 accumulator in the register layout of mma.m16n8k16: for n = 0..7 and
// e = 0..3, v[n][e] is element (row(e), 8n + 2 (lane % 4) + e % 2) with row(e) = lane / 4 + 8 (e / 2).
// The float32 path keeps the same layout, so the epilogues are written once.
struct Accumulator {
  float v[8][4];
  __device__ void zero() {
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) v[n][e] = 0.0f;
  }
  __device__ void scale(float s) {
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) v[n][e] *= s;
  }
  __device__ static int row(int e) { return (threadIdx.x & 31) / 4 + 8 * (e / 2); }
  __device__ static int col(int n, int e) { return 8 * n + 2 * (threadIdx.x & 3) + (e & 1); }
};

__device__ __forceinline__ uint32_t pair(const void* p) { return *static_cast<const uint32_t*>(p); }

template <typename T>
__device__ __forceinline__ void mma_16x8x16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

// acc += A B^T for the warp's 16 rows: a is (16 x depth) with row stride lda, b is (64 x depth) with row
// stride ldb, both in shared memory with the reduction index contiguous; depth is a multiple of 16.
// bfloat16/float16 run on the tensor cores; float32 runs on FMA (tf32 would miss the 1e-5 tolerance).
template <typename T>
__device__ __forceinline__ void warp_product(Accumulator& acc, const T* a, int lda, const T* b, int ldb, int depth) {
  const int lane = threadIdx.x & 31, g = lane / 4, t = lane & 3;
  if constexpr (std::is_same_v<T, float>) {
    for (int k = 0; k < depth; ++k) {
      const float a0 = a[g * lda + k], a1 = a[(g + 8) * lda + k];
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        const float b0 = b[(8 * n + 2 * t) * ldb + k], b1 = b[(8 * n + 2 * t + 1) * ldb + k];
        acc.v[n][0] += a0 * b0;
        acc.v[n][1] += a0 * b1;
        acc.v[n][2] += a1 * b0;
        acc.v[n][3] += a1 * b1;
      }
    }
  } else {
    for (int k = 0; k < depth; k += 16) {
      const uint32_t af[4] = {pair(a + g * lda + k + 2 * t), pair(a + (g + 8) * lda + k + 2 * t),
                              pair(a + g * lda + k + 8 + 2 * t), pair(a + (g + 8) * lda + k + 8 + 2 * t)};
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        const T* col = b + (8 * n + g) * ldb + k + 2 * t;
        const uint32_t bf[2] = {pair(col), pair(col + 8)};
        mma_16x8x16<T>(acc.v[n], af, bf);
      }
    }
  }
}

// Copies the (rows x cols) window at (row0, col0) of a row-major (nrows x ncols) global matrix into
// shared memory, as s[r][c] or, transposed, s[c][r] (row stride ld), each element times scale[r] when
// scale is given, and zeros outside the matrix (so partial chunks and tiles need no other masking).
// When the rows are whole 16-byte vectors (ncols a multiple of the vector, cols always is) each thread
// reads one vector; otherwise one element.
template <typename T, bool kTranspose>
__device__ __forceinline__ void stage(T* s, int ld, const T* src, int64_t nrows, int64_t ncols, int64_t row0,
                                      int64_t col0, int rows, int cols, const float* scale) {
  constexpr int kVector = 16 / sizeof(T);
  if (ncols % kVector == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0) {
    const int vectors = cols / kVector;
    for (int i = threadIdx.x; i < rows * vectors; i += kThreads) {
      const int r = i / vectors, c = (i % vectors) * kVector;
      const int64_t gr = row0 + r, gc = col0 + c;
      uint4 raw = make_uint4(0, 0, 0, 0);  // zero in every element type
      if (gr < nrows && gc < ncols) raw = *reinterpret_cast<const uint4*>(src + gr * ncols + gc);
      if (!kTranspose && scale == nullptr) {
        *reinterpret_cast<uint4*>(s + r * ld + c) = raw;
        continue;
      }
      const T* x = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int e = 0; e < kVector; ++e) {
        const T y = scale != nullptr ? from_float<T>(to_float(x[e]) * scale[r]) : x[e];
        s[kTranspose ? (c + e) * ld + r : r * ld + c + e] = y;
      }
    }
    return;
  }
  for (int i = threadIdx.x; i < rows * cols; i += kThreads) {
    const int r = i / cols, c = i % cols;  // c fastest: consecutive threads read consecutive addresses
    const int64_t gr = row0 + r, gc = col0 + c;
    T x = from_float<T>(0.0f);
    if (gr < nrows && gc < ncols) {
      x = src[gr * ncols + gc];
      if (scale != nullptr) x = from_float<T>(to_float(x) * scale[r]);
    }
    s[kTranspose ? c * ld + r : r * ld + c] = x;
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

template <typename T, bool kReverse>
__global__ void __launch_bounds__(kThreads) state_scan_kernel(ScanArgs<T> p) {
  extern __shared__ __align__(16) unsigned char shared[];
  constexpr int ld = kChunk + kPad;
  T* as = reinterpret_cast<T*>(shared);  // (64 state rows, chunk tokens): A_c^T, weighted
  T* bs = as + kTile * ld;               // (64 state columns, chunk tokens): B_c^T
  float* weight = reinterpret_cast<float*>(bs + kTile * ld);  // (chunk tokens)

  const int64_t bh = blockIdx.z;
  const Geometry geo(p.shape, bh);
  const int64_t row0 = int64_t{blockIdx.y} * kTile, col0 = int64_t{blockIdx.x} * kTile;
  const int warp = threadIdx.x / 32;
  const T* a = p.a + bh * geo.T * p.da;
  const T* b = p.b + bh * geo.T * p.db;
  const int64_t state_size = p.da * p.db;

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
  for (int64_t step = 0; step < geo.chunks; ++step) {
    const int64_t chunk = kReverse ? geo.chunks - 1 - step : step;
    const int L = geo.length(chunk);
    T* out = p.states + (bh * geo.chunks + chunk) * state_size;
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t r = row0 + 16 * warp + Accumulator::row(e), c = col0 + Accumulator::col(n, e);
        if (r < p.da && c < p.db) out[r * p.db + c] = from_float<T>(s.v[n][e]);
      }
    __syncthreads();  // the previous chunk's products are done with the staged tiles
    if (threadIdx.x < kChunk) {
      const int j = threadIdx.x;
      const int64_t n = geo.offset + chunk * kChunk + j;
      weight[j] = j >= L                 ? 0.0f
                  : kReverse ? static_cast<float>(exp((j + 1) * geo.log_decay) * inverse_norm(geo.log_decay, n))
                             : geo.power(L - 1 - j);
    }
    __syncthreads();
    stage<T, true>(as, ld, a, geo.T, p.da, chunk * kChunk, row0, kChunk, kTile, weight);
    stage<T, true>(bs, ld, b, geo.T, p.db, chunk * kChunk, col0, kChunk, kTile, nullptr);
    __syncthreads();
    s.scale(geo.power(L));
    warp_product<T>(s, as + 16 * warp * ld, ld, bs, ld, kChunk);
  }
  if (p.final_state != nullptr) {
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t r = row0 + 16 * warp + Accumulator::row(e), c = col0 + Accumulator::col(n, e);
        if (r < p.da && c < p.db) p.final_state[bh * state_size + r * p.db + c] = s.v[n][e];
      }
  }
}

// One chunk's rows of  out = post * ( (A B^T o M) C + diag(u) A S ),  one block per (batch, head, chunk):
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

template <typename T, bool kBackwardRoles, bool kStateRowsReduce>
__global__ void __launch_bounds__(kThreads) chunk_output_kernel(ChunkArgs<T> p) {
  extern __shared__ __align__(16) unsigned char shared[];
  constexpr int lds = kDepth + kPad, ldp = kChunk + kPad;
  T* as = reinterpret_cast<T*>(shared);  // (chunk tokens, kDepth): a slice of A
  T* bs = as + kChunk * lds;             // (chunk tokens or 64 columns, kDepth): a slice of B or S^T
  T* ps = bs + kTile * lds;              // (chunk tokens, chunk tokens): the masked scores
  T* cs = ps + kChunk * ldp;             // (64 columns, chunk tokens): C^T
  float* u = reinterpret_cast<float*>(cs + kTile * ldp);  // (chunk tokens) each
  float* post = u + kChunk;
  float* column = post + kChunk;
  float* power = column + kChunk;  // g^d, d = 0..63

  const int64_t bh = blockIdx.y, chunk = blockIdx.x;
  const Geometry geo(p.shape, bh);
  const int L = geo.length(chunk);
  const int64_t t0 = chunk * kChunk;
  const int warp = threadIdx.x / 32;
  const T* a = p.a + bh * geo.T * p.da;
  const T* b = p.b + bh * geo.T * p.da;
  const T* c = p.c + bh * geo.T * p.dc;
  const T* state = p.states + (bh * geo.chunks + chunk) * p.da * p.dc;
  T* out = p.out + bh * geo.T * p.dc;

  if (threadIdx.x < kChunk) {
    const int i = threadIdx.x;
    const float norm = static_cast<float>(inverse_norm(geo.log_decay, geo.offset + t0 + i));
    u[i] = kBackwardRoles ? geo.power(L - 1 - i) : geo.power(i + 1);
    post[i] = kBackwardRoles ? 1.0f : norm;
    column[i] = kBackwardRoles ? norm : 1.0f;
    power[i] = geo.power(i);
  }

  // The scores A B^T of the chunk, masked and decayed, into shared memory as the next product's operand.
  Accumulator scores;
  scores.zero();
  for (int64_t k0 = 0; k0 < p.da; k0 += kDepth) {
    __syncthreads();
    stage<T, false>(as, lds, a, geo.T, p.da, t0, k0, kChunk, kDepth, nullptr);
    stage<T, false>(bs, lds, b, geo.T, p.da, t0, k0, kChunk, kDepth, nullptr);
    __syncthreads();
    warp_product<T>(scores, as + 16 * warp * lds, lds, bs, lds, kDepth);
  }
#pragma unroll
  for (int n = 0; n < 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int i = 16 * warp + Accumulator::row(e), j = Accumulator::col(n, e);
      const bool kept = kBackwardRoles ? j >= i : j <= i;
      ps[i * ldp + j] = from_float<T>(kept ? scores.v[n][e] * power[kBackwardRoles ? j - i : i - j] * column[j] : 0.0f);
    }

  for (int64_t c0 = 0; c0 < p.dc; c0 += kTile) {
    // A S for this tile of output columns.
    Accumulator carried;
    carried.zero();
    for (int64_t k0 = 0; k0 < p.da; k0 += kDepth) {
      __syncthreads();
      stage<T, false>(as, lds, a, geo.T, p.da, t0, k0, kChunk, kDepth, nullptr);
      if constexpr (kStateRowsReduce) {
        stage<T, true>(bs, lds, state, p.da, p.dc, k0, c0, kDepth, kTile, nullptr);
      } else {
        stage<T, false>(bs, lds, state, p.dc, p.da, c0, k0, kTile, kDepth, nullptr);
      }
      __syncthreads();
      warp_product<T>(carried, as + 16 * warp * lds, lds, bs, lds, kDepth);
    }
    // The masked scores times C for this tile.
    __syncthreads();
    stage<T, true>(cs, ldp, c, geo.T, p.dc, t0, c0, kChunk, kTile, nullptr);
    __syncthreads();
    Accumulator inner;
    inner.zero();
    warp_product<T>(inner, ps + 16 * warp * ldp, ldp, cs, ldp, kChunk);
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = 16 * warp + Accumulator::row(e);
        const int64_t j = c0 + Accumulator::col(n, e);
        if (i < L && j < p.dc) out[(t0 + i) * p.dc + j] = from_float<T>(post[i] * (inner.v[n][e] + u[i] * carried.v[n][e]));
      }
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename T, bool kReverse>
cudaError_t launch_scan(const ScanArgs<T>& args, cudaStream_t stream) {
  const int bytes = 2 * kTile * (kChunk + kPad) * sizeof(T) + kChunk * sizeof(float);
  auto* kernel = state_scan_kernel<T, kReverse>;
  if (const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)) return e;
  const dim3 grid(static_cast<unsigned>(ceil_div(args.db, kTile)), static_cast<unsigned>(ceil_div(args.da, kTile)),
                  static_cast<unsigned>(args.shape.batch * args.shape.heads));
  kernel<<<grid, kThreads, bytes, stream>>>(args);
  return cudaGetLastError();
}

template <typename T, bool kBackwardRoles, bool kStateRowsReduce>
cudaError_t launch_chunks(const ChunkArgs<T>& args, cudaStream_t stream) {
  const int bytes = (2 * kChunk * (kDepth + kPad) + 2 * kChunk * (kChunk + kPad)) * sizeof(T) + 4 * kChunk * sizeof(float);
  auto* kernel = chunk_output_kernel<T, kBackwardRoles, kStateRowsReduce>;
  if (const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)) return e;
  const dim3 grid(static_cast<unsigned>(ceil_div(args.shape.length, kChunk)),
                  static_cast<unsigned>(args.shape.batch * args.shape.heads));
  kernel<<<grid, kThreads, bytes, stream>>>(args);
  return cudaGetLastError();
}

template <typename T>
cudaError_t forward(const RetentionForwardParams& p, cudaStream_t stream) {
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
