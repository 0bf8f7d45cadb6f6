// Retention: the parallel form against the definition, and the chunkwise and recurrent forms against the
// parallel one (outputs, carried state, gradients) on random inputs of several shapes.
#include <cmath>

#include "densessm/retention.h"
#include "modules/retention_block.h"
#include "test_helpers.h"

namespace densessm {
namespace {

using densessm::testing::relative_error;

struct Shape {
  int64_t B, H, T, dk, dv, chunk;
};

class Retention : public densessm::testing::DeviceTest {
 protected:
  // Random inputs, a random initial state and random start positions.
  RetentionArgs random_args(const Shape& s, torch::ScalarType dtype, torch::Tensor* state) {
    auto o = options(dtype);
    RetentionArgs a;
    a.q = torch::randn({s.B, s.H, s.T, s.dk}, o);
    a.k = torch::randn({s.B, s.H, s.T, s.dk}, o) / std::sqrt(static_cast<double>(s.dk));
    a.v = torch::randn({s.B, s.H, s.T, s.dv}, o);
    a.decays = retention_decays(s.H);
    a.offset = torch::randint(0, 50, {s.B}, options(torch::kLong));
    a.chunk_size = s.chunk;
    const auto acc = dtype == torch::kDouble ? torch::kDouble : torch::kFloat;
    *state = torch::randn({s.B, s.H, s.dk, s.dv}, options(acc));
    return a;
  }
};

const std::vector<Shape> kShapes = {
    {1, 1, 1, 4, 4, 4},    {2, 3, 7, 8, 6, 3},   {3, 2, 17, 16, 8, 5},
    {2, 4, 64, 8, 8, 64},  {1, 2, 70, 8, 16, 16}, {2, 1, 33, 4, 12, 1},
};

// The definition, element by element, in float64 on the CPU.
torch::Tensor definition(const RetentionArgs& a, const torch::Tensor& state) {
  auto q = a.q.to(torch::kCPU, torch::kDouble), k = a.k.to(torch::kCPU, torch::kDouble), v = a.v.to(torch::kCPU, torch::kDouble);
  auto kv = state.to(torch::kCPU, torch::kDouble);
  auto offset = a.offset.to(torch::kCPU);
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2);
  auto out = torch::zeros({B, H, T, v.size(3)}, torch::kDouble);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const double g = a.decays[h].item<double>();
      for (int64_t t = 0; t < T; ++t) {
        auto acc = std::pow(g, t + 1) * torch::matmul(q[b][h][t], kv[b][h]);
        for (int64_t s = 0; s <= t; ++s) acc = acc + std::pow(g, t - s) * torch::dot(q[b][h][t], k[b][h][s]) * v[b][h][s];
        const int64_t n = offset[b].item<int64_t>() + t;
        double w = 0;
        for (int64_t i = 0; i <= n; ++i) w += std::pow(g, i);
        out[b][h][t] = acc / std::sqrt(w);
      }
    }
  }
  return out;
}

TEST_P(Retention, ParallelFormIsTheDefinition) {
  for (const Shape& s : {kShapes[0], kShapes[1], kShapes[2]}) {
    torch::Tensor state;
    auto a = random_args(s, torch::kDouble, &state);
    auto expected = definition(a, state);
    EXPECT_LT(relative_error(retention_parallel(a, &state), expected), 1e-12) << "T=" << s.T;
  }
}

TEST_P(Retention, DecaysAreOneMinusTwoToTheMinusFiveMinusH) {
  auto d = retention_decays(4);
  for (int64_t h = 0; h < 4; ++h) EXPECT_DOUBLE_EQ(d[h].item<double>(), 1.0 - std::pow(2.0, -5.0 - h));
}

