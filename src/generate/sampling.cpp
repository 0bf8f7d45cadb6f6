#include "generate/sampling.h"

#include <limits>

#include <torch/torch.h>

namespace densessm {

torch::Tensor apply_repetition_penalty(const torch::Tensor& logits, const torch::Tensor& seen, double penalty) {
  if (penalty == 1.0) return logits;
  auto penalised = torch::where(logits > 0, logits / penalty, logits * penalty);
  return torch::where(seen, penalised, logits);
}

torch::Tensor filter_top_k(const torch::Tensor& logits, int64_t k) {
  if (k <= 0 || k >= logits.size(-1)) return logits;
  // The k-th largest value: the smallest of the top k (left unsorted: no sort needed).
  auto kth = std::get<0>(logits.topk(k, -1, /*largest=*/true, /*sorted=*/false)).amin(-1, /*keepdim=*/true);  // (B, 1)
  return logits.masked_fill(logits < kth, -std::numeric_limits<double>::infinity());
}

torch::Tensor filter_top_p(const torch::Tensor& logits, double p) {
  if (p >= 1.0) return logits;
  auto [sorted, order] = logits.sort(-1, /*descending=*/true);  // (B, V) each
  auto probs = sorted.softmax(-1);
  // A token goes when the tokens before it already reach p.
  auto drop_sorted = (probs.cumsum(-1) - probs) >= p;
  auto drop = torch::zeros_like(drop_sorted).scatter(-1, order, drop_sorted);
  return logits.masked_fill(drop, -std::numeric_limits<double>::infinity());
}

torch::Tensor choose_next(const torch::Tensor& logits, torch::Tensor& seen, const torch::Tensor& noise,
                          const SamplingParams& params) {
  // Low-precision logits are compared in float32; float64 ones (tests) stay exact.
  const auto type = logits.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto scores = apply_repetition_penalty(logits.to(type), seen, params.repetition_penalty);  // (B, V)
  torch::Tensor next;
  if (params.greedy()) {
    next = scores.argmax(-1);
  } else {
    scores = filter_top_p(filter_top_k(scores / params.temperature, params.top_k), params.top_p);
    next = (scores.softmax(-1) / noise).argmax(-1);  // the exponential race
  }
  seen.scatter_(1, next.unsqueeze(1), true);
  return next;  // (B)
}

}  // namespace densessm
