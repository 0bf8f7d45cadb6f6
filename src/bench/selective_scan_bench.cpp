// Mamba's operators: the selective scan forward and backward and the causal convolution forward and
// backward at the 1.4 B DenseMamba's training shape (batch 8, d_inner 4096, length 2048, N 16, bf16), and
// the one-token steps at the decode shapes (batch 1, 6, 64). The kernels are timed through the public
// operators (so the wrappers' casts and the partial sums are included); the reference column is the
// same operator with the kernels switched off, timed with fewer repeats (it is slow and large).
//
// Counts: "bytes" is each activation read once and each result written once; "flops" counts the scan's
// forward as 7 operations per (batch, channel, step, state) (the exponential as one) and its backward as
// 3 forward recomputations plus 12, the convolution as 2 W + 4 per element (forward) and 4 W + 8 (backward).
#include <torch/torch.h>

#include "bench/bench.h"
#include "densessm/kernels.h"
#include "densessm/selective_scan.h"

namespace densessm::bench {
namespace {

constexpr int64_t kBatch = 8, kInner = 4096, kLength = 2048, kStates = 16, kWidth = 4;

// The reference forms are timed with few repeats and one input set: at this shape they take 0.1-1 s a
// run and tens of GB.
Options reference_options(const Options& options) {
  Options o = options;
  o.warmup = 1;
  o.repeats = 3;
  o.rotate = 1;
  return o;
}

// Runs `body` with the kernels off, restoring the switch after.
template <typename F>
Timing without_kernels(F&& body) {
  const bool was = kernels_enabled();
  set_kernels_enabled(false);
  Timing t;
  try {
    t = body();
  } catch (...) {
    set_kernels_enabled(was);
    throw;
  }
  set_kernels_enabled(was);
  return t;
}

SelectiveScanArgs scan_inputs(const Options& options, torch::ScalarType dtype, int64_t B, int64_t C, int64_t T,
                              bool requires_grad) {
  SelectiveScanArgs a;
  const bool step = T == 0;  // the one-token shapes: (B, C) and (B, N)
  auto activation = [&](int64_t rows) {
    return step ? random({B, rows}, options, dtype) : random({B, rows, T}, options, dtype);
  };
  a.u = activation(C);
  a.delta = activation(C) * 0.5 - 1.0;
  a.z = activation(C);
  a.Bm = activation(kStates);
  a.Cm = activation(kStates);
  a.A = -torch::exp(random({C, kStates}, options, torch::kFloat) * 0.5);
  a.Dskip = random({C}, options, torch::kFloat);
  a.delta_bias = random({C}, options, torch::kFloat) * 0.1;
  if (requires_grad) {
    for (torch::Tensor* t : {&a.u, &a.delta, &a.z, &a.Bm, &a.Cm, &a.A, &a.Dskip, &a.delta_bias}) t->requires_grad_(true);
  }
  return a;
}

std::vector<torch::Tensor> leaves(const SelectiveScanArgs& a) {
  return {a.u, a.delta, a.z, a.Bm, a.Cm, a.A, a.Dskip, a.delta_bias};
}

std::string shape_name(const char* what, torch::ScalarType dtype, int64_t B, int64_t C, int64_t T) {
  return std::string(what) + " " + c10::toString(dtype) + " B" + std::to_string(B) + " C" + std::to_string(C) +
         (T > 0 ? " T" + std::to_string(T) : "") + " N" + std::to_string(kStates);
}

void run_training_shapes(const Options& options, Report& report) {
  const auto dtype = options.device.is_cuda() ? torch::kBFloat16 : torch::kFloat;
  const int64_t B = kBatch, C = kInner, T = kLength, N = kStates;
  const double elements = static_cast<double>(B) * C * T, per_state = elements * N;
  const double es = torch::elementSize(dtype);
  const int64_t sets = std::max(1, options.rotate);
  const torch::AutoGradMode grad_mode(true);

  // Scan forward and backward, the backward timed alone on retained graphs.
  std::vector<SelectiveScanArgs> args;
  std::vector<torch::Tensor> ys, grads;
  for (int64_t s = 0; s < sets; ++s) {
    args.push_back(scan_inputs(options, dtype, B, C, T, /*requires_grad=*/true));
    ys.push_back(selective_scan(args.back(), nullptr));
    grads.push_back(random({B, C, T}, options, dtype));
  }
  auto forward = [&](const Options& o, const std::vector<SelectiveScanArgs>& a) {
    return time_runs(o, [&](int64_t s) {
      const torch::NoGradGuard no_grad;
      selective_scan(a[s], nullptr);
    });
  };
  auto backward = [&](const Options& o, const std::vector<torch::Tensor>& y, const std::vector<SelectiveScanArgs>& a,
                      const std::vector<torch::Tensor>& g) {
    return time_runs(o, [&](int64_t s) { torch::autograd::grad({y[s]}, leaves(a[s]), {g[s]}, /*retain_graph=*/true); });
  };
  Row fwd{"selective_scan", shape_name("selective_scan fwd", dtype, B, C, T), forward(options, args),
          4 * elements * es + 2.0 * B * N * T * es, 7 * per_state};
  Row bwd{"selective_scan", shape_name("selective_scan bwd", dtype, B, C, T), backward(options, ys, args, grads),
          7 * elements * es + 4.0 * B * N * T * es, 33 * per_state};
  ys.clear();
  if (options.reference) {
    const std::vector<SelectiveScanArgs> one(args.begin(), args.begin() + 1);
    fwd.reference_ms = without_kernels([&] { return forward(reference_options(options), one); }).median_ms;
    bwd.reference_ms = without_kernels([&] {
      std::vector<torch::Tensor> y{selective_scan(one[0], nullptr)};
      return backward(reference_options(options), y, one, grads);
    }).median_ms;
  }
  report.add(fwd);
  report.add(bwd);
  args.clear();

  // Convolution forward and backward.
  std::vector<torch::Tensor> xs, weights, biases, outs;
  for (int64_t s = 0; s < sets; ++s) {
    xs.push_back(random({B, C, T}, options, dtype).requires_grad_(true));
    weights.push_back(random({C, kWidth}, options, dtype).requires_grad_(true));
    biases.push_back(random({C}, options, dtype).requires_grad_(true));
    outs.push_back(causal_conv1d(xs.back(), weights.back(), biases.back(), nullptr));
  }
  auto conv_forward = [&](const Options& o) {
    return time_runs(o, [&](int64_t s) {
      const torch::NoGradGuard no_grad;
      causal_conv1d(xs[s], weights[s], biases[s], nullptr);
    });
  };
  auto conv_backward = [&](const Options& o, const std::vector<torch::Tensor>& y) {
    return time_runs(o, [&](int64_t s) {
      torch::autograd::grad({y[s]}, {xs[s], weights[s], biases[s]}, {grads[s]}, /*retain_graph=*/true);
    });
  };
  Row cfwd{"selective_scan", shape_name("causal_conv1d fwd W4", dtype, B, C, T), conv_forward(options),
           2 * elements * es, (2 * kWidth + 4) * elements};
  Row cbwd{"selective_scan", shape_name("causal_conv1d bwd W4", dtype, B, C, T), conv_backward(options, outs),
           3 * elements * es, (4 * kWidth + 8) * elements};
  if (options.reference) {
    cfwd.reference_ms = without_kernels([&] { return conv_forward(reference_options(options)); }).median_ms;
    cbwd.reference_ms = without_kernels([&] {
      std::vector<torch::Tensor> y{causal_conv1d(xs[0], weights[0], biases[0], nullptr)};
      return conv_backward(reference_options(options), y);
    }).median_ms;
  }
  report.add(cfwd);
  report.add(cbwd);
}

void run_decode_shapes(const Options& options, Report& report) {
  const auto dtype = options.device.is_cuda() ? torch::kBFloat16 : torch::kFloat;
  const int64_t sets = std::max(1, options.rotate);
  for (int64_t B : {1, 6, 64}) {
    std::vector<SelectiveScanArgs> args;
    std::vector<torch::Tensor> states;
    for (int64_t s = 0; s < sets; ++s) {
      args.push_back(scan_inputs(options, dtype, B, kInner, 0, /*requires_grad=*/false));
      states.push_back(random({B, kInner, kStates}, options, torch::kFloat));
    }
    auto step = [&](const Options& o) { return time_runs(o, [&](int64_t s) { selective_scan_step(args[s], states[s]); }); };
    const double elements = static_cast<double>(B) * kInner;
    Row row{"selective_scan", shape_name("selective_scan_step", dtype, B, kInner, 0), step(options),
            elements * (5 * torch::elementSize(dtype) + 2 * 4 * kStates), 7 * elements * kStates};
    if (options.reference) row.reference_ms = without_kernels([&] { return step(options); }).median_ms;
    report.add(row);
  }
}

void run_selective_scan(const Options& options, Report& report) {
  if (options.shapes != "decode") run_training_shapes(options, report);
  if (options.shapes != "train") run_decode_shapes(options, report);
}

const Registrar registrar{"selective_scan",
                          "Mamba's selective scan and causal convolution (training shape fwd/bwd, decode steps)",
                          run_selective_scan};

}  // namespace
}  // namespace densessm::bench
