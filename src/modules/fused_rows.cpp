#include "modules/fused_rows.h"

#include <torch/torch.h>

namespace densessm {

bool FusedRows::holds(const std::vector<torch::Tensor>& weights) const {
  if (!matrix_.defined()) return false;
  int64_t row = 0;
  for (const torch::Tensor& w : weights) {
    if (w.dim() != 2 || w.size(1) != matrix_.size(1) || w.scalar_type() != matrix_.scalar_type() ||
        w.device() != matrix_.device() || !w.is_contiguous() || row + w.size(0) > matrix_.size(0) ||
        w.data_ptr() != static_cast<const char*>(matrix_.data_ptr()) + row * matrix_.stride(0) * matrix_.element_size()) {
      return false;
    }
    row += w.size(0);
  }
  return row == matrix_.size(0);
}

const torch::Tensor& FusedRows::matrix(const std::vector<torch::Tensor>& weights) {
  if (holds(weights)) return matrix_;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> values;
  for (const torch::Tensor& w : weights) values.push_back(w.detach());
  matrix_ = torch::cat(values, 0);
  int64_t row = 0;
  for (torch::Tensor w : weights) {  // a handle: set_data changes the parameter itself
    const int64_t rows = w.size(0);
    w.set_data(matrix_.narrow(0, row, rows));
    row += rows;
  }
  return matrix_;
}

}  // namespace densessm
