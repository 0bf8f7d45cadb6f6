#include "ops/cuda/decode_cuda.h"

#include <cstdlib>
#include <string>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include "decode_step.h"
#include "mamba_step.h"
#include "ops/cuda/kernel_call.h"
#include "retention_step.h"
#include "small_matmul.h"

namespace densessm::cuda {
namespace {

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }

// Whether the environment variable `name` is "0" (the A/B switches below; read by their first call).
bool switched_off(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && std::string(value) == "0";
}

// DENSESSM_SMALL_MATMUL=0 in the environment sends every decode product to cuBLAS (for A/B measurements);
// otherwise the kernel takes the products it is faster at (kernels::small_matmul_preferred).
bool small_matmul_enabled() {
  static const bool enabled = !switched_off("DENSESSM_SMALL_MATMUL");
  return enabled;
}

// DENSESSM_DECODE_PREPARE=0 in the environment runs the retention prepare on its earlier row-wise kernel (for
// A/B measurements); otherwise on the cluster kernel where the rows fit it (kernels/decode_step.h).
kernels::PrepareKernel prepare_kernel() {
  static const kernels::PrepareKernel kernel =
      switched_off("DENSESSM_DECODE_PREPARE") ? kernels::PrepareKernel::kRowwise : kernels::PrepareKernel::kCluster;
  return kernel;
}

// A matrix whose rows the kernels read in place: 2-D, unit stride along the row, of `dtype`.
void check_rows(const torch::Tensor& t, const char* name, torch::ScalarType dtype) {
  TORCH_CHECK(t.dim() == 2 && t.stride(1) == 1, "fused decode: ", name, " must be a (rows, n) matrix with unit stride along n, got ",
              t.sizes(), " with strides ", t.strides());
  TORCH_CHECK(t.scalar_type() == dtype && t.is_cuda(), "fused decode: ", name, " must be a CUDA ", dtype, " tensor, got ",
              t.scalar_type(), " on ", t.device());
}

// A tensor the kernels read as contiguous elements of `dtype`, `numel` of them.
void check_dense(const torch::Tensor& t, const char* name, torch::ScalarType dtype, int64_t numel) {
  TORCH_CHECK(t.is_contiguous() && t.scalar_type() == dtype && t.is_cuda() && t.numel() == numel, "fused decode: ", name,
              " must be a contiguous CUDA ", dtype, " tensor of ", numel, " elements, got ", t.scalar_type(), " ",
              t.sizes(), " on ", t.device());
}

}  // namespace

torch::Tensor small_matmul(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& into) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto dtype = x.scalar_type();
  check_rows(x, "x", dtype);
  TORCH_CHECK(w.dim() == 2 && w.size(1) == x.size(1) && w.scalar_type() == dtype && w.device() == x.device(),
              "fused decode: the weight ", w.sizes(), " (", w.scalar_type(), ") does not match x ", x.sizes(), " (", dtype,
              ")");
  const int64_t M = x.size(0), N = w.size(0), K = x.size(1);
  if (into.defined()) check_dense(into, "the sum", dtype, M * N);
  auto out = into.defined() ? into : torch::empty({M, N}, x.options());
  const auto weight = w.contiguous();
  if (small_matmul_enabled() && kernel_dtype_supported(dtype)) {
    const kernels::SmallMatmulParams p{x.data_ptr(), weight.data_ptr(), out.data_ptr(), M, N, K, x.stride(0), N,
                                       into.defined(), kernel_dtype(dtype)};
    if (kernels::small_matmul_preferred(p)) {
      check(kernels::small_matmul(p, stream()), "small_matmul");
      return out;
    }
  }
  return into.defined() ? out.addmm_(x, weight.t()) : torch::mm(x, weight.t());
}

