#include "ops/cuda/retention_cuda.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include "chunk_retention.h"
#include "densessm/kernels.h"
#include "ops/cuda/kernel_call.h"
#include "retention_step.h"

namespace densessm::cuda {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// torch::autograd::Function::apply takes defined tensors only: an absent initial state or offset
// travels through it as an empty tensor, which the kernels see as a null pointer.
torch::Tensor or_empty(const torch::Tensor& t, const torch::TensorOptions& options) {
  return t.defined() ? t : torch::empty({0}, options);
}

template <typename T>
T* pointer_or_null(const torch::Tensor& t) {
  return t.defined() && t.numel() > 0 ? t.data_ptr<T>() : nullptr;
}

// The decays (H) float64 and offsets (B) int64 on the inputs' device (no copy when already there).
torch::Tensor device_decays(const RetentionArgs& a) { return a.decays.to(a.q.device(), torch::kDouble).contiguous(); }
torch::Tensor device_offset(const RetentionArgs& a) {
  return a.offset.defined() ? a.offset.to(a.q.device(), torch::kLong).contiguous() : a.offset;
}

// A given state as a contiguous float32 (B, H, dk, dv) tensor, or undefined when there is none.
torch::Tensor float_state(const torch::Tensor* state, const RetentionArgs& a) {
  if (state == nullptr || !state->defined()) return {};
  const int64_t B = a.q.size(0), H = a.q.size(1), dk = a.q.size(3), dv = a.v.size(3);
  TORCH_CHECK(state->sizes() == torch::IntArrayRef({B, H, dk, dv}), "retention: state must be (", B, ", ", H, ", ",
              dk, ", ", dv, "), got ", state->sizes());
  TORCH_CHECK(state->device() == a.q.device(), "retention: state on ", state->device(), ", inputs on ", a.q.device());
  return state->to(torch::kFloat).contiguous();
}

kernels::RetentionShape shape_of(const torch::Tensor& q, const torch::Tensor& v, const torch::Tensor& decays,
                                 const torch::Tensor& offset) {
  return {q.size(0), q.size(1), q.size(2), q.size(3), v.size(3), decays.data_ptr<double>(), pointer_or_null<int64_t>(offset),
          kernel_dtype(q.scalar_type())};
}

// Inputs: q, k, v, the initial state (or empty), decays, offset (or empty).
// Outputs: o (B, H, T, dv) and the final state (B, H, dk, dv) float32.
class ChunkRetention : public torch::autograd::Function<ChunkRetention> {
 public:
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const torch::Tensor& initial, const torch::Tensor& decays,
                               const torch::Tensor& offset) {
    const auto shape = shape_of(q, v, decays, offset);
    auto o = torch::empty_like(v);                                                         // (B, H, T, dv)
    auto final_state = torch::empty({shape.batch, shape.heads, shape.dk, shape.dv}, q.options().dtype(torch::kFloat));
    // A state per chunk for the two-pass forward, the chunks' scores for the fused one from dk 129 on, else nothing.
    auto workspace = torch::empty({kernels::chunk_retention_forward_workspace(shape)}, q.options());
    const kernels::RetentionForwardParams p{shape,          q.data_ptr(),     k.data_ptr(),
                                            v.data_ptr(),   pointer_or_null<float>(initial),
                                            o.data_ptr(),   final_state.data_ptr<float>(),
                                            workspace.numel() > 0 ? workspace.data_ptr() : nullptr};
    check(kernels::chunk_retention_forward(p, c10::cuda::getCurrentCUDAStream()), "chunk_retention_forward");
    ctx->save_for_backward({q, k, v, initial, decays, offset});
    return {o, final_state};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &k = saved[1], &v = saved[2], &initial = saved[3], &decays = saved[4], &offset = saved[5];
    const auto shape = shape_of(q, v, decays, offset);
    auto grad_o = grads[0].to(q.scalar_type()).contiguous();  // (B, H, T, dv)
    auto grad_final = grads[1].to(torch::kFloat).contiguous();  // (B, H, dk, dv)
    auto grad_q = torch::empty_like(q), grad_k = torch::empty_like(k), grad_v = torch::empty_like(v);
    torch::Tensor grad_initial;
    if (ctx->needs_input_grad(3)) grad_initial = torch::empty_like(initial);
    auto workspace = torch::empty({2 * kernels::chunk_retention_workspace(shape)}, q.options());  // forward and reverse states
    const kernels::RetentionBackwardParams p{shape,
                                             q.data_ptr(),
                                             k.data_ptr(),
                                             v.data_ptr(),
                                             pointer_or_null<float>(initial),
                                             grad_o.data_ptr(),
                                             grad_final.data_ptr<float>(),
                                             grad_q.data_ptr(),
                                             grad_k.data_ptr(),
                                             grad_v.data_ptr(),
                                             pointer_or_null<float>(grad_initial),
                                             workspace.data_ptr()};
    check(kernels::chunk_retention_backward(p, c10::cuda::getCurrentCUDAStream()), "chunk_retention_backward");
    return {grad_q, grad_k, grad_v, grad_initial, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

bool can_run_retention(const RetentionArgs& a) {
  if (!kernels_enabled() || !a.q.is_cuda()) return false;
  const auto t = a.q.scalar_type();
  return (t == torch::kFloat || t == torch::kHalf || t == torch::kBFloat16) && a.k.scalar_type() == t &&
         a.v.scalar_type() == t && a.k.device() == a.q.device() && a.v.device() == a.q.device();
}

torch::Tensor retention_chunkwise(const RetentionArgs& a, torch::Tensor* state) {
  const c10::cuda::CUDAGuard guard(a.q.device());
  const auto options = a.q.options();
  auto outputs = ChunkRetention::apply(a.q.contiguous(), a.k.contiguous(), a.v.contiguous(),
                                       or_empty(float_state(state, a), options.dtype(torch::kFloat)), device_decays(a),
                                       or_empty(device_offset(a), options.dtype(torch::kLong)));
  if (state != nullptr) *state = outputs[1];
  return outputs[0];
}

torch::Tensor retention_recurrent(const RetentionArgs& a, torch::Tensor* state) {
  const c10::cuda::CUDAGuard guard(a.q.device());
  const int64_t B = a.q.size(0), H = a.q.size(1), T = a.q.size(2), dk = a.q.size(3), dv = a.v.size(3);
  torch::Tensor kv = float_state(state, a);
  if (!kv.defined()) kv = torch::zeros({B, H, dk, dv}, a.q.options().dtype(torch::kFloat));
  // The kernel updates kv in place: a caller's float32 contiguous state is advanced without a copy.
  if (state != nullptr) *state = kv;
  const auto decays = device_decays(a), offset = device_offset(a);
  auto o = torch::empty({B, H, T, dv}, a.v.options());
  for (int64_t t = 0; t < T; ++t) {
    auto q = a.q.select(2, t).contiguous(), k = a.k.select(2, t).contiguous(), v = a.v.select(2, t).contiguous();
    auto out = T == 1 ? o : torch::empty_like(v);  // (B, H, dv)
    auto position = offset.defined() && t > 0 ? offset + t : offset;
    if (!position.defined() && t > 0) position = torch::full({B}, t, a.q.options().dtype(torch::kLong));
    const kernels::RetentionStepParams p{kv.data_ptr<float>(), q.data_ptr(),   k.data_ptr(), v.data_ptr(),
                                         out.data_ptr(),       decays.data_ptr<double>(), pointer_or_null<int64_t>(position),
                                         B,                    H,              dk,           dv,
                                         kernel_dtype(a.q.scalar_type())};
    check(kernels::retention_step(p, c10::cuda::getCurrentCUDAStream()), "retention_step");
    if (T > 1) o.select(2, t).copy_(out);
  }
  return o;
}

}  // namespace densessm::cuda
