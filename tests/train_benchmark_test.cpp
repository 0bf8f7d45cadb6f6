// The training benchmark: its model FLOPs formula against a hand count, and a short run on the CPU.
#include <cmath>

#include "densessm/model.h"
#include "densessm/train_benchmark.h"
#include "test_helpers.h"
#include "train/batch_search.h"

namespace densessm {
namespace {

ModelConfig tiny(const std::string& name) {
  return load_model_config(std::string(DENSESSM_SOURCE_DIR) + "/configs/" + name + ".json");
}

// The parameters of a built model whose name contains one of `parts` (counted, not computed).
int64_t count_named(CausalLM& model, const std::string& prefix, const std::vector<std::string>& parts) {
  int64_t n = 0;
  for (const auto& item : model->named_parameters()) {
    if (item.key().rfind(prefix, 0) != 0) continue;
    for (const auto& part : parts) {
      if (item.key().find(part) != std::string::npos) {
        n += item.value().numel();
        break;
      }
    }
  }
  return n;
}

TEST(TrainingFlops, DenseRetNetByHand) {
  const ModelConfig c = tiny("tiny-dense-retnet");  // V 512, D 64, L 3, K 32, H 2, E 128, C 4, bottleneck 2
  CausalLM model(c);
  // Layer 0's unused dense parameters: k_select 64x2 + 2x32, v_select 64x2 + 2x128, k_norm 32, v_norm 128.
  const int64_t layer0_dense = count_named(model, "layers.0.", {"k_select", "v_select", "k_norm", "v_norm"});
  EXPECT_EQ(layer0_dense, 64 * 2 + 2 * 32 + 64 * 2 + 2 * 128 + 32 + 128);
  // Untied: the input embedding (V x D) is a lookup; lm_head is a product and counts.
  const double n = static_cast<double>(model->num_parameters() - 512 * 64 - layer0_dense);
  // Retention per layer and token, forward: the C x C block products 2 C (K + E) and the state 4 K E / H.
  const double mixing = 2.0 * 4 * (32 + 128) + 4.0 * 32 * 128 / 2;
  const TrainingFlops f = training_flops(c);
  EXPECT_EQ(f.matmul_parameters, n);
  EXPECT_EQ(f.mixing_forward_per_layer, mixing);
  EXPECT_EQ(f.per_token, 6 * n + 3 * 3 * mixing);
}

TEST(TrainingFlops, DenseMambaByHand) {
  const ModelConfig c = tiny("tiny-dense-mamba");  // V 512, D 64, L 3, d_inner 128, N 8, bottleneck 2, tied
  CausalLM model(c);
  const int64_t layer0_dense = count_named(model, "layers.0.", {"x_select", "x_norm"});
  EXPECT_EQ(layer0_dense, 64 * 2 + 2 * 128 + 128);
  // Tied: the one V x D matrix is looked up (free) and multiplied by the output (counted once).
  const double n = static_cast<double>(model->num_parameters() - layer0_dense);
  const double mixing = 8.0 * 128 * 8;  // selective scan: 8 FLOPs per channel and state
  const TrainingFlops f = training_flops(c);
  EXPECT_EQ(f.matmul_parameters, n);
  EXPECT_EQ(f.per_token, 6 * n + 3 * 3 * mixing);
}

TEST(TrainingFlops, PlainModelsCountEveryLayerAlike) {
  const ModelConfig c = tiny("tiny-retnet");
  CausalLM model(c);
  EXPECT_EQ(training_flops(c).matmul_parameters, static_cast<double>(model->num_parameters() - c.vocab_size * c.hidden_size));
}

TEST(TrainingBenchmark, FindsTheLargestBatchThatFits) {
  for (int64_t limit : {0, 1, 2, 3, 5, 8, 13, 100}) {
    std::vector<int64_t> tried;
    const int64_t found = largest_fitting_batch([&](int64_t batch) {
      tried.push_back(batch);
      return batch <= limit;
    });
    EXPECT_EQ(found, limit);
    EXPECT_EQ(tried.front(), 1);
    EXPECT_LE(tried.size(), 2 * static_cast<size_t>(std::log2(limit + 1)) + 2) << "limit " << limit;
  }
}

RunConfig cpu_run() {
  RunConfig c;
  c.model = tiny("tiny-dense-retnet");
  c.block_size = 32;
  return c;
}

TEST(TrainingBenchmark, TimesGivenBatchSizesOnTheCpu) {
  BenchmarkOptions o;
  o.batch_sizes = {1, 3};
  o.warmup_steps = 1;
  o.timed_steps = 2;
  o.peak_flops = 1e12;
  const RunConfig c = cpu_run();
  const auto results = benchmark_training(c, o);
  ASSERT_EQ(results.size(), 2u);
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    EXPECT_EQ(r.batch_size, o.batch_sizes[i]);
    EXPECT_EQ(r.block_size, 32);
    EXPECT_FALSE(r.out_of_memory);
    EXPECT_GT(r.step_seconds, 0);
    EXPECT_DOUBLE_EQ(r.tokens_per_second, static_cast<double>(r.batch_size * 32) / r.step_seconds);
    EXPECT_EQ(r.flops_per_token, training_flops(c.model).per_token);
    EXPECT_DOUBLE_EQ(r.mfu, r.flops_per_token * r.tokens_per_second / 1e12);
    EXPECT_EQ(r.peak_allocated_bytes, 0);  // no allocator statistics on the CPU
  }
}

TEST(TrainingBenchmark, SearchingTheBatchNeedsCudaAndBadOptionsAreRefused) {
  BenchmarkOptions o;
  try {
    benchmark_training(cpu_run(), o);
    ADD_FAILURE() << "searched the batch size on the CPU";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("needs a CUDA device"), std::string::npos) << e.what();
  }
  o.batch_sizes = {0};
  EXPECT_THROW(benchmark_training(cpu_run(), o), std::runtime_error);
  o.batch_sizes = {1};
  o.timed_steps = 0;
  EXPECT_THROW(benchmark_training(cpu_run(), o), std::runtime_error);
}

}  // namespace
}  // namespace densessm
