// The retention kernels (kernels/chunk_retention.cu, kernels/retention_step.cu): through their C++ entry
// points on outputs poisoned with NaN, against the reference form evaluated in float64 on the same
// inputs (forward, final state and every input gradient); the step kernel inside a CUDA graph; and the
// retention forms and a whole model with the kernels on and off; the two fused forwards and the two-pass one.
// Skipped without a GPU.
#include "densessm/kernels.h"
#include "densessm/model.h"
#include "densessm/retention.h"
#include "kernel_test_helpers.h"
#include "test_helpers.h"

#ifdef DENSESSM_WITH_CUDA
#include <algorithm>
#include <cstdlib>
#include <string>

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "chunk_retention.h"
#include "retention_step.h"
#endif

namespace densessm {
namespace {

using namespace densessm::testing;  // relative_error and the kernel tests' helpers

#ifdef DENSESSM_WITH_CUDA



struct Shape {
  int64_t B, H, T, dk, dv;
};

std::string describe(const Shape& s, torch::ScalarType dtype, bool with_state) {
  return "B=" + std::to_string(s.B) + " H=" + std::to_string(s.H) + " T=" + std::to_string(s.T) +
         " dk=" + std::to_string(s.dk) + " dv=" + std::to_string(s.dv) + " " + c10::toString(dtype) +
         (with_state ? " with state" : " from zero");
}

// Lengths around the chunk (64) with small heads, including widths that are not whole 16-byte vectors
// (20/36 in 16-bit types; 18/50 in every type) and not multiples of the 64-wide tiles (48/80).
const std::vector<Shape> kSmallShapes = {{1, 2, 1, 16, 32},  {3, 2, 7, 16, 32},  {1, 3, 64, 32, 64},
                                         {3, 2, 65, 16, 32}, {3, 4, 300, 32, 64}, {2, 1, 9, 48, 80},
                                         {2, 1, 9, 20, 36},  {1, 2, 33, 18, 50}};
// The head dimensions of the configs: 128/128 (the H 16 benchmark), 128/512 (350M), 320/1280 (1.3 B).
const std::vector<Shape> kConfigShapes = {{1, 2, 300, 128, 128}, {2, 2, 130, 128, 512}, {1, 2, 70, 320, 1280}};

// One random problem: inputs of `dtype` on the GPU, k scaled as the model scales it, non-zero offsets.
struct Problem {
  torch::Tensor q, k, v, initial, offset, decays, grad_o, grad_final;
  Problem(const Shape& s, torch::ScalarType dtype, bool with_state) {
    auto o = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
    q = torch::randn({s.B, s.H, s.T, s.dk}, o);
    k = (torch::randn({s.B, s.H, s.T, s.dk}, o.dtype(torch::kFloat)) / std::sqrt(static_cast<double>(s.dk))).to(dtype);
    v = torch::randn({s.B, s.H, s.T, s.dv}, o);
    if (with_state) initial = torch::randn({s.B, s.H, s.dk, s.dv}, o.dtype(torch::kFloat));
    offset = torch::randint(0, 1000, {s.B}, o.dtype(torch::kLong));
    decays = retention_decays(s.H).to(torch::kCUDA);
    grad_o = torch::randn({s.B, s.H, s.T, s.dv}, o);
    grad_final = torch::randn({s.B, s.H, s.dk, s.dv}, o.dtype(torch::kFloat));
  }
  kernels::RetentionShape shape() const {
    return {q.size(0), q.size(1), q.size(2), q.size(3), v.size(3), decays.data_ptr<double>(), offset.data_ptr<int64_t>(),
            kernel_dtype(q.scalar_type())};
  }
  const float* initial_pointer() const { return initial.defined() ? initial.data_ptr<float>() : nullptr; }
  /// q, k, v, the decays and the offsets as the float64 CPU reference forms take them.
  RetentionArgs reference_args() const {
    RetentionArgs a;
    a.q = cpu64(q);
    a.k = cpu64(k);
    a.v = cpu64(v);
    a.decays = retention_decays(q.size(1));
    a.offset = offset.cpu();
    return a;
  }
};

// The float64 reference on the CPU: outputs and, through autograd, the gradients of
// sum(o * grad_o) + sum(final * grad_final) in q, k, v and the initial state.
struct Reference {
  torch::Tensor o, final_state, grad_q, grad_k, grad_v, grad_initial;
  explicit Reference(const Problem& p) {
    RetentionArgs a = p.reference_args();
    a.q.requires_grad_();
    a.k.requires_grad_();
    a.v.requires_grad_();
    torch::Tensor initial = p.initial.defined() ? cpu64(p.initial).requires_grad_() : torch::Tensor();
    torch::Tensor state = initial;
    o = retention_parallel(a, &state);
    final_state = state;
    ((o * cpu64(p.grad_o)).sum() + (final_state * cpu64(p.grad_final)).sum()).backward();
    grad_q = a.q.grad();
    grad_k = a.k.grad();
    grad_v = a.v.grad();
    if (initial.defined()) grad_initial = initial.grad();
  }
};

class ChunkRetentionKernel : public CudaKernelTest<7> {};

// Forward, final state and every gradient through the entry points, for each dtype with and without
// an initial state.
void expect_matches_the_reference(const std::vector<Shape>& shapes) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    for (const Shape& s : shapes) {
      for (bool with_state : {false, true}) {
        const Problem p(s, dtype, with_state);
        const Reference ref(p);
        const auto what = describe(s, dtype, with_state);
        const auto shape = p.shape();
        const auto opts = p.q.options();
        // The backward's states, or what the forward asks for where that is more (DENSESSM_RETENTION_FUSED=2:
        // 64 x 64 scores per chunk, more than 2 dk dv at the small heads).
        auto workspace = poisoned({std::max(2 * kernels::chunk_retention_workspace(shape),
                                            kernels::chunk_retention_forward_workspace(shape))},
                                  opts);

        auto o = poisoned({s.B, s.H, s.T, s.dv}, opts);
        auto final_state = poisoned({s.B, s.H, s.dk, s.dv}, opts.dtype(torch::kFloat));
        const kernels::RetentionForwardParams f{shape,         p.q.data_ptr(), p.k.data_ptr(),
                                                p.v.data_ptr(), p.initial_pointer(), o.data_ptr(),
                                                final_state.data_ptr<float>(), workspace.data_ptr()};
        ASSERT_EQ(kernels::chunk_retention_forward(f, stream), cudaSuccess) << what;

        auto grad_q = poisoned(p.q.sizes(), opts), grad_k = poisoned(p.k.sizes(), opts);
        auto grad_v = poisoned(p.v.sizes(), opts);
        auto grad_initial = poisoned({s.B, s.H, s.dk, s.dv}, opts.dtype(torch::kFloat));
        const kernels::RetentionBackwardParams b{shape,
                                                 p.q.data_ptr(),
                                                 p.k.data_ptr(),
                                                 p.v.data_ptr(),
                                                 p.initial_pointer(),
                                                 p.grad_o.data_ptr(),
                                                 p.grad_final.data_ptr<float>(),
                                                 grad_q.data_ptr(),
                                                 grad_k.data_ptr(),
                                                 grad_v.data_ptr(),
                                                 grad_initial.data_ptr<float>(),
                                                 workspace.data_ptr()};
        ASSERT_EQ(kernels::chunk_retention_backward(b, stream), cudaSuccess) << what;
        torch::cuda::synchronize();

        const double tol = tolerance(dtype);
        EXPECT_LT(relative_error(o, ref.o), tol) << what << ": o";
        EXPECT_LT(relative_error(final_state, ref.final_state), tol) << what << ": final state";
        EXPECT_LT(relative_error(grad_q, ref.grad_q), tol) << what << ": dq";
        EXPECT_LT(relative_error(grad_k, ref.grad_k), tol) << what << ": dk";
        EXPECT_LT(relative_error(grad_v, ref.grad_v), tol) << what << ": dv";
        // Without an initial state the kernel still reports dL/dKV at the start, which is finite.
        if (with_state) EXPECT_LT(relative_error(grad_initial, ref.grad_initial), tol) << what << ": d initial";
        else EXPECT_TRUE(torch::isfinite(grad_initial).all().item<bool>()) << what << ": d initial";
      }
    }
  }
}