std::vector<torch::Tensor> transition_gates(const torch::Tensor& y, int64_t offset, int64_t rank,
                                            const std::vector<torch::Tensor>& weights) {
  const c10::cuda::CUDAGuard guard(y.device());
  const auto dtype = y.scalar_type();
  const int64_t B = y.size(0), parts = static_cast<int64_t>(weights.size());
  check_rows(y, "the input projection", dtype);
  TORCH_CHECK(parts >= 1 && parts <= 2 && y.size(1) >= offset + parts * rank, "fused decode: the input projection ",
              y.sizes(), " does not hold ", parts, " transition inputs of ", rank, " columns at ", offset);
  std::vector<torch::Tensor> out;
  for (const auto& w : weights) {
    TORCH_CHECK(w.dim() == 2 && w.size(1) == rank && w.scalar_type() == dtype && w.is_contiguous(),
                "fused decode: a transition weight ", w.sizes(), " (", w.scalar_type(), ") is not (n, ", rank,
                ") contiguous ", dtype);
    out.push_back(torch::empty({B, w.size(0)}, y.options()));
  }
  if (kernel_dtype_supported(dtype) && B <= kernels::kTransitionBatch && rank <= kernels::kTransitionRank) {
    kernels::TransitionParams p{};
    p.y = y.data_ptr();
    for (int64_t i = 0; i < parts; ++i) {
      p.weight[i] = weights[i].data_ptr();
      p.out[i] = out[i].data_ptr();
      p.offset[i] = offset + i * rank;
      p.n[i] = weights[i].size(0);
    }
    p.parts = static_cast<int>(parts);
    p.batch = B;
    p.y_stride = y.stride(0);
    p.rank = rank;
    p.dtype = kernel_dtype(dtype);
    check(kernels::transition_gates(p, stream()), "transition_gates");
    return out;
  }
  for (int64_t i = 0; i < parts; ++i) {
    out[i] = torch::mm(torch::silu(y.narrow(1, offset + i * rank, rank)), weights[i].t());
  }
  return out;
}

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto dtype = x.scalar_type();
  check_rows(x, "x", dtype);
  check_dense(weight, "the norm weight", dtype, x.size(1));
  auto out = torch::empty(x.sizes(), x.options());
  const kernels::RmsNormParams p{x.data_ptr(), weight.data_ptr(), out.data_ptr(), x.size(0), x.size(1), x.stride(0),
                                 static_cast<float>(eps), kernel_dtype(dtype)};
  check(kernels::rms_norm_rows(p, stream()), "rms_norm_rows");
  return out;
}

