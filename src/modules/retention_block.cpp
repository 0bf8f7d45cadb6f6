#include "modules/retention_block.h"

#include <cmath>
#include <stdexcept>

#ifdef DENSESSM_WITH_CUDA
#include "ops/cuda/decode_cuda.h"
#endif

namespace densessm {
namespace {

torch::nn::Linear linear(int64_t in, int64_t out) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
}

torch::ScalarType accumulation_type(torch::ScalarType t) { return t == torch::kDouble ? torch::kDouble : torch::kFloat; }

}  // namespace

Rotation::Rotation(int64_t dk) {
  // angle_i = 10000^(-i / (dk/2 - 1)), i = 0 .. dk/2 - 1, each used by one pair of dimensions.
  angles_ = torch::pow(10000.0, -torch::linspace(0, 1, dk / 2, torch::kDouble)).repeat_interleave(2);
  signs_ = torch::tensor({-1.0, 1.0}, torch::kDouble).repeat({dk / 2});
}

const torch::Tensor& Rotation::angles(torch::Device device) {
  if (angles_.device() != device) {
    angles_ = angles_.to(device);
    signs_ = signs_.to(device);
  }
  return angles_;
}

std::pair<torch::Tensor, torch::Tensor> Rotation::at(const torch::Tensor& position, int64_t T, torch::ScalarType dtype,
                                                     bool recompute) {
  if (recompute || !position_.defined() || !position_.is_same(position) || length_ != T ||
      cos_.scalar_type() != dtype) {
    angles(position.device());  // moved once: a decode step (a CUDA graph) then copies nothing
    const int64_t B = position.size(0), dk = angles_.size(0);
    auto pos = position.view({B, 1}) + torch::arange(T, position.options()).view({1, T});  // (B, T)
    auto theta = pos.to(torch::kDouble).view({B, 1, T, 1}) * angles_.view({1, 1, 1, dk});  // (B, 1, T, dk)
    cos_ = theta.cos().to(dtype);
    sin_ = (theta.sin() * signs_).to(dtype);
    position_ = position;
    length_ = T;
  }
  return {cos_, sin_};
}

RetentionBlockImpl::RetentionBlockImpl(const ModelConfig& c, int64_t index, std::shared_ptr<Rotation> rotation)
    : index_(index),
      heads_(c.retention.num_heads),
      dk_(c.head_qk_dim()),
      dv_(c.head_v_dim()),
      chunk_size_(c.retention.chunk_size) {
  const int64_t D = c.hidden_size, K = c.retention.query_key_dim, E = c.value_dim();
  decays_ = retention_decays(heads_);
  rotation_ = rotation ? std::move(rotation) : std::make_shared<Rotation>(dk_);
  input_layernorm = register_module("input_layernorm", RMSNorm(D, c.rms_norm_eps));
  q_proj = register_module("q_proj", linear(D, K));
  k_proj = register_module("k_proj", linear(D, K));
  to_hidden = register_module("to_hidden", linear(D, 2 * E));
  to_out = register_module("to_out", linear(E, D));
  group_norm = register_module("group_norm", RMSNorm(dv_, c.rms_norm_eps));
  if (c.dense()) {
    // Every layer owns the dense parameters (as in the reference); layer 0 has nothing to fuse.
    k_select = register_module("k_select", SelectiveTransition(D, c.dense_hidden_size(), K));
    v_select = register_module("v_select", SelectiveTransition(D, c.dense_hidden_size(), E));
    k_norm = register_module("k_norm", RMSNorm(K, c.rms_norm_eps));
    v_norm = register_module("v_norm", RMSNorm(E, c.rms_norm_eps));
  }
  dropout = register_module("dropout", torch::nn::Dropout(c.dropout));
  reset_parameters(c);
}

void RetentionBlockImpl::reset_parameters(const ModelConfig& c) {
  torch::NoGradGuard no_grad;
  const double small = std::pow(2.0, -2.5);
  for (auto* layer : {&q_proj, &k_proj, &to_hidden}) torch::nn::init::xavier_uniform_((*layer)->weight, small);
  torch::nn::init::xavier_uniform_(to_out->weight, std::pow(2.0, -1.0));
  if (c.dense()) {
    for (auto* select : {&k_select, &v_select}) {
      torch::nn::init::xavier_uniform_((*select)->fc1->weight, small);
      torch::nn::init::xavier_uniform_((*select)->fc2->weight, small);
    }
  }
}

torch::Tensor RetentionBlockImpl::split_heads(const torch::Tensor& x) const {
  return x.unflatten(-1, {heads_, -1}).transpose(1, 2);
}

torch::Tensor RetentionBlockImpl::rotate(const torch::Tensor& x, const std::pair<torch::Tensor, torch::Tensor>& rotation) {
  // (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin) for each interleaved pair: the pairs swapped, times the
  // signed sin.
  auto swapped = x.unflatten(-1, {-1, 2}).flip(-1).flatten(-2);
  return torch::addcmul(x * rotation.first, swapped, rotation.second);
}

