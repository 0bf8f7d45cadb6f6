#include "densessm/selective_scan.h"

#include <torch/torch.h>

#include "ops/fallback.h"

#ifdef DENSESSM_WITH_CUDA
#include "ops/cuda/mamba_step_cuda.h"
#include "ops/cuda/selective_scan_cuda.h"
#endif

namespace densessm {
namespace {

torch::ScalarType accumulation_type(const torch::Tensor& t) {
  return t.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
}

torch::Tensor effective_delta(const SelectiveScanArgs& a, torch::ScalarType acc, bool sequence) {
  auto delta = a.delta.to(acc);
  if (a.delta_bias.defined()) delta = delta + (sequence ? a.delta_bias.to(acc).view({1, -1, 1}) : a.delta_bias.to(acc).view({1, -1}));
  return a.delta_softplus ? torch::nn::functional::softplus(delta) : delta;
}

torch::Tensor finish_output(const SelectiveScanArgs& a, torch::Tensor y, torch::ScalarType acc, bool sequence) {
  const auto u = a.u.to(acc);
  if (a.Dskip.defined()) y = y + u * (sequence ? a.Dskip.to(acc).view({1, -1, 1}) : a.Dskip.to(acc).view({1, -1}));
  if (a.z.defined()) y = y * torch::silu(a.z.to(acc));
  return y.to(a.u.scalar_type());
}

}  // namespace

torch::Tensor selective_scan(const SelectiveScanArgs& a, torch::Tensor* state) {
  TORCH_CHECK(a.u.dim() == 3, "selective_scan: u must be (B, C, T), got ", a.u.sizes());
  const int64_t B = a.u.size(0), C = a.u.size(1), T = a.u.size(2), N = a.A.size(1);
  TORCH_CHECK(T > 0, "selective_scan: the sequence is empty (T = 0)");
  TORCH_CHECK(a.delta.sizes() == a.u.sizes(), "selective_scan: delta ", a.delta.sizes(), " must match u ", a.u.sizes());
  TORCH_CHECK(a.A.dim() == 2 && a.A.size(0) == C, "selective_scan: A must be (C = ", C, ", N), got ", a.A.sizes());
  TORCH_CHECK(a.Bm.sizes() == torch::IntArrayRef({B, N, T}) && a.Cm.sizes() == a.Bm.sizes(),
              "selective_scan: Bm and Cm must be (", B, ", ", N, ", ", T, "), got ", a.Bm.sizes(), " and ", a.Cm.sizes());
  TORCH_CHECK(!a.z.defined() || a.z.sizes() == a.u.sizes(), "selective_scan: z must match u");
  TORCH_CHECK(!a.Dskip.defined() || a.Dskip.sizes() == torch::IntArrayRef({C}), "selective_scan: Dskip must be (", C,
              "), got ", a.Dskip.sizes());
  TORCH_CHECK(!a.delta_bias.defined() || a.delta_bias.sizes() == torch::IntArrayRef({C}),
              "selective_scan: delta_bias must be (", C, "), got ", a.delta_bias.sizes());
  TORCH_CHECK(state == nullptr || !state->defined() || state->sizes() == torch::IntArrayRef({B, C, N}),
              "selective_scan: state must be (", B, ", ", C, ", ", N, "), got ", state->sizes());
#ifdef DENSESSM_WITH_CUDA
  if (cuda::can_run_scan(a, state)) return cuda::selective_scan(a, state);
#endif
  note_reference_fallback("selective scan", a.u, [&] {
    return std::string("u in ") + c10::toString(a.u.scalar_type()) + ", state size " + std::to_string(N) +
           " (at most 64), " + std::to_string(B) + " x " + std::to_string(C) + " x " + std::to_string(T) +
           (state != nullptr ? ", a state passed with gradients needed" : "");
  });
  const auto acc = accumulation_type(a.u);
  auto delta = effective_delta(a, acc, /*sequence=*/true);                // (B, C, T)
  auto u = a.u.to(acc);
  auto A = a.A.to(acc);
  auto Bm = a.Bm.to(acc), Cm = a.Cm.to(acc);
  auto decay = torch::exp(delta.unsqueeze(-1) * A.view({1, C, 1, N}));   // (B, C, T, N)
  auto input = (delta * u).unsqueeze(-1) * Bm.transpose(1, 2).unsqueeze(1);  // (B, C, T, N)
  torch::Tensor h = (state != nullptr && state->defined()) ? state->to(acc) : torch::zeros({B, C, N}, u.options());
  std::vector<torch::Tensor> ys;
  ys.reserve(T);
  for (int64_t t = 0; t < T; ++t) {
    h = decay.select(2, t) * h + input.select(2, t);                     // (B, C, N)
    ys.push_back(torch::matmul(h, Cm.select(2, t).unsqueeze(-1)).squeeze(-1));  // (B, C)
  }
  if (state != nullptr) *state = h;
  return finish_output(a, torch::stack(ys, 2), acc, /*sequence=*/true);
}

torch::Tensor selective_scan_step(const SelectiveScanArgs& a, torch::Tensor& state) {
  TORCH_CHECK(a.u.dim() == 2, "selective_scan_step: u must be (B, C), got ", a.u.sizes());
  TORCH_CHECK(state.defined() && state.dim() == 3, "selective_scan_step: state must be (B, C, N)");
#ifdef DENSESSM_WITH_CUDA
  if (cuda::can_run_step(a.u, {a.delta, a.A, a.Bm, a.Cm, a.Dskip, a.z, a.delta_bias, state})) {
    return cuda::selective_scan_step(a, state);
  }
#endif
  note_reference_fallback("selective scan step", a.u, [&] { return std::string("gradients needed or dtype ") +
                                                                    c10::toString(a.u.scalar_type()); });
  const auto acc = accumulation_type(a.u);
  auto delta = effective_delta(a, acc, /*sequence=*/false);  // (B, C)
  auto decay = torch::exp(delta.unsqueeze(-1) * a.A.to(acc).unsqueeze(0));              // (B, C, N)
  auto input = (delta * a.u.to(acc)).unsqueeze(-1) * a.Bm.to(acc).unsqueeze(1);       // (B, C, N)
  state = decay * state.to(acc) + input;
  auto y = torch::matmul(state, a.Cm.to(acc).unsqueeze(-1)).squeeze(-1);              // (B, C)
  return finish_output(a, y, acc, /*sequence=*/false);
}

torch::Tensor causal_conv1d(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                            torch::Tensor* state) {
  TORCH_CHECK(x.dim() == 3, "causal_conv1d: x must be (B, C, T), got ", x.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == x.size(1), "causal_conv1d: weight must be (C = ", x.size(1),
              ", W), got ", weight.sizes());
  const int64_t B = x.size(0), C = x.size(1), W = weight.size(1);
  TORCH_CHECK(!bias.defined() || bias.sizes() == torch::IntArrayRef({C}), "causal_conv1d: bias must be (", C,
              "), got ", bias.sizes());
  TORCH_CHECK(state == nullptr || !state->defined() || state->sizes() == torch::IntArrayRef({B, C, W - 1}),
              "causal_conv1d: state must be (", B, ", ", C, ", ", W - 1, "), got ", state->sizes());
#ifdef DENSESSM_WITH_CUDA
  if (cuda::can_run_conv(x, weight, bias, state)) return cuda::causal_conv1d(x, weight, bias, state);
#endif
  note_reference_fallback("causal conv1d", x, [&] {
    return std::string("x in ") + c10::toString(x.scalar_type()) + ", width " + std::to_string(W) +
           " (2 to 4), " + std::to_string(B) + " x " + std::to_string(C) +
           (state != nullptr ? ", a state passed with gradients needed" : "");
  });
  torch::Tensor past = (state != nullptr && state->defined()) ? state->to(x.scalar_type())
                                                               : torch::zeros({B, C, W - 1}, x.options());
  auto padded = torch::cat({past, x}, 2);  // (B, C, W-1+T)
  auto out = torch::nn::functional::conv1d(padded, weight.unsqueeze(1),
                                           torch::nn::functional::Conv1dFuncOptions().bias(bias).groups(C));
  if (state != nullptr) *state = padded.narrow(2, padded.size(2) - (W - 1), W - 1);
  return torch::silu(out);
}

torch::Tensor causal_conv1d_step(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                 torch::Tensor& state) {
  TORCH_CHECK(x.dim() == 2, "causal_conv1d_step: x must be (B, C), got ", x.sizes());
  TORCH_CHECK(state.defined() && state.dim() == 3 && state.size(2) == weight.size(1) - 1,
              "causal_conv1d_step: state must be (B, C, W-1 = ", weight.size(1) - 1, ")");
#ifdef DENSESSM_WITH_CUDA
  if (cuda::can_run_step(x, {weight, bias, state})) return cuda::causal_conv1d_step(x, weight, bias, state);
#endif
  note_reference_fallback("causal conv1d step", x, [&] { return std::string("gradients needed or dtype ") +
                                                                 c10::toString(x.scalar_type()); });
  auto window = torch::cat({state.to(x.scalar_type()), x.unsqueeze(-1)}, 2);  // (B, C, W)
  auto out = (window * weight.unsqueeze(0)).sum(-1);
  if (bias.defined()) out = out + bias;
  state = window.narrow(2, 1, window.size(2) - 1);
  return torch::silu(out);
}

}  // namespace densessm