TEST_F(ChunkRetentionKernel, SmallShapesMatchTheReference) { expect_matches_the_reference(kSmallShapes); }

TEST_F(ChunkRetentionKernel, ConfigShapesMatchTheReference) { expect_matches_the_reference(kConfigShapes); }

// The forwards DENSESSM_RETENTION_FUSED selects (see kernels/chunk_retention.cu).
enum class Forward { kDefault, kFused, kFusedScores, kTwoPass };

// Sets DENSESSM_RETENTION_FUSED for its lifetime and restores what was there before.
class FusedForwardSwitch {
 public:
  explicit FusedForwardSwitch(Forward forward) {
    const char* before = std::getenv(kName);
    had_ = before != nullptr;
    if (had_) before_ = before;
    if (forward == Forward::kDefault) unsetenv(kName);
    else setenv(kName, forward == Forward::kFused ? "1" : forward == Forward::kFusedScores ? "2" : "0", 1);
  }
  ~FusedForwardSwitch() {
    if (had_) setenv(kName, before_.c_str(), 1);
    else unsetenv(kName);
  }
  FusedForwardSwitch(const FusedForwardSwitch&) = delete;
  FusedForwardSwitch& operator=(const FusedForwardSwitch&) = delete;

 private:
  static constexpr const char* kName = "DENSESSM_RETENTION_FUSED";
  bool had_ = false;
  std::string before_;
};

