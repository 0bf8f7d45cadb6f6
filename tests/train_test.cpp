// Training: schedules, run-config errors, and checkpoints (exact resume, retention, bad checkpoints).
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "densessm/convert.h"
#include "densessm/prepare_data.h"
#include "densessm/train.h"
#include "event_file.h"
#include "test_helpers.h"
#include "text_fixtures.h"

namespace densessm {
namespace {

namespace fs = std::filesystem;
using densessm::testing::config_path;

TEST(Schedule, WarmupThenDecay) {
  ScheduleConfig s;
  s.warmup_ratio = 0.1;
  EXPECT_DOUBLE_EQ(lr_factor(s, 0, 100), 0.1);  // 10 warmup steps: 1/10, 2/10, ...
  EXPECT_DOUBLE_EQ(lr_factor(s, 9, 100), 1.0);
  EXPECT_DOUBLE_EQ(lr_factor(s, 10, 100), 1.0);  // decay starts at the peak
  EXPECT_NEAR(lr_factor(s, 55, 100), 0.5, 1e-12);  // linear (power 1) to 0 at step 100
  s.final_lr_ratio = 0.1;
  s.power = 2;
  EXPECT_NEAR(lr_factor(s, 55, 100), 0.1 + 0.9 * 0.25, 1e-12);
  EXPECT_NEAR(lr_factor(s, 100, 100), 0.1, 1e-12);
  s.type = "cosine";
  EXPECT_NEAR(lr_factor(s, 55, 100), 0.1 + 0.9 * 0.5, 1e-12);
  s.type = "constant";
  EXPECT_DOUBLE_EQ(lr_factor(s, 99, 100), 1.0);
}

const char* kRun = R"({"model": "tiny-dense-retnet.json", "data": "d", "output_dir": "o", "max_steps": 10})";

// The error names the file at fault (the run config, or the model config it points to) and the reason.
void expect_run_error(const std::string& json, const std::string& part, const std::string& file = "run.json") {
  try {
    parse_run_config(json, "run.json", std::string(DENSESSM_SOURCE_DIR) + "/configs");
    ADD_FAILURE() << "accepted: " << json;
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(file + ": "), std::string::npos) << e.what();
  }
}

std::string with(const std::string& extra) { return std::string(kRun).insert(1, extra + ", "); }

TEST(RunConfig, DefaultsAreTheReferenceRecipe) {
  const RunConfig c = parse_run_config(kRun, "run.json", std::string(DENSESSM_SOURCE_DIR) + "/configs");
  EXPECT_EQ(c.optimizer.lr, 6e-4);
  EXPECT_EQ(c.optimizer.beta2, 0.98);
  EXPECT_EQ(c.optimizer.weight_decay, 0.01);
  EXPECT_EQ(c.schedule.warmup_ratio, 0.015);
  EXPECT_EQ(c.block_size, 2048);
  EXPECT_EQ(c.batch_size * c.gradient_accumulation, 32);
  EXPECT_EQ(c.seed, 1995u);
  EXPECT_EQ(c.model.name, "tiny-dense-retnet");
}

TEST(RunConfig, Errors) {
  expect_run_error("{", "malformed JSON");
  expect_run_error(R"({"data": "d", "output_dir": "o", "max_steps": 1})", "model: is required");
  expect_run_error(with(R"("learning_rate": 1)"), "learning_rate: unknown key");
  expect_run_error(with(R"("optimizer": {"lr": 1e-3, "beta": 0.9})"), "optimizer.beta: unknown key");
  expect_run_error(with(R"("batch_size": "8")"), "batch_size: expected an integer");
  expect_run_error(with(R"("precision": "fp8")"), "precision: must be fp32, bf16 or fp16");
  expect_run_error(with(R"("schedule": {"type": "step"})"), "schedule.type");
  expect_run_error(with(R"("distributed_timeout_s": 0)"), "distributed_timeout_s: must be positive");
  expect_run_error(R"({"model": "tiny-dense-retnet.json", "data": "d", "output_dir": "o"})", "max_steps or max_tokens");
  expect_run_error(R"({"model": "nope.json", "data": "d", "output_dir": "o", "max_steps": 1})", "nope.json: cannot open", "nope.json");
  expect_run_error(R"({"model": {"architecture": "retnet"}, "data": "d", "output_dir": "o", "max_steps": 1})",
                   "vocab_size");
}

class Training : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("densessm-train-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    densessm::testing::prepare_sample_dataset(dir_);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static RunConfig config(const std::string& out) {
    RunConfig c = parse_run_config(kRun, "run.json", std::string(DENSESSM_SOURCE_DIR) + "/configs");
    c.data = (dir_ / "data").string();
    c.output_dir = (dir_ / out).string();
    c.model.dropout = 0.1;  // so that resuming must also restore the random generator
    c.batch_size = 2;
    c.gradient_accumulation = 2;
    c.block_size = 16;
    c.max_steps = 8;
    c.log_every = 1;
    c.eval_every = 4;
    c.eval_batches = 2;
    c.checkpoint_every = 2;
    c.keep_checkpoints = 2;
    c.optimizer.lr = 3e-3;
    return c;
  }
  static std::vector<double> losses(const std::string& out) {
    std::vector<double> result;
    std::ifstream in((dir_ / out / "metrics.jsonl").string());
    std::string line;
    while (std::getline(in, line)) {
      const auto entry = nlohmann::json::parse(line);
      if (entry.contains("loss")) result.push_back(entry["loss"].get<double>());
    }
    return result;
  }
  static fs::path dir_;
};
fs::path Training::dir_;

