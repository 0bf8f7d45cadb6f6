// The RMSNorm kernels (kernels/rms_norm.h) behind RMSNorm on CUDA: forward, dx and dw against float64 on
// the CPU, for every (input, weight) dtype pair they take and row widths from tiny to the limit; and the
// LibTorch form beyond the limit.
#ifdef DENSESSM_WITH_CUDA

#include <string>
#include <tuple>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "densessm/kernels.h"
#include "densessm/rms_norm.h"
#include "kernel_test_helpers.h"
#include "ops/cuda/rms_norm_cuda.h"
#include "test_helpers.h"

namespace densessm::testing {
namespace {

using RmsNormKernel = CudaKernelTest<47>;

// y, dx and dw of RMSNorm(x) with upstream gradient dy, through the module (on x's device and dtypes).
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> run(RMSNorm& norm, const torch::Tensor& x, const torch::Tensor& dy) {
  norm->zero_grad();
  auto input = x.detach().clone().requires_grad_(true);
  auto y = norm(input);
  y.backward(dy);
  return {y.detach(), input.grad(), norm->weight.grad()};
}

TEST_F(RmsNormKernel, ForwardAndBackwardMatchTheFloat64Reference) {
  const std::vector<std::pair<torch::ScalarType, torch::ScalarType>> pairs{
      {torch::kFloat, torch::kFloat},  {torch::kHalf, torch::kHalf}, {torch::kBFloat16, torch::kBFloat16},
      {torch::kHalf, torch::kFloat},   {torch::kBFloat16, torch::kFloat}};
  const std::vector<std::vector<int64_t>> shapes{{1, 16}, {7, 64}, {2, 3, 320}, {33, 1280}, {5, 2560},
                                                 {3, 5120}, {2, 8192}, {4, 257},
                                                 {3000, 64}};  // more rows than backward blocks: a block takes several
  for (const auto& [dtype, weight_dtype] : pairs) {
    for (const auto& shape : shapes) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " x, " + c10::toString(weight_dtype) + " weight, shape " +
                   c10::str(torch::IntArrayRef(shape)));
      const int64_t dim = shape.back();
      RMSNorm norm(dim, 1e-6);
      {
        torch::NoGradGuard no_grad;
        norm->weight.normal_(1.0, 0.2);
      }
      RMSNorm reference(dim, 1e-6);
      {
        torch::NoGradGuard no_grad;
        reference->weight.copy_(norm->weight);
      }
      reference->to(torch::kDouble);
      norm->to(torch::kCUDA, weight_dtype);
      const auto x = torch::randn(shape, torch::TensorOptions().device(torch::kCUDA).dtype(dtype)) * 3.0;
      const auto dy = torch::randn(shape, x.options());
      ASSERT_TRUE(cuda::can_run_rms_norm(x, norm->weight));
      const auto [y, dx, dw] = run(norm, x, dy);
      // The reference sees the inputs as rounded to their dtypes, in float64.
      {
        torch::NoGradGuard no_grad;
        reference->weight.copy_(cpu64(norm->weight));
      }
      const auto [y64, dx64, dw64] = run(reference, cpu64(x), cpu64(dy));
      ASSERT_EQ(y.scalar_type(), dtype);
      ASSERT_EQ(dw.scalar_type(), weight_dtype);
      EXPECT_LT(relative_error(y, y64), tolerance(dtype)) << "y";
      EXPECT_LT(relative_error(dx, dx64), tolerance(dtype)) << "dx";
      EXPECT_LT(relative_error(dw, dw64), tolerance(dtype) * 10) << "dw (a sum over the rows of rounded products)";
    }
  }
}

TEST_F(RmsNormKernel, WiderRowsAndOtherDtypesTakeTheLibTorchForm) {
  const auto x = torch::randn({2, 8200}, torch::TensorOptions().device(torch::kCUDA));
  EXPECT_FALSE(cuda::can_run_rms_norm(x, torch::ones({8200}, x.options())));
  EXPECT_FALSE(cuda::can_run_rms_norm(x.to(torch::kDouble).narrow(1, 0, 64), torch::ones({64}, x.options())));
  EXPECT_FALSE(cuda::can_run_rms_norm(x.narrow(1, 0, 64).to(torch::kHalf), torch::ones({64}, x.options().dtype(torch::kBFloat16))));
  set_kernels_enabled(false);
  EXPECT_FALSE(cuda::can_run_rms_norm(x.narrow(1, 0, 64), torch::ones({64}, x.options())));
  set_kernels_enabled(true);
}

}  // namespace
}  // namespace densessm::testing

#endif  // DENSESSM_WITH_CUDA
