#include "modules/mamba_block.h"

#include <cmath>
#include <stdexcept>

#ifdef DENSESSM_WITH_CUDA
#include "ops/cuda/decode_cuda.h"
#endif

namespace densessm {
namespace {

torch::nn::Linear linear(int64_t in, int64_t out, bool bias = false) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

torch::ScalarType accumulation_type(torch::ScalarType t) { return t == torch::kDouble ? torch::kDouble : torch::kFloat; }

}  // namespace

MambaBlockImpl::MambaBlockImpl(const ModelConfig& c, int64_t index)
    : index_(index), d_inner_(c.d_inner()), d_state_(c.mamba.d_state), dt_rank_(c.dt_rank()), d_conv_(c.mamba.d_conv) {
  const int64_t model_dim = c.hidden_size;
  norm = register_module("norm", RMSNorm(model_dim, c.rms_norm_eps));
  in_proj = register_module("in_proj", linear(model_dim, 2 * d_inner_));
  conv_weight = register_parameter("conv_weight", torch::empty({d_inner_, d_conv_}));
  if (c.mamba.conv_bias) conv_bias = register_parameter("conv_bias", torch::empty({d_inner_}));
  x_proj = register_module("x_proj", linear(d_inner_, dt_rank_ + 2 * d_state_));
  dt_proj = register_module("dt_proj", linear(dt_rank_, d_inner_, /*bias=*/true));
  A_log = register_parameter("A_log", torch::empty({d_inner_, d_state_}));
  D_skip = register_parameter("D", torch::empty({d_inner_}));
  out_proj = register_module("out_proj", linear(d_inner_, model_dim));
  if (c.dense()) {
    x_select = register_module("x_select", SelectiveTransition(model_dim, c.dense_hidden_size(), d_inner_));
    x_norm = register_module("x_norm", RMSNorm(d_inner_, c.rms_norm_eps));
  }
  dropout = register_module("dropout", torch::nn::Dropout(c.dropout));
  reset_parameters(c);
}

void MambaBlockImpl::reset_parameters(const ModelConfig& c) {
  torch::NoGradGuard no_grad;
  const MambaConfig& m = c.mamba;
  // The conv1d default: uniform(+-1/sqrt(fan_in)), fan_in = d_conv for a depthwise filter.
  const double conv_bound = 1.0 / std::sqrt(static_cast<double>(d_conv_));
  conv_weight.uniform_(-conv_bound, conv_bound);
  if (conv_bias.defined()) conv_bias.uniform_(-conv_bound, conv_bound);
  // dt_proj: weight uniform(+-dt_rank^-0.5); bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max].
  const double dt_bound = 1.0 / std::sqrt(static_cast<double>(dt_rank_));
  dt_proj->weight.uniform_(-dt_bound, dt_bound);
  auto dt = torch::exp(torch::rand({d_inner_}, torch::kDouble) * (std::log(m.dt_max) - std::log(m.dt_min)) +
                       std::log(m.dt_min))
                .clamp_min(m.dt_init_floor);
  dt_proj->bias.copy_(dt + torch::log(-torch::expm1(-dt)));
  // S4D-real initialisation: A[c, i] = -(i + 1).
  A_log.copy_(torch::log(torch::arange(1, d_state_ + 1, torch::kDouble)).expand({d_inner_, d_state_}));
  D_skip.fill_(1.0);
  // Residual output scaled by 1/sqrt(L) (mamba_ssm's rescale_prenorm_residual), on the default init.
  out_proj->weight.div_(std::sqrt(static_cast<double>(c.num_layers)));
  if (x_select) {
    const double small = std::pow(2.0, -2.5);
    torch::nn::init::xavier_uniform_(x_select->fc1->weight, small);
    torch::nn::init::xavier_uniform_(x_select->fc2->weight, small);
  }
}

torch::Tensor MambaBlockImpl::A() const {
  return -torch::exp(A_log.to(accumulation_type(A_log.scalar_type())));
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> MambaBlockImpl::project(const torch::Tensor& x) {
  auto parts = x_proj(x).split({dt_rank_, d_state_, d_state_}, -1);
  // Bias and softplus are applied inside the scan (delta_bias), as the kernels will fuse them.
  auto delta = torch::nn::functional::linear(parts[0], dt_proj->weight);
  return {delta, parts[1], parts[2]};
}

torch::Tensor MambaBlockImpl::mix_parallel(const torch::Tensor& x, const torch::Tensor& z, LayerState* state) {
  auto xc = causal_conv1d(x.transpose(1, 2), conv_weight, conv_bias, state ? &state->conv : nullptr);  // (B, I, T)
  auto [delta, Bm, Cm] = project(xc.transpose(1, 2));  // (B, T, I), (B, T, N), (B, T, N)
  SelectiveScanArgs args;
  args.u = xc;
  args.delta = delta.transpose(1, 2);
  args.A = A();
  args.Bm = Bm.transpose(1, 2);
  args.Cm = Cm.transpose(1, 2);
  args.Dskip = D_skip;
  args.z = z.transpose(1, 2);
  args.delta_bias = dt_proj->bias;
  return selective_scan(args, state ? &state->ssm : nullptr).transpose(1, 2);  // (B, T, I)
}

torch::Tensor MambaBlockImpl::mix_recurrent(const torch::Tensor& x, const torch::Tensor& z, LayerState* state) {
  const int64_t B = x.size(0), T = x.size(1);
  LayerState local = state ? *state : initial_state(B, x.device(), x.scalar_type());
  std::vector<torch::Tensor> ys;
  for (int64_t t = 0; t < T; ++t) {
    auto xc = causal_conv1d_step(x.select(1, t), conv_weight, conv_bias, local.conv);  // (B, I)
    auto [delta, Bm, Cm] = project(xc);
    SelectiveScanArgs args;
    args.u = xc;
    args.delta = delta;
    args.A = A();
    args.Bm = Bm;
    args.Cm = Cm;
    args.Dskip = D_skip;
    args.z = z.select(1, t);
    args.delta_bias = dt_proj->bias;
    ys.push_back(selective_scan_step(args, local.ssm));
  }
  if (state) *state = local;
  return torch::stack(ys, 1);  // (B, T, I)
}

torch::Tensor MambaBlockImpl::forward(const torch::Tensor& h, const std::vector<DenseHidden>& previous,
                                      DenseHidden& hidden, LayerState* state, const torch::Tensor& /*position*/,
                                      const ForwardOptions& options) {
  auto u = norm(h);                           // (B, T, D)
  auto xz = in_proj(u).chunk(2, -1);
  auto x = xz[0], z = xz[1];                  // (B, T, I) each
  hidden = {x};
  if (x_select && index_ > 0 && !previous.empty()) {
    std::vector<torch::Tensor> earlier;
    for (const DenseHidden& p : previous) earlier.push_back(p.at(0));
    x = hidden_fusion(x, x_select(u), earlier, x_norm);
  }
  auto y = options.form == SequenceForm::kRecurrent ? mix_recurrent(x, z, state) : mix_parallel(x, z, state);
  return h + dropout(out_proj(y));
}

const torch::Tensor& MambaBlockImpl::decode_A() {
  if (!decode_A_.defined() || decode_A_source_ != A_log.data_ptr() || decode_A_version_ != A_log._version() ||
      decode_A_.device() != A_log.device()) {
    torch::NoGradGuard no_grad;
    decode_A_ = -torch::exp(A_log.to(torch::kFloat)).contiguous();
    decode_A_source_ = A_log.data_ptr();
    decode_A_version_ = A_log._version();
  }
  return decode_A_;
}

torch::Tensor MambaBlockImpl::decode_step(torch::Tensor h, const std::vector<DenseHidden>& previous,
                                          DenseHidden& hidden, LayerState& state, const torch::Tensor& /*position*/) {
#ifdef DENSESSM_WITH_CUDA
  const int64_t I = d_inner_, R = dt_rank_, N = d_state_;
  std::vector<torch::Tensor> weights{in_proj->weight};
  if (x_select) weights.push_back(x_select->fc1->weight);
  const torch::Tensor& projection = decode_projection_.matrix(weights);
  auto u = cuda::rms_norm(h, norm->weight, norm->eps());  // (B, D)
  auto y = cuda::small_matmul(u, projection);                 // (B, 2I [+ r]): x, z [, the transition's inner]
  torch::Tensor gate, earlier;
  if (x_select && index_ > 0 && !previous.empty()) {
    const int64_t r = x_select->fc1->weight.size(0);
    gate = cuda::transition_gates(y, 2 * I, r, {x_select->fc2->weight})[0];  // (B, I), before its SiLU
    earlier = sum_of_hidden(previous, 0);
  }
  if (!state.conv.defined() || !state.ssm.defined()) state = initial_state(h.size(0), h.device(), h.scalar_type());
  if (state.conv.scalar_type() != h.scalar_type() || !state.conv.is_contiguous()) {
    state.conv = state.conv.to(h.scalar_type()).contiguous();
  }
  if (state.ssm.scalar_type() != torch::kFloat || !state.ssm.is_contiguous()) state.ssm = state.ssm.to(torch::kFloat).contiguous();
  auto [xc, x] = cuda::mamba_decode_prepare(y, I, gate, earlier, x_norm ? x_norm->weight : torch::Tensor(),
                                            x_norm ? x_norm->eps() : 0.0, state.conv, conv_weight, conv_bias);
  hidden = {x};
  auto projected = cuda::small_matmul(xc, x_proj->weight);                          // (B, R + 2N)
  auto delta = cuda::small_matmul(projected.narrow(1, 0, R), dt_proj->weight);     // (B, I)
  auto out = cuda::mamba_scan_step(state.ssm, xc, delta, dt_proj->bias, decode_A(), projected.narrow(1, R, N),
                                   projected.narrow(1, R + N, N), D_skip, y.narrow(1, I, I));  // (B, I)
  return cuda::small_matmul(out, out_proj->weight, h);
#else
  (void)h, (void)previous, (void)hidden, (void)state;
  throw std::logic_error("MambaBlock::decode_step needs DenseSSM built with CUDA");
#endif
}

LayerState MambaBlockImpl::initial_state(int64_t batch, torch::Device device, torch::ScalarType dtype) const {
  auto options = torch::TensorOptions().device(device);
  LayerState s;
  s.conv = torch::zeros({batch, d_inner_, d_conv_ - 1}, options.dtype(dtype));
  s.ssm = torch::zeros({batch, d_inner_, d_state_}, options.dtype(accumulation_type(dtype)));
  return s;
}

}  // namespace densessm
