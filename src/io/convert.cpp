// Import and export through a Hugging Face layout (src/io/hf_layout.h), and our model folders.
#include "densessm/convert.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <torch/torch.h>

#include "io/files.h"
#include "io/hf_layout.h"
#include "json_reader.h"
#include "train/checkpoint.h"

namespace densessm {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const HfLayout& layout_of(ExternalFormat format) {
  return format == ExternalFormat::kHfMamba ? hf_mamba_layout() : hf_dense_retnet_layout();
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The folder's own name, also for "dir/" and "dir/.".
std::string folder_name(const std::string& folder) {
  fs::path p = fs::absolute(folder).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConvertError(path + ": cannot open");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw ConvertError(path + ": not valid JSON: " + e.what());
  }
}

bool is_float(torch::ScalarType t) {
  return t == torch::kFloat || t == torch::kDouble || t == torch::kHalf || t == torch::kBFloat16;
}

// The stored tensor `name` (checked against `shape`) as `dtype`.
torch::Tensor read_tensor(const SafetensorsCheckpoint& weights, const std::string& folder, const std::string& name,
                          const std::vector<int64_t>& shape, const std::string& what) {
  if (!weights.contains(name)) {
    throw ConvertError(folder + ": missing tensor \"" + name + "\" (" + what + ", shape " + shape_string(shape) + ")");
  }
  const SafetensorsEntry& entry = weights.entry(name);
  if (entry.shape != shape) {
    throw ConvertError(folder + ": tensor \"" + name + "\" has shape " + shape_string(entry.shape) + " in the file, but " +
                       what + " needs " + shape_string(shape));
  }
  if (!is_float(entry.dtype)) {
    throw ConvertError(folder + ": tensor \"" + name + "\" is stored as " + c10::toString(entry.dtype) +
                       "; expected a floating-point dtype (F32, F16, BF16 or F64)");
  }
  return weights.tensor(name);
}

// The dtype model.pt stores (that of its embeddings, which every model has).
torch::ScalarType stored_dtype(const std::string& path) {
  torch::serialize::InputArchive archive, embeddings;
  archive.load_from(path);
  archive.read("embed_tokens", embeddings);
  torch::Tensor weight;
  embeddings.read("weight", weight);
  return weight.scalar_type();
}

}  // namespace

ExternalFormat parse_external_format(const std::string& name) {
  if (name == "hf-mamba") return ExternalFormat::kHfMamba;
  if (name == "hf-dense-retnet") return ExternalFormat::kHfDenseRetNet;
  throw ConvertError("unknown format \"" + name + "\" (expected hf-mamba or hf-dense-retnet)");
}

std::string to_string(ExternalFormat format) {
  return format == ExternalFormat::kHfMamba ? "hf-mamba" : "hf-dense-retnet";
}

std::string rename_parameter(const std::string& ours, const NameRules& rules, const std::string& layout) {
  for (const auto& [pattern, replacement] : rules) {
    if (std::regex_match(ours, pattern)) return std::regex_replace(ours, pattern, replacement);
  }
  throw ConvertError(layout + ": no name for parameter \"" + ours + "\"");
}

std::string torch_dtype_name(torch::ScalarType dtype) {
  if (dtype == torch::kFloat) return "float32";
  if (dtype == torch::kHalf) return "float16";
  if (dtype == torch::kBFloat16) return "bfloat16";
  if (dtype == torch::kDouble) return "float64";
  throw ConvertError(std::string("unsupported dtype ") + c10::toString(dtype));
}

HfConfigReader::HfConfigReader(const json& config, std::string source) : config_(config), source_(std::move(source)) {
  if (!config_.is_object()) throw ConvertError(source_ + ": expected a JSON object");
}

void HfConfigReader::fail(const std::string& key, const std::string& reason) const {
  throw ConvertError(source_ + ": " + key + ": " + reason);
}

const json* HfConfigReader::find(const std::string& key) const {
  auto it = config_.find(key);
  return it == config_.end() || it->is_null() ? nullptr : &*it;
}

