// RMSNorm: y = x / sqrt(mean(x^2) + eps) * weight over the last dimension, computed in float32
// (float64 for float64 inputs) and returned in the input's dtype.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace densessm {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  double eps() const { return eps_; }

  torch::Tensor weight;  ///< (dim), initialised to ones

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

}  // namespace densessm
