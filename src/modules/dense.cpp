#include "modules/dense.h"

namespace densessm {

SelectiveTransitionImpl::SelectiveTransitionImpl(int64_t in, int64_t bottleneck, int64_t out) {
  fc1 = register_module("fc1", torch::nn::Linear(torch::nn::LinearOptions(in, bottleneck).bias(false)));
  fc2 = register_module("fc2", torch::nn::Linear(torch::nn::LinearOptions(bottleneck, out).bias(false)));
}

torch::Tensor SelectiveTransitionImpl::forward(const torch::Tensor& x) {
  return torch::silu(fc2(torch::silu(fc1(x))));
}

torch::Tensor sum_of_hidden(const std::vector<std::vector<torch::Tensor>>& previous, size_t part) {
  auto sum = previous.at(0).at(part);
  for (size_t i = 1; i < previous.size(); ++i) sum = sum + previous[i].at(part);
  return sum;
}

torch::Tensor hidden_fusion(const torch::Tensor& current, const torch::Tensor& gate,
                            const std::vector<torch::Tensor>& previous, RMSNorm& norm) {
  auto fused = current;
  for (const torch::Tensor& hidden : previous) fused = torch::addcmul(fused, gate, hidden);  // fused + gate * hidden
  return norm(fused);
}

}  // namespace densessm
