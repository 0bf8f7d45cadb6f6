#include "densessm/rms_norm.h"

#include <torch/torch.h>

namespace densessm {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  const auto acc = x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto xf = x.to(acc);
  auto y = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return (y * weight).to(x.scalar_type());  // the weight promotes to acc inside the product: no separate copy
}

}  // namespace densessm
