// The causal convolution's kernels (kernels/causal_conv1d.h) behind densessm::causal_conv1d, with autograd.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include "causal_conv1d.h"
#include "densessm/kernels.h"
#include "ops/cuda/kernel_call.h"
#include "ops/cuda/selective_scan_cuda.h"

namespace densessm::cuda {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

kernels::ConvParams conv_params(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                const torch::Tensor& initial) {
  return {x.data_ptr(), weight.data_ptr<float>(), float_pointer(bias), pointer(initial), nullptr,
          x.size(0), x.size(1), x.size(2), weight.size(1), kernel_dtype(x.scalar_type())};
}

// silu(conv(x)) (B, C, T) for contiguous x, float32 weight and bias, initial (B, C, W-1) in x's dtype.
torch::Tensor conv_forward(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                           const torch::Tensor& initial) {
  const c10::cuda::CUDAGuard guard(x.device());
  auto out = torch::empty_like(x);  // (B, C, T)
  auto p = conv_params(x, weight, bias, initial);
  p.out = out.data_ptr();
  check(kernels::causal_conv1d_forward(p, c10::cuda::getCurrentCUDAStream()), "causal_conv1d forward");
  return out;
}

class CausalConv1dFunction : public torch::autograd::Function<CausalConv1dFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias) {
    auto xc = x.contiguous();
    auto w = prepared(weight, torch::kFloat), b = prepared(bias, torch::kFloat);
    ctx->save_for_backward({xc, w, b, weight, bias});
    return conv_forward(xc, w, b, torch::Tensor());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &w = saved[1], &b = saved[2], &weight = saved[3], &bias = saved[4];
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t B = x.size(0), C = x.size(1), W = w.size(1);
    auto gy = grads[0].to(x.scalar_type()).contiguous();
    auto gx = torch::empty_like(x);  // (B, C, T)
    auto partial = torch::empty({B, C, kernels::causal_conv1d_backward_tiles(x.size(2)), W + 1},
                                w.options());  // (B, C, tiles, W + 1): weight grads, bias grad
    kernels::ConvBackwardParams q{conv_params(x, w, b, torch::Tensor()), gy.data_ptr(), gx.data_ptr(),
                                  partial.data_ptr<float>()};
    check(kernels::causal_conv1d_backward(q, c10::cuda::getCurrentCUDAStream()), "causal_conv1d backward");
    auto sums = partial.sum(torch::IntArrayRef{0, 2});  // (C, W + 1)
    return {gx, sums.narrow(1, 0, W).to(weight.scalar_type()),
            bias.defined() ? sums.select(1, W).to(bias.scalar_type()) : torch::Tensor()};
  }
};

}  // namespace

bool can_run_conv(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                  const torch::Tensor* state) {
  if (!kernels_enabled() || !x.is_cuda() || !kernel_dtype_supported(x.scalar_type())) return false;
  if (weight.size(1) < 2 || weight.size(1) > 4 || weight.device() != x.device()) return false;
  if (x.size(0) > 65535 || x.size(1) > 65535) return false;  // grid rows; the reference form runs beyond
  if (bias.defined() && bias.device() != x.device()) return false;
  if (state != nullptr && state->defined() && state->device() != x.device()) return false;
  const bool grad = wants_grad({&x, &weight, &bias});
  return state == nullptr || !(grad || (state->defined() && wants_grad({state})));
}

torch::Tensor causal_conv1d(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                            torch::Tensor* state) {
  if (state == nullptr && wants_grad({&x, &weight, &bias})) return CausalConv1dFunction::apply(x, weight, bias);
  const torch::NoGradGuard no_grad;
  const auto dtype = x.scalar_type();
  auto xc = x.contiguous();
  const torch::Tensor initial = state != nullptr && state->defined() ? prepared(*state, dtype) : torch::Tensor();
  auto out = conv_forward(xc, prepared(weight, torch::kFloat), prepared(bias, torch::kFloat), initial);
  if (state != nullptr) {
    // The last W-1 inputs, reaching into the old state when the sequence is shorter than that.
    const int64_t past = weight.size(1) - 1;
    auto before = initial.defined() ? initial : torch::zeros({x.size(0), x.size(1), past}, x.options());
    auto padded = torch::cat({before, xc}, 2);  // (B, C, W-1+T)
    *state = padded.narrow(2, padded.size(2) - past, past);
  }
  return out;
}

}  // namespace densessm::cuda
