#include "ops/cuda/selective_scan_cuda.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include "densessm/kernels.h"
#include "ops/cuda/kernel_call.h"
#include "selective_scan.h"

namespace densessm::cuda {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The inputs as the kernels take them: activations contiguous in u's dtype, A, D and delta_bias float32.
struct ScanInputs {
  torch::Tensor u, delta, A, Bm, Cm, D, z, delta_bias;
  bool delta_softplus = true;

  ScanInputs(const SelectiveScanArgs& a)
      : u(a.u.contiguous()),
        delta(prepared(a.delta, a.u.scalar_type())),
        A(prepared(a.A, torch::kFloat)),
        Bm(prepared(a.Bm, a.u.scalar_type())),
        Cm(prepared(a.Cm, a.u.scalar_type())),
        D(prepared(a.Dskip, torch::kFloat)),
        z(prepared(a.z, a.u.scalar_type())),
        delta_bias(prepared(a.delta_bias, torch::kFloat)),
        delta_softplus(a.delta_softplus) {}

  kernels::ScanParams params() const {
    return {u.data_ptr(), delta.data_ptr(), pointer(z), A.data_ptr<float>(), Bm.data_ptr(), Cm.data_ptr(),
            float_pointer(D), float_pointer(delta_bias), nullptr, nullptr, nullptr, u.size(0), u.size(1), u.size(2),
            A.size(1), delta_softplus, kernel_dtype(u.scalar_type())};
  }
};

// y (B, C, T); from `initial` (B, C, N) float32 when defined, writing the last state to `final` when given.
torch::Tensor scan_forward(const ScanInputs& in, const torch::Tensor& initial, torch::Tensor* final) {
  const c10::cuda::CUDAGuard guard(in.u.device());
  auto y = torch::empty_like(in.u);  // (B, C, T)
  auto p = in.params();
  p.initial_state = float_pointer(initial);
  if (final != nullptr) {
    *final = torch::empty({in.u.size(0), in.u.size(1), in.A.size(1)}, in.A.options());  // (B, C, N)
    p.final_state = final->data_ptr<float>();
  }
  p.out = y.data_ptr();
  check(kernels::selective_scan_forward(p, c10::cuda::getCurrentCUDAStream()), "selective_scan forward");
  return y;
}

// Autograd around the kernels for the sequence without a state (training). The inputs it saves are the
// prepared ones: the backward needs them contiguous anyway.
class SelectiveScanFunction : public torch::autograd::Function<SelectiveScanFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& u, const torch::Tensor& delta,
                               const torch::Tensor& A, const torch::Tensor& Bm, const torch::Tensor& Cm,
                               const torch::Tensor& D, const torch::Tensor& z, const torch::Tensor& delta_bias,
                               bool delta_softplus) {
    SelectiveScanArgs a{u, delta, A, Bm, Cm, D, z, delta_bias, delta_softplus};
    ScanInputs in(a);
    ctx->saved_data["delta_softplus"] = delta_softplus;
    // Each original's dtype, for the gradients (the kernels compute in the prepared dtypes).
    ctx->saved_data["dtypes"] = std::vector<int64_t>{static_cast<int64_t>(delta.scalar_type()),
                                                     static_cast<int64_t>(A.scalar_type()),
                                                     static_cast<int64_t>(Bm.scalar_type()),
                                                     static_cast<int64_t>(Cm.scalar_type()),
                                                     D.defined() ? static_cast<int64_t>(D.scalar_type()) : -1,
                                                     z.defined() ? static_cast<int64_t>(z.scalar_type()) : -1,
                                                     delta_bias.defined() ? static_cast<int64_t>(delta_bias.scalar_type()) : -1};
    ctx->save_for_backward({in.u, in.delta, in.A, in.Bm, in.Cm, in.D, in.z, in.delta_bias});
    return scan_forward(in, torch::Tensor(), nullptr);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    SelectiveScanArgs a{saved[0], saved[1], saved[2], saved[3], saved[4], saved[5], saved[6], saved[7],
                        ctx->saved_data["delta_softplus"].toBool()};
    const ScanInputs in(a);
    const c10::cuda::CUDAGuard guard(in.u.device());
    const int64_t B = in.u.size(0), C = in.u.size(1), T = in.u.size(2), N = in.A.size(1);
    const int64_t blocks = kernels::selective_scan_backward_channel_blocks(C, N);
    auto f32 = in.A.options();
    auto gy = grads[0].to(in.u.scalar_type()).contiguous();
    auto gu = torch::empty_like(in.u), gdelta = torch::empty_like(in.u);                   // (B, C, T)
    auto gz = in.z.defined() ? torch::empty_like(in.u) : torch::Tensor();                  // (B, C, T)
    auto gA = torch::empty({B, C, N}, f32);                                                 // per batch row
    auto gBm = torch::empty({B, blocks, N, T}, f32), gCm = torch::empty({B, blocks, N, T}, f32);  // per channel block
    auto gD = in.D.defined() ? torch::empty({B, C}, f32) : torch::Tensor();                // per batch row
    auto gbias = in.delta_bias.defined() ? torch::empty({B, C}, f32) : torch::Tensor();    // per batch row
    auto scratch = torch::empty({kernels::selective_scan_backward_scratch(B, C, T, N)}, f32);  // checkpoints
    kernels::ScanBackwardParams q{in.params(), gy.data_ptr(), gu.data_ptr(), gdelta.data_ptr(), mutable_pointer(gz),
                                  gA.data_ptr<float>(), gBm.data_ptr<float>(), gCm.data_ptr<float>(),
                                  gD.defined() ? gD.data_ptr<float>() : nullptr,
                                  gbias.defined() ? gbias.data_ptr<float>() : nullptr, scratch.data_ptr<float>()};
    check(kernels::selective_scan_backward(q, c10::cuda::getCurrentCUDAStream()), "selective_scan backward");

    const auto dtypes = ctx->saved_data["dtypes"].toIntVector();
    auto as = [&](const torch::Tensor& g, size_t i) {
      return g.defined() ? g.to(static_cast<torch::ScalarType>(dtypes[i])) : torch::Tensor();
    };
    return {gu,
            as(gdelta, 0),
            as(gA.sum(0), 1),
            as(gBm.sum(1), 2),
            as(gCm.sum(1), 3),
            as(gD.defined() ? gD.sum(0) : gD, 4),
            as(gz, 5),
            as(gbias.defined() ? gbias.sum(0) : gbias, 6),
            torch::Tensor()};
  }
};

}  // namespace

