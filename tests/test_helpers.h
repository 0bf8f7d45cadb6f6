// Shared helpers of the test suite: device parameterisation, error measures and small configs.
#pragma once

#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "densessm/config.h"

namespace densessm::testing {

/// Tests parameterised by device: CUDA cases skip cleanly where no GPU is present.
class DeviceTest : public ::testing::TestWithParam<torch::DeviceType> {
 protected:
  void SetUp() override {
    if (GetParam() == torch::kCUDA && !torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
    torch::manual_seed(1234);
  }
  torch::Device device() const { return torch::Device(GetParam()); }
  torch::TensorOptions options(torch::ScalarType dtype = torch::kFloat) const {
    return torch::TensorOptions().device(device()).dtype(dtype);
  }
};

inline std::string device_name(const ::testing::TestParamInfo<torch::DeviceType>& info) {
  return info.param == torch::kCUDA ? "CUDA" : "CPU";
}

#define DENSESSM_DEVICE_SUITE(Suite) \
  INSTANTIATE_TEST_SUITE_P(Devices, Suite, ::testing::Values(torch::kCPU, torch::kCUDA), densessm::testing::device_name)

/// ||a - b|| / ||b||, in float64; NaN anywhere gives infinity.
inline double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  auto x = a.detach().to(torch::kCPU, torch::kDouble), y = b.detach().to(torch::kCPU, torch::kDouble);
  if (!torch::isfinite(x).all().item<bool>() || !torch::isfinite(y).all().item<bool>()) return INFINITY;
  const double denominator = y.norm().item<double>();
  return (x - y).norm().item<double>() / (denominator > 0 ? denominator : 1.0);
}

inline std::string config_path(const std::string& name) {
  return std::string(DENSESSM_SOURCE_DIR) + "/configs/" + name;
}

/// A tiny config of either architecture with the dense connection over m layers.
inline ModelConfig tiny_config(Architecture architecture, int64_t m, int64_t layers = 3) {
  ModelConfig c = load_model_config(config_path(architecture == Architecture::kRetNet ? "tiny-dense-retnet.json"
                                                                                        : "tiny-dense-mamba.json"));
  c.num_layers = layers;
  c.dense_block_layers = m;
  validate(c);
  return c;
}

}  // namespace densessm::testing
