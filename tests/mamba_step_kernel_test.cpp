// The one-token Mamba kernels (kernels/mamba_step.cu) called through their C++ entry points on outputs
// poisoned with NaN, against the LibTorch step operators evaluated in float64. Skipped without a GPU.
#include "densessm/kernels.h"
#include "densessm/selective_scan.h"
#include "kernel_test_helpers.h"
#include "test_helpers.h"

#ifdef DENSESSM_WITH_CUDA
#include <c10/cuda/CUDAStream.h>

#include "mamba_step.h"
#endif

namespace densessm {
namespace {

using namespace densessm::testing;  // relative_error and the kernel tests' helpers

#ifdef DENSESSM_WITH_CUDA

class MambaStepKernel : public CudaKernelTest<99> {};

TEST_F(MambaStepKernel, ScanStepMatchesTheReference) {
  for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    for (auto [B, C, N] : {std::tuple<int64_t, int64_t, int64_t>{1, 3, 1}, {6, 100, 16}, {64, 1536, 16}, {2, 77, 64}}) {
      for (bool optional_inputs : {true, false}) {
        auto o = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
        SelectiveScanArgs a;
        a.u = torch::randn({B, C}, o);
        a.delta = torch::randn({B, C}, o) * 0.5;
        a.A = -torch::rand({C, N}, o.dtype(torch::kFloat)) * 2 - 0.1;
        a.Bm = torch::randn({B, N}, o);
        a.Cm = torch::randn({B, N}, o);
        if (optional_inputs) {
          a.Dskip = torch::randn({C}, o);
          a.z = torch::randn({B, C}, o);
          a.delta_bias = torch::randn({C}, o) * 0.5;
        }
        auto state = torch::randn({B, C, N}, o.dtype(torch::kFloat));
        // Reference: the same inputs in float64 on the CPU.
        SelectiveScanArgs r = a;
        for (auto* f : {&r.u, &r.delta, &r.A, &r.Bm, &r.Cm, &r.Dskip, &r.z, &r.delta_bias}) *f = cpu64(*f);
        torch::Tensor ref_state = cpu64(state);
        auto expected = selective_scan_step(r, ref_state);

        auto out = torch::full({B, C}, NAN, o);
        auto ptr = [](const torch::Tensor& t) -> const void* { return t.defined() ? t.data_ptr() : nullptr; };
        kernels::ScanStepParams p{state.data_ptr<float>(), a.u.data_ptr(), a.delta.data_ptr(), ptr(a.delta_bias),
                                  a.A.data_ptr<float>(), a.Bm.data_ptr(), a.Cm.data_ptr(), ptr(a.Dskip), ptr(a.z),
                                  out.data_ptr(), B, C, N, true, kernel_dtype(dtype)};
        ASSERT_EQ(kernels::selective_scan_step(p, c10::cuda::getCurrentCUDAStream()), cudaSuccess);
        torch::cuda::synchronize();
        EXPECT_LT(relative_error(out, expected), tolerance(dtype)) << dtype << " B=" << B << " C=" << C << " N=" << N;
        EXPECT_LT(relative_error(state, ref_state), tolerance(torch::kFloat)) << dtype << " state";
      }
    }
  }
}

TEST_F(MambaStepKernel, ConvStepMatchesTheReference) {
  for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    for (int64_t W : {2, 3, 4}) {
      for (auto [B, C] : {std::pair<int64_t, int64_t>{1, 5}, {6, 3072}, {64, 257}}) {
        auto o = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
        auto x = torch::randn({B, C}, o), weight = torch::randn({C, W}, o), bias = torch::randn({C}, o);
        auto state = torch::randn({B, C, W - 1}, o);
        torch::Tensor ref_state = cpu64(state);
        auto expected = causal_conv1d_step(cpu64(x), cpu64(weight), cpu64(bias), ref_state);
        auto out = torch::full({B, C}, NAN, o);
        kernels::ConvStepParams p{x.data_ptr(), state.data_ptr(), weight.data_ptr(), bias.data_ptr(), out.data_ptr(),
                                  B, C, W, kernel_dtype(dtype)};
        ASSERT_EQ(kernels::causal_conv1d_step(p, c10::cuda::getCurrentCUDAStream()), cudaSuccess);
        torch::cuda::synchronize();
        EXPECT_LT(relative_error(out, expected), tolerance(dtype)) << dtype << " W=" << W << " B=" << B;
        EXPECT_LT(relative_error(state, ref_state), 1e-15 + (dtype == torch::kFloat ? 0 : 1e-2));
      }
    }
  }
}

TEST_F(MambaStepKernel, OperatorsDispatchToTheKernelsAndCanBeSwitchedOff) {
  ASSERT_TRUE(kernels_built());
  auto o = torch::TensorOptions().device(torch::kCUDA);
  auto x = torch::randn({4, 8}, o), weight = torch::randn({8, 4}, o), bias = torch::randn({8}, o);
  auto state = torch::randn({4, 8, 3}, o);
  torch::Tensor kernel_state = state.clone(), reference_state = state.clone();
  auto with_kernel = causal_conv1d_step(x, weight, bias, kernel_state);
  set_kernels_enabled(false);
  auto without = causal_conv1d_step(x, weight, bias, reference_state);
  set_kernels_enabled(true);
  EXPECT_LT(relative_error(with_kernel, without), 1e-5);
  EXPECT_LT(relative_error(kernel_state, reference_state), 1e-6);
}

#else

TEST(MambaStepKernel, NotBuilt) {
  EXPECT_FALSE(kernels_built());
  GTEST_SKIP() << "this build has no CUDA kernels";
}

#endif

}  // namespace
}  // namespace densessm
