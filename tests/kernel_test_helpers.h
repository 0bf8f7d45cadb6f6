// What the CUDA kernel tests share: the kernels' dtype tag, tolerances, float64 copies on the CPU for the
// references, and outputs poisoned with NaN so that an element a kernel fails to write shows.
#pragma once

#ifdef DENSESSM_WITH_CUDA
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "densessm/kernels.h"
#include "densessm/model.h"
#include "dtype.h"
#include "test_helpers.h"
#include "train/lm_loss.h"

namespace densessm::testing {

inline kernels::DType kernel_dtype(torch::ScalarType t) {
  return t == torch::kFloat ? kernels::DType::kFloat32 : t == torch::kHalf ? kernels::DType::kFloat16 : kernels::DType::kBFloat16;
}

/// A CUDA kernel test: skipped where no GPU is present; the random generator seeded with `Seed`.
template <uint64_t Seed>
class CudaKernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
    torch::manual_seed(Seed);
  }
};

/// Relative error a kernel must reach against the float64 reference.
inline double tolerance(torch::ScalarType t) { return t == torch::kFloat ? 1e-5 : 1e-2; }

/// A float64 CPU copy, detached (a leaf, ready for requires_grad_); undefined stays undefined.
inline torch::Tensor cpu64(const torch::Tensor& t) { return t.defined() ? t.detach().to(torch::kCPU, torch::kDouble) : t; }

inline torch::Tensor poisoned(torch::IntArrayRef sizes, const torch::TensorOptions& options) {
  return torch::full(sizes, NAN, options);
}
inline torch::Tensor poisoned(torch::IntArrayRef sizes, torch::ScalarType dtype) {
  return poisoned(sizes, torch::TensorOptions().device(torch::kCUDA).dtype(dtype));
}

/// A training step as densessm-train runs it (float32 parameters, the forward under bf16 or fp16 autocast,
/// chunkwise form) of a tiny dense model on CUDA: no operator falls back to its reference form, and the loss
/// and every parameter gradient agree with the kernels switched off. Under autocast the kernels' operands
/// are bf16/fp16 on both sides, so the tolerances are those of the half-precision dtypes.
inline void expect_autocast_training_uses_the_kernels(Architecture architecture) {
  for (const std::string precision : {"bf16", "fp16"}) {
    SCOPED_TRACE(precision);
    torch::manual_seed(3);
    const ModelConfig config = tiny_config(architecture, /*m=*/2, /*layers=*/3);
    CausalLM model(config);
    model->to(torch::kCUDA);
    model->train();
    const auto tokens =
        torch::randint(0, config.vocab_size, {2, 71}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kLong));
    ForwardOptions forward;
    forward.form = SequenceForm::kChunkwise;
    auto run = [&] {
      model->zero_grad();
      auto loss = next_token_loss(model, tokens, precision, forward);
      loss.backward();
      std::vector<torch::Tensor> out = {loss.detach()};
      for (const auto& p : model->parameters()) out.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
      return out;
    };
    const int64_t before = kernel_fallbacks();
    const auto on = run();
    EXPECT_EQ(kernel_fallbacks(), before) << "an operator ran its reference form (its warning is in the log above)";
    set_kernels_enabled(false);
    const auto off = run();
    set_kernels_enabled(true);
    ASSERT_EQ(on.size(), off.size());
    EXPECT_LT(relative_error(on[0], off[0]), 1e-2) << "loss " << on[0].item<double>() << " vs " << off[0].item<double>();
    for (size_t i = 1; i < on.size(); ++i) EXPECT_LT(relative_error(on[i], off[i]), 5e-2) << "parameter gradient " << i;
  }
}

}  // namespace densessm::testing
#endif
