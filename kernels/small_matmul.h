// out = x w^T (+ out) for a handful of rows of x: the matrix products of a decode step, which read a weight
// matrix once for a few tokens and so are bound by the weights' bytes. cuBLAS picks tile shapes made for
// larger products there (55-65% of the copy bandwidth at 6 rows on the H200); this kernel streams the
// weights with 16-byte loads, many in flight per SM, and multiplies on the tensor cores (mma m16n8k16,
// float32 accumulation) with the tokens as the 8-wide side.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "dtype.h"

namespace densessm::kernels {

/// The most rows of x one call takes (the mma's n).
constexpr int64_t kSmallMatmulRows = 8;

/// out[m, n] = sum_k x[m, k] w[n, k] (+ out[m, n] when accumulate), m < rows <= 8, float32 accumulation.
/// float16 or bfloat16; k a multiple of 8; x's rows and w 16-byte aligned with x_stride a multiple of 8
/// (small_matmul_supported says whether a call qualifies); out has no alignment requirement.
struct SmallMatmulParams {
  const void* x;  // (rows, k), row r at x + r * x_stride
  const void* w;  // (n, k) contiguous
  void* out;      // (rows, n), row r at out + r * out_stride
  int64_t rows, n, k, x_stride, out_stride;
  bool accumulate;
  DType dtype;
};
bool small_matmul_supported(const SmallMatmulParams& p);
cudaError_t small_matmul(const SmallMatmulParams& p, cudaStream_t stream);

}  // namespace densessm::kernels