void HfConfigReader::require(const std::string& key) const {
  if (!find(key)) fail(key, "is required but missing");
}

void HfConfigReader::read(const std::string& key, int64_t& out) const {
  const json* value = find(key);
  if (!value) return;
  if (value->is_number_integer()) {
    out = value->get<int64_t>();
  } else if (value->is_number_float() && value->get<double>() == std::floor(value->get<double>()) &&
             std::abs(value->get<double>()) < 9e15) {
    out = static_cast<int64_t>(value->get<double>());
  } else {
    fail(key, "expected an integer, got " + value->dump());
  }
}

void HfConfigReader::read(const std::string& key, double& out) const {
  const json* value = find(key);
  if (!value) return;
  if (!value->is_number()) fail(key, "expected a number, got " + value->dump());
  out = value->get<double>();
}

void HfConfigReader::read(const std::string& key, bool& out) const {
  const json* value = find(key);
  if (!value) return;
  if (!value->is_boolean()) fail(key, "expected true or false, got " + value->dump());
  out = value->get<bool>();
}

void HfConfigReader::read(const std::string& key, std::string& out) const {
  const json* value = find(key);
  if (!value) return;
  if (!value->is_string()) fail(key, "expected a string, got " + value->dump());
  out = value->get<std::string>();
}

CausalLM import_model(ExternalFormat format, const std::string& folder, torch::ScalarType dtype) {
  const HfLayout& layout = layout_of(format);
  const std::string config_path = (fs::path(folder) / "config.json").string();
  json hf_config = read_json(config_path);
  const SafetensorsCheckpoint weights(folder);
  // transformers 4 left tie_word_embeddings out when true (its default) and then saved no lm_head;
  // transformers 5 leaves it out when false (no default) and saves lm_head. Either way, an absent key
  // means tied exactly when the output projection is absent.
  if (hf_config.is_object() && (!hf_config.contains("tie_word_embeddings") || hf_config["tie_word_embeddings"].is_null())) {
    hf_config["tie_word_embeddings"] = !weights.contains(layout.lm_head);
  }
  ModelConfig config = layout.read_config(hf_config, config_path);
  config.name = folder_name(folder);

  torch::NoGradGuard no_grad;
  CausalLM model(config);
  model->to(dtype);
  std::set<std::string> expected;
  for (auto& item : model->named_parameters()) {
    const std::string name = layout.external_name(item.key());
    const auto shape = layout.external_shape(item.key(), item.value().sizes().vec());
    const auto stored = read_tensor(weights, folder, name, shape, "parameter " + item.key() + " of config.json's model");
    item.value().copy_(stored.reshape(item.value().sizes()));
    expected.insert(name);
  }
  // Buffers that follow from the config are optional, but when present they must agree with it.
  for (const auto& [name, value] : layout.derived_tensors(config)) {
    expected.insert(name);
    if (!weights.contains(name)) continue;
    const auto stored = read_tensor(weights, folder, name, value.sizes().vec(), "the config").to(torch::kDouble);
    const double tolerance = c10::elementSize(weights.entry(name).dtype) == 2 ? 1e-2 : 1e-5;
    if (!torch::allclose(stored, value.to(torch::kDouble), tolerance, 0)) {
      throw ConvertError(folder + ": tensor \"" + name + "\" differs from the values config.json implies");
    }
  }
  if (config.tie_embeddings && weights.contains(layout.lm_head)) {
    // Tied weights saved twice are accepted when they are the same.
    expected.insert(layout.lm_head);
    const auto embeddings = weights.tensor(layout.embeddings).to(torch::kDouble);
    const auto head = read_tensor(weights, folder, layout.lm_head, embeddings.sizes().vec(), "the tied output projection");
    if (!torch::equal(head.to(torch::kDouble), embeddings)) {
      throw ConvertError(folder + ": tensor \"" + layout.lm_head + "\" differs from \"" + layout.embeddings +
                         "\", but config.json ties them (tie_word_embeddings)");
    }
  }
  for (const std::string& name : weights.names()) {
    if (!expected.count(name)) {
      throw ConvertError(folder + ": unexpected tensor \"" + name + "\" (shape " + shape_string(weights.entry(name).shape) +
                         "): the " + to_string(format) + " model described by config.json has no such parameter");
    }
  }
  return model;
}