RetentionPrepared retention_decode_prepare(const RetentionPrepareArgs& a) {
  const c10::cuda::CUDAGuard guard(a.y.device());
  const auto dtype = a.y.scalar_type();
  const int64_t B = a.y.size(0), K = a.key_dim, E = a.value_dim, H = a.heads, dk = K / H;
  check_rows(a.y, "the input projection", dtype);
  TORCH_CHECK(a.y.size(1) >= 2 * K + 2 * E && K % H == 0 && E % H == 0 && dk % 2 == 0,
              "fused decode: the input projection ", a.y.sizes(), " does not hold q, k, v and the gate for K = ", K,
              ", E = ", E, " in ", H, " heads");
  const bool fuse = a.k_gate.defined();
  if (fuse) {
    check_dense(a.k_gate, "the key gate", dtype, B * K);
    check_dense(a.v_gate, "the value gate", dtype, B * E);
    check_dense(a.previous_k, "the earlier keys", dtype, B * K);
    check_dense(a.previous_v, "the earlier values", dtype, B * E);
    check_dense(a.k_norm, "the key norm", dtype, K);
    check_dense(a.v_norm, "the value norm", dtype, E);
    TORCH_CHECK(a.k_gate.size(0) == B && a.k_gate.size(1) == K && a.v_gate.size(0) == B && a.v_gate.size(1) == E,
                "fused decode: the gates ", a.k_gate.sizes(), " and ", a.v_gate.sizes(), " do not match (", B, ", ", K,
                ") and (", B, ", ", E, ")");
  }
  check_dense(a.angles, "the rotation angles", torch::kDouble, dk);
  check_dense(a.position, "the positions", torch::kLong, B);
  const auto options = a.y.options();
  RetentionPrepared r;
  r.q = torch::empty({B, H, dk}, options);
  r.k = torch::empty({B, H, dk}, options);
  r.v = torch::empty({B, H, E / H}, options);
  r.gate = torch::empty({B, E}, options);
  r.hidden_k = torch::empty({B, K}, options);
  r.hidden_v = torch::empty({B, E}, options);
  kernels::RetentionPrepareParams p{};
  p.y = a.y.data_ptr();
  if (fuse) {
    p.k_gate = a.k_gate.data_ptr();
    p.v_gate = a.v_gate.data_ptr();
    p.previous_k = a.previous_k.data_ptr();
    p.previous_v = a.previous_v.data_ptr();
    p.k_norm = a.k_norm.data_ptr();
    p.v_norm = a.v_norm.data_ptr();
  }
  p.angles = a.angles.data_ptr<double>();
  p.position = a.position.data_ptr<int64_t>();
  p.q = r.q.data_ptr();
  p.k = r.k.data_ptr();
  p.v = r.v.data_ptr();
  p.g = r.gate.data_ptr();
  p.hidden_k = r.hidden_k.data_ptr();
  p.hidden_v = r.hidden_v.data_ptr();
  p.batch = B;
  p.y_stride = a.y.stride(0);
  p.key_dim = K;
  p.value_dim = E;
  p.head_qk_dim = dk;
  p.key_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dk)));
  p.eps = static_cast<float>(a.eps);
  p.dtype = kernel_dtype(dtype);
  check(kernels::retention_decode_prepare(p, stream(), prepare_kernel()), "retention_decode_prepare");
  return r;
}

torch::Tensor retention_decode_step(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                    torch::Tensor& state, const torch::Tensor& decays, const torch::Tensor& position) {
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t B = q.size(0), H = q.size(1), dk = q.size(2), dv = v.size(2);
  const auto dtype = q.scalar_type();
  check_dense(q, "q", dtype, B * H * dk);
  check_dense(k, "k", dtype, B * H * dk);
  check_dense(v, "v", dtype, B * H * dv);
  check_dense(state, "the retention state", torch::kFloat, B * H * dk * dv);
  check_dense(decays, "the decays", torch::kDouble, H);
  check_dense(position, "the positions", torch::kLong, B);
  auto o = torch::empty_like(v);
  const kernels::RetentionStepParams p{state.data_ptr<float>(), q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(),
                                       decays.data_ptr<double>(), position.data_ptr<int64_t>(), B, H, dk, dv,
                                       kernel_dtype(dtype)};
  check(kernels::retention_step(p, stream()), "retention_step");
  return o;
}

torch::Tensor retention_decode_output(const torch::Tensor& o, const torch::Tensor& norm, const torch::Tensor& gate,
                                      double eps) {
  const c10::cuda::CUDAGuard guard(o.device());
  const int64_t B = o.size(0), H = o.size(1), dv = o.size(2);
  const auto dtype = o.scalar_type();
  check_dense(o, "the retention output", dtype, B * H * dv);
  check_dense(norm, "the group norm", dtype, dv);
  check_dense(gate, "the output gate", dtype, B * H * dv);
  auto out = torch::empty({B, H * dv}, o.options());
  const kernels::RetentionOutputParams p{o.data_ptr(), norm.data_ptr(), gate.data_ptr(), out.data_ptr(), B, H, dv,
                                         static_cast<float>(eps), kernel_dtype(dtype)};
  check(kernels::retention_decode_output(p, stream()), "retention_decode_output");
  return out;
}

