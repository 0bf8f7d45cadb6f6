// DenseRetNet and DenseMamba causal language models (and plain RetNet / Mamba with dense_block_layers 0).
//
//   tokens (B, T) -> embed_tokens -> L blocks -> RMSNorm -> lm_head -> logits (B, T, V)
//
// Each block adds a mixer's output to the residual stream. With dense hidden connections (m =
// dense_block_layers > 0), block l also receives the hidden states of blocks l-1 .. l-m: a selective
// transition module (a gate computed from block l's input) weighs them and hidden fusion adds them to
// block l's own hidden states, followed by an RMSNorm. DenseRetNet passes its keys and values,
// DenseMamba the x branch of in_proj.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "densessm/config.h"
#include "densessm/rms_norm.h"
#include "densessm/state.h"

namespace densessm {

/// How a block processes a sequence. Mamba has no chunkwise form: kChunkwise runs its parallel scan.
enum class SequenceForm { kParallel, kChunkwise, kRecurrent };

/// The hidden states one block passes on to the next m blocks: RetNet {k (B,T,K), v (B,T,E)};
/// Mamba {x (B,T,d_inner)}. They are taken before this block's own fusion.
using DenseHidden = std::vector<torch::Tensor>;

struct ForwardOptions {
  SequenceForm form = SequenceForm::kChunkwise;
  int64_t chunk_size = 0;  ///< retention chunk size for kChunkwise; 0 takes the config's
  /// Called with each block's hidden states before later blocks read them; may change them
  /// (for probing the dense connections).
  std::function<void(int64_t layer, DenseHidden& hidden)> on_hidden;
  /// Checks on the host that token ids are in [0, V): a device sync, so a step captured in a CUDA graph
  /// turns it off (its ids come from sampling and are in range by construction).
  bool check_tokens = true;
  /// Logits of the last position only, (B, 1, V): what a prefill needs, without the (B, T, V) tensor.
  bool last_logits_only = false;
};

/// One layer: pre-norm residual block around a mixer (retention GAU or Mamba mixer).
class Block : public torch::nn::Module {
 public:
  /// h (B, T, D) -> h + mixer(norm(h)). `previous` holds the hidden states of up to m earlier blocks,
  /// most recent first; this block's own go to `hidden`. `state` (or null) is continued and updated;
  /// `position` (B) int64 is the absolute position of the first token.
  virtual torch::Tensor forward(const torch::Tensor& h, const std::vector<DenseHidden>& previous, DenseHidden& hidden,
                                LayerState* state, const torch::Tensor& position, const ForwardOptions& options) = 0;
  /// A zero state for `batch` sequences, on `device`, for a model of dtype `dtype`.
  virtual LayerState initial_state(int64_t batch, torch::Device device, torch::ScalarType dtype) const = 0;
  /// One token per sequence on the fused decode kernels (CUDA only, no autograd, no dropout; the model's
  /// step calls it when CausalLMImpl::fused_decoding() says so): h (B, D) is updated in place and returned.
  /// `previous` and `hidden` hold (B, n) rows instead of (B, T, n). The first call lays the block's input
  /// projections out in one matrix, of which the weights become views (their values do not change), so
  /// that one matrix product serves them all.
  virtual torch::Tensor decode_step(torch::Tensor h, const std::vector<DenseHidden>& previous, DenseHidden& hidden,
                                    LayerState& state, const torch::Tensor& position) = 0;
};

class CausalLMImpl : public torch::nn::Module {
 public:
  explicit CausalLMImpl(const ModelConfig& config);

  /// tokens (B, T) int64 -> logits (B, T, V). With `state`, continues from it and leaves it as it is
  /// after the last token (prefill), whatever the form. Token ids outside [0, V) are an error.
  torch::Tensor forward(const torch::Tensor& tokens, DecodeState* state = nullptr, const ForwardOptions& options = {});

  /// One token per sequence (the recurrent form): tokens (B) -> logits (B, V); advances `state`.
  /// `check_tokens` as in ForwardOptions. Runs on the fused decode kernels when fused_decoding() is true,
  /// otherwise as forward() with the recurrent form.
  torch::Tensor step(const torch::Tensor& tokens, DecodeState& state, bool check_tokens = true);

  /// Whether step() takes the fused decode kernels: the model is on CUDA in float32, float16 or bfloat16,
  /// the kernels are enabled (densessm/kernels.h), no gradient is wanted and dropout is inactive.
  bool fused_decoding() const;

  /// A zero state for `batch` sequences on the model's device and dtype.
  DecodeState initial_state(int64_t batch) const;

  const ModelConfig& config() const { return config_; }
  int64_t num_layers() const { return static_cast<int64_t>(blocks_.size()); }
  std::shared_ptr<Block> block(int64_t index) const { return blocks_.at(index); }
  /// Number of parameter elements (tied embeddings counted once).
  int64_t num_parameters() const;

 private:
  /// One block's call in through_blocks: (layer, h, the earlier blocks' hidden states, this block's) -> h.
  using BlockCall = std::function<torch::Tensor(int64_t, const torch::Tensor&, const std::vector<DenseHidden>&,
                                                DenseHidden&)>;
  /// h through every block in order, each handed the hidden states of up to m earlier blocks (most recent
  /// first): the dense connection's bookkeeping, shared by forward() and the fused step.
  torch::Tensor through_blocks(torch::Tensor h, const BlockCall& call);
  torch::Tensor vocabulary(const torch::Tensor& x);  ///< normalised h -> logits
  torch::Tensor logits(const torch::Tensor& h);
  torch::Tensor fused_step(const torch::Tensor& tokens, DecodeState& state);
  /// int64/int32 ids, and with `range` in [0, V) (a host sync); errors name `caller`.
  void check_token_ids(const torch::Tensor& tokens, const char* caller, bool range) const;
  void check_state(const DecodeState& state, int64_t batch, const char* caller) const;
  torch::Device device() const;
  torch::ScalarType dtype() const;

  ModelConfig config_;
  torch::nn::Embedding embed_tokens_{nullptr};
  std::vector<std::shared_ptr<Block>> blocks_;
  RMSNorm norm_{nullptr};
  torch::nn::Linear lm_head_{nullptr};
};
TORCH_MODULE(CausalLM);

}  // namespace densessm
