// Data-parallel training, end to end: the real densessm-train, 2 ranks over Gloo on localhost, held against
// 1 rank with the same global batch (same blocks in the same order), plus resuming under another world
// size, the fault paths (a rank that dies, a rank that never comes) and the launcher's signal handling.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "densessm/model.h"
#include "densessm/prepare_data.h"
#include "test_helpers.h"
#include "text_fixtures.h"
#include "train/checkpoint.h"
#include "train/distributed.h"

extern char** environ;

namespace densessm {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A running densessm-train; stderr goes to a file.
struct Process {
  pid_t pid = -1;
  std::string stderr_path;

  // Waits up to `limit`; the exit status, or -1 (after killing it) when it was still running.
  int wait(std::chrono::seconds limit) {
    const auto deadline = Clock::now() + limit;
    int status = 0;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  std::string error_output() const {
    std::ifstream in(stderr_path);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
};

Process spawn(const std::vector<std::string>& arguments, const std::vector<std::string>& variables, const fs::path& log) {
  std::vector<std::string> argv = {DENSESSM_TRAIN_BINARY};
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  std::vector<std::string> environment = variables;
  for (char** e = environ; *e; ++e) environment.emplace_back(*e);  // the first definition of a name wins
  environment.emplace_back("OMP_NUM_THREADS=1");
  std::vector<char*> argv_pointers, environment_pointers;
  for (auto& a : argv) argv_pointers.push_back(a.data());
  for (auto& e : environment) environment_pointers.push_back(e.data());
  argv_pointers.push_back(nullptr);
  environment_pointers.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  Process p;
  p.stderr_path = log.string();
  const int error = posix_spawn(&p.pid, argv[0].c_str(), &actions, nullptr, argv_pointers.data(), environment_pointers.data());
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) throw std::runtime_error("cannot start " + argv[0]);
  return p;
}

// Sets torchrun's variables for one test and removes them after.
class JobVariables {
 public:
  explicit JobVariables(const std::vector<std::pair<std::string, std::string>>& variables) {
    for (const auto& [name, value] : variables) ::setenv(name.c_str(), value.c_str(), 1);
  }
  ~JobVariables() {
    for (const char* name : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}) ::unsetenv(name);
  }
};

std::string environment_error(const std::vector<std::pair<std::string, std::string>>& variables) {
  JobVariables job(variables);
  try {
    distributed::Environment::from_process();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(DistributedEnvironment, ReadsTorchrunVariables) {
  {
    JobVariables none({});
    EXPECT_FALSE(distributed::Environment::from_process().enabled());
  }
  JobVariables job({{"WORLD_SIZE", "4"}, {"RANK", "3"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "node0"}, {"MASTER_PORT", "29500"}});
  const auto e = distributed::Environment::from_process();
  EXPECT_TRUE(e.enabled());
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.master_addr, "node0");
  EXPECT_EQ(e.master_port, 29500);
  EXPECT_EQ(distributed::device_of_rank("cuda", e), torch::Device(torch::kCUDA, 1));
  EXPECT_EQ(distributed::device_of_rank("cuda:0", e), torch::Device(torch::kCUDA, 1));
  EXPECT_EQ(distributed::device_of_rank("cpu", e), torch::Device(torch::kCPU));
}

TEST(DistributedEnvironment, NamesTheBadVariable) {
  const std::vector<std::pair<std::string, std::string>> job = {{"WORLD_SIZE", "2"}, {"RANK", "0"}, {"MASTER_ADDR", "127.0.0.1"}};
  EXPECT_NE(environment_error(job).find("MASTER_PORT is not set"), std::string::npos);
  auto with = [&](const std::string& name, const std::string& value) {
    auto v = job;
    v.emplace_back("MASTER_PORT", "29500");
    for (auto& [n, x] : v) {
      if (n == name) x = value;
    }
    return environment_error(v);
  };
  EXPECT_EQ(with("RANK", "1"), "(accepted)");
  EXPECT_NE(with("RANK", "2").find("RANK=2 is not below WORLD_SIZE=2"), std::string::npos);
  EXPECT_NE(with("WORLD_SIZE", "two").find("WORLD_SIZE=\"two\": expected a non-negative integer"), std::string::npos);
  EXPECT_NE(with("MASTER_PORT", "70000").find("MASTER_PORT=70000: not a TCP port"), std::string::npos);
  EXPECT_NE(with("MASTER_ADDR", "").find("MASTER_ADDR is not set"), std::string::npos);
}

// ZeRO-1's share-out: largest tensors first, each to the rank with the fewest elements so far.
TEST(ShardedOptimizer, PartitionBalancesSizesTheSameWayOnEveryRank) {
  const std::vector<int64_t> sizes = {10, 1, 7, 3, 3, 8, 2};
  // 10 -> r0, 8 -> r1, 7 -> r2, 3 -> r2 (7), 3 -> r1 (8), 2 -> r0 (10, ties to the lower rank), 1 -> r2 (10)
  EXPECT_EQ(distributed::partition_by_size(sizes, 3), (std::vector<int64_t>{0, 2, 2, 2, 1, 1, 0}));
  EXPECT_EQ(distributed::partition_by_size(sizes, 1), std::vector<int64_t>(sizes.size(), 0));
  // A real model's parameters over 2 ranks: both get a share, within one tensor of each other.
  CausalLM model(densessm::testing::tiny_config(Architecture::kRetNet, 1));
  std::vector<int64_t> real;
  for (const auto& p : model->parameters()) real.push_back(p.numel());
  const auto owner = distributed::partition_by_size(real, 2);
  int64_t load[2] = {0, 0};
  for (size_t i = 0; i < real.size(); ++i) load[owner[i]] += real[i];
  EXPECT_GT(load[0], 0);
  EXPECT_GT(load[1], 0);
  EXPECT_LE(std::abs(load[0] - load[1]), *std::max_element(real.begin(), real.end()));
}

class DataParallel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("densessm-ddp-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    PrepareOptions p;
    p.tokenizer = densessm::testing::train_sample_tokenizer(dir_, "tok");
    p.inputs = {(dir_ / "tok.txt").string()};
    p.txt_documents = "line";
    p.output_dir = (dir_ / "data").string();
    p.validation_percent = 10;
    p.threads = 2;
    prepare_data(p);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  // A run config in dir_/<name>.json writing to dir_/<name>/; float32, no dropout, so that the only
  // difference between 1 and 2 ranks is the order of the floating-point sums. Adam's eps is raised from
  // 1e-8: with it, a gradient element near 0 whose sign rounding decides gets a step of +-lr either way,
  // which turns 1e-7 differences into 1e-5 ones in the weights; with 1e-4 the step is a smooth function
  // of the gradient, and a real fault (a missed or doubled gradient) still moves weights by far more.
  static std::string config(const std::string& name, int64_t batch_size, const nlohmann::json& extra = nlohmann::json::object()) {
    nlohmann::json c = {{"model", densessm::testing::config_path("tiny-dense-retnet.json")},
                        {"data", (dir_ / "data").string()},
                        {"output_dir", (dir_ / name).string()},
                        {"dropout", 0.0},
                        {"batch_size", batch_size},
                        {"gradient_accumulation", 2},
                        {"block_size", 16},
                        {"max_steps", 6},
                        {"log_every", 1},
                        {"eval_every", 3},
                        {"eval_batches", 2},
                        {"checkpoint_every", 3},
                        {"distributed_timeout_s", 20},
                        {"optimizer", {{"lr", 3e-3}, {"eps", 1e-4}}}};
    c.update(extra);
    const std::string path = (dir_ / (name + ".json")).string();
    std::ofstream(path) << c.dump(2);
    return path;
  }

  // Runs densessm-train to the end (a hang fails the test after two minutes); its exit status.
  static int train(const std::vector<std::string>& arguments, const std::string& name) {
    Process p = spawn(arguments, {}, dir_ / (name + ".log"));
    const int status = p.wait(std::chrono::seconds(120));
    if (status != 0) ADD_FAILURE() << name << ": exit status " << status << "\n" << p.error_output();
    return status;
  }

  // metrics.jsonl's values of `key`, in order.
  static std::vector<double> metric(const std::string& name, const std::string& key) {
    std::vector<double> result;
    std::ifstream in((dir_ / name / "metrics.jsonl").string());
    std::string line;
    while (std::getline(in, line)) {
      const auto entry = nlohmann::json::parse(line);
      if (entry.contains(key)) result.push_back(entry[key].get<double>());
    }
    return result;
  }

  // Waits until the run `name` has logged `steps` training steps; false after two minutes.
  static bool wait_for_steps(const std::string& name, size_t steps) {
    const auto give_up = Clock::now() + std::chrono::seconds(120);
    while (metric(name, "loss").size() < steps && Clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return metric(name, "loss").size() >= steps;
  }

  static CausalLM final_model(const std::string& name) {
    const auto dir = latest_checkpoint((dir_ / name).string());
    EXPECT_TRUE(dir.has_value()) << name;
    CausalLM model(load_model_config(*dir + "/model.json"));
    torch::load(model, *dir + "/model.pt");
    return model;
  }

  static void expect_same_run(const std::string& a, const std::string& b) {
    for (const std::string key : {"loss", "validation_loss"}) {
      const auto x = metric(a, key), y = metric(b, key);
      ASSERT_EQ(x.size(), y.size()) << key;
      ASSERT_FALSE(x.empty()) << key;
      for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(x[i], y[i], 1e-5 * std::abs(y[i])) << key << " #" << i;
    }
    const auto x = final_model(a)->named_parameters(), y = final_model(b)->named_parameters();
    ASSERT_EQ(x.size(), y.size());
    for (const auto& item : x) {
      EXPECT_LT(densessm::testing::relative_error(item.value(), y[item.key()]), 1e-5) << item.key();
    }
  }

  static fs::path dir_;
};
fs::path DataParallel::dir_;

TEST_F(DataParallel, TwoRanksOfBatchBMatchOneRankOfBatch2B) {
  ASSERT_EQ(train({"--config", config("one", 4)}, "one"), 0);
  ASSERT_EQ(train({"--nproc-per-node", "2", "--config", config("two", 2)}, "two"), 0);
  EXPECT_EQ(metric("two", "loss").size(), 6u);
  expect_same_run("two", "one");
  const auto losses = metric("one", "loss");
  EXPECT_LT(losses.back(), losses.front()) << "the loss should fall";
}

// The loader counts global batches, so 2 ranks x 2 continue as 1 rank x 4; another product is refused.
TEST_F(DataParallel, ResumesUnderAnotherWorldSizeWithTheSameGlobalBatch) {
  ASSERT_EQ(train({"--config", config("straight", 4)}, "straight"), 0);
  ASSERT_EQ(train({"--nproc-per-node", "2", "--stop-after", "3", "--config", config("switched", 2)}, "switched-1"), 0);
  Process refused = spawn({"--resume", "--config", config("switched", 2)}, {}, dir_ / "switched-refused.log");
  EXPECT_EQ(refused.wait(std::chrono::seconds(120)), 1);
  EXPECT_NE(refused.error_output().find("Keep world size x batch_size equal (4)"), std::string::npos)
      << refused.error_output();
  ASSERT_EQ(train({"--resume", "--config", config("switched", 4)}, "switched-2"), 0);
  expect_same_run("switched", "straight");
}

// ZeRO-1: each of 2 ranks keeps the AdamW state of its half of the parameters and sends the others what it
// updated; the run is that of 1 rank x 2b, and its checkpoints (the whole state, gathered on rank 0) resume
// sharded, and unsharded under one rank.
TEST_F(DataParallel, ShardedOptimizerMatchesOneRankAndItsCheckpointsResumeEitherWay) {
  const nlohmann::json shard = {{"shard_optimizer", true}};
  ASSERT_EQ(train({"--config", config("z-one", 4)}, "z-one"), 0);
  ASSERT_EQ(train({"--nproc-per-node", "2", "--config", config("z-two", 2, shard)}, "z-two"), 0);
  expect_same_run("z-two", "z-one");
  std::ifstream log(dir_ / "z-two.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("shard_optimizer: this rank keeps the AdamW state of"), std::string::npos) << text;

  ASSERT_EQ(train({"--nproc-per-node", "2", "--stop-after", "3", "--config", config("z-resume", 2, shard)}, "z-resume-1"), 0);
  ASSERT_EQ(train({"--nproc-per-node", "2", "--resume", "--config", config("z-resume", 2, shard)}, "z-resume-2"), 0);
  expect_same_run("z-resume", "z-one");

  ASSERT_EQ(train({"--nproc-per-node", "2", "--stop-after", "3", "--config", config("z-switch", 2, shard)}, "z-switch-1"), 0);
  ASSERT_EQ(train({"--resume", "--config", config("z-switch", 4)}, "z-switch-2"), 0);
  expect_same_run("z-switch", "z-one");
}

// Rank 1 is killed in the middle of training: rank 0 must not hang; it fails with a message naming the
// broken collective, and the checkpoints written before stay complete.
TEST_F(DataParallel, ARankThatDiesStopsTheOthersWithAClearError) {
  const std::string run = config("dies", 2, {{"max_steps", 100000}, {"eval_every", 0}, {"distributed_timeout_s", 10}});
  const std::vector<std::string> job = {"WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(29400 + ::getpid() % 500)};
  auto with = [&](const std::string& rank) {
    auto v = job;
    v.push_back("RANK=" + rank);
    return v;
  };
  Process first = spawn({"--config", run}, with("0"), dir_ / "dies-0.log");
  Process second = spawn({"--config", run}, with("1"), dir_ / "dies-1.log");
  ASSERT_TRUE(wait_for_steps("dies", 5)) << first.error_output();  // past the first checkpoint (step 3)
  ::kill(second.pid, SIGKILL);
  second.wait(std::chrono::seconds(10));
  const int status = first.wait(std::chrono::seconds(10 + 60));  // the timeout, and a margin for a loaded machine
  EXPECT_NE(status, -1) << "rank 0 hung after rank 1 died";
  EXPECT_NE(status, 0);
  // Which collective breaks depends on where rank 0 was (gradients, the stop flag, a metric).
  EXPECT_NE(first.error_output().find("failed (a rank died, or did not answer within 10 s)"), std::string::npos)
      << first.error_output();
  EXPECT_NO_THROW(final_model("dies"));
}

// Rank 1 never starts: rank 0 gives up after the configured timeout and says where it waited.
TEST_F(DataParallel, ARankThatNeverComesStopsTheOthersAfterTheTimeout) {
  const std::string run = config("alone", 2, {{"distributed_timeout_s", 3}});
  const std::string port = std::to_string(29000 + ::getpid() % 400);
  Process alone = spawn({"--config", run}, {"WORLD_SIZE=2", "RANK=0", "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + port},
                        dir_ / "alone.log");
  const int status = alone.wait(std::chrono::seconds(3 + 60));
  EXPECT_NE(status, -1) << "rank 0 hung waiting for rank 1";
  EXPECT_EQ(status, 1);
  EXPECT_NE(alone.error_output().find("rank 0: the rendezvous of 2 ranks at 127.0.0.1:" + port + " failed"), std::string::npos)
      << alone.error_output();
  EXPECT_FALSE(fs::exists(dir_ / "alone" / "checkpoints"));
}

// The launcher's rank processes (its children), read from /proc.
std::vector<pid_t> children_of(pid_t parent) {
  std::ifstream in("/proc/" + std::to_string(parent) + "/task/" + std::to_string(parent) + "/children");
  std::vector<pid_t> result;
  for (pid_t pid; in >> pid;) result.push_back(pid);
  return result;
}

TEST_F(DataParallel, TheLauncherStopsEveryRankWhenOneFails) {
  const std::string run = config("launcher-fails", 2, {{"max_steps", 100000}, {"eval_every", 0}, {"checkpoint_every", 0}});
  Process launcher = spawn({"--nproc-per-node", "2", "--config", run}, {}, dir_ / "launcher-fails.log");
  ASSERT_TRUE(wait_for_steps("launcher-fails", 3)) << launcher.error_output();
  const auto ranks = children_of(launcher.pid);
  ASSERT_EQ(ranks.size(), 2u);
  ::kill(ranks[1], SIGKILL);
  EXPECT_EQ(launcher.wait(std::chrono::seconds(60)), 128 + SIGKILL) << launcher.error_output();
  EXPECT_NE(launcher.error_output().find("rank 1 failed (exit status 137); stopping the others"), std::string::npos)
      << launcher.error_output();
  EXPECT_NE(::kill(ranks[0], 0), 0) << "rank 0 outlived the launcher";
}

// SIGTERM to the launcher reaches every rank: they stop after the same step with a checkpoint and exit 0.
TEST_F(DataParallel, TheLauncherPassesSignalsOn) {
  const std::string run = config("launcher-signal", 2, {{"max_steps", 100000}, {"eval_every", 0}, {"checkpoint_every", 0}});
  Process launcher = spawn({"--nproc-per-node", "2", "--config", run}, {}, dir_ / "launcher-signal.log");
  ASSERT_TRUE(wait_for_steps("launcher-signal", 3)) << launcher.error_output();
  ::kill(launcher.pid, SIGTERM);
  EXPECT_EQ(launcher.wait(std::chrono::seconds(60)), 0) << launcher.error_output();
  const auto dir = latest_checkpoint((dir_ / "launcher-signal").string());
  ASSERT_TRUE(dir.has_value());
  char last[32];  // the checkpoint is of the last logged step
  std::snprintf(last, sizeof(last), "step-%08lld", static_cast<long long>(metric("launcher-signal", "step").back()));
  EXPECT_EQ(fs::path(*dir).filename(), last);
}

}  // namespace
}  // namespace densessm
