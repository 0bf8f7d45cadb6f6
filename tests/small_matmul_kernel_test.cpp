// The small-matmul kernel (kernels/small_matmul.h) through its LibTorch wrapper, against float64 products:
// every token count it takes, depths with and without a partial last step, column counts around its
// 16-column blocks, rows of x read in place from a wider matrix, and the in-place sum.
#ifdef DENSESSM_WITH_CUDA

#include <string>

#include <c10/cuda/CUDAStream.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kernel_test_helpers.h"
#include "ops/cuda/decode_cuda.h"
#include "small_matmul.h"
#include "test_helpers.h"

namespace densessm::testing {
namespace {

using SmallMatmulKernel = CudaKernelTest<43>;

TEST_F(SmallMatmulKernel, MatchesTheFloat64Product) {
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  for (const auto dtype : {torch::kHalf, torch::kBFloat16}) {
    for (const int64_t M : {1, 3, 6, 8}) {
      for (const int64_t K : {8, 40, 80, 136, 2560}) {
        for (const int64_t N : {1, 15, 16, 17, 160, 1000}) {
          SCOPED_TRACE(std::string(c10::toString(dtype)) + " M " + std::to_string(M) + " K " + std::to_string(K) +
                       " N " + std::to_string(N));
          // x as rows of a wider matrix (an offset of 8 columns keeps them 16-byte aligned).
          const auto wide = torch::randn({M, K + 24}, cuda.dtype(dtype));
          const auto x = wide.narrow(1, 8, K);
          const auto w = torch::randn({N, K}, cuda.dtype(dtype)) / std::sqrt(static_cast<double>(K));
          kernels::SmallMatmulParams p{x.data_ptr(), w.data_ptr(), nullptr, M, N, K, x.stride(0), N, false,
                                       kernel_dtype(dtype)};
          ASSERT_TRUE(kernels::small_matmul_supported(p)) << "the kernel, not cuBLAS, must take this case";
          const auto exact = torch::mm(cpu64(x), cpu64(w).t());
          EXPECT_LT(relative_error(cuda::small_matmul(x, w), exact), tolerance(dtype));
          // Into a sum, in place: poisoned columns would show, and the sum must be the one returned.
          const auto start = torch::randn({M, N}, cuda.dtype(dtype));
          auto sum = start.clone();
          const auto returned = cuda::small_matmul(x, w, sum);
          EXPECT_EQ(returned.data_ptr(), sum.data_ptr());
          EXPECT_LT(relative_error(sum, cpu64(start) + exact), tolerance(dtype));
        }
      }
    }
  }
}

// The depth split between the blocks of a cluster, every split the kernel takes (including more blocks than
// the depth has steps for, whose warps then have nothing to add): the sum equals the float64 product, into
// NaN-poisoned outputs and into a running sum.
TEST_F(SmallMatmulKernel, SplitDepthsSumToTheProduct) {
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  for (const auto dtype : {torch::kHalf, torch::kBFloat16}) {
    for (const int64_t M : {1, 6}) {
      for (const auto& [K, N] : {std::pair<int64_t, int64_t>{136, 15}, {2560, 160}, {4096, 33}, {5120, 1000}}) {
        const auto x = torch::randn({M, K}, cuda.dtype(dtype));
        const auto w = torch::randn({N, K}, cuda.dtype(dtype)) / std::sqrt(static_cast<double>(K));
        const auto exact = torch::mm(cpu64(x), cpu64(w).t());
        for (int split = 1; split <= kernels::kSmallMatmulMaxSplit; ++split) {
          SCOPED_TRACE(std::string(c10::toString(dtype)) + " M " + std::to_string(M) + " K " + std::to_string(K) +
                       " N " + std::to_string(N) + " split " + std::to_string(split));
          auto out = poisoned({M, N}, dtype);
          kernels::SmallMatmulParams p{x.data_ptr(), w.data_ptr(), out.data_ptr(), M, N, K, K, N, false,
                                       kernel_dtype(dtype), split};
          ASSERT_EQ(kernels::small_matmul(p, stream), cudaSuccess);
          EXPECT_LT(relative_error(out, exact), tolerance(dtype));
          const auto start = torch::randn({M, N}, cuda.dtype(dtype));
          auto sum = start.clone();
          p.out = sum.data_ptr();
          p.accumulate = true;
          ASSERT_EQ(kernels::small_matmul(p, stream), cudaSuccess);
          EXPECT_LT(relative_error(sum, cpu64(start) + exact), tolerance(dtype));
        }
      }
    }
  }
  // Out of range: no launch.
  const auto x = torch::randn({2, 64}, cuda.dtype(torch::kHalf)), w = torch::randn({16, 64}, cuda.dtype(torch::kHalf));
  const kernels::SmallMatmulParams p{x.data_ptr(), w.data_ptr(), nullptr, 2, 16, 64, 64, 16, false,
                                     kernels::DType::kFloat16, kernels::kSmallMatmulMaxSplit + 1};
  EXPECT_FALSE(kernels::small_matmul_supported(p));
}

// Every output element is written: outputs start as NaN and none may remain.
TEST_F(SmallMatmulKernel, WritesEveryOutput) {
  const auto cuda = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kHalf);
  const int64_t M = 5, N = 33, K = 64;
  const auto x = torch::randn({M, K}, cuda), w = torch::randn({N, K}, cuda);
  auto out = poisoned({M, N}, torch::kHalf);
  const kernels::SmallMatmulParams p{x.data_ptr(), w.data_ptr(), out.data_ptr(), M, N, K, K, N, false,
                                     kernels::DType::kFloat16};
  ASSERT_EQ(kernels::small_matmul(p, c10::cuda::getCurrentCUDAStream()), cudaSuccess);
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
  EXPECT_LT(relative_error(out, torch::mm(cpu64(x), cpu64(w).t())), 1e-2);
}

// What the kernel does not take goes to cuBLAS with the same result: float32, more than 8 tokens, a depth
// that is not a multiple of 8.
TEST_F(SmallMatmulKernel, OtherCasesFallBackToCublas) {
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  for (const auto& [dtype, M, K] : {std::tuple{torch::kFloat, int64_t{4}, int64_t{64}},
                                    std::tuple{torch::kHalf, int64_t{9}, int64_t{64}},
                                    std::tuple{torch::kBFloat16, int64_t{4}, int64_t{20}}}) {
    SCOPED_TRACE(std::string(c10::toString(dtype)) + " M " + std::to_string(M) + " K " + std::to_string(K));
    const auto x = torch::randn({M, K}, cuda.dtype(dtype)), w = torch::randn({24, K}, cuda.dtype(dtype));
    const kernels::SmallMatmulParams p{x.data_ptr(), w.data_ptr(), nullptr, M, 24, K, K, 24, false, kernel_dtype(dtype)};
    EXPECT_FALSE(kernels::small_matmul_supported(p));
    EXPECT_LT(relative_error(cuda::small_matmul(x, w), torch::mm(cpu64(x), cpu64(w).t())), tolerance(dtype) * 10);
  }
}

}  // namespace
}  // namespace densessm::testing

#endif  // DENSESSM_WITH_CUDA