torch::Tensor RetentionBlockImpl::forward(const torch::Tensor& h, const std::vector<DenseHidden>& previous,
                                          DenseHidden& hidden, LayerState* state, const torch::Tensor& position,
                                          const ForwardOptions& options) {
  if (decays_.device() != h.device()) {
    // Moved once, beside the activations: a decode step (captured in a CUDA graph) then copies nothing
    // from the host. Not buffers, so that model.to(dtype) leaves them float64.
    decays_ = decays_.to(h.device());
  }
  const auto acc = accumulation_type(h.scalar_type());
  auto x = input_layernorm(h);                                                  // (B, T, D)
  auto q = torch::silu(q_proj(x));                                              // (B, T, K)
  auto k = torch::silu(k_proj(x)) * (1.0 / std::sqrt(static_cast<double>(dk_)));  // (B, T, K)
  auto value_gate = torch::silu(to_hidden(x)).chunk(2, -1);
  auto v = value_gate[0], g = value_gate[1];                                    // (B, T, E) each
  // The retention's operand dtype is the projections': bfloat16/float16 under autocast (where h stays
  // float32), so that the kernels run on the tensor cores; otherwise the activations' own.
  const auto compute = v.scalar_type();
  hidden = {k, v};
  if (k_select && index_ > 0 && !previous.empty()) {
    std::vector<torch::Tensor> keys, values;
    for (const DenseHidden& p : previous) {
      keys.push_back(p.at(0));
      values.push_back(p.at(1));
    }
    k = hidden_fusion(k, k_select(x), keys, k_norm);
    v = hidden_fusion(v, v_select(x), values, v_norm);
  }
  RetentionArgs args;
  // Rotated in the accumulation dtype, then handed over in the operand dtype: the retention forms
  // accumulate in float32 themselves, and the kernels run bfloat16/float16 on the tensor cores.
  const auto rotation = rotation_->at(position, h.size(1), acc, /*recompute=*/index_ == 0);
  // (cos and sin are in the accumulation dtype, so the products promote: no separate cast of q and k.)
  args.q = rotate(split_heads(q), rotation).to(compute);  // (B, H, T, dk)
  args.k = rotate(split_heads(k), rotation).to(compute);  // (B, H, T, dk)
  args.v = split_heads(v).to(compute);                    // (B, H, T, dv)
  args.decays = decays_;
  args.offset = position;
  args.chunk_size = options.chunk_size > 0 ? options.chunk_size : chunk_size_;
  const RetentionForm form = options.form == SequenceForm::kParallel    ? retention_parallel
                             : options.form == SequenceForm::kChunkwise ? retention_chunkwise
                                                                        : retention_recurrent;
  auto o = form(args, state != nullptr ? &state->kv : nullptr);  // (B, H, T, dv)
  o = group_norm(o).transpose(1, 2).flatten(2).to(compute);      // (B, T, E)
  return h + dropout(to_out(o * g));
}

torch::Tensor RetentionBlockImpl::decode_step(torch::Tensor h, const std::vector<DenseHidden>& previous,
                                              DenseHidden& hidden, LayerState& state, const torch::Tensor& position) {
#ifdef DENSESSM_WITH_CUDA
  if (decays_.device() != h.device()) decays_ = decays_.to(h.device());
  const int64_t K = heads_ * dk_, E = heads_ * dv_;
  std::vector<torch::Tensor> weights{q_proj->weight, k_proj->weight, to_hidden->weight};
  if (k_select) {
    weights.push_back(k_select->fc1->weight);
    weights.push_back(v_select->fc1->weight);
  }
  const torch::Tensor& projection = decode_projection_.matrix(weights);
  auto x = cuda::rms_norm(h, input_layernorm->weight, input_layernorm->eps());  // (B, D)
  cuda::RetentionPrepareArgs args;
  args.y = cuda::small_matmul(x, projection);  // (B, 2K + 2E [+ 2 r]): q, k, v, gate [, the transitions' inner]
  args.heads = heads_;
  args.key_dim = K;
  args.value_dim = E;
  if (k_select && index_ > 0 && !previous.empty()) {
    const int64_t r = k_select->fc1->weight.size(0);
    // (B, K) and (B, E), before the gates' own SiLU
    auto gates = cuda::transition_gates(args.y, 2 * K + 2 * E, r, {k_select->fc2->weight, v_select->fc2->weight});
    args.k_gate = gates[0];
    args.v_gate = gates[1];
    args.previous_k = sum_of_hidden(previous, 0);
    args.previous_v = sum_of_hidden(previous, 1);
    args.k_norm = k_norm->weight;
    args.v_norm = v_norm->weight;
    args.eps = k_norm->eps();
  }
  args.angles = rotation_->angles(h.device());
  args.position = position;
  const auto prepared = cuda::retention_decode_prepare(args);
  hidden = {prepared.hidden_k, prepared.hidden_v};
  if (!state.kv.defined()) state = initial_state(h.size(0), h.device(), h.scalar_type());
  if (state.kv.scalar_type() != torch::kFloat || !state.kv.is_contiguous()) state.kv = state.kv.to(torch::kFloat).contiguous();
  auto o = cuda::retention_decode_step(prepared.q, prepared.k, prepared.v, state.kv, decays_, position);  // (B, H, dv)
  auto gated = cuda::retention_decode_output(o, group_norm->weight, prepared.gate, group_norm->eps());  // (B, E)
  return cuda::small_matmul(gated, to_out->weight, h);
#else
  (void)h, (void)previous, (void)hidden, (void)state, (void)position;
  throw std::logic_error("RetentionBlock::decode_step needs DenseSSM built with CUDA");
#endif
}

LayerState RetentionBlockImpl::initial_state(int64_t batch, torch::Device device, torch::ScalarType dtype) const {
  LayerState s;
  s.kv = torch::zeros({batch, heads_, dk_, dv_}, torch::TensorOptions().device(device).dtype(accumulation_type(dtype)));
  return s;
}

}  // namespace densessm