std::pair<torch::Tensor, torch::Tensor> mamba_decode_prepare(const torch::Tensor& y, int64_t channels,
                                                             const torch::Tensor& gate, const torch::Tensor& previous,
                                                             const torch::Tensor& norm, double eps,
                                                             torch::Tensor& conv_state, const torch::Tensor& conv_weight,
                                                             const torch::Tensor& conv_bias) {
  const c10::cuda::CUDAGuard guard(y.device());
  const auto dtype = y.scalar_type();
  const int64_t B = y.size(0), C = channels, W = conv_weight.size(-1);
  check_rows(y, "the input projection", dtype);
  TORCH_CHECK(y.size(1) >= C, "fused decode: the input projection ", y.sizes(), " has fewer than ", C, " columns");
  const bool fuse = gate.defined();
  if (fuse) {
    check_dense(gate, "the dense gate", dtype, B * C);
    check_dense(previous, "the earlier hidden states", dtype, B * C);
    check_dense(norm, "the fusion norm", dtype, C);
  }
  check_dense(conv_state, "the convolution state", dtype, B * C * (W - 1));
  check_dense(conv_weight, "the convolution weight", dtype, C * W);
  if (conv_bias.defined()) check_dense(conv_bias, "the convolution bias", dtype, C);
  auto out = torch::empty({B, C}, y.options()), hidden = torch::empty({B, C}, y.options());
  const kernels::MambaPrepareParams p{y.data_ptr(),
                                      fuse ? gate.data_ptr() : nullptr,
                                      fuse ? previous.data_ptr() : nullptr,
                                      fuse ? norm.data_ptr() : nullptr,
                                      conv_state.data_ptr(),
                                      conv_weight.data_ptr(),
                                      pointer(conv_bias),
                                      out.data_ptr(),
                                      hidden.data_ptr(),
                                      B,
                                      y.stride(0),
                                      C,
                                      W,
                                      static_cast<float>(eps),
                                      kernel_dtype(dtype)};
  check(kernels::mamba_decode_prepare(p, stream()), "mamba_decode_prepare");
  return {out, hidden};
}

torch::Tensor mamba_scan_step(torch::Tensor& state, const torch::Tensor& u, const torch::Tensor& delta,
                              const torch::Tensor& delta_bias, const torch::Tensor& A, const torch::Tensor& Bm,
                              const torch::Tensor& Cm, const torch::Tensor& D, const torch::Tensor& z) {
  const c10::cuda::CUDAGuard guard(u.device());
  const auto dtype = u.scalar_type();
  const int64_t B = u.size(0), C = u.size(1), N = A.size(1);
  check_dense(u, "u", dtype, B * C);
  check_dense(delta, "delta", dtype, B * C);
  check_dense(A, "A", torch::kFloat, C * N);
  check_dense(state, "the scan state", torch::kFloat, B * C * N);
  check_rows(Bm, "B", dtype);
  check_rows(Cm, "C", dtype);
  TORCH_CHECK(Bm.stride(0) == Cm.stride(0) && Bm.size(1) == N && Cm.size(1) == N,
              "fused decode: B and C must be (batch, N) rows of one matrix");
  if (delta_bias.defined()) check_dense(delta_bias, "the delta bias", dtype, C);
  if (D.defined()) check_dense(D, "D", dtype, C);
  if (z.defined()) check_rows(z, "z", dtype);
  auto out = torch::empty_like(u);
  kernels::ScanStepParams p{state.data_ptr<float>(), u.data_ptr(), delta.data_ptr(), pointer(delta_bias),
                            A.data_ptr<float>(), Bm.data_ptr(), Cm.data_ptr(), pointer(D), pointer(z), out.data_ptr(),
                            B, C, N, /*delta_softplus=*/true, kernel_dtype(dtype)};
  p.bc_stride = Bm.stride(0);
  p.z_stride = z.defined() ? z.stride(0) : 0;
  check(kernels::selective_scan_step(p, stream()), "selective_scan_step");
  return out;
}

}  // namespace densessm::cuda