// The forward of bfloat16/float16 inputs with dk <= 320 runs as one fused kernel: DENSESSM_RETENTION_FUSED=1
// the one that needs no workspace, =2 the one that reads the chunks' scores from a workspace of
// (B, H, chunks, 64, 64) elements (unset: the first up to dk 128, the second above), and =0 (or a larger dk)
// the state scan and the chunk outputs. All three give the float64 reference's output and final state, on
// outputs and workspaces poisoned with NaN.
TEST_F(ChunkRetentionKernel, FusedAndTwoPassForwardsMatchTheReference) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  // Where dk 320 fits in a block's shared memory (Hopper), every dk <= 320 must take the fused kernel.
  const bool hopper = at::cuda::getCurrentDeviceProperties()->major >= 9;
  std::vector<Shape> shapes = kSmallShapes;
  shapes.insert(shapes.end(), kConfigShapes.begin(), kConfigShapes.end());
  // Many chunks through the carried state, the 1.3 B heads at batch 2 over a partial third chunk, odd head
  // dimensions (rows that are not whole 16-byte vectors, stores one column at a time; a partial second
  // column tile), and a dk past the fused kernel's limit.
  for (const Shape& s : {Shape{2, 2, 517, 128, 128}, Shape{1, 1, 200, 320, 1280}, Shape{2, 1, 130, 320, 1280},
                         Shape{2, 1, 70, 17, 33}, Shape{1, 2, 130, 37, 90}, Shape{1, 2, 70, 336, 64}})
    shapes.push_back(s);
  for (auto dtype : {torch::kHalf, torch::kBFloat16}) {
    for (const Shape& s : shapes) {
      for (bool with_state : {false, true}) {
        const Problem p(s, dtype, with_state);
        const RetentionArgs r = p.reference_args();
        torch::Tensor expected_state = cpu64(p.initial);
        const auto expected = retention_parallel(r, &expected_state);
        const auto shape = p.shape();
        const auto opts = p.q.options();
        // The fused forward with precomputed scores asks for (B, H, chunks, 64, 64) elements.
        const bool fused = hopper && s.dk <= 320;
        const int64_t scores = s.B * s.H * ((s.T + 63) / 64) * 64 * 64;
        torch::Tensor fused_o, fused_state;  // the first fused forward's, for the second's to equal
        if (fused) {
          const FusedForwardSwitch unset(Forward::kDefault);
          EXPECT_EQ(kernels::chunk_retention_forward_workspace(shape), s.dk > 128 ? scores : 0)
              << describe(s, dtype, with_state) << " with DENSESSM_RETENTION_FUSED unset";
        }
        for (Forward forward : {Forward::kFused, Forward::kFusedScores, Forward::kTwoPass}) {
          const FusedForwardSwitch fused_switch(forward);
          const auto what = describe(s, dtype, with_state) + (forward == Forward::kFused         ? " fused"
                                                              : forward == Forward::kFusedScores ? " fused, scores"
                                                                                                 : " two passes");
          const int64_t elements = kernels::chunk_retention_forward_workspace(shape);
          if (forward == Forward::kTwoPass || s.dk > 320) {
            EXPECT_EQ(elements, kernels::chunk_retention_workspace(shape)) << what;
          } else if (hopper) {
            EXPECT_EQ(elements, forward == Forward::kFused ? 0 : scores) << what;
          }
          auto workspace = elements > 0 ? poisoned({elements}, opts) : torch::Tensor();
          auto o = poisoned({s.B, s.H, s.T, s.dv}, opts);
          auto final_state = poisoned({s.B, s.H, s.dk, s.dv}, opts.dtype(torch::kFloat));
          const kernels::RetentionForwardParams f{shape,          p.q.data_ptr(),      p.k.data_ptr(),
                                                  p.v.data_ptr(), p.initial_pointer(), o.data_ptr(),
                                                  final_state.data_ptr<float>(),
                                                  workspace.defined() ? workspace.data_ptr() : nullptr};
          ASSERT_EQ(kernels::chunk_retention_forward(f, stream), cudaSuccess) << what;
          torch::cuda::synchronize();
          EXPECT_LT(relative_error(o, expected), tolerance(dtype)) << what << ": o";
          EXPECT_LT(relative_error(final_state, expected_state), tolerance(dtype)) << what << ": final state";
          // The two fused forwards make the same products in the same order (kernels/chunk_retention.cu):
          // the same bits, which also catches what the tolerance would let through.
          if (fused && forward == Forward::kFused) {
            fused_o = o;
            fused_state = final_state;
          } else if (fused && forward == Forward::kFusedScores) {
            EXPECT_TRUE(torch::equal(o, fused_o)) << what << ": o differs from the first fused forward's";
            EXPECT_TRUE(torch::equal(final_state, fused_state)) << what << ": final state differs";
          }
        }
      }
    }
  }
}

