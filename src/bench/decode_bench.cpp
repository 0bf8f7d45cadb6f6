// The decode step's matrix products: a few tokens times a weight matrix, at the shapes of the 1.3 B
// DenseRetNet and the 1.4 B DenseMamba (float16, batch 1 and 6). The small-matmul kernel against cuBLAS
// (torch::mm, the reference column). Bound by the weights' bytes: the GB/s column is what matters.
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bench/bench.h"

#ifdef DENSESSM_WITH_CUDA
#include "ops/cuda/decode_cuda.h"
#endif

namespace densessm::bench {
namespace {

struct Product {
  std::string what;
  int64_t in, out;
};

void run_decode_matmul(const Options& options, Report& report) {
#ifdef DENSESSM_WITH_CUDA
  if (!options.device.is_cuda()) return;  // a CUDA kernel: nothing to time on the CPU
  const std::vector<Product> products{
      {"DenseRetNet 1.3B input projections", 2560, 12960}, {"DenseRetNet 1.3B output projection", 5120, 2560},
      {"DenseRetNet 1.3B lm head", 2560, 32000},           {"DenseMamba 1.4B input projections", 2048, 8256},
      {"DenseMamba 1.4B output projection", 4096, 2048},  {"DenseMamba 1.4B x_proj", 4096, 160}};
  torch::NoGradGuard no_grad;
  for (const Product& product : products) {
    for (const int64_t batch : {1, 6}) {
      std::vector<torch::Tensor> xs, ws;
      for (int i = 0; i < std::max(1, options.rotate); ++i) {
        xs.push_back(random({batch, product.in}, options, torch::kHalf));
        ws.push_back(random({product.out, product.in}, options, torch::kHalf));
      }
      const double bytes = 2.0 * (product.out * product.in + batch * (product.in + product.out));
      Row row{"decode_matmul", product.what + " fp16 B" + std::to_string(batch) + " " + std::to_string(product.in) +
                                   "->" + std::to_string(product.out),
              time_runs(options, [&](int64_t set) { cuda::small_matmul(xs[set], ws[set]); }), bytes,
              2.0 * batch * product.in * product.out};
      if (options.reference) {
        row.reference_ms = time_runs(options, [&](int64_t set) { torch::mm(xs[set], ws[set].t()); }).median_ms;
      }
      report.add(row);
    }
  }
#else
  (void)options, (void)report;
#endif
}

const Registrar registrar{"decode_matmul",
                          "the decode step's matrix products (1.3 B DenseRetNet, 1.4 B DenseMamba; batch 1 and 6): "
                          "the small-matmul kernel against cuBLAS",
                          run_decode_matmul};

}  // namespace
}  // namespace densessm::bench
