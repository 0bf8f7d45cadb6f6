#include "densessm/retention.h"

#include <cmath>

#include <torch/torch.h>

#include "ops/fallback.h"

#ifdef DENSESSM_WITH_CUDA
#include "ops/cuda/retention_cuda.h"
#endif

namespace densessm {
namespace {

torch::ScalarType accumulation_type(const torch::Tensor& t) {
  return t.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
}

std::string dtypes(const RetentionArgs& a) {
  return std::string("q, k, v in ") + c10::toString(a.q.scalar_type()) + ", " + c10::toString(a.k.scalar_type()) +
         ", " + c10::toString(a.v.scalar_type()) + "; the kernels take one of Float, Half, BFloat16 for all three";
}

void check_args(const RetentionArgs& a) {
  TORCH_CHECK(a.q.dim() == 4 && a.k.dim() == 4 && a.v.dim() == 4, "retention: q, k, v must be (B, H, T, d), got ",
              a.q.sizes(), ", ", a.k.sizes(), ", ", a.v.sizes());
  TORCH_CHECK(a.q.sizes() == a.k.sizes(), "retention: q ", a.q.sizes(), " and k ", a.k.sizes(), " differ");
  TORCH_CHECK(a.v.size(0) == a.q.size(0) && a.v.size(1) == a.q.size(1) && a.v.size(2) == a.q.size(2),
              "retention: v ", a.v.sizes(), " does not match q ", a.q.sizes());
  TORCH_CHECK(a.decays.dim() == 1 && a.decays.size(0) == a.q.size(1), "retention: decays must be (H = ", a.q.size(1),
              "), got ", a.decays.sizes());
  TORCH_CHECK(!a.offset.defined() || (a.offset.dim() == 1 && a.offset.size(0) == a.q.size(0)),
              "retention: offset must be (B = ", a.q.size(0), ")");
  TORCH_CHECK(a.q.size(2) > 0, "retention: the sequence is empty (T = 0)");
  TORCH_CHECK(a.chunk_size > 0, "retention: chunk_size must be positive");
}

// Inputs in the accumulation dtype, decays as (1, H, 1, 1) and the initial state (zeros if none).
struct Prepared {
  torch::Tensor q, k, v, state;
  torch::Tensor log_decay;  // (1, H, 1, 1)
  torch::Tensor offset;     // (B) int64 on the inputs' device
};

Prepared prepare(const RetentionArgs& a, const torch::Tensor* state) {
  check_args(a);
  const auto acc = accumulation_type(a.q);
  const auto opts = a.q.options().dtype(acc);
  const int64_t B = a.q.size(0), H = a.q.size(1), dk = a.q.size(3), dv = a.v.size(3);
  Prepared p;
  p.q = a.q.to(acc);
  p.k = a.k.to(acc);
  p.v = a.v.to(acc);
  p.log_decay = a.decays.to(a.q.device(), torch::kDouble).log().to(acc).view({1, H, 1, 1});
  p.offset = a.offset.defined() ? a.offset.to(a.q.device(), torch::kLong) : torch::zeros({B}, opts.dtype(torch::kLong));
  if (state != nullptr && state->defined()) {
    TORCH_CHECK(state->sizes() == torch::IntArrayRef({B, H, dk, dv}), "retention: state must be (", B, ", ", H, ", ",
                dk, ", ", dv, "), got ", state->sizes());
    p.state = state->to(acc);
  } else {
    p.state = torch::zeros({B, H, dk, dv}, opts);
  }
  return p;
}

// 1 / sqrt(w_n) for the absolute positions n = offset + t, t in [t0, t0 + T): (B, H, T, 1).
torch::Tensor inverse_norm(const Prepared& p, int64_t t0, int64_t T) {
  auto n = (p.offset.view({-1, 1, 1, 1}) + t0 +
            torch::arange(T, p.offset.options()).view({1, 1, T, 1})).to(p.q.scalar_type());  // (B, 1, T, 1)
  // w_n = (1 - g^(n+1)) / (1 - g), written with expm1 to stay accurate for g close to 1.
  auto weight = torch::expm1((n + 1) * p.log_decay) / torch::expm1(p.log_decay);
  return weight.rsqrt();
}

// Decay mask D[t, s] = g^(t-s) for s <= t, else 0: (1, H, T, T).
torch::Tensor decay_mask(const torch::Tensor& log_decay, int64_t T) {
  auto idx = torch::arange(T, log_decay.options());
  auto diff = idx.view({T, 1}) - idx.view({1, T});  // (T, T)
  auto mask = torch::exp(diff.view({1, 1, T, T}) * log_decay);
  return mask.masked_fill(diff.view({1, 1, T, T}) < 0, 0);
}

void write_back(torch::Tensor* state, const torch::Tensor& value) {
  if (state != nullptr) *state = value;
}

#ifdef DENSESSM_WITH_CUDA
// The step kernel has no backward: it takes the recurrent form only when no gradient is wanted.
bool wants_grad(const RetentionArgs& a, const torch::Tensor* state) {
  return torch::GradMode::is_enabled() && (a.q.requires_grad() || a.k.requires_grad() || a.v.requires_grad() ||
                                           (state != nullptr && state->defined() && state->requires_grad()));
}
#endif

}  // namespace

torch::Tensor retention_decays(int64_t num_heads) {
  auto h = torch::arange(num_heads, torch::kDouble);
  return 1 - torch::pow(2.0, -5 - h);
}

torch::Tensor retention_parallel(const RetentionArgs& a, torch::Tensor* state) {
  auto p = prepare(a, state);
  const int64_t T = p.q.size(2);
  auto idx = torch::arange(T, p.log_decay.options());
  auto scores = torch::matmul(p.q, p.k.transpose(-1, -2)) * decay_mask(p.log_decay, T);  // (B, H, T, T)
  auto out = torch::matmul(scores, p.v);                                                  // (B, H, T, dv)
  auto decay_in = torch::exp((idx + 1).view({1, 1, T, 1}) * p.log_decay);  // g^(t+1): (1, H, T, 1)
  out = out + torch::matmul(p.q * decay_in, p.state);
  if (state != nullptr) {
    auto decay_out = torch::exp((T - 1 - idx).view({1, 1, T, 1}) * p.log_decay);  // g^(T-1-s)
    write_back(state, p.state * torch::exp(T * p.log_decay) + torch::matmul((p.k * decay_out).transpose(-1, -2), p.v));
  }
  return (out * inverse_norm(p, 0, T)).to(a.q.scalar_type());
}

torch::Tensor retention_chunkwise(const RetentionArgs& a, torch::Tensor* state) {
#ifdef DENSESSM_WITH_CUDA
  check_args(a);
  if (cuda::can_run_retention(a)) return cuda::retention_chunkwise(a, state);
#endif
  note_reference_fallback("chunkwise retention", a.q, [&] { return dtypes(a); });
  auto p = prepare(a, state);
  const int64_t T = p.q.size(2);
  auto kv = p.state;
  std::vector<torch::Tensor> outputs;
  for (int64_t t0 = 0; t0 < T; t0 += a.chunk_size) {
    const int64_t n = std::min(a.chunk_size, T - t0);
    auto q = p.q.narrow(2, t0, n), k = p.k.narrow(2, t0, n), v = p.v.narrow(2, t0, n);  // (B, H, n, d)
    auto idx = torch::arange(n, p.log_decay.options());
    auto inner = torch::matmul(torch::matmul(q, k.transpose(-1, -2)) * decay_mask(p.log_decay, n), v);
    auto cross = torch::matmul(q * torch::exp((idx + 1).view({1, 1, n, 1}) * p.log_decay), kv);
    outputs.push_back((inner + cross) * inverse_norm(p, t0, n));
    auto decay_out = torch::exp((n - 1 - idx).view({1, 1, n, 1}) * p.log_decay);
    kv = kv * torch::exp(n * p.log_decay) + torch::matmul((k * decay_out).transpose(-1, -2), v);
  }
  write_back(state, kv);
  return torch::cat(outputs, 2).to(a.q.scalar_type());
}

torch::Tensor retention_recurrent(const RetentionArgs& a, torch::Tensor* state) {
#ifdef DENSESSM_WITH_CUDA
  check_args(a);
  if (cuda::can_run_retention(a) && !wants_grad(a, state)) return cuda::retention_recurrent(a, state);
#endif
  note_reference_fallback("recurrent retention", a.q, [&] {
    return wants_grad(a, state) ? std::string("gradients needed: the recurrent kernel has no backward; train in the "
                                              "chunkwise or parallel form")
                                : dtypes(a);
  });
  auto p = prepare(a, state);
  const int64_t T = p.q.size(2);
  auto decay = torch::exp(p.log_decay);  // (1, H, 1, 1)
  auto kv = p.state;
  std::vector<torch::Tensor> outputs;
  for (int64_t t = 0; t < T; ++t) {
    auto q = p.q.narrow(2, t, 1), k = p.k.narrow(2, t, 1), v = p.v.narrow(2, t, 1);  // (B, H, 1, d)
    kv = kv * decay + torch::matmul(k.transpose(-1, -2), v);
    outputs.push_back(torch::matmul(q, kv) * inverse_norm(p, t, 1));
  }
  write_back(state, kv);
  return torch::cat(outputs, 2).to(a.q.scalar_type());
}

}  // namespace densessm