TEST_P(Retention, AllFormsAgreeWithParallel) {
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    const double tolerance = dtype == torch::kDouble ? 1e-11 : 1e-5;
    for (const Shape& s : kShapes) {
      torch::Tensor state0;
      auto a = random_args(s, dtype, &state0);
      torch::Tensor reference_state = state0;
      auto reference = retention_parallel(a, &reference_state);
      for (auto [name, form] : {std::pair<const char*, RetentionForm>{"chunkwise", retention_chunkwise},
                                {"recurrent", retention_recurrent}}) {
        torch::Tensor state = state0;
        auto out = form(a, &state);
        EXPECT_EQ(out.scalar_type(), dtype);
        EXPECT_LT(relative_error(out, reference), tolerance) << name << " T=" << s.T << " chunk=" << s.chunk;
        EXPECT_LT(relative_error(state, reference_state), tolerance) << name << " state, T=" << s.T;
      }
    }
  }
}

TEST_P(Retention, NullStateMeansZeroState) {
  torch::Tensor state;
  auto a = random_args(kShapes[2], torch::kDouble, &state);
  torch::Tensor zero = torch::zeros_like(state);
  EXPECT_LT(relative_error(retention_chunkwise(a, nullptr), retention_parallel(a, &zero)), 1e-12);
  torch::Tensor undefined;
  retention_recurrent(a, &undefined);
  EXPECT_TRUE(undefined.defined());
}

TEST_P(Retention, ASplitSequenceContinuesThroughTheState) {
  const Shape s{2, 3, 23, 8, 8, 4};
  torch::Tensor state0;
  auto whole = random_args(s, torch::kDouble, &state0);
  torch::Tensor whole_state = state0;
  auto expected = retention_parallel(whole, &whole_state);
  // First 10 tokens chunkwise, the rest one by one, positions advanced by 10.
  const int64_t cut = 10;
  RetentionArgs first = whole, second = whole;
  first.q = whole.q.narrow(2, 0, cut), first.k = whole.k.narrow(2, 0, cut), first.v = whole.v.narrow(2, 0, cut);
  second.q = whole.q.narrow(2, cut, s.T - cut), second.k = whole.k.narrow(2, cut, s.T - cut);
  second.v = whole.v.narrow(2, cut, s.T - cut);
  second.offset = whole.offset + cut;
  torch::Tensor state = state0;
  auto out = torch::cat({retention_chunkwise(first, &state), retention_recurrent(second, &state)}, 2);
  EXPECT_LT(relative_error(out, expected), 1e-12);
  EXPECT_LT(relative_error(state, whole_state), 1e-12);
}

TEST_P(Retention, GradientsAgreeWithParallel) {
  const Shape s{2, 2, 13, 8, 6, 4};
  torch::Tensor state0;
  auto a = random_args(s, torch::kDouble, &state0);
  auto weights = torch::randn({s.B, s.H, s.T, s.dv}, options(torch::kDouble));
  auto gradients = [&](RetentionForm form) {
    RetentionArgs b = a;
    b.q = a.q.clone().requires_grad_(), b.k = a.k.clone().requires_grad_(), b.v = a.v.clone().requires_grad_();
    torch::Tensor state = state0.clone().requires_grad_();
    torch::Tensor initial = state;
    auto out = form(b, &state);
    ((out * weights).sum() + state.sum()).backward();
    return std::vector<torch::Tensor>{b.q.grad(), b.k.grad(), b.v.grad(), initial.grad()};
  };
  auto reference = gradients(retention_parallel);
  for (RetentionForm form : {retention_chunkwise, retention_recurrent}) {
    auto g = gradients(form);
    for (size_t i = 0; i < g.size(); ++i) EXPECT_LT(relative_error(g[i], reference[i]), 1e-11) << "input " << i;
  }
}

