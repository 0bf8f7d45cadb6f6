// The fp16 dynamic loss scaler: overflowed steps are skipped, halve the scale and are counted; the scale
// doubles after growth_interval good steps in a row.
#include "test_helpers.h"
#include "train/loss_scaler.h"

namespace densessm {
namespace {

std::vector<torch::Tensor> parameters_with_grads(std::vector<float> grads) {
  auto p = torch::zeros({static_cast<int64_t>(grads.size())}).requires_grad_();
  p.mutable_grad() = torch::tensor(grads);
  auto q = torch::zeros({2}).requires_grad_();  // a parameter without a gradient is left alone
  return {p, q};
}

TEST(LossScaler, UnscalesFiniteGradients) {
  LossScaler scaler(1024, 100);
  auto params = parameters_with_grads({1024, -2048, 512});
  EXPECT_TRUE(scaler.unscale(params));
  EXPECT_TRUE(torch::equal(params[0].grad(), torch::tensor({1.0f, -2.0f, 0.5f})));
  EXPECT_EQ(scaler.scale(), 1024);
  EXPECT_EQ(scaler.good_steps(), 1);
  EXPECT_EQ(scaler.skipped_steps(), 0);
}

TEST(LossScaler, AnOverflowSkipsTheStepHalvesTheScaleAndIsCounted) {
  LossScaler scaler(65536, 100);
  EXPECT_TRUE(scaler.unscale(parameters_with_grads({1, 2})));
  EXPECT_FALSE(scaler.unscale(parameters_with_grads({1, INFINITY})));
  EXPECT_EQ(scaler.scale(), 32768);
  EXPECT_EQ(scaler.skipped_steps(), 1);
  EXPECT_EQ(scaler.good_steps(), 0);  // the run of good steps starts again
  EXPECT_FALSE(scaler.unscale(parameters_with_grads({NAN, 0})));
  EXPECT_FALSE(scaler.unscale(parameters_with_grads({-INFINITY, 0})));
  EXPECT_EQ(scaler.scale(), 8192);
  EXPECT_EQ(scaler.skipped_steps(), 3);
}

TEST(LossScaler, GrowsAfterTheGrowthIntervalOfGoodStepsInARow) {
  LossScaler scaler(8, 3);
  EXPECT_TRUE(scaler.unscale(parameters_with_grads({1})));
  EXPECT_TRUE(scaler.unscale(parameters_with_grads({1})));
  EXPECT_FALSE(scaler.unscale(parameters_with_grads({INFINITY})));  // breaks the run: 8 -> 4
  EXPECT_TRUE(scaler.unscale(parameters_with_grads({1})));
  EXPECT_TRUE(scaler.unscale(parameters_with_grads({1})));
  EXPECT_EQ(scaler.scale(), 4);  // only two good steps since the overflow
  EXPECT_TRUE(scaler.unscale(parameters_with_grads({1})));
  EXPECT_EQ(scaler.scale(), 8);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(scaler.unscale(parameters_with_grads({1})));
  EXPECT_EQ(scaler.scale(), 16);
}

TEST(LossScaler, RestoresItsCheckpointedState) {
  LossScaler scaler(65536, 2);
  scaler.restore(256, 1, 7);
  EXPECT_TRUE(scaler.unscale(parameters_with_grads({256})));
  EXPECT_EQ(scaler.scale(), 512);  // the restored good step counts toward growth
  EXPECT_EQ(scaler.skipped_steps(), 7);
}

TEST(LossScaler, DisabledItNeitherScalesNorSkips) {
  LossScaler scaler;
  auto params = parameters_with_grads({3, INFINITY});
  EXPECT_FALSE(scaler.enabled());
  EXPECT_EQ(scaler.scale(), 1);
  EXPECT_TRUE(scaler.unscale(params));
  EXPECT_EQ(params[0].grad()[0].item<float>(), 3);
  EXPECT_THROW(LossScaler(0, 10), std::invalid_argument);
}

}  // namespace
}  // namespace densessm
