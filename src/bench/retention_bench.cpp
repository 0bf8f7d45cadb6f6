// Retention: the chunkwise form forward and forward + backward at the training shapes (bfloat16; the
// 1.3 B DenseRetNet's heads, dk 320 / dv 1280, and 16 heads of 128 / 128, the shapes of the
// flash-linear-attention anchors), and the one-token step at the 1.3 B config's decode batches (float16,
// one layer). The kernels against the LibTorch reference forms (DENSESSM kernels switched off).
#include <torch/torch.h>

#include "bench/bench.h"
#include "densessm/kernels.h"
#include "densessm/retention.h"

namespace densessm::bench {
namespace {

struct Shape {
  int64_t B, H, T, dk, dv;
  std::string label() const {
    return "B" + std::to_string(B) + " T" + std::to_string(T) + " H" + std::to_string(H) + " dk" + std::to_string(dk) +
           " dv" + std::to_string(dv);
  }
};

// The flops of the chunkwise algorithm (chunk C = 64) per (token, head): forward, the chunk's scores
// and their product with v (2C (dk + dv)) and the state's read and update (4 dk dv); the backward
// recomputes the states, scans their gradients and forms dq, dk, dv (6C (dk + dv) + 10 dk dv).
double forward_flops(const Shape& s) { return static_cast<double>(s.B * s.H * s.T) * (128.0 * (s.dk + s.dv) + 4.0 * s.dk * s.dv); }
double backward_flops(const Shape& s) {
  return static_cast<double>(s.B * s.H * s.T) * (384.0 * (s.dk + s.dv) + 10.0 * s.dk * s.dv);
}

// Runs `body` with the kernels switched on or off, restoring the switch afterwards.
Timing timed(const Options& options, bool kernels, const std::function<void(int64_t)>& body) {
  const bool before = kernels_enabled();
  set_kernels_enabled(kernels);
  const Timing t = time_runs(options, body);
  set_kernels_enabled(before);
  return t;
}

void run_training_shape(const Options& options, Report& report, const Shape& s) {
  const auto dtype = torch::kBFloat16;
  std::vector<RetentionArgs> sets;
  std::vector<torch::Tensor> grads;
  for (int i = 0; i < std::max(1, options.rotate); ++i) {
    RetentionArgs a;
    a.q = random({s.B, s.H, s.T, s.dk}, options, dtype).requires_grad_();                       // (B, H, T, dk)
    a.k = (random({s.B, s.H, s.T, s.dk}, options, dtype) / std::sqrt(double(s.dk))).requires_grad_();  // (B, H, T, dk)
    a.v = random({s.B, s.H, s.T, s.dv}, options, dtype).requires_grad_();                       // (B, H, T, dv)
    a.decays = retention_decays(s.H).to(options.device);
    sets.push_back(a);
    grads.push_back(random({s.B, s.H, s.T, s.dv}, options, dtype));  // (B, H, T, dv)
  }
  const double element = 2;  // bytes of bfloat16
  const double tokens = static_cast<double>(s.B * s.H * s.T);
  const std::string name = "retention chunkwise bf16 " + s.label();

  auto forward = [&](int64_t set) {
    torch::NoGradGuard no_grad;
    retention_chunkwise(sets[set], nullptr);
  };
  auto forward_backward = [&](int64_t set) {
    const auto& a = sets[set];
    auto o = retention_chunkwise(a, nullptr);
    torch::autograd::grad({o}, {a.q, a.k, a.v}, {grads[set]});
  };
  torch::AutoGradMode grad_mode(true);
  Row fwd{"retention", name + " fwd", timed(options, true, forward), tokens * element * 2 * (s.dk + s.dv),
          forward_flops(s)};
  Row both{"retention", name + " fwd+bwd", timed(options, true, forward_backward),
           tokens * element * (6 * s.dk + 5 * s.dv), forward_flops(s) + backward_flops(s)};
  if (options.reference) {
    fwd.reference_ms = timed(options, false, forward).median_ms;
    both.reference_ms = timed(options, false, forward_backward).median_ms;
  }
  report.add(fwd);
  report.add(both);
}

// One layer's step of the 1.3 B DenseRetNet (4 heads, dk 320, dv 1280): the float32 state is read and
// written once; q, k, v and o are negligible beside it.
void run_decode_batch(const Options& options, Report& report, int64_t batch) {
  const Shape s{batch, 4, 1, 320, 1280};
  const auto dtype = torch::kHalf;
  std::vector<RetentionArgs> sets;
  std::vector<torch::Tensor> states;
  for (int i = 0; i < std::max(1, options.rotate); ++i) {
    RetentionArgs a;
    a.q = random({s.B, s.H, 1, s.dk}, options, dtype);  // (B, H, 1, dk)
    a.k = random({s.B, s.H, 1, s.dk}, options, dtype);  // (B, H, 1, dk)
    a.v = random({s.B, s.H, 1, s.dv}, options, dtype);  // (B, H, 1, dv)
    a.decays = retention_decays(s.H).to(options.device);
    a.offset = torch::full({s.B}, 100, torch::TensorOptions().device(options.device).dtype(torch::kLong));
    sets.push_back(a);
    states.push_back(random({s.B, s.H, s.dk, s.dv}, options, torch::kFloat) * 0.01);  // (B, H, dk, dv)
  }
  torch::NoGradGuard no_grad;
  auto step = [&](int64_t set) { retention_recurrent(sets[set], &states[set]); };
  Row row{"retention", "retention step fp16 B" + std::to_string(batch) + " H4 dk320 dv1280", timed(options, true, step),
          2.0 * 4 * s.B * s.H * s.dk * s.dv, 4.0 * s.B * s.H * s.dk * s.dv};
  if (options.reference) row.reference_ms = timed(options, false, step).median_ms;
  report.add(row);
}

void run_retention(const Options& options, Report& report) {
  if (options.shapes != "decode") {
    for (const Shape& s : {Shape{8, 4, 2048, 320, 1280}, Shape{8, 16, 2048, 128, 128}}) run_training_shape(options, report, s);
  }
  if (options.shapes != "train") {
    for (int64_t batch : {1, 6, 64}) run_decode_batch(options, report, batch);
  }
}

const Registrar registrar{"retention",
                          "chunkwise retention fwd and fwd+bwd at the training shapes, the decode step at batch 1/6/64",
                          run_retention};

}  // namespace
}  // namespace densessm::bench