// The public form on CUDA tensors routes to the kernels, with autograd reaching q, k, v and the state,
// and gives the reference's answer whether the kernels are on or off.
TEST_F(ChunkRetentionKernel, TheChunkwiseFormUsesTheKernelsWithAutograd) {
  ASSERT_TRUE(kernels_enabled());
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    const Problem p({2, 3, 100, 32, 64}, dtype, true);
    const Reference ref(p);
    for (bool enabled : {true, false}) {
      set_kernels_enabled(enabled);
      RetentionArgs a;
      a.q = p.q.clone().requires_grad_();
      a.k = p.k.clone().requires_grad_();
      a.v = p.v.clone().requires_grad_();
      a.decays = retention_decays(p.q.size(1));
      a.offset = p.offset;
      a.chunk_size = 16;  // the kernel's own chunk is 64; the result must not depend on it
      auto initial = p.initial.clone().requires_grad_();
      torch::Tensor state = initial;
      auto o = retention_chunkwise(a, &state);
      EXPECT_EQ(o.grad_fn()->name().find("ChunkRetention") != std::string::npos, enabled) << o.grad_fn()->name();
      ((o.to(torch::kFloat) * p.grad_o.to(torch::kFloat)).sum() + (state * p.grad_final).sum()).backward();
      set_kernels_enabled(true);
      const auto what = std::string(c10::toString(dtype)) + (enabled ? " kernels on" : " kernels off");
      const double tol = tolerance(dtype);
      EXPECT_EQ(o.scalar_type(), dtype) << what;
      EXPECT_EQ(state.scalar_type(), torch::kFloat) << what;
      EXPECT_LT(relative_error(o, ref.o), tol) << what;
      EXPECT_LT(relative_error(state, ref.final_state), tol) << what;
      EXPECT_LT(relative_error(a.q.grad(), ref.grad_q), tol) << what;
      EXPECT_LT(relative_error(a.k.grad(), ref.grad_k), tol) << what;
      EXPECT_LT(relative_error(a.v.grad(), ref.grad_v), tol) << what;
      EXPECT_LT(relative_error(initial.grad(), ref.grad_initial), tol) << what;
    }
  }
}

