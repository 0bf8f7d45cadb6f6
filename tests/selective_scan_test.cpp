// Mamba's operators: the selective scan against its definition, the one-token steps against the sequence
// forms, and the causal convolution against a direct sum, on random inputs of several shapes.
#include "densessm/selective_scan.h"
#include "test_helpers.h"

namespace densessm {
namespace {

using densessm::testing::relative_error;

struct ScanShape {
  int64_t B, C, T, N;
};

class SelectiveScan : public densessm::testing::DeviceTest {
 protected:
  SelectiveScanArgs random_args(const ScanShape& s, torch::ScalarType dtype, bool gate = true) {
    auto o = options(dtype);
    SelectiveScanArgs a;
    a.u = torch::randn({s.B, s.C, s.T}, o);
    a.delta = torch::randn({s.B, s.C, s.T}, o) * 0.5;
    a.A = -torch::rand({s.C, s.N}, options(dtype == torch::kDouble ? torch::kDouble : torch::kFloat)) * 2 - 0.1;
    a.Bm = torch::randn({s.B, s.N, s.T}, o);
    a.Cm = torch::randn({s.B, s.N, s.T}, o);
    a.Dskip = torch::randn({s.C}, o);
    if (gate) a.z = torch::randn({s.B, s.C, s.T}, o);
    a.delta_bias = torch::randn({s.C}, o) * 0.5;
    return a;
  }
  // The args of token t of a sequence's args, as the step form takes them.
  static SelectiveScanArgs token(const SelectiveScanArgs& a, int64_t t) {
    SelectiveScanArgs s = a;
    s.u = a.u.select(2, t), s.delta = a.delta.select(2, t), s.Bm = a.Bm.select(2, t), s.Cm = a.Cm.select(2, t);
    if (a.z.defined()) s.z = a.z.select(2, t);
    return s;
  }
};

const std::vector<ScanShape> kScanShapes = {{1, 1, 1, 1}, {2, 5, 7, 4}, {3, 8, 33, 16}, {1, 4, 65, 3}};

// h_t = exp(delta A) h + delta B u; y = C.h + D u; y *= silu(z), element by element in float64 on the CPU.
torch::Tensor definition(const SelectiveScanArgs& a, torch::Tensor state) {
  auto cpu = [](const torch::Tensor& t) { return t.to(torch::kCPU, torch::kDouble); };
  auto u = cpu(a.u), delta = cpu(a.delta), A = cpu(a.A), Bm = cpu(a.Bm), Cm = cpu(a.Cm), D = cpu(a.Dskip),
       z = cpu(a.z), bias = cpu(a.delta_bias), h = cpu(state).clone();
  const int64_t B = u.size(0), C = u.size(1), T = u.size(2), N = A.size(1);
  auto y = torch::zeros({B, C, T}, torch::kDouble);
  auto ha = h.accessor<double, 3>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t t = 0; t < T; ++t) {
        const double d = std::log1p(std::exp(delta[b][c][t].item<double>() + bias[c].item<double>()));
        const double x = u[b][c][t].item<double>();
        double out = D[c].item<double>() * x;
        for (int64_t n = 0; n < N; ++n) {
          ha[b][c][n] = std::exp(d * A[c][n].item<double>()) * ha[b][c][n] + d * Bm[b][n][t].item<double>() * x;
          out += Cm[b][n][t].item<double>() * ha[b][c][n];
        }
        const double gate = z[b][c][t].item<double>();
        y[b][c][t] = out * gate / (1 + std::exp(-gate));
      }
    }
  }
  return y;
}

TEST_P(SelectiveScan, ScanIsTheDefinition) {
  for (const ScanShape& s : {kScanShapes[0], kScanShapes[1], kScanShapes[2]}) {
    auto a = random_args(s, torch::kDouble);
    auto state = torch::randn({s.B, s.C, s.N}, options(torch::kDouble));
    auto expected = definition(a, state);
    EXPECT_LT(relative_error(selective_scan(a, &state), expected), 1e-12) << "T=" << s.T;
  }
}

TEST_P(SelectiveScan, StepsAgreeWithTheScan) {
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    const double tolerance = dtype == torch::kDouble ? 1e-12 : 1e-5;
    for (const ScanShape& s : kScanShapes) {
      for (bool gate : {true, false}) {
        auto a = random_args(s, dtype, gate);
        auto acc = dtype == torch::kDouble ? torch::kDouble : torch::kFloat;
        auto state0 = torch::randn({s.B, s.C, s.N}, options(acc));
        torch::Tensor scan_state = state0.clone();
        auto expected = selective_scan(a, &scan_state);
        torch::Tensor state = state0.clone();
        std::vector<torch::Tensor> ys;
        for (int64_t t = 0; t < s.T; ++t) ys.push_back(selective_scan_step(token(a, t), state));
        EXPECT_LT(relative_error(torch::stack(ys, 2), expected), tolerance) << "T=" << s.T << " gate=" << gate;
        EXPECT_LT(relative_error(state, scan_state), tolerance);
      }
    }
  }
}

