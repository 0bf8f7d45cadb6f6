// The profiler wrapper (densessm/profiler.h): a known amount of work shows in its summary with the right
// number of calls, the Chrome trace is written whole (and nothing half-written is left), and misuse is
// refused; on CUDA the device's kernels are what is summarised. Also the training benchmark's --profile.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "densessm/profiler.h"
#include "densessm/train_benchmark.h"
#include "test_helpers.h"

namespace densessm {
namespace {

namespace fs = std::filesystem;
using densessm::testing::DeviceTest;

class ProfilerTest : public DeviceTest {
 protected:
  void SetUp() override {
    DeviceTest::SetUp();
    if (IsSkipped()) return;
    dir_ = fs::temp_directory_path() / ("densessm-profile-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_P(ProfilerTest, CountsTheCallsOfAKnownWorkloadAndWritesTheTrace) {
  const auto a = torch::randn({96, 64}, options()), b = torch::randn({64, 80}, options());
  constexpr int kCalls = 7;
  const auto trace = dir_ / "sub" / "mm.trace.json";
  torch::mm(a, b);  // the library's first call (cuBLAS's set-up) outside the profile
  Profile profile(device().is_cuda());
  for (int i = 0; i < kCalls; ++i) torch::mm(a, b);
  const ProfileSummary s = profile.stop(trace.string());

  EXPECT_EQ(s.cuda, device().is_cuda());
  EXPECT_GT(s.wall_ms, 0);
  EXPECT_GT(s.busy_ms, 0);
  ASSERT_FALSE(s.rows.empty());
  for (size_t i = 1; i < s.rows.size(); ++i) EXPECT_GE(s.rows[i - 1].total_ms, s.rows[i].total_ms) << "sorted";
  if (device().is_cuda()) {
    // The device ran one matrix-product kernel per call (cuBLAS's name varies with the card and version).
    EXPECT_LE(s.busy_ms, s.wall_ms);
    int64_t calls = 0;
    for (const auto& row : s.rows) calls += row.calls;
    EXPECT_GE(calls, kCalls);
    EXPECT_EQ(s.rows.front().calls % kCalls, 0) << s.rows.front().name;
  } else {
    auto mm = std::find_if(s.rows.begin(), s.rows.end(), [](const ProfileRow& r) { return r.name == "aten::mm"; });
    ASSERT_NE(mm, s.rows.end());
    EXPECT_EQ(mm->calls, kCalls);
    EXPECT_LE(mm->total_ms, s.busy_ms + 1e-9);
  }
  const std::string table = format_profile(s, 5, kCalls);
  EXPECT_NE(table.find(s.rows.front().name.substr(0, 40)), std::string::npos) << table;
  EXPECT_NE(table.find(std::to_string(kCalls) + " repeat(s)"), std::string::npos) << table;

  // A whole Chrome trace, and no temporary file beside it.
  std::ifstream in(trace);
  ASSERT_TRUE(in.good()) << trace;
  const auto json = nlohmann::json::parse(in);
  ASSERT_TRUE(json.contains("traceEvents"));
  EXPECT_FALSE(json["traceEvents"].empty());
  EXPECT_FALSE(fs::exists(trace.string() + ".tmp"));
}

TEST_P(ProfilerTest, MisuseIsRefused) {
  Profile profile(device().is_cuda());
  EXPECT_THROW(Profile second(device().is_cuda()), std::runtime_error);  // LibTorch's profiler is global
  torch::ones({4}, options()).sum();
  profile.stop();
  EXPECT_THROW(profile.stop(), std::runtime_error);
  // A trace path that cannot be made (under a regular file): a clear error, not a crash.
  fs::create_directories(dir_);
  std::ofstream(dir_ / "file") << "x";
  Profile again(device().is_cuda());
  EXPECT_THROW(again.stop((dir_ / "file" / "t.json").string()), std::runtime_error);
  Profile after(device().is_cuda());  // the failed stop() left the profiler off
  after.stop();
}

TEST_P(ProfilerTest, TrainingBenchmarkProfilesEachBatch) {
  RunConfig c;
  c.model = densessm::testing::tiny_config(Architecture::kRetNet, 1, 2);
  c.device = device().str();
  c.precision = "fp32";
  c.block_size = 16;
  BenchmarkOptions o;
  o.batch_sizes = {2};
  o.warmup_steps = 1;
  o.timed_steps = 1;
  o.profile_dir = dir_.string();
  const auto results = benchmark_training(c, o);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_NE(results[0].profile.find("2 repeat(s)"), std::string::npos) << results[0].profile;
  EXPECT_TRUE(fs::exists(dir_ / (c.model.name + "-batch2.trace.json"))) << results[0].profile;
}

DENSESSM_DEVICE_SUITE(ProfilerTest);

}  // namespace
}  // namespace densessm
