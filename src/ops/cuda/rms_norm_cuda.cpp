#include "ops/cuda/rms_norm_cuda.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include "densessm/kernels.h"
#include "ops/cuda/kernel_call.h"
#include "rms_norm.h"

namespace densessm::cuda {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight, double eps) {
    const c10::cuda::CUDAGuard guard(x.device());
    auto xc = x.contiguous(), w = weight.contiguous();
    const int64_t dim = xc.size(-1), rows = xc.numel() / dim;
    auto y = torch::empty_like(xc);
    auto rstd = torch::empty({rows}, xc.options().dtype(torch::kFloat));
    const kernels::RmsNormForwardParams p{xc.data_ptr(),  w.data_ptr(), y.data_ptr(),
                                          rstd.data_ptr<float>(), rows, dim,
                                          static_cast<float>(eps), kernel_dtype(xc.scalar_type()),
                                          kernel_dtype(w.scalar_type())};
    check(kernels::rms_norm_forward(p, c10::cuda::getCurrentCUDAStream()), "rms_norm forward");
    ctx->save_for_backward({xc, w, rstd});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &w = saved[1], &rstd = saved[2];
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t dim = x.size(-1), rows = x.numel() / dim;
    auto dy = grads[0].to(x.scalar_type()).contiguous();
    auto dx = torch::empty_like(x);
    auto partial = torch::empty({kernels::rms_norm_backward_blocks(rows), dim}, x.options().dtype(torch::kFloat));
    const kernels::RmsNormBackwardParams p{x.data_ptr(),          w.data_ptr(),  dy.data_ptr(),
                                           rstd.data_ptr<float>(), dx.data_ptr(), partial.data_ptr<float>(),
                                           rows,                  dim,           kernel_dtype(x.scalar_type()),
                                           kernel_dtype(w.scalar_type())};
    check(kernels::rms_norm_backward(p, c10::cuda::getCurrentCUDAStream()), "rms_norm backward");
    return {dx, partial.sum(0).to(w.scalar_type()), torch::Tensor()};
  }
};

}  // namespace

bool can_run_rms_norm(const torch::Tensor& x, const torch::Tensor& weight) {
  if (!kernels_enabled() || !x.is_cuda() || x.dim() < 1 || x.numel() == 0) return false;
  const auto t = x.scalar_type(), wt = weight.scalar_type();
  return kernel_dtype_supported(t) && (wt == t || wt == torch::kFloat) && weight.dim() == 1 &&
         weight.size(0) == x.size(-1) && weight.device() == x.device() && x.size(-1) <= kernels::kRmsNormMaxDim;
}

torch::Tensor rms_norm_autograd(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  return RmsNormFunction::apply(x, weight, eps);
}

}  // namespace densessm::cuda