TEST_F(ChunkRetentionKernel, BadShapesAreRefusedWithTheirNames) {
  const Problem p({1, 2, 5, 16, 32}, torch::kFloat, false);
  RetentionArgs a;
  a.q = p.q;
  a.k = p.k;
  a.v = p.v;
  a.decays = p.decays;
  torch::Tensor wrong = torch::zeros({1, 2, 16, 31}, p.q.options());
  EXPECT_THROW(
      {
        try {
          retention_chunkwise(a, &wrong);
        } catch (const c10::Error& e) {
          EXPECT_NE(std::string(e.what()).find("state must be"), std::string::npos) << e.what();
          throw;
        }
      },
      c10::Error);
  a.v = p.v.narrow(1, 0, 1);
  EXPECT_THROW(retention_chunkwise(a, nullptr), c10::Error);
}

class RetentionStepKernel : public ChunkRetentionKernel {};

TEST_F(RetentionStepKernel, StepMatchesTheReference) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    for (const Shape& s : {Shape{1, 4, 1, 320, 1280}, Shape{6, 4, 1, 320, 1280}, Shape{64, 2, 1, 16, 32},
                           Shape{3, 5, 1, 128, 512}, Shape{2, 3, 1, 48, 80}}) {
      const Problem p(s, dtype, true);
      const RetentionArgs r = p.reference_args();
      torch::Tensor ref_state = cpu64(p.initial);
      auto expected = retention_recurrent(r, &ref_state);  // (B, H, 1, dv)

      auto state = p.initial.clone();
      auto o = poisoned({s.B, s.H, 1, s.dv}, p.q.options());
      const kernels::RetentionStepParams params{state.data_ptr<float>(), p.q.data_ptr(), p.k.data_ptr(), p.v.data_ptr(),
                                                o.data_ptr(), p.decays.data_ptr<double>(), p.offset.data_ptr<int64_t>(),
                                                s.B, s.H, s.dk, s.dv, kernel_dtype(dtype)};
      ASSERT_EQ(kernels::retention_step(params, stream), cudaSuccess);
      torch::cuda::synchronize();
      const auto what = describe(s, dtype, true);
      EXPECT_LT(relative_error(o, expected), tolerance(dtype)) << what;
      EXPECT_LT(relative_error(state, ref_state), tolerance(torch::kFloat)) << what << ": state";
    }
  }
}

