// The fused decode step (CausalLMImpl::step on the kernels of kernels/decode_step.h) against the step form
// of the LibTorch operators, the fused input projections it relies on, and its kernels against float64.
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "densessm/kernels.h"
#include "densessm/model.h"
#include "modules/fused_rows.h"
#include "test_helpers.h"

#ifdef DENSESSM_WITH_CUDA
#include <c10/cuda/CUDAStream.h>

#include "decode_step.h"
#include "kernel_test_helpers.h"
#include "ops/cuda/decode_cuda.h"
#endif

namespace densessm::testing {
namespace {

TEST(FusedRows, WeightsBecomeViewsOfOneMatrixWithTheirValues) {
  torch::manual_seed(1);
  torch::nn::Linear a(torch::nn::LinearOptions(6, 3).bias(false)), b(torch::nn::LinearOptions(6, 5).bias(false));
  const auto a0 = a->weight.detach().clone(), b0 = b->weight.detach().clone();
  FusedRows fused;
  const torch::Tensor matrix = fused.matrix({a->weight, b->weight});
  ASSERT_EQ(matrix.sizes(), torch::IntArrayRef({8, 6}));
  EXPECT_TRUE(torch::equal(a->weight, a0));
  EXPECT_TRUE(torch::equal(b->weight, b0));
  EXPECT_EQ(a->weight.data_ptr(), matrix.data_ptr());
  EXPECT_TRUE(a->weight.requires_grad());
  const auto x = torch::randn({4, 6});
  EXPECT_TRUE(torch::allclose(torch::mm(x, matrix.t()), torch::cat({a(x), b(x)}, 1)));
  // An update of a weight shows in the matrix (it is the same memory), and the same matrix comes back.
  {
    torch::NoGradGuard no_grad;
    b->weight.add_(1.0);
  }
  const torch::Tensor& again = fused.matrix({a->weight, b->weight});
  EXPECT_EQ(again.data_ptr(), matrix.data_ptr());
  EXPECT_TRUE(torch::equal(again.narrow(0, 3, 5), b0 + 1.0));
  // Moved or converted weights are separate tensors again: the matrix is rebuilt from their values.
  a->to(torch::kDouble);
  b->to(torch::kDouble);
  const torch::Tensor& rebuilt = fused.matrix({a->weight, b->weight});
  EXPECT_EQ(rebuilt.scalar_type(), torch::kDouble);
  EXPECT_EQ(a->weight.data_ptr(), rebuilt.data_ptr());
  EXPECT_TRUE(torch::allclose(rebuilt.narrow(0, 0, 3), a0.to(torch::kDouble)));
}

TEST(FusedDecode, IsNotTakenOffCudaOrWhereGradientsAreWanted) {
  CausalLM model(tiny_config(Architecture::kRetNet, 1));
  model->eval();
  EXPECT_FALSE(model->fused_decoding());  // the CPU
#ifdef DENSESSM_WITH_CUDA
  if (torch::cuda::is_available()) {
    model->to(torch::kCUDA);
    EXPECT_FALSE(model->fused_decoding());  // the parameters want gradients and grad mode is on
    const torch::NoGradGuard no_grad;
    EXPECT_TRUE(model->fused_decoding() || !kernels_enabled());
    model->to(torch::kDouble);
    EXPECT_FALSE(model->fused_decoding());  // float64 stays with the reference forms
  }
#endif
}

#ifdef DENSESSM_WITH_CUDA

using FusedDecodeKernel = CudaKernelTest<41>;

struct Decoded {
  std::vector<torch::Tensor> logits;  // one (B, V) per step
  DecodeState state;
};

Decoded decode(CausalLM& model, const DecodeState& start, const torch::Tensor& tokens) {
  Decoded out{{}, start.clone()};
  for (int64_t t = 0; t < tokens.size(1); ++t) out.logits.push_back(model->step(tokens.select(1, t), out.state));
  return out;
}

void expect_states_close(const DecodeState& a, const DecodeState& b, double tolerance) {
  EXPECT_TRUE(torch::equal(a.position.cpu(), b.position.cpu()));
  for (size_t i = 0; i < a.layers.size(); ++i) {
    SCOPED_TRACE("layer " + std::to_string(i));
    for (auto [x, y] : {std::pair{a.layers[i].kv, b.layers[i].kv}, std::pair{a.layers[i].conv, b.layers[i].conv},
                        std::pair{a.layers[i].ssm, b.layers[i].ssm}}) {
      ASSERT_EQ(x.defined(), y.defined());
      if (x.defined()) {
        EXPECT_LT(relative_error(x, y), tolerance);
      }
    }
  }
}

// Both families, dense over 0, 1 and 2 layers, every kernel dtype: a prefill, then decode steps with the
// fused kernels and with the operators' step forms (kernels off) from the same state. The logits of
// every step and the states at the end agree; no operator falls back to a reference form.
TEST_F(FusedDecodeKernel, MatchesTheStepFormOfTheOperators) {
  for (const Architecture architecture : {Architecture::kRetNet, Architecture::kMamba}) {
    for (const int64_t m : {0, 1, 2}) {
      for (const auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
        SCOPED_TRACE(std::string(architecture == Architecture::kRetNet ? "retnet" : "mamba") + " m=" + std::to_string(m) +
                     " " + c10::toString(dtype));
        torch::manual_seed(5);
        const ModelConfig config = tiny_config(architecture, m, /*layers=*/4);
        CausalLM model(config);
        model->to(torch::kCUDA, dtype);
        model->eval();
        torch::NoGradGuard no_grad;
        const auto options = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kLong);
        const auto prompt = torch::randint(0, config.vocab_size, {3, 9}, options);
        const auto tokens = torch::randint(0, config.vocab_size, {3, 6}, options);
        DecodeState start = model->initial_state(3);
        model->forward(prompt, &start);
        ASSERT_TRUE(model->fused_decoding());
        const int64_t before = kernel_fallbacks();
        const Decoded fused = decode(model, start, tokens);
        EXPECT_EQ(kernel_fallbacks(), before) << "an operator ran its reference form";
        set_kernels_enabled(false);
        ASSERT_FALSE(model->fused_decoding());
        const Decoded reference = decode(model, start, tokens);
        set_kernels_enabled(true);
        const double tolerance = dtype == torch::kFloat ? 1e-4 : dtype == torch::kHalf ? 1e-2 : 3e-2;
        for (size_t t = 0; t < fused.logits.size(); ++t) {
          ASSERT_EQ(fused.logits[t].sizes(), reference.logits[t].sizes());
          EXPECT_LT(relative_error(fused.logits[t], reference.logits[t]), tolerance) << "step " << t;
        }
        expect_states_close(fused.state, reference.state, tolerance);
      }
    }
  }
}

// The fused step in float32 against a float64 CPU copy of the same model: the step form there is the plain
// reference, so the fused kernels are checked against float64 and not only against the float32 operators.
TEST_F(FusedDecodeKernel, Float32StepsMatchTheFloat64Reference) {
  for (const Architecture architecture : {Architecture::kRetNet, Architecture::kMamba}) {
    SCOPED_TRACE(architecture == Architecture::kRetNet ? "retnet" : "mamba");
    torch::manual_seed(6);
    const ModelConfig config = tiny_config(architecture, /*m=*/2, /*layers=*/3);
    CausalLM model(config);
    model->eval();
    CausalLM reference(config);
    reference->eval();
    {
      torch::NoGradGuard no_grad;
      auto from = model->parameters();
      auto to = reference->parameters();
      for (size_t i = 0; i < from.size(); ++i) to[i].copy_(from[i]);
    }
    reference->to(torch::kDouble);
    model->to(torch::kCUDA);
    torch::NoGradGuard no_grad;
    const auto tokens = torch::randint(0, config.vocab_size, {2, 12}, torch::kLong);
    DecodeState state = model->initial_state(2), state64 = reference->initial_state(2);
    for (int64_t t = 0; t < tokens.size(1); ++t) {
      const auto fused = model->step(tokens.select(1, t).to(torch::kCUDA), state);
      const auto exact = reference->step(tokens.select(1, t), state64);
      EXPECT_LT(relative_error(fused, exact), 1e-5) << "step " << t;
    }
  }
}

// The transitions' second layers (one kernel for both parts, with the SiLU of their inputs) against
// float64, for ranks on the vectorised path (64, 80; 200 and 256 take two rounds of loads) and off it (2, 12,
// 130), every dtype, and a batch beyond the kernel's 8 (cuBLAS then).
TEST_F(FusedDecodeKernel, TransitionGatesMatchTheFloat64Reference) {
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  for (const auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    for (const int64_t rank : {2, 12, 64, 80, 130, 200, 256}) {
      for (const int64_t batch : {1, 6, 9}) {
        SCOPED_TRACE(std::string(c10::toString(dtype)) + " rank " + std::to_string(rank) + " batch " +
                     std::to_string(batch));
        const int64_t offset = 24;
        const auto y = torch::randn({batch, offset + 2 * rank + 5}, cuda.dtype(dtype));
        const auto w0 = torch::randn({40, rank}, cuda.dtype(dtype)), w1 = torch::randn({300, rank}, cuda.dtype(dtype));
        const auto gates = cuda::transition_gates(y, offset, rank, {w0, w1});
        ASSERT_EQ(gates.size(), 2u);
        const auto y64 = cpu64(y);
        for (int i = 0; i < 2; ++i) {
          const auto exact = torch::mm(torch::silu(y64.narrow(1, offset + i * rank, rank)), cpu64(i == 0 ? w0 : w1).t());
          EXPECT_LT(relative_error(gates[i], exact), tolerance(dtype)) << "part " << i;
        }
        // One part, as the Mamba block calls it.
        const auto single = cuda::transition_gates(y, offset, rank, {w1});
        ASSERT_EQ(single.size(), 1u);
        EXPECT_LT(relative_error(single[0], torch::mm(torch::silu(y64.narrow(1, offset, rank)), cpu64(w1).t())),
                  tolerance(dtype))
            << "one part";
      }
    }
  }
}


// The retention prepare (both kernels of kernels/decode_step.h) against float64: with and without dense
// fusion, batches 1, 6 and 8, the 1.3B model's heads (K 1280, E 5120), sizes that split unevenly over the
// cluster's blocks and threads (K 30, E 42; K 12, E 2060), rows too long for the cluster kernel (K 8200,
// which goes to the row-wise one), rows of y inside a wider matrix, and positions up to 60000, where an angle
// reduced in float32 would be off by ~1e-3. The outputs start as NaN, so an element left unwritten shows.
TEST_F(FusedDecodeKernel, RetentionPrepareMatchesTheFloat64Reference) {
  struct Shape {
    int64_t heads, dk, dv;
  };
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  for (const auto kernel : {kernels::PrepareKernel::kCluster, kernels::PrepareKernel::kRowwise}) {
    for (const Shape shape : {Shape{4, 320, 1280}, Shape{3, 10, 14}, Shape{2, 6, 1030}, Shape{2, 4100, 8}}) {
      for (const int64_t B : {1, 6, 8}) {
        for (const bool fuse : {true, false}) {
          for (const auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
            const int64_t H = shape.heads, dk = shape.dk, K = H * dk, E = H * shape.dv;
            SCOPED_TRACE(std::string(kernel == kernels::PrepareKernel::kCluster ? "cluster" : "rowwise") + " K " +
                         std::to_string(K) + " E " + std::to_string(E) + " B " + std::to_string(B) +
                         (fuse ? " fused " : " ") + c10::toString(dtype));
            const auto options = cuda.dtype(dtype);
            const auto y = torch::randn({B, 2 * K + 2 * E + 5}, options);
            const auto k_gate = torch::randn({B, K}, options), v_gate = torch::randn({B, E}, options);
            const auto previous_k = torch::randn({B, K}, options), previous_v = torch::randn({B, E}, options);
            const auto k_norm = 1 + 0.1 * torch::randn({K}, options), v_norm = 1 + 0.1 * torch::randn({E}, options);
            // (dk) each pair's frequency for both of its dimensions, as the rotation lays them out
            const auto angles = torch::pow(1e4, -torch::arange(0, dk, 2, cuda.dtype(torch::kDouble)) / dk)
                                    .repeat_interleave(2);
            auto position = torch::randint(0, 60000, {B}, cuda.dtype(torch::kLong));
            position[0].fill_(50000);
            const double eps = 1e-6;
            std::vector<torch::Tensor> out;  // q, k, v, g, hidden_k, hidden_v
            for (const int64_t n : {K, K, E, E, K, E}) out.push_back(poisoned({B, n}, dtype));
            kernels::RetentionPrepareParams p{};
            p.y = y.data_ptr();
            if (fuse) {
              p.k_gate = k_gate.data_ptr();
              p.v_gate = v_gate.data_ptr();
              p.previous_k = previous_k.data_ptr();
              p.previous_v = previous_v.data_ptr();
              p.k_norm = k_norm.data_ptr();
              p.v_norm = v_norm.data_ptr();
            }
            p.angles = angles.data_ptr<double>();
            p.position = position.data_ptr<int64_t>();
            p.q = out[0].data_ptr();
            p.k = out[1].data_ptr();
            p.v = out[2].data_ptr();
            p.g = out[3].data_ptr();
            p.hidden_k = out[4].data_ptr();
            p.hidden_v = out[5].data_ptr();
            p.batch = B;
            p.y_stride = y.stride(0);
            p.key_dim = K;
            p.value_dim = E;
            p.head_qk_dim = dk;
            p.key_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dk)));
            p.eps = static_cast<float>(eps);
            p.dtype = kernel_dtype(dtype);
            ASSERT_EQ(kernels::retention_decode_prepare(p, c10::cuda::getCurrentCUDAStream(), kernel), cudaSuccess);

            const auto y64 = cpu64(y);
            const auto hidden_k = torch::silu(y64.narrow(1, K, K)) / std::sqrt(static_cast<double>(dk));
            const auto hidden_v = torch::silu(y64.narrow(1, 2 * K, E));
            auto k = hidden_k, v = hidden_v;
            if (fuse) {
              const auto norm = [&](const torch::Tensor& x, const torch::Tensor& weight) {
                return x * torch::rsqrt(x.pow(2).mean(-1, true) + eps) * cpu64(weight);
              };
              k = norm(hidden_k + torch::silu(cpu64(k_gate)) * cpu64(previous_k), k_norm);
              v = norm(hidden_v + torch::silu(cpu64(v_gate)) * cpu64(previous_v), v_norm);
            }
            const auto theta = cpu64(position).unsqueeze(1) * cpu64(angles).unsqueeze(0);  // (B, dk)
            const auto rotate = [&](const torch::Tensor& x) {
              const auto heads = x.view({B, H, dk / 2, 2});
              const auto x0 = heads.select(3, 0), x1 = heads.select(3, 1);
              const auto cos = theta.slice(1, 0, dk, 2).cos().unsqueeze(1), sin = theta.slice(1, 0, dk, 2).sin().unsqueeze(1);
              return torch::stack({x0 * cos - x1 * sin, x1 * cos + x0 * sin}, 3).view({B, K});
            };
            const std::vector<torch::Tensor> exact{rotate(torch::silu(y64.narrow(1, 0, K))), rotate(k), v,
                                                   torch::silu(y64.narrow(1, 2 * K + E, E)), hidden_k, hidden_v};
            const char* names[] = {"q", "k", "v", "g", "hidden_k", "hidden_v"};
            for (size_t i = 0; i < exact.size(); ++i) {
              EXPECT_LT(relative_error(out[i], exact[i]), tolerance(dtype)) << names[i];
            }
          }
        }
      }
    }
  }
}

#endif  // DENSESSM_WITH_CUDA

}  // namespace
}  // namespace densessm::testing
