#include "train/optimizer.h"

namespace densessm {

bool decays(const std::string& name, const torch::Tensor& parameter) {
  return parameter.dim() >= 2 && name.find("A_log") == std::string::npos;
}

std::unique_ptr<torch::optim::AdamW> make_adamw(const torch::OrderedDict<std::string, torch::Tensor>& parameters,
                                                const OptimizerConfig& c) {
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& item : parameters) (decays(item.key(), item.value()) ? decay : no_decay).push_back(item.value());
  auto options = torch::optim::AdamWOptions(c.lr).betas({c.beta1, c.beta2}).eps(c.eps).weight_decay(c.weight_decay);
  // An empty group is left out (a shard of a sharded optimizer may hold no parameter of one kind).
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!decay.empty()) groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(options));
  if (!no_decay.empty()) {
    groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(options).weight_decay(0)));
  }
  if (groups.empty()) throw std::invalid_argument("make_adamw: no parameters");
  return std::make_unique<torch::optim::AdamW>(std::move(groups), options);
}

void set_learning_rate(torch::optim::AdamW& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
}

}  // namespace densessm