TEST_F(Training, ResumingGivesTheSameLossesAsRunningStraight) {
  train(config("straight"), {});
  TrainOptions first;
  first.stop_after = 3;  // stops between checkpoints: the resumed run must redo nothing and skip nothing
  EXPECT_EQ(train(config("interrupted"), first), 3);
  TrainOptions resume;
  resume.resume = true;
  EXPECT_EQ(train(config("interrupted"), resume), 8);
  const auto a = losses("straight"), b = losses("interrupted");
  ASSERT_EQ(a.size(), 8u);
  ASSERT_EQ(b.size(), 8u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "step " << i + 1;
  EXPECT_LT(a.back(), a.front()) << "the loss should fall";

  // TensorBoard got the same training losses, at the same steps, and the validation curve.
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir_ / "straight" / "tensorboard")) files.push_back(e.path().string());
  ASSERT_EQ(files.size(), 1u);
  std::vector<std::pair<int64_t, float>> tb_losses;
  int validation_points = 0;
  for (const auto& event : densessm::testing::read_event_file(files[0])) {
    for (const auto& [tag, value] : event.values) {
      if (tag == "train/loss") tb_losses.emplace_back(event.step, value);
      validation_points += tag == "validation/perplexity";
    }
  }
  ASSERT_EQ(tb_losses.size(), a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(tb_losses[i].first, static_cast<int64_t>(i + 1));
    EXPECT_EQ(tb_losses[i].second, static_cast<float>(a[i]));
  }
  EXPECT_EQ(validation_points, 2);  // eval_every 4 of 8 steps
}

TEST_F(Training, KeepsTheLastCheckpointsAndRejectsBadOnes) {
  train(config("keep"), {});
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir_ / "keep" / "checkpoints")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"step-00000006", "step-00000008"}));
  // Self-contained for generation: the dataset's tokenizer travels with each checkpoint.
  EXPECT_TRUE(fs::exists(dir_ / "keep" / "checkpoints" / "step-00000006" / "tokenizer.model"));

  // A truncated model file: a clear error, and the checkpoint is left as it was.
  const fs::path model = dir_ / "keep" / "checkpoints" / "step-00000008" / "model.pt";
  const auto size = fs::file_size(model);
  fs::resize_file(model, size / 2);
  TrainOptions resume;
  resume.resume = true;
  try {
    train(config("keep"), resume);
    ADD_FAILURE() << "resumed from a truncated checkpoint";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("step-00000008: corrupt or truncated checkpoint"), std::string::npos) << e.what();
  }
  EXPECT_EQ(fs::file_size(model), size / 2);
  EXPECT_TRUE(fs::exists(dir_ / "keep" / "checkpoints" / "step-00000006" / "model.pt"));

  // Another model shape.
  RunConfig other = config("keep");
  other.model.num_layers = 2;
  try {
    train(other, resume);
    ADD_FAILURE() << "resumed a checkpoint of another shape";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("another model shape"), std::string::npos) << e.what();
  }
}

TEST_F(Training, StartsFromAnImportedModel) {
  // A model exported to the reference's layout and imported back, as densessm-convert does.
  RunConfig c = config("init");
  torch::manual_seed(99);
  CausalLM source(c.model);
  export_model(ExternalFormat::kHfDenseRetNet, source, (dir_ / "init-hf").string());
  CausalLM imported = import_model(ExternalFormat::kHfDenseRetNet, (dir_ / "init-hf").string());
  save_model_folder(imported, (dir_ / "init-ours").string());

  c.init_from = (dir_ / "init-ours").string();
  c.max_steps = 1;
  c.optimizer.lr = 1e-12;  // the one step leaves the weights where they started
  c.optimizer.weight_decay = 0;
  train(c, {});
  CausalLM trained = load_model_folder(c.output_dir);
  for (const auto& item : source->named_parameters()) {
    EXPECT_TRUE(torch::allclose(trained->named_parameters()[item.key()], item.value(), 0, 1e-9)) << item.key();
  }

  RunConfig other = config("init-other");
  other.model.num_layers = 2;
  other.init_from = c.init_from;
  try {
    train(other, {});
    ADD_FAILURE() << "initialised from a model of another shape";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("another model shape"), std::string::npos) << e.what();
  }
  expect_run_error(with(R"("init_from": "no-such-folder")"), "init_from");
}

TEST_F(Training, DataOfAnotherVocabularyIsRefused) {
  RunConfig c = config("vocab");
  c.model.vocab_size = 100;  // the data's tokenizer has 400 pieces
  c.model.pad_token_id = 0, c.model.bos_token_id = 1, c.model.eos_token_id = 2;
  try {
    train(c, {});
    ADD_FAILURE();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("does not fit the model's 100"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace densessm