void export_model(ExternalFormat format, CausalLM& model, const std::string& folder, const ExportOptions& options) {
  const HfLayout& layout = layout_of(format);
  const ModelConfig& config = model->config();
  if ((format == ExternalFormat::kHfMamba) != (config.architecture == Architecture::kMamba)) {
    throw ConvertError("cannot export a " + to_string(config.architecture) + " model as " + to_string(format));
  }
  const json hf_config = layout.write_config(config, options.dtype);
  NamedTensors tensors;
  for (const auto& item : model->named_parameters()) {
    const auto shape = layout.external_shape(item.key(), item.value().sizes().vec());
    tensors.emplace_back(layout.external_name(item.key()), item.value().detach().to(torch::kCPU, options.dtype).reshape(shape));
  }
  for (const auto& [name, value] : layout.derived_tensors(config)) tensors.emplace_back(name, value.to(options.dtype));
  files::write_folder_atomically(folder, options.replace, [&](const std::string& temporary) {
    std::ofstream out(fs::path(temporary) / "config.json");
    out << hf_config.dump(2) << "\n";
    if (!out.flush()) throw ConvertError(folder + "/config.json: write failed (disk full?)");
    out.close();
    // transformers refuses safetensors files without format "pt".
    write_safetensors_checkpoint(temporary, tensors, {{"format", "pt"}}, options.shard_bytes);
  });
}

CausalLM load_model_folder(const std::string& folder) {
  std::string dir = folder;
  if (!fs::exists(fs::path(dir) / "model.json") && fs::is_directory(fs::path(dir) / "checkpoints")) {
    const auto latest = latest_checkpoint(dir);
    if (!latest) throw ConvertError(folder + ": no checkpoint in " + folder + "/checkpoints");
    dir = *latest;
  }
  const std::string config_path = (fs::path(dir) / "model.json").string();
  const std::string weights_path = (fs::path(dir) / "model.pt").string();
  const ModelConfig config = parse_model_config(json_config::read_config_file(config_path, "model config"), config_path);
  CausalLM model(config);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& item : model->named_parameters()) shapes[item.key()] = item.value().sizes().vec();
  if (!fs::exists(weights_path)) throw ConvertError(weights_path + ": missing (a model folder holds model.json and model.pt)");
  try {
    // torch::load cannot change a parameter's dtype (it would reinterpret the bytes): convert first.
    model->to(stored_dtype(weights_path));
    torch::load(model, weights_path);
  } catch (const c10::Error& e) {
    throw ConvertError(weights_path + ": corrupt, truncated or not a model of " + config_path + ": " + e.what_without_backtrace());
  }
  for (const auto& item : model->named_parameters()) {
    if (item.value().sizes().vec() != shapes.at(item.key())) {
      throw ConvertError(weights_path + ": parameter " + item.key() + " has shape " + shape_string(item.value().sizes().vec()) +
                         ", but " + config_path + " needs " + shape_string(shapes.at(item.key())));
    }
  }
  return model;
}

void save_model_folder(CausalLM& model, const std::string& folder, bool replace, const std::string& tokenizer) {
  if (!tokenizer.empty() && !fs::is_regular_file(tokenizer)) throw ConvertError(tokenizer + ": no such tokenizer file");
  files::write_folder_atomically(folder, replace, [&](const std::string& temporary) {
    if (!tokenizer.empty()) fs::copy_file(tokenizer, fs::path(temporary) / "tokenizer.model");
    save_checked(model, (fs::path(temporary) / "model.pt").string());
    std::ofstream out(fs::path(temporary) / "model.json");
    out << to_json(model->config()) << "\n";
    if (!out.flush()) throw ConvertError(folder + "/model.json: write failed (disk full?)");
  });
}

}  // namespace densessm
