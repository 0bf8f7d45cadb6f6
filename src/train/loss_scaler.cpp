#include "train/loss_scaler.h"

#include <stdexcept>
#include <string>

#include <torch/torch.h>

namespace densessm {

LossScaler::LossScaler(double initial_scale, int64_t growth_interval)
    : enabled_(true), scale_(initial_scale), growth_interval_(growth_interval) {
  if (!(initial_scale > 0) || growth_interval <= 0) {
    throw std::invalid_argument("loss scaler: the initial scale and the growth interval must be positive, got " +
                                std::to_string(initial_scale) + " and " + std::to_string(growth_interval));
  }
}

bool LossScaler::unscale(const std::vector<torch::Tensor>& parameters) {
  if (!enabled_) return true;
  torch::Tensor finite;  // accumulated on the device: one host sync per step, not one per tensor
  for (const auto& p : parameters) {
    if (!p.grad().defined()) continue;
    p.grad().div_(scale_);
    auto ok = torch::isfinite(p.grad()).all();
    finite = finite.defined() ? finite.logical_and(ok) : ok;
  }
  if (finite.defined() && !finite.item<bool>()) {
    scale_ /= 2;
    good_steps_ = 0;
    ++skipped_steps_;
    return false;
  }
  if (++good_steps_ % growth_interval_ == 0) scale_ *= 2;
  return true;
}

void LossScaler::restore(double scale, int64_t good_steps, int64_t skipped_steps) {
  scale_ = scale;
  good_steps_ = good_steps;
  skipped_steps_ = skipped_steps;
}

}  // namespace densessm