bool can_run_scan(const SelectiveScanArgs& a, const torch::Tensor* state) {
  if (!kernels_enabled() || !a.u.is_cuda() || !kernel_dtype_supported(a.u.scalar_type())) return false;
  // The kernels' limits (grid rows, 32-bit offsets within a block of rows); the reference form runs beyond.
  if (a.A.size(1) > kernels::kScanMaxStates || a.u.size(0) > 65535 || a.u.size(2) >= (int64_t{1} << 22)) return false;
  for (const torch::Tensor* t : {&a.delta, &a.A, &a.Bm, &a.Cm, &a.Dskip, &a.z, &a.delta_bias}) {
    if (t->defined() && t->device() != a.u.device()) return false;
  }
  if (state != nullptr && state->defined() && state->device() != a.u.device()) return false;
  const bool grad = wants_grad({&a.u, &a.delta, &a.A, &a.Bm, &a.Cm, &a.Dskip, &a.z, &a.delta_bias});
  return state == nullptr || !(grad || (state->defined() && wants_grad({state})));
}

torch::Tensor selective_scan(const SelectiveScanArgs& a, torch::Tensor* state) {
  if (state == nullptr &&
      wants_grad({&a.u, &a.delta, &a.A, &a.Bm, &a.Cm, &a.Dskip, &a.z, &a.delta_bias})) {
    return SelectiveScanFunction::apply(a.u, a.delta, a.A, a.Bm, a.Cm, a.Dskip, a.z, a.delta_bias, a.delta_softplus);
  }
  const torch::NoGradGuard no_grad;
  const ScanInputs in(a);
  const torch::Tensor initial = state != nullptr && state->defined() ? state->to(torch::kFloat).contiguous()
                                                                     : torch::Tensor();
  return scan_forward(in, initial, state);
}

}  // namespace densessm::cuda