TEST_P(SelectiveScan, WithoutSoftplusOrSkip) {
  auto a = random_args(kScanShapes[1], torch::kDouble);
  a.delta = a.delta.abs();
  a.delta_softplus = false;
  auto b = a;
  b.delta = a.delta + a.delta_bias.view({1, -1, 1});
  b.delta_bias = torch::Tensor();
  EXPECT_LT(relative_error(selective_scan(a, nullptr), selective_scan(b, nullptr)), 1e-12);
  b.Dskip = torch::Tensor();
  auto u_term = a.u * a.Dskip.view({1, -1, 1}) * torch::silu(a.z);
  EXPECT_LT(relative_error(selective_scan(b, nullptr) + u_term, selective_scan(a, nullptr)), 1e-12);
}

TEST_P(SelectiveScan, ASplitSequenceContinuesThroughTheState) {
  auto a = random_args({2, 6, 29, 8}, torch::kDouble);
  auto expected = selective_scan(a, nullptr);
  auto part = [&](int64_t start, int64_t length) {
    SelectiveScanArgs p = a;
    p.u = a.u.narrow(2, start, length), p.delta = a.delta.narrow(2, start, length);
    p.Bm = a.Bm.narrow(2, start, length), p.Cm = a.Cm.narrow(2, start, length), p.z = a.z.narrow(2, start, length);
    return p;
  };
  torch::Tensor state;
  auto out = torch::cat({selective_scan(part(0, 11), &state), selective_scan(part(11, 18), &state)}, 2);
  EXPECT_LT(relative_error(out, expected), 1e-12);
}

TEST_P(SelectiveScan, GradientsOfStepsAgreeWithTheScan) {
  auto a = random_args({2, 3, 9, 4}, torch::kDouble);
  auto weights = torch::randn_like(a.u);
  auto leaves = [](SelectiveScanArgs& x) {
    std::vector<torch::Tensor*> fields = {&x.u, &x.delta, &x.A, &x.Bm, &x.Cm, &x.Dskip, &x.z, &x.delta_bias};
    for (auto* f : fields) *f = f->detach().clone().requires_grad_();
    return fields;
  };
  SelectiveScanArgs scan = a, steps = a;
  auto scan_leaves = leaves(scan), step_leaves = leaves(steps);
  (selective_scan(scan, nullptr) * weights).sum().backward();
  torch::Tensor state = torch::zeros({2, 3, 4}, options(torch::kDouble));
  std::vector<torch::Tensor> ys;
  for (int64_t t = 0; t < 9; ++t) ys.push_back(selective_scan_step(token(steps, t), state));
  (torch::stack(ys, 2) * weights).sum().backward();
  for (size_t i = 0; i < scan_leaves.size(); ++i) {
    EXPECT_LT(relative_error(step_leaves[i]->grad(), scan_leaves[i]->grad()), 1e-11) << "input " << i;
  }
}

class CausalConv : public densessm::testing::DeviceTest {};

TEST_P(CausalConv, MatchesADirectSumAndContinuesThroughTheState) {
  for (int64_t W : {2, 3, 4}) {
    const int64_t B = 2, C = 5, T = 13;
    auto o = options(torch::kDouble);
    auto x = torch::randn({B, C, T}, o), weight = torch::randn({C, W}, o), bias = torch::randn({C}, o);
    auto past = torch::randn({B, C, W - 1}, o);
    // out[t] = silu(bias + sum_j weight[j] * window[t + j]), window = (past, x).
    auto window = torch::cat({past, x}, 2);
    auto expected = bias.view({1, C, 1}).expand({B, C, T}).clone();
    for (int64_t j = 0; j < W; ++j) expected = expected + weight.select(1, j).view({1, C, 1}) * window.narrow(2, j, T);
    expected = torch::silu(expected);
    torch::Tensor state = past.clone();
    EXPECT_LT(relative_error(causal_conv1d(x, weight, bias, &state), expected), 1e-12) << "W=" << W;
    EXPECT_LT(relative_error(state, x.narrow(2, T - (W - 1), W - 1)), 1e-15);
    torch::Tensor step_state = past.clone();
    std::vector<torch::Tensor> ys;
    for (int64_t t = 0; t < T; ++t) ys.push_back(causal_conv1d_step(x.select(2, t), weight, bias, step_state));
    EXPECT_LT(relative_error(torch::stack(ys, 2), expected), 1e-12) << "W=" << W;
    EXPECT_LT(relative_error(step_state, state), 1e-15);
  }
}

DENSESSM_DEVICE_SUITE(SelectiveScan);
DENSESSM_DEVICE_SUITE(CausalConv);

}  // namespace
}  // namespace densessm
