#include <deque>

#include <torch/torch.h>

#include "densessm/kernels.h"
#include "densessm/model.h"
#include "modules/mamba_block.h"
#include "modules/retention_block.h"

#ifdef DENSESSM_WITH_CUDA
#include "ops/cuda/decode_cuda.h"
#endif

namespace densessm {

CausalLMImpl::CausalLMImpl(const ModelConfig& config) : config_(config) {
  validate(config_);
  embed_tokens_ = register_module("embed_tokens", torch::nn::Embedding(config_.vocab_size, config_.hidden_size));
  auto layers = register_module("layers", torch::nn::ModuleList());  // parameters named layers.<i>.<name>
  // The retention blocks rotate at the same positions: one rotation per forward pass serves them all.
  const auto rotation =
      config_.architecture == Architecture::kRetNet ? std::make_shared<Rotation>(config_.head_qk_dim()) : nullptr;
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    std::shared_ptr<Block> block;
    if (config_.architecture == Architecture::kRetNet) {
      block = std::make_shared<RetentionBlockImpl>(config_, i, rotation);
    } else {
      block = std::make_shared<MambaBlockImpl>(config_, i);
    }
    layers->push_back(block);
    blocks_.push_back(block);
  }
  norm_ = register_module("norm", RMSNorm(config_.hidden_size, config_.rms_norm_eps));
  if (!config_.tie_embeddings) {
    lm_head_ = register_module(
        "lm_head", torch::nn::Linear(torch::nn::LinearOptions(config_.hidden_size, config_.vocab_size).bias(false)));
  }
  torch::NoGradGuard no_grad;
  embed_tokens_->weight.normal_(0.0, config_.initializer_range);
  if (lm_head_) lm_head_->weight.normal_(0.0, config_.initializer_range);
}

torch::Device CausalLMImpl::device() const { return embed_tokens_->weight.device(); }
torch::ScalarType CausalLMImpl::dtype() const { return embed_tokens_->weight.scalar_type(); }

int64_t CausalLMImpl::num_parameters() const {
  int64_t total = 0;
  for (const auto& p : parameters()) total += p.numel();
  return total;
}

torch::Tensor CausalLMImpl::vocabulary(const torch::Tensor& x) {
  return lm_head_ ? lm_head_(x) : torch::nn::functional::linear(x, embed_tokens_->weight);
}

torch::Tensor CausalLMImpl::logits(const torch::Tensor& h) { return vocabulary(norm_(h)); }

void CausalLMImpl::check_token_ids(const torch::Tensor& tokens, const char* caller, bool range) const {
  TORCH_CHECK(tokens.scalar_type() == torch::kLong || tokens.scalar_type() == torch::kInt, caller,
              ": tokens must be int64 or int32, got ", tokens.scalar_type());
  if (!range) return;
  const int64_t low = tokens.min().item<int64_t>(), high = tokens.max().item<int64_t>();
  TORCH_CHECK(low >= 0 && high < config_.vocab_size, caller, ": token ids must be in [0, ", config_.vocab_size,
              "), got values in [", low, ", ", high, "]");
}

void CausalLMImpl::check_state(const DecodeState& state, int64_t batch, const char* caller) const {
  TORCH_CHECK(state.batch_size() == batch && static_cast<int64_t>(state.layers.size()) == num_layers(), caller,
              ": the decode state holds ", state.batch_size(), " sequences and ", state.layers.size(),
              " layers; the call has ", batch, " sequences for a model of ", num_layers(), " layers");
}

torch::Tensor CausalLMImpl::through_blocks(torch::Tensor h, const BlockCall& call) {
  std::deque<DenseHidden> recent;  // the last m blocks' hidden states, most recent first
  const auto m = static_cast<size_t>(config_.dense_block_layers);
  for (int64_t i = 0; i < num_layers(); ++i) {
    DenseHidden hidden;
    const std::vector<DenseHidden> previous(recent.begin(), recent.end());
    h = call(i, h, previous, hidden);
    if (m > 0) {
      recent.push_front(std::move(hidden));
      if (recent.size() > m) recent.pop_back();
    }
  }
  return h;
}

torch::Tensor CausalLMImpl::forward(const torch::Tensor& tokens, DecodeState* state, const ForwardOptions& options) {
  TORCH_CHECK(tokens.dim() == 2, "forward: tokens must be (batch, time), got ", tokens.sizes());
  TORCH_CHECK(tokens.size(1) > 0, "forward: empty sequence");
  check_token_ids(tokens, "forward", options.check_tokens);
  const int64_t B = tokens.size(0), T = tokens.size(1);
  if (state != nullptr) check_state(*state, B, "forward");
  const auto position = state ? state->position.to(device()) : torch::zeros({B}, torch::TensorOptions().dtype(torch::kLong).device(device()));

  auto h = embed_tokens_(tokens.to(device(), torch::kLong));  // (B, T, D)
  h = through_blocks(h, [&](int64_t i, const torch::Tensor& x, const std::vector<DenseHidden>& previous,
                            DenseHidden& hidden) {
    auto out = blocks_[i]->forward(x, previous, hidden, state ? &state->layers[i] : nullptr, position, options);
    if (options.on_hidden) options.on_hidden(i, hidden);
    return out;
  });
  if (state != nullptr) state->position = position + T;
  return logits(options.last_logits_only ? h.narrow(1, T - 1, 1) : h);
}

bool CausalLMImpl::fused_decoding() const {
  const auto t = dtype();
  const bool grad = torch::GradMode::is_enabled() && embed_tokens_->weight.requires_grad();
  const bool dropout = is_training() && config_.dropout > 0.0;
  return kernels_enabled() && device().is_cuda() && (t == torch::kFloat || t == torch::kHalf || t == torch::kBFloat16) &&
         !grad && !dropout;
}

torch::Tensor CausalLMImpl::fused_step(const torch::Tensor& tokens, DecodeState& state) {
  check_state(state, tokens.size(0), "step");
  const auto position = state.position.to(device(), torch::kLong).contiguous();
  auto h = embed_tokens_(tokens.to(device(), torch::kLong));  // (B, D)
  h = through_blocks(h, [&](int64_t i, const torch::Tensor& x, const std::vector<DenseHidden>& previous,
                            DenseHidden& hidden) {
    return blocks_[i]->decode_step(x, previous, hidden, state.layers[i], position);
  });
  state.position = position + 1;
#ifdef DENSESSM_WITH_CUDA
  return cuda::small_matmul(cuda::rms_norm(h, norm_->weight, norm_->eps()),
                            lm_head_ ? lm_head_->weight : embed_tokens_->weight);
#else
  return logits(h);
#endif
}

torch::Tensor CausalLMImpl::step(const torch::Tensor& tokens, DecodeState& state, bool check_tokens) {
  TORCH_CHECK(tokens.dim() == 1, "step: tokens must be (batch), got ", tokens.sizes());
  if (fused_decoding()) {
    check_token_ids(tokens, "step", check_tokens);
    return fused_step(tokens, state);
  }
  ForwardOptions options;
  options.form = SequenceForm::kRecurrent;
  options.check_tokens = check_tokens;
  return forward(tokens.unsqueeze(1), &state, options).squeeze(1);
}

DecodeState CausalLMImpl::initial_state(int64_t batch) const {
  DecodeState state;
  state.position = torch::zeros({batch}, torch::TensorOptions().dtype(torch::kLong).device(device()));
  for (const auto& block : blocks_) state.layers.push_back(block->initial_state(batch, device(), dtype()));
  return state;
}

}  // namespace densessm
