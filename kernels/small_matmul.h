// out = x w^T (+ out) for a handful of rows of x: the matrix products of a decode step, which read a weight
// matrix once for a few tokens and so are bound by the weights' bytes. cuBLAS picks tile shapes made for
// larger products there (55-65% of the copy bandwidth at 6 rows on the H200); this kernel streams the
// weights with 16-byte loads, many in flight per SM, and multiplies on the tensor cores (mma m16n8k16,
// float32 accumulation) with the tokens as the 8-wide side. Few output columns (a 2560-wide output is 160
// blocks of 16 columns for 132 SMs) would leave SMs idle or doubly loaded, so the depth is also split
// between the blocks of a cluster.
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
  // How many blocks share each 16 columns' depth (1 to kSmallMatmulMaxSplit, summed through a thread-block
  // cluster's shared memory); 0 lets the kernel choose so that the blocks spread evenly over the SMs.
  int split = 0;
};
constexpr int kSmallMatmulMaxSplit = 8;
bool small_matmul_supported(const SmallMatmulParams& p);
/// Whether this kernel beats cuBLAS at p's shape: supported, and fewer than two 16-column blocks per SM.
/// In a CUDA graph on the H200 (float16, 6 rows) cuBLAS streams wide outputs at 3.3-4 TB/s (2560 -> 12960
/// in 20 us, 2560 -> 32000 in 41 us), faster than this kernel; narrow ones it leaves at 1.8-2.3 TB/s, where
/// this kernel is 10-40% faster (5120 -> 2560: 9.9 against 11.5 us; 4096 -> 2048: 7.3 against 9.4;
/// 4096 -> 160: 3.7 against 6.2).
bool small_matmul_preferred(const SmallMatmulParams& p);
cudaError_t small_matmul(const SmallMatmulParams& p, cudaStream_t stream);

}  // namespace densessm::kernels
