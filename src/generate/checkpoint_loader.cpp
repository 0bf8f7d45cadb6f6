// A training checkpoint (src/train/checkpoint.h) read back for generation: model config, weights, tokenizer.
#include <filesystem>

#include <torch/torch.h>

#include "densessm/convert.h"
#include "densessm/generate.h"
#include "json_reader.h"
#include "train/checkpoint.h"

namespace densessm {
namespace {

namespace fs = std::filesystem;

// The checkpoint folder itself, or the newest one under an output_dir (or its checkpoints/ folder).
fs::path checkpoint_folder(const std::string& path) {
  if (!fs::is_directory(path)) throw GenerateError(path + ": no such checkpoint folder");
  if (fs::exists(fs::path(path) / "model.json")) return path;
  for (const fs::path& output_dir : {fs::path(path), fs::path(path).parent_path()}) {
    if (auto latest = latest_checkpoint(output_dir.string())) return *latest;
  }
  throw GenerateError(path + ": not a checkpoint folder (no model.json) and no checkpoints/step-N inside");
}

void require(const fs::path& file, const std::string& what) {
  if (!fs::is_regular_file(file)) throw GenerateError(file.string() + ": missing (" + what + ")");
}

}  // namespace

Checkpoint load_checkpoint(const std::string& path) {
  const fs::path dir = checkpoint_folder(path);
  require(dir / "model.json", "the model config");
  require(dir / "model.pt", "the weights");
  require(dir / "tokenizer.model", "the tokenizer; densessm-train copies it there from the dataset's dataset.json");
  ModelConfig config;
  try {
    config = parse_model_config(json_config::read_config_file((dir / "model.json").string(), "checkpoint's model config"),
                                (dir / "model.json").string());
  } catch (const ConfigError& e) {
    throw GenerateError(e.what());
  }
  std::optional<Tokenizer> tokenizer;
  try {
    tokenizer = Tokenizer::load((dir / "tokenizer.model").string());
  } catch (const TokenizerError& e) {
    throw GenerateError(e.what());
  }
  if (tokenizer->vocab_size() != config.vocab_size) {
    throw GenerateError(dir.string() + ": the tokenizer has " + std::to_string(tokenizer->vocab_size()) +
                        " pieces but the model config's vocab_size is " + std::to_string(config.vocab_size));
  }
  config.dropout = 0;
  CausalLM model{nullptr};
  try {
    // The one reader of model folders: it keeps the stored dtype (an imported model may be bf16 or fp16).
    model = load_model_folder(dir.string());
  } catch (const ConvertError& e) {
    throw GenerateError(e.what());
  }
  model->eval();
  return Checkpoint{config, model, *tokenizer};
}

}  // namespace densessm
