#include "generate/batch_decoder.h"

#include <torch/torch.h>

#include "generate/cuda_graph.h"
#include "generate/device.h"

namespace densessm {
namespace {

torch::Device device_of(const CausalLM& model) { return model->parameters().front().device(); }

// Copies every tensor of `from` into the tensor of `to` at the same place (same shapes).
void copy_into(DecodeState& to, const DecodeState& from) {
  auto copy = [](torch::Tensor& dst, const torch::Tensor& src) {
    if (dst.defined()) dst.copy_(src);
  };
  copy(to.position, from.position);
  for (size_t i = 0; i < to.layers.size(); ++i) {
    copy(to.layers[i].kv, from.layers[i].kv);
    copy(to.layers[i].conv, from.layers[i].conv);
    copy(to.layers[i].ssm, from.layers[i].ssm);
  }
}

DecodeState contiguous_copy(const DecodeState& state) {
  DecodeState out = state.clone();
  auto fix = [](torch::Tensor& t) {
    if (t.defined()) t = t.contiguous();
  };
  fix(out.position);
  for (LayerState& layer : out.layers) {
    fix(layer.kv);
    fix(layer.conv);
    fix(layer.ssm);
  }
  return out;
}

}  // namespace

BatchDecoder::BatchDecoder(CausalLM model, const SamplingParams& params, int64_t batch_size, bool cuda_graph)
    : model_(std::move(model)),
      params_(params),
      batch_size_(batch_size),
      cuda_graph_(cuda_graph && device_of(model_).is_cuda() && CapturedGraph::available()) {}

BatchDecoder::~BatchDecoder() = default;

torch::Tensor BatchDecoder::start(const DecodeState& state, const torch::Tensor& seen, const torch::Tensor& last_logits,
                                  uint64_t seed) {
  TORCH_CHECK(state.batch_size() == batch_size_ && seen.size(0) == batch_size_, "BatchDecoder: batch of ",
              state.batch_size(), " sequences, expected ", batch_size_);
  const torch::Device device = device_of(model_);
  if (cuda_graph_ && state_.batch_size() == batch_size_) {
    copy_into(state_, state);  // the graph reads these addresses
    seen_.copy_(seen);
  } else {
    state_ = cuda_graph_ ? contiguous_copy(state) : state;
    seen_ = seen.clone();
    const int64_t vocab = seen.size(1);
    if (!params_.greedy()) noise_ = torch::empty({batch_size_, vocab}, seen.options().dtype(torch::kFloat));  // (B, V)
    tokens_ = torch::zeros({batch_size_}, seen.options().dtype(torch::kLong));                               // (B)
  }
  rng_ = make_generator(device, seed);
  draw_noise();
  return choose_next(last_logits, seen_, noise_, params_);
}

void BatchDecoder::draw_noise() {
  if (noise_.defined()) noise_.exponential_(1.0, rng_);
}

torch::Tensor BatchDecoder::step(const torch::Tensor& tokens, DecodeState& state) {
  // Token ids come from choose_next, within the vocabulary: no host check (it would sync).
  return choose_next(model_->step(tokens, state, /*check_tokens=*/false), seen_, noise_, params_);
}

torch::Tensor BatchDecoder::next(const torch::Tensor& tokens) {
  draw_noise();  // outside the graph, so eager and replayed steps draw the same numbers
  if (!cuda_graph_) return step(tokens, state_);
  tokens_.copy_(tokens);
  if (!graph_) capture();
  graph_->replay();
  return next_;
}

void BatchDecoder::capture() {
  DecodeState fixed = state_;  // the tensors at fixed addresses
  const DecodeState saved = state_.clone();
  const torch::Tensor saved_seen = seen_.clone();
  auto body = [&] {
    DecodeState work = fixed;
    next_ = step(tokens_, work);
    copy_into(fixed, work);
  };
  auto warm_up = [&] {
    body();
    body();
  };
  graph_ = std::make_unique<CapturedGraph>(device_of(model_), warm_up, body);
  // The warm-up ran two real steps: undo them.
  copy_into(fixed, saved);
  seen_.copy_(saved_seen);
  state_ = fixed;
}

}  // namespace densessm
