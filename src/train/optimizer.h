// The reference's optimizer: AdamW with decoupled weight decay on the weight matrices only. Norm weights,
// biases (every 1-D parameter: norms, biases, Mamba's D) and Mamba's A_log are exempt, as in the
// reference's HF Trainer recipe.
#pragma once

#include <memory>
#include <string>

#include <torch/torch.h>

#include "densessm/train.h"

namespace densessm {

/// Whether weight decay applies to the parameter of this name and shape.
bool decays(const std::string& name, const torch::Tensor& parameter);

/// AdamW over two groups of `parameters`: with `config.weight_decay`, and without (see decays()).
std::unique_ptr<torch::optim::AdamW> make_adamw(const torch::OrderedDict<std::string, torch::Tensor>& parameters,
                                                const OptimizerConfig& config);

/// Sets every group's learning rate (the schedule's value for the coming step).
void set_learning_rate(torch::optim::AdamW& optimizer, double lr);

}  // namespace densessm
