// The causal convolution kernels (kernels/causal_conv1d.cu), forward and the gradients of x, weight and
// bias, called through their C++ entry points on outputs poisoned with NaN, against the LibTorch reference
// form in float64 on the same inputs; then the operator's dispatch with autograd and with a state.
// Skipped without a GPU.
#include "densessm/kernels.h"
#include "densessm/selective_scan.h"
#include "kernel_test_helpers.h"
#include "test_helpers.h"

#ifdef DENSESSM_WITH_CUDA
#include <c10/cuda/CUDAStream.h>

#include "causal_conv1d.h"
#endif

namespace densessm {
namespace {

using namespace densessm::testing;  // relative_error and the kernel tests' helpers

#ifdef DENSESSM_WITH_CUDA

class CausalConv1dKernel : public CudaKernelTest<77> {};

struct Shape {
  int64_t B, C, T;
};
// Lengths shorter than the width, around the kernels' tile of 256 steps, and odd.
const std::vector<Shape> kShapes = {{1, 3, 1}, {3, 17, 2}, {1, 64, 300}, {3, 5, 2049}, {2, 33, 256}, {1, 7, 513}};

TEST_F(CausalConv1dKernel, ForwardAndBackwardMatchTheReference) {
  for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    for (int64_t W : {2, 3, 4}) {
      for (const Shape& s : kShapes) {
        for (bool with_state : {false, true}) {
          for (bool with_bias : {true, false}) {
            const auto o = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
            const auto x = torch::randn({s.B, s.C, s.T}, o);
            const auto weight = torch::randn({s.C, W}, o.dtype(torch::kFloat));
            const auto bias = with_bias ? torch::randn({s.C}, o.dtype(torch::kFloat)) : torch::Tensor();
            const auto initial = with_state ? torch::randn({s.B, s.C, W - 1}, o) : torch::Tensor();
            const auto grad_out = torch::randn({s.B, s.C, s.T}, o);
            // Reference: float64 on the CPU, gradients by autograd.
            auto rx = cpu64(x).requires_grad_(true), rw = cpu64(weight).requires_grad_(true);
            auto rb = with_bias ? cpu64(bias).requires_grad_(true) : torch::Tensor();
            torch::Tensor ref_state = cpu64(initial);
            auto expected = causal_conv1d(rx, rw, rb, with_state ? &ref_state : nullptr);
            expected.backward(cpu64(grad_out));

            kernels::ConvParams p{x.data_ptr(), weight.data_ptr<float>(), with_bias ? bias.data_ptr<float>() : nullptr,
                                  with_state ? initial.data_ptr() : nullptr, nullptr, s.B, s.C, s.T, W,
                                  kernel_dtype(dtype)};
            auto out = poisoned({s.B, s.C, s.T}, dtype);
            p.out = out.data_ptr();
            ASSERT_EQ(kernels::causal_conv1d_forward(p, c10::cuda::getCurrentCUDAStream()), cudaSuccess);
            auto grad_x = poisoned({s.B, s.C, s.T}, dtype);
            auto partial = poisoned({s.B, s.C, kernels::causal_conv1d_backward_tiles(s.T), W + 1}, torch::kFloat);
            kernels::ConvBackwardParams q{p, grad_out.data_ptr(), grad_x.data_ptr(), partial.data_ptr<float>()};
            ASSERT_EQ(kernels::causal_conv1d_backward(q, c10::cuda::getCurrentCUDAStream()), cudaSuccess);
            torch::cuda::synchronize();

            std::ostringstream what;
            what << dtype << " W=" << W << " B=" << s.B << " C=" << s.C << " T=" << s.T << (with_state ? " from a state" : "")
                 << (with_bias ? " with bias" : "");
            const auto sums = partial.sum(torch::IntArrayRef{0, 2});  // (C, W + 1)
            EXPECT_LT(relative_error(out, expected), tolerance(dtype)) << what.str();
            EXPECT_LT(relative_error(grad_x, rx.grad()), tolerance(dtype)) << what.str() << ": x";
            EXPECT_LT(relative_error(sums.narrow(1, 0, W), rw.grad()), tolerance(dtype)) << what.str() << ": weight";
            if (with_bias) {
              EXPECT_LT(relative_error(sums.select(1, W), rb.grad()), tolerance(dtype)) << what.str() << ": bias";
            }
          }
        }
      }
    }
  }
}

TEST_F(CausalConv1dKernel, OperatorUsesTheKernelsWithAutogradAndState) {
  ASSERT_TRUE(kernels_enabled());
  const auto o = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  // x (B, C, T) with channels innermost, as the Mamba block passes it.
  auto x = torch::randn({2, 19, 24}, o).transpose(1, 2).detach().requires_grad_(true);  // (B, C, T) = (2, 24, 19)
  auto weight = torch::randn({24, 4}, o).requires_grad_(true), bias = torch::randn({24}, o).requires_grad_(true);
  const auto grad_out = torch::randn({2, 24, 19}, o);
  auto run = [&] {
    for (auto* t : {&x, &weight, &bias}) t->mutable_grad() = torch::Tensor();
    auto y = causal_conv1d(x, weight, bias, nullptr);
    y.backward(grad_out);
    return std::vector<torch::Tensor>{y.detach(), x.grad().clone(), weight.grad().clone(), bias.grad().clone()};
  };
  const auto with_kernels = run();
  set_kernels_enabled(false);
  const auto reference = run();
  set_kernels_enabled(true);
  for (size_t i = 0; i < with_kernels.size(); ++i) {
    EXPECT_EQ(with_kernels[i].scalar_type(), reference[i].scalar_type()) << i;
    EXPECT_LT(relative_error(with_kernels[i], reference[i]), 1e-2) << "output " << i;
  }

  // Prefill in two pieces, the state carried between them, without gradients.
  const torch::NoGradGuard no_grad;
  torch::Tensor state;
  auto first = causal_conv1d(x.narrow(2, 0, 2), weight, bias, &state);
  auto second = causal_conv1d(x.narrow(2, 2, 17), weight, bias, &state);
  set_kernels_enabled(false);
  torch::Tensor reference_state;
  causal_conv1d(x.narrow(2, 0, 2), weight, bias, &reference_state);
  auto reference_second = causal_conv1d(x.narrow(2, 2, 17), weight, bias, &reference_state);
  set_kernels_enabled(true);
  EXPECT_LT(relative_error(second, reference_second), 1e-2);
  EXPECT_LT(relative_error(state, reference_state), 1e-6);
}

#else

TEST(CausalConv1dKernel, NotBuilt) {
  EXPECT_FALSE(kernels_built());
  GTEST_SKIP() << "this build has no CUDA kernels";
}

#endif

}  // namespace
}  // namespace densessm
