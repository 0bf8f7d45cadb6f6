// The training optimizer: AdamW with decoupled weight decay on weight matrices only, against a hand
// computation of two steps.
#include <cmath>
#include <vector>

#include "test_helpers.h"
#include "train/optimizer.h"

namespace densessm {
namespace {

// Adam's moments for one scalar parameter, stepped by the textbook AdamW (Loshchilov & Hutter): first the
// decoupled decay p -= lr wd p, then p -= lr m_hat / (sqrt(v_hat) + eps) with bias-corrected moments.
struct HandAdamW {
  double p, m = 0, v = 0;
  void step(double g, int t, double lr, double wd, const OptimizerConfig& c) {
    p -= lr * wd * p;
    m = c.beta1 * m + (1 - c.beta1) * g;
    v = c.beta2 * v + (1 - c.beta2) * g * g;
    const double m_hat = m / (1 - std::pow(c.beta1, t)), v_hat = v / (1 - std::pow(c.beta2, t));
    p -= lr * m_hat / (std::sqrt(v_hat) + c.eps);
  }
};

TEST(Optimizer, WeightDecayOnlyOnMatricesAndNotOnALog) {
  EXPECT_TRUE(decays("layers.0.mixer.in_proj.weight", torch::zeros({4, 2})));
  EXPECT_FALSE(decays("layers.0.norm.weight", torch::zeros({4})));
  EXPECT_FALSE(decays("layers.0.mixer.dt_proj.bias", torch::zeros({4})));
  EXPECT_FALSE(decays("layers.0.mixer.D", torch::zeros({4})));
  EXPECT_FALSE(decays("layers.0.mixer.A_log", torch::zeros({4, 16})));
}

TEST(Optimizer, TwoAdamWStepsMatchAHandComputation) {
  torch::manual_seed(7);
  const auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  torch::OrderedDict<std::string, torch::Tensor> parameters;
  parameters.insert("proj.weight", torch::randn({2, 3}, f64).requires_grad_());   // decays
  parameters.insert("proj.bias", torch::randn({3}, f64).requires_grad_());        // exempt
  parameters.insert("norm.weight", torch::randn({3}, f64).requires_grad_());      // exempt
  parameters.insert("mixer.A_log", torch::randn({3, 2}, f64).requires_grad_());   // exempt
  OptimizerConfig c;
  c.lr = 0.1;
  c.weight_decay = 0.3;  // large, so that decay applied to the wrong group shows
  c.eps = 1e-3;          // large, so that its place in the formula shows

  std::vector<std::vector<HandAdamW>> hand;
  for (const auto& item : parameters) {
    auto values = item.value().detach().flatten();
    hand.emplace_back();
    for (int64_t i = 0; i < values.numel(); ++i) hand.back().push_back({values[i].item<double>()});
  }
  auto optimizer = make_adamw(parameters, c);
  const double lrs[] = {0.1, 0.04};  // the schedule changes the rate between steps
  for (int t = 1; t <= 2; ++t) {
    set_learning_rate(*optimizer, lrs[t - 1]);
    size_t index = 0;
    for (const auto& item : parameters) {
      auto grad = torch::randn(item.value().sizes(), f64);
      item.value().mutable_grad() = grad;
      const double wd = decays(item.key(), item.value()) ? c.weight_decay : 0.0;
      auto g = grad.flatten();
      for (int64_t i = 0; i < g.numel(); ++i) hand[index][static_cast<size_t>(i)].step(g[i].item<double>(), t, lrs[t - 1], wd, c);
      ++index;
    }
    optimizer->step();
  }
  size_t index = 0;
  for (const auto& item : parameters) {
    auto values = item.value().detach().flatten();
    for (int64_t i = 0; i < values.numel(); ++i) {
      EXPECT_NEAR(values[i].item<double>(), hand[index][static_cast<size_t>(i)].p, 1e-12) << item.key() << "[" << i << "]";
    }
    ++index;
  }
}

}  // namespace
}  // namespace densessm
