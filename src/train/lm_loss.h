// The training objective, shared by the training loop and the training benchmark: next-token
// cross-entropy, with the forward pass under autocast for bf16/fp16 as torch.autocast does it.
#pragma once

#include <string>

#include <torch/types.h>

#include "densessm/model.h"

namespace densessm {

/// Mean cross-entropy of predicting tokens[:, 1:] from tokens[:, :-1]; tokens (B, T+1) on the model's
/// device. precision: fp32, bf16 or fp16 (the logits are cast to float32 for the loss).
torch::Tensor next_token_loss(CausalLM& model, const torch::Tensor& tokens, const std::string& precision,
                              const ForwardOptions& forward);

}  // namespace densessm