// A few decode steps captured once in a CUDA graph and replayed with new inputs copied into the
// captured buffers give what the same steps give eagerly.
TEST_F(RetentionStepKernel, StepsReplayInACudaGraph) {
  torch::NoGradGuard no_grad;
  const Shape s{6, 4, 1, 64, 128};
  const int steps = 5;
  auto o = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  std::vector<torch::Tensor> qs, ks, vs;
  for (int i = 0; i < steps; ++i) {
    qs.push_back(torch::randn({s.B, s.H, 1, s.dk}, o));
    ks.push_back(torch::randn({s.B, s.H, 1, s.dk}, o) * 0.1);
    vs.push_back(torch::randn({s.B, s.H, 1, s.dv}, o));
  }
  const auto start = torch::randint(0, 100, {s.B}, o.dtype(torch::kLong));
  const auto decays = retention_decays(s.H).to(torch::kCUDA);
  auto args = [&](const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& position) {
    RetentionArgs a;
    a.q = q;
    a.k = k;
    a.v = v;
    a.decays = decays;
    a.offset = position;
    return a;
  };

  torch::Tensor eager_state = torch::zeros({s.B, s.H, s.dk, s.dv}, o.dtype(torch::kFloat));
  std::vector<torch::Tensor> eager;
  for (int i = 0; i < steps; ++i) eager.push_back(retention_recurrent(args(qs[i], ks[i], vs[i], start + i), &eager_state));

  // Static buffers the graph reads and writes.
  auto q = qs[0].clone(), k = ks[0].clone(), v = vs[0].clone(), position = start.clone();
  torch::Tensor state = torch::zeros_like(eager_state), out;
  torch::cuda::synchronize();  // the inputs and eager results were made on the default stream
  const c10::cuda::CUDAStreamGuard guard(c10::cuda::getStreamFromPool());
  at::cuda::CUDAGraph graph;
  graph.capture_begin();
  out = retention_recurrent(args(q, k, v, position), &state);
  graph.capture_end();
  state.zero_();
  for (int i = 0; i < steps; ++i) {
    q.copy_(qs[i]);
    k.copy_(ks[i]);
    v.copy_(vs[i]);
    position.copy_(start + i);
    graph.replay();
    EXPECT_LT(relative_error(out, eager[i]), 1e-6) << "step " << i;
  }
  EXPECT_LT(relative_error(state, eager_state), 1e-6);
}

// A tiny DenseRetNet on CUDA: logits and every parameter gradient agree with the kernels on and off,
// and so does a prefill followed by decode steps.
TEST_F(ChunkRetentionKernel, ModelAgreesWithKernelsOnAndOff) {
  CausalLM model(densessm::testing::tiny_config(Architecture::kRetNet, 2));
  model->to(torch::kCUDA, torch::kFloat);
  model->eval();
  const auto tokens = torch::randint(0, model->config().vocab_size, {3, 70}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kLong));
  auto run = [&](bool enabled) {
    set_kernels_enabled(enabled);
    model->zero_grad();
    auto logits = model->forward(tokens);
    logits.logsumexp(-1).sum().backward();
    std::vector<torch::Tensor> grads;
    for (const auto& p : model->parameters()) grads.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
    torch::NoGradGuard no_grad;
    auto state = model->initial_state(3);
    model->forward(tokens.narrow(1, 0, 60), &state);
    std::vector<torch::Tensor> steps;
    for (int64_t t = 60; t < 70; ++t) steps.push_back(model->step(tokens.select(1, t), state));
    set_kernels_enabled(true);
    return std::make_tuple(logits.detach(), grads, torch::stack(steps, 1));
  };
  const auto [on_logits, on_grads, on_steps] = run(true);
  const auto [off_logits, off_grads, off_steps] = run(false);
  EXPECT_LT(relative_error(on_logits, off_logits), 1e-5);
  EXPECT_LT(relative_error(on_steps, off_steps), 1e-5);
  EXPECT_LT(relative_error(on_steps, off_logits.narrow(1, 60, 10)), 1e-5);
  ASSERT_EQ(on_grads.size(), off_grads.size());
  for (size_t i = 0; i < on_grads.size(); ++i) EXPECT_LT(relative_error(on_grads[i], off_grads[i]), 1e-4) << "parameter " << i;
}

// densessm-train's mixed precision: the residual stream stays float32 while the projections run in
// bf16/fp16, and the retention must still get one operand dtype, so that the kernel runs.
TEST_F(ChunkRetentionKernel, AutocastTrainingUsesTheKernel) {
  expect_autocast_training_uses_the_kernels(Architecture::kRetNet);
}

#endif  // DENSESSM_WITH_CUDA

}  // namespace
}  // namespace densessm
