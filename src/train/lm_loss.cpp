#include "train/lm_loss.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

namespace densessm {
namespace {

// Autocast to bf16/fp16 for the forward pass, as torch.autocast does.
class AutocastGuard {
 public:
  AutocastGuard(torch::DeviceType device, const std::string& precision) : device_(device), enabled_(precision != "fp32") {
    if (!enabled_) return;
    previous_ = at::autocast::is_autocast_enabled(device_);
    at::autocast::set_autocast_dtype(device_, precision == "bf16" ? torch::kBFloat16 : torch::kHalf);
    at::autocast::set_autocast_enabled(device_, true);
  }
  ~AutocastGuard() {
    if (!enabled_) return;
    at::autocast::set_autocast_enabled(device_, previous_);
    at::autocast::clear_cache();
  }

 private:
  torch::DeviceType device_;
  bool enabled_, previous_ = false;
};

}  // namespace

torch::Tensor next_token_loss(CausalLM& model, const torch::Tensor& tokens, const std::string& precision,
                              const ForwardOptions& forward) {
  const int64_t block = tokens.size(1) - 1;
  auto inputs = tokens.narrow(1, 0, block), targets = tokens.narrow(1, 1, block);  // (B, T) each
  torch::Tensor logits;
  {
    AutocastGuard autocast(tokens.device().type(), precision);
    logits = model->forward(inputs, nullptr, forward);  // (B, T, V)
  }
  return torch::nn::functional::cross_entropy(logits.to(torch::kFloat).flatten(0, 1), targets.flatten());
}

}  // namespace densessm
