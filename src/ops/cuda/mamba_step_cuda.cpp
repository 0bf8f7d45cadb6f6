#include "ops/cuda/mamba_step_cuda.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include "densessm/kernels.h"
#include "mamba_step.h"
#include "ops/cuda/kernel_call.h"

namespace densessm::cuda {

bool can_run_step(const torch::Tensor& x, const std::vector<torch::Tensor>& others) {
  if (!kernels_enabled() || !x.is_cuda()) return false;
  if (!kernel_dtype_supported(x.scalar_type())) return false;
  if (!torch::GradMode::is_enabled()) return true;
  if (x.requires_grad()) return false;
  for (const auto& o : others) {
    if (o.defined() && o.requires_grad()) return false;
  }
  return true;
}

torch::Tensor causal_conv1d_step(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                 torch::Tensor& state) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto dtype = x.scalar_type();
  auto xc = x.contiguous(), w = prepared(weight, dtype), b = prepared(bias, dtype);
  if (state.scalar_type() != dtype || !state.is_contiguous()) state = state.to(dtype).contiguous();
  auto out = torch::empty_like(xc);
  kernels::ConvStepParams p{xc.data_ptr(), state.data_ptr(), w.data_ptr(), pointer(b), out.data_ptr(),
                            xc.size(0), xc.size(1), w.size(1), kernel_dtype(dtype)};
  check(kernels::causal_conv1d_step(p, c10::cuda::getCurrentCUDAStream()), "causal_conv1d_step");
  return out;
}

torch::Tensor selective_scan_step(const SelectiveScanArgs& a, torch::Tensor& state) {
  const c10::cuda::CUDAGuard guard(a.u.device());
  const auto dtype = a.u.scalar_type();
  auto u = a.u.contiguous();
  auto delta = prepared(a.delta, dtype), bias = prepared(a.delta_bias, dtype), Bm = prepared(a.Bm, dtype),
       Cm = prepared(a.Cm, dtype), D = prepared(a.Dskip, dtype), z = prepared(a.z, dtype);
  auto A = a.A.to(torch::kFloat).contiguous();
  if (state.scalar_type() != torch::kFloat || !state.is_contiguous()) state = state.to(torch::kFloat).contiguous();
  auto out = torch::empty_like(u);
  kernels::ScanStepParams p{state.data_ptr<float>(), u.data_ptr(), delta.data_ptr(), pointer(bias),
                            A.data_ptr<float>(), Bm.data_ptr(), Cm.data_ptr(), pointer(D), pointer(z), out.data_ptr(),
                            u.size(0), u.size(1), A.size(1), a.delta_softplus, kernel_dtype(dtype)};
  check(kernels::selective_scan_step(p, c10::cuda::getCurrentCUDAStream()), "selective_scan_step");
  return out;
}

}  // namespace densessm::cuda
