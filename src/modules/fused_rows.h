// Several linear layers that read the same input, multiplied as one: their weights' rows laid out in one
// matrix, of which the weights become views (their values and names do not change), so that a decode step
// reads the input once and launches one matrix product instead of one per layer.
#pragma once

#include <vector>

#include <torch/types.h>

namespace densessm {

class FusedRows {
 public:
  /// The (sum of the rows, in) matrix of `weights` stacked in order. Built on the first call, and again
  /// whenever a weight is no longer the view it was made (after model.to(), a load, set_data ...).
  const torch::Tensor& matrix(const std::vector<torch::Tensor>& weights);

 private:
  bool holds(const std::vector<torch::Tensor>& weights) const;
  torch::Tensor matrix_;
};

}  // namespace densessm