TEST_P(Retention, HalfPrecisionInputsStayCloseToFloat32) {
  for (auto dtype : {torch::kBFloat16, torch::kHalf}) {
    const Shape s{2, 2, 37, 16, 16, 8};
    torch::Tensor state;
    auto a = random_args(s, torch::kFloat, &state);
    auto reference = retention_chunkwise(a, nullptr);
    RetentionArgs low = a;
    low.q = a.q.to(dtype), low.k = a.k.to(dtype), low.v = a.v.to(dtype);
    for (RetentionForm form : {retention_parallel, retention_chunkwise, retention_recurrent}) {
      auto out = form(low, nullptr);
      EXPECT_EQ(out.scalar_type(), dtype);
      EXPECT_LT(relative_error(out, reference), 2e-2) << dtype;
    }
  }
}

TEST_P(Retention, RejectsMismatchedShapes) {
  torch::Tensor state;
  auto a = random_args(kShapes[1], torch::kFloat, &state);
  RetentionArgs bad = a;
  bad.k = a.k.narrow(2, 0, 3);
  EXPECT_THROW(retention_parallel(bad, nullptr), c10::Error);
  bad = a;
  bad.decays = retention_decays(a.q.size(1) + 1);
  EXPECT_THROW(retention_chunkwise(bad, nullptr), c10::Error);
  torch::Tensor wrong_state = torch::zeros({1, 1, 1, 1}, options());
  EXPECT_THROW(retention_recurrent(a, &wrong_state), c10::Error);
}

DENSESSM_DEVICE_SUITE(Retention);

// The rotation of the retention blocks, element by element: pair i of the last dimension turns by
// (position + t) x 10000^(-i / (dk/2 - 1)).
TEST(Rotation, TurnsEachPairByItsAngleAtItsPosition) {
  const int64_t B = 2, H = 3, T = 5, dk = 8;
  const auto x = torch::randn({B, H, T, dk}, torch::kDouble);
  const auto position = torch::tensor({int64_t{0}, int64_t{7}});
  Rotation rotation(dk);
  const auto y = RetentionBlockImpl::rotate(x, rotation.at(position, T, torch::kDouble, /*recompute=*/true));
  ASSERT_EQ(y.sizes(), x.sizes());
  auto X = x.accessor<double, 4>();
  auto Y = y.accessor<double, 4>();
  double worst = 0;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t i = 0; i < dk / 2; ++i) {
          const double angle = std::pow(10000.0, -static_cast<double>(i) / static_cast<double>(dk / 2 - 1));
          const double theta = static_cast<double>(position[b].item<int64_t>() + t) * angle;
          const double x0 = X[b][h][t][2 * i], x1 = X[b][h][t][2 * i + 1];
          worst = std::max(worst, std::abs(Y[b][h][t][2 * i] - (x0 * std::cos(theta) - x1 * std::sin(theta))));
          worst = std::max(worst, std::abs(Y[b][h][t][2 * i + 1] - (x1 * std::cos(theta) + x0 * std::sin(theta))));
        }
      }
    }
  }
  EXPECT_LT(worst, 1e-12);
}

// One rotation serves the blocks of a forward pass; another position tensor, length or dtype is computed
// anew, and so is every call that asks for it (the first block's).
TEST(Rotation, IsReusedOnlyForTheSamePositionsLengthAndDtype) {
  Rotation rotation(4);
  const auto p = torch::tensor({int64_t{3}});
  const auto first = rotation.at(p, 6, torch::kFloat, true);
  EXPECT_TRUE(rotation.at(p, 6, torch::kFloat, false).first.is_same(first.first));
  EXPECT_FALSE(rotation.at(p, 6, torch::kFloat, true).first.is_same(first.first));
  const auto q = torch::tensor({int64_t{4}});
  const auto other = rotation.at(q, 6, torch::kFloat, false);
  Rotation fresh(4);
  EXPECT_TRUE(torch::equal(other.first, fresh.at(q, 6, torch::kFloat, true).first));
  EXPECT_FALSE(torch::equal(other.first, first.first));
  EXPECT_EQ(rotation.at(q, 2, torch::kFloat, false).first.size(2), 2);
  EXPECT_EQ(rotation.at(q, 2, torch::kDouble, false).first.scalar_type(), torch::kDouble);
}

}  // namespace
}  // namespace densessm
