// The selective-scan kernels (kernels/selective_scan.cu), forward and every input gradient, called through
// their C++ entry points on outputs poisoned with NaN, against the LibTorch reference form evaluated in
// float64 on the same inputs; then the operator's dispatch and a tiny DenseMamba with the kernels on and
// off. Skipped without a GPU.
#include "densessm/kernels.h"
#include "densessm/model.h"
#include "densessm/selective_scan.h"
#include "kernel_test_helpers.h"
#include "test_helpers.h"

#ifdef DENSESSM_WITH_CUDA
#include <c10/cuda/CUDAStream.h>

#include "selective_scan.h"
#endif

namespace densessm {
namespace {

using namespace densessm::testing;  // relative_error and the kernel tests' helpers

#ifdef DENSESSM_WITH_CUDA

const void* pointer(const torch::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
const float* float_pointer(const torch::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

struct Shape {
  int64_t B, C, T, N;
};
// Odd lengths (1, 7, 300, 2049), batch 1 and 3, N 1, 4, 16, 20 and 64 (every kernel instantiation).
const std::vector<Shape> kShapes = {{1, 3, 1, 1}, {3, 37, 7, 4}, {1, 64, 300, 16}, {3, 20, 2049, 16},
                                    {2, 70, 33, 20}, {1, 33, 129, 64}, {3, 300, 17, 8}};

// Fresh random inputs on the GPU: activations of `dtype`, A, D and delta_bias float32 (as the kernels take
// them). `optional` adds D, z and delta_bias.
SelectiveScanArgs random_inputs(const Shape& s, torch::ScalarType dtype, bool optional) {
  auto o = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
  SelectiveScanArgs a;
  a.u = torch::randn({s.B, s.C, s.T}, o);
  a.delta = torch::randn({s.B, s.C, s.T}, o) * 0.5;
  a.A = -torch::rand({s.C, s.N}, o.dtype(torch::kFloat)) * 2 - 0.1;
  a.Bm = torch::randn({s.B, s.N, s.T}, o);
  a.Cm = torch::randn({s.B, s.N, s.T}, o);
  if (optional) {
    a.Dskip = torch::randn({s.C}, o.dtype(torch::kFloat));
    a.z = torch::randn({s.B, s.C, s.T}, o);
    a.delta_bias = torch::randn({s.C}, o.dtype(torch::kFloat)) * 0.5;
  }
  a.delta_softplus = true;
  return a;
}

SelectiveScanArgs reference_inputs(const SelectiveScanArgs& a, bool requires_grad) {
  SelectiveScanArgs r = a;
  for (auto* f : {&r.u, &r.delta, &r.A, &r.Bm, &r.Cm, &r.Dskip, &r.z, &r.delta_bias}) {
    *f = cpu64(*f);
    if (requires_grad && f->defined()) f->requires_grad_(true);
  }
  return r;
}

kernels::ScanParams params(const SelectiveScanArgs& a) {
  return {a.u.data_ptr(), a.delta.data_ptr(), pointer(a.z), a.A.data_ptr<float>(), a.Bm.data_ptr(), a.Cm.data_ptr(),
          float_pointer(a.Dskip), float_pointer(a.delta_bias), nullptr, nullptr, nullptr,
          a.u.size(0), a.u.size(1), a.u.size(2), a.A.size(1), a.delta_softplus, kernel_dtype(a.u.scalar_type())};
}

std::string describe(torch::ScalarType dtype, const Shape& s, bool optional) {
  std::ostringstream out;
  out << dtype << " B=" << s.B << " C=" << s.C << " T=" << s.T << " N=" << s.N << (optional ? " with D, z, bias" : "");
  return out.str();
}

class SelectiveScanKernel : public CudaKernelTest<2024> {};

TEST_F(SelectiveScanKernel, ForwardMatchesTheReference) {
  for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    for (const Shape& s : kShapes) {
      for (bool optional : {true, false}) {
        const auto a = random_inputs(s, dtype, optional);
        const auto initial = torch::randn({s.B, s.C, s.N}, a.A.options());
        for (bool with_state : {false, true}) {
          torch::Tensor ref_state = with_state ? cpu64(initial) : torch::Tensor();
          const auto expected = selective_scan(reference_inputs(a, false), &ref_state);

          auto out = poisoned({s.B, s.C, s.T}, dtype);
          auto final_state = poisoned({s.B, s.C, s.N}, torch::kFloat);
          auto p = params(a);
          p.initial_state = with_state ? initial.data_ptr<float>() : nullptr;
          p.final_state = final_state.data_ptr<float>();
          p.out = out.data_ptr();
          ASSERT_EQ(kernels::selective_scan_forward(p, c10::cuda::getCurrentCUDAStream()), cudaSuccess);
          torch::cuda::synchronize();
          const auto what = describe(dtype, s, optional) + (with_state ? " from a state" : "");
          EXPECT_LT(relative_error(out, expected), tolerance(dtype)) << what;
          EXPECT_LT(relative_error(final_state, ref_state), dtype == torch::kFloat ? 1e-5 : 1e-3) << what << ": state";
        }
      }
    }
  }
}

TEST_F(SelectiveScanKernel, BackwardGivesEveryGradientOfTheReference) {
  for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    for (const Shape& s : kShapes) {
      for (bool optional : {true, false}) {
        const auto a = random_inputs(s, dtype, optional);
        const auto grad_out = torch::randn({s.B, s.C, s.T}, a.u.options());
        auto r = reference_inputs(a, /*requires_grad=*/true);
        selective_scan(r, nullptr).backward(cpu64(grad_out));

        const int64_t blocks = kernels::selective_scan_backward_channel_blocks(s.C, s.N);
        auto grad_u = poisoned({s.B, s.C, s.T}, dtype), grad_delta = poisoned({s.B, s.C, s.T}, dtype);
        auto grad_z = optional ? poisoned({s.B, s.C, s.T}, dtype) : torch::Tensor();
        auto grad_A = poisoned({s.B, s.C, s.N}, torch::kFloat);
        auto grad_Bm = poisoned({s.B, blocks, s.N, s.T}, torch::kFloat), grad_Cm = poisoned({s.B, blocks, s.N, s.T}, torch::kFloat);
        auto grad_D = optional ? poisoned({s.B, s.C}, torch::kFloat) : torch::Tensor();
        auto grad_bias = optional ? poisoned({s.B, s.C}, torch::kFloat) : torch::Tensor();
        auto scratch = poisoned({kernels::selective_scan_backward_scratch(s.B, s.C, s.T, s.N)}, torch::kFloat);
        kernels::ScanBackwardParams q{params(a), grad_out.data_ptr(), grad_u.data_ptr(), grad_delta.data_ptr(),
                                      optional ? grad_z.data_ptr() : nullptr, grad_A.data_ptr<float>(),
                                      grad_Bm.data_ptr<float>(), grad_Cm.data_ptr<float>(),
                                      optional ? grad_D.data_ptr<float>() : nullptr,
                                      optional ? grad_bias.data_ptr<float>() : nullptr, scratch.data_ptr<float>()};
        ASSERT_EQ(kernels::selective_scan_backward(q, c10::cuda::getCurrentCUDAStream()), cudaSuccess);
        torch::cuda::synchronize();

        const auto what = describe(dtype, s, optional);
        const double tol = tolerance(dtype);
        EXPECT_LT(relative_error(grad_u, r.u.grad()), tol) << what << ": u";
        EXPECT_LT(relative_error(grad_delta, r.delta.grad()), tol) << what << ": delta";
        EXPECT_LT(relative_error(grad_A.sum(0), r.A.grad()), tol) << what << ": A";
        EXPECT_LT(relative_error(grad_Bm.sum(1), r.Bm.grad()), tol) << what << ": Bm";
        EXPECT_LT(relative_error(grad_Cm.sum(1), r.Cm.grad()), tol) << what << ": Cm";
        if (optional) {
          EXPECT_LT(relative_error(grad_z, r.z.grad()), tol) << what << ": z";
          EXPECT_LT(relative_error(grad_D.sum(0), r.Dskip.grad()), tol) << what << ": D";
          EXPECT_LT(relative_error(grad_bias.sum(0), r.delta_bias.grad()), tol) << what << ": delta_bias";
        }
      }
    }
  }
}

TEST_F(SelectiveScanKernel, BackwardStartsFromTheInitialState) {
  const Shape s{2, 40, 45, 16};
  const auto a = random_inputs(s, torch::kFloat, true);
  const auto initial = torch::randn({s.B, s.C, s.N}, a.A.options());
  const auto grad_out = torch::randn({s.B, s.C, s.T}, a.u.options());
  auto r = reference_inputs(a, /*requires_grad=*/true);
  torch::Tensor ref_state = cpu64(initial);
  selective_scan(r, &ref_state).backward(cpu64(grad_out));

  const int64_t blocks = kernels::selective_scan_backward_channel_blocks(s.C, s.N);
  auto grad_u = poisoned({s.B, s.C, s.T}, torch::kFloat), grad_delta = poisoned({s.B, s.C, s.T}, torch::kFloat);
  auto grad_z = poisoned({s.B, s.C, s.T}, torch::kFloat), grad_A = poisoned({s.B, s.C, s.N}, torch::kFloat);
  auto grad_Bm = poisoned({s.B, blocks, s.N, s.T}, torch::kFloat), grad_Cm = poisoned({s.B, blocks, s.N, s.T}, torch::kFloat);
  auto grad_D = poisoned({s.B, s.C}, torch::kFloat), grad_bias = poisoned({s.B, s.C}, torch::kFloat);
  auto scratch = poisoned({kernels::selective_scan_backward_scratch(s.B, s.C, s.T, s.N)}, torch::kFloat);
  auto p = params(a);
  p.initial_state = initial.data_ptr<float>();
  kernels::ScanBackwardParams q{p, grad_out.data_ptr(), grad_u.data_ptr(), grad_delta.data_ptr(), grad_z.data_ptr(),
                                grad_A.data_ptr<float>(), grad_Bm.data_ptr<float>(), grad_Cm.data_ptr<float>(),
                                grad_D.data_ptr<float>(), grad_bias.data_ptr<float>(), scratch.data_ptr<float>()};
  ASSERT_EQ(kernels::selective_scan_backward(q, c10::cuda::getCurrentCUDAStream()), cudaSuccess);
  torch::cuda::synchronize();
  EXPECT_LT(relative_error(grad_u, r.u.grad()), 1e-5);
  EXPECT_LT(relative_error(grad_delta, r.delta.grad()), 1e-5);
  EXPECT_LT(relative_error(grad_A.sum(0), r.A.grad()), 1e-5);
  EXPECT_LT(relative_error(grad_Cm.sum(1), r.Cm.grad()), 1e-5);
}

TEST_F(SelectiveScanKernel, RejectsStateSizesBeyondTheLimit) {
  auto a = random_inputs({1, 4, 5, 65}, torch::kFloat, false);
  auto out = poisoned({1, 4, 5}, torch::kFloat);
  auto p = params(a);
  p.out = out.data_ptr();
  EXPECT_EQ(kernels::selective_scan_forward(p, c10::cuda::getCurrentCUDAStream()), cudaErrorInvalidValue);
}

// The operator: kernels with autograd for CUDA tensors, inputs of mixed layouts and dtypes included.
TEST_F(SelectiveScanKernel, OperatorUsesTheKernelsWithAutogradAndCanBeSwitchedOff) {
  ASSERT_TRUE(kernels_enabled());
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    const Shape s{2, 48, 70, 16};
    auto a = random_inputs(s, dtype, true);
    a.delta = a.delta.transpose(1, 2).contiguous().transpose(1, 2).detach();  // (B, C, T), time not innermost
    a.Dskip = a.Dskip.to(dtype);
    std::vector<torch::Tensor*> leaves = {&a.u, &a.delta, &a.A, &a.Bm, &a.Cm, &a.Dskip, &a.z, &a.delta_bias};
    for (auto* t : leaves) t->requires_grad_(true);
    const auto grad_out = torch::randn({s.B, s.C, s.T}, a.u.options());
    auto run = [&] {
      for (auto* t : leaves) t->mutable_grad() = torch::Tensor();
      auto y = selective_scan(a, nullptr);
      y.backward(grad_out);
      std::vector<torch::Tensor> out = {y.detach()};
      for (auto* t : leaves) out.push_back(t->grad().clone());
      return out;
    };
    const auto with_kernels = run();
    set_kernels_enabled(false);
    const auto reference = run();
    set_kernels_enabled(true);
    for (size_t i = 0; i < with_kernels.size(); ++i) {
      EXPECT_EQ(with_kernels[i].scalar_type(), reference[i].scalar_type()) << i;
      EXPECT_LT(relative_error(with_kernels[i], reference[i]), tolerance(dtype)) << dtype << " output " << i;
    }
  }
}

TEST_F(SelectiveScanKernel, OperatorWritesTheFinalStateBackWhenPrefilling) {
  const Shape s{3, 40, 9, 16};
  const auto a = random_inputs(s, torch::kBFloat16, true);
  torch::Tensor kernel_state = torch::randn({s.B, s.C, s.N}, a.A.options()), reference_state = kernel_state.clone();
  const auto with_kernels = selective_scan(a, &kernel_state);
  set_kernels_enabled(false);
  const auto reference = selective_scan(a, &reference_state);
  set_kernels_enabled(true);
  EXPECT_LT(relative_error(with_kernels, reference), 1e-2);
  EXPECT_EQ(kernel_state.scalar_type(), torch::kFloat);
  EXPECT_LT(relative_error(kernel_state, reference_state), 1e-5);
}

TEST_F(SelectiveScanKernel, TinyDenseMambaTrainsTheSameWithKernelsOnAndOff) {
  auto config = densessm::testing::tiny_config(Architecture::kMamba, /*m=*/2, /*layers=*/3);
  CausalLM model(config);
  model->to(torch::kCUDA);
  auto x = torch::randint(0, config.vocab_size, {2, 37}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kLong));
  auto weights = torch::randn({2, 37, config.vocab_size}, torch::TensorOptions().device(torch::kCUDA));
  auto run = [&] {
    model->zero_grad();
    auto logits = model->forward(x);
    (logits * weights).sum().backward();
    std::vector<torch::Tensor> out = {logits.detach()};
    for (auto& p : model->parameters()) out.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
    return out;
  };
  const auto with_kernels = run();
  set_kernels_enabled(false);
  const auto reference = run();
  set_kernels_enabled(true);
  ASSERT_EQ(with_kernels.size(), reference.size());
  for (size_t i = 0; i < with_kernels.size(); ++i) {
    EXPECT_LT(relative_error(with_kernels[i], reference[i]), 1e-4) << "tensor " << i << " (0: logits, then parameter grads)";
  }
}

// densessm-train's mixed precision: bf16/fp16 activations with float32 parameters (A, D, the biases).
TEST_F(SelectiveScanKernel, AutocastTrainingUsesTheKernels) {
  expect_autocast_training_uses_the_kernels(Architecture::kMamba);
}

#else

TEST(SelectiveScanKernel, NotBuilt) {
  EXPECT_FALSE(kernels_built());
  GTEST_SKIP() << "this build has no CUDA kernels";
}

#endif

}  // namespace
}  // namespace densessm
