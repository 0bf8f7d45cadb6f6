// densessm-train as a user runs it: every kind of bad input ends the process with a non-zero exit and a
// message naming the problem, and leaves earlier checkpoints and shards as they were. A full disk is
// simulated without root: the process runs with a small RLIMIT_FSIZE and SIGXFSZ ignored, so its writes
// past the limit fail with EFBIG as they would with ENOSPC.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "test_helpers.h"
#include "text_fixtures.h"

namespace densessm {
namespace {

namespace fs = std::filesystem;

struct Process {
  int exit_code = -1;
  std::string output;  ///< stdout and stderr
};

// Runs densessm-train with `args`; file_size_limit > 0 caps the size of every file it writes.
Process run_train(const std::vector<std::string>& args, rlim_t file_size_limit = 0) {
  std::vector<std::string> words{DENSESSM_TRAIN_BINARY};
  words.insert(words.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = ::fork();
  if (pid == 0) {  // the child: only async-signal-safe calls until exec
    ::dup2(pipe_fds[1], STDOUT_FILENO);
    ::dup2(pipe_fds[1], STDERR_FILENO);
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    if (file_size_limit > 0) {
      const struct rlimit limit {file_size_limit, file_size_limit};
      ::setrlimit(RLIMIT_FSIZE, &limit);
      struct sigaction ignore {};
      ignore.sa_handler = SIG_IGN;  // an ignored signal stays ignored across exec
      ::sigaction(SIGXFSZ, &ignore, nullptr);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  Process result;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(pipe_fds[0], buffer, sizeof(buffer))) > 0) result.output.append(buffer, static_cast<size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

class TrainCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("densessm-train-cli-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    data_ = densessm::testing::prepare_sample_dataset(dir_);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  // A short CPU run of the tiny DenseRetNet on the sample data, checkpoints every 2 steps.
  static nlohmann::json run(const std::string& out, int64_t steps = 4) {
    return {{"model", std::string(DENSESSM_SOURCE_DIR) + "/configs/tiny-dense-retnet.json"},
            {"data", data_},
            {"output_dir", (dir_ / out).string()},
            {"batch_size", 2},
            {"gradient_accumulation", 1},
            {"block_size", 16},
            {"max_steps", steps},
            {"log_every", 1},
            {"eval_every", 0},
            {"checkpoint_every", 2},
            {"keep_checkpoints", 3}};
  }
  static std::string write_config(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }
  static std::string write_config(const std::string& name, const nlohmann::json& config) {
    return write_config(name, config.dump(2));
  }
  static std::vector<std::string> checkpoint_names(const std::string& out) {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_ / out / "checkpoints")) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
  // Exit non-zero, with the message naming the problem.
  static void expect_failure(const Process& p, const std::string& part) {
    EXPECT_NE(p.exit_code, 0) << p.output;
    EXPECT_NE(p.output.find("densessm-train: error: "), std::string::npos) << p.output;
    EXPECT_NE(p.output.find(part), std::string::npos) << "expected \"" << part << "\" in:\n" << p.output;
  }

  static fs::path dir_;
  static std::string data_;
};
fs::path TrainCli::dir_;
std::string TrainCli::data_;

TEST_F(TrainCli, MissingConfigFile) {
  expect_failure(run_train({"--config", (dir_ / "nope.json").string()}), "nope.json: cannot open the run config");
}

TEST_F(TrainCli, MalformedConfig) {
  expect_failure(run_train({"--config", write_config("malformed.json", std::string(R"({"model": "x.json", )"))}),
                 "malformed.json: malformed JSON");
}

TEST_F(TrainCli, UnknownKey) {
  auto config = run("unused");
  config["learning_rate"] = 1e-3;
  expect_failure(run_train({"--config", write_config("unknown.json", config)}), "unknown.json: learning_rate: unknown key");
}

TEST_F(TrainCli, WrongType) {
  auto config = run("unused");
  config["batch_size"] = "8";
  expect_failure(run_train({"--config", write_config("type.json", config)}), "type.json: batch_size: expected an integer");
}

TEST_F(TrainCli, DataOfALargerVocabularyThanTheModel) {
  auto config = run("unused");
  auto model = nlohmann::json::parse(std::ifstream(config["model"].get<std::string>()));
  model["vocab_size"] = 100;  // the data's tokenizer has 400 pieces
  config["model"] = model;
  expect_failure(run_train({"--config", write_config("vocab.json", config)}), "does not fit the model's 100");
}

TEST_F(TrainCli, ShardOfAnotherVocabularyOrTokenWidth) {
  // A copy of the dataset whose first training shard's header is changed; the original is untouched.
  const auto manifest = nlohmann::json::parse(std::ifstream(data_ + "/dataset.json"));
  const std::string shard_name = manifest["train_shards"][0].get<std::string>();
  auto damaged = [&](const std::string& name, uint64_t header_vocab) {
    const fs::path copy = dir_ / name;
    fs::remove_all(copy);
    fs::copy(data_, copy, fs::copy_options::recursive);
    std::fstream shard((copy / shard_name).string(), std::ios::in | std::ios::out | std::ios::binary);
    shard.seekp(16);  // magic 8, version 4, token width 4, then the vocab size (uint64)
    shard.write(reinterpret_cast<const char*>(&header_vocab), sizeof(header_vocab));
    auto config = run("unused");
    config["data"] = copy.string();
    return write_config(name + ".json", config);
  };
  expect_failure(run_train({"--config", damaged("vocab401", 401)}),
                 shard_name + ": shard vocab size 401 does not match the expected 400");
  // 70000 pieces need uint32 tokens, but the shard holds uint16 ones: another dtype than its header says.
  expect_failure(run_train({"--config", damaged("width", 70000)}), "header vocab size 70000 and token width 2 disagree");
  EXPECT_EQ(run_train({"--config", write_config("intact.json", run("intact", 1))}).exit_code, 0) << "the original data";
}

TEST_F(TrainCli, CorruptTruncatedOrMismatchedCheckpoints) {
  const std::string config = write_config("ckpt.json", run("ckpt"));
  ASSERT_EQ(run_train({"--config", config}).exit_code, 0);
  const fs::path latest = dir_ / "ckpt" / "checkpoints" / "step-00000004";
  const fs::path model = latest / "model.pt";
  const std::string original = [&] {
    std::ifstream in(model.string(), std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();

  // Corrupt: the same size, the middle overwritten.
  {
    std::fstream f(model.string(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(original.size() / 2));
    f << std::string(1024, 'x');
  }
  expect_failure(run_train({"--config", config, "--resume"}), "step-00000004: corrupt or truncated checkpoint");
  // Truncated.
  fs::resize_file(model, original.size() / 3);
  expect_failure(run_train({"--config", config, "--resume"}), "step-00000004: corrupt or truncated checkpoint");
  EXPECT_EQ(fs::file_size(model), original.size() / 3) << "a failed resume must not touch the checkpoint";

  // Another model shape, with the checkpoint intact again.
  std::ofstream(model.string(), std::ios::binary) << original;
  auto other = run("ckpt");
  auto shape = nlohmann::json::parse(std::ifstream(other["model"].get<std::string>()));
  shape["num_layers"] = 2;
  other["model"] = shape;
  expect_failure(run_train({"--config", write_config("ckpt-shape.json", other), "--resume"}), "another model shape");
  EXPECT_EQ(checkpoint_names("ckpt"), (std::vector<std::string>{"step-00000002", "step-00000004"}));
}

TEST_F(TrainCli, AFullDiskWhileSavingKeepsThePreviousCheckpoint) {
  ASSERT_EQ(run_train({"--config", write_config("disk.json", run("disk", 4))}).exit_code, 0);
  const std::string longer = write_config("disk-6.json", run("disk", 6));

  // Resumed at step 4 with room for nothing bigger than 64 KiB: the step-6 checkpoint cannot be written.
  const Process full = run_train({"--config", longer, "--resume"}, 64 * 1024);
  expect_failure(full, "step-00000006");
  EXPECT_NE(full.output.find("disk full"), std::string::npos) << full.output;
  EXPECT_NE(full.output.find("File too large"), std::string::npos) << "the system's reason: " << full.output;
  // No half checkpoint under any name: the newest is still step 4.
  EXPECT_EQ(checkpoint_names("disk"), (std::vector<std::string>{"step-00000002", "step-00000004"}));

  // A process killed while saving leaves its temporary folder: never taken for a checkpoint, and removed
  // by the next save.
  const fs::path stale = dir_ / "disk" / "checkpoints" / "step-00000005.tmp-999999";
  fs::create_directories(stale);
  std::ofstream((stale / "model.pt").string()) << "half";

  // With room again, the run resumes from step 4 and finishes.
  const Process again = run_train({"--config", longer, "--resume"});
  EXPECT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("resuming at step 4"), std::string::npos) << again.output;
  EXPECT_EQ(checkpoint_names("disk"), (std::vector<std::string>{"step-00000002", "step-00000004", "step-00000006"}));
}

TEST_F(TrainCli, BenchmarkPrintsThroughputAndMfu) {
  const Process p = run_train({"--config", write_config("bench.json", run("bench")), "--benchmark", "--batch", "1,2",
                               "--warmup", "1", "--steps", "1", "--peak-tflops", "1"});
  EXPECT_EQ(p.exit_code, 0) << p.output;
  EXPECT_NE(p.output.find("tokens/s"), std::string::npos) << p.output;
  EXPECT_NE(p.output.find("MFU against 1 TFLOP/s"), std::string::npos) << p.output;
  EXPECT_FALSE(fs::exists(dir_ / "bench")) << "a benchmark writes no run output";
  expect_failure(run_train({"--config", write_config("bench-cpu.json", run("bench")), "--benchmark"}), "needs a CUDA device");
}

}  // namespace
}  // namespace densessm
