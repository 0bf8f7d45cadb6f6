// What distinguishes one Hugging Face layout from another: how config.json maps to our ModelConfig and
// how each of our parameter names (CausalLM::named_parameters()) maps to a tensor name and shape in the
// safetensors files. The generic import and export (src/io/convert.cpp) do the rest.
#pragma once

#include <regex>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "densessm/config.h"
#include "densessm/safetensors.h"

namespace densessm {

struct HfLayout {
  /// config.json -> our config (validated); `source` names the file in errors (ConvertError).
  ModelConfig (*read_config)(const nlohmann::json& config, const std::string& source);
  /// Our config -> config.json, for tensors stored as `dtype`; throws ConvertError if the layout cannot
  /// describe the model.
  nlohmann::json (*write_config)(const ModelConfig& config, torch::ScalarType dtype);
  /// Our parameter name -> the layout's tensor name.
  std::string (*external_name)(const std::string& ours);
  /// The layout's shape of our parameter `ours` of shape `shape` (the same elements in the same order).
  std::vector<int64_t> (*external_shape)(const std::string& ours, const std::vector<int64_t>& shape);
  /// Tensors the layout stores that are not parameters but follow from the config (the reference's
  /// rotation and decay buffers). Import checks them, export writes them.
  NamedTensors (*derived_tensors)(const ModelConfig& config);
  /// The layout's names of the token embeddings and the output projection (absent when tied).
  std::string embeddings, lm_head;
};

const HfLayout& hf_mamba_layout();
const HfLayout& hf_dense_retnet_layout();

/// Reads optional keys of a foreign config.json: a key that is absent (or null) keeps `out` as it is;
/// a value of the wrong type is a ConvertError "<source>: <key>: ...".
class HfConfigReader {
 public:
  HfConfigReader(const nlohmann::json& config, std::string source);
  void read(const std::string& key, int64_t& out) const;
  void read(const std::string& key, double& out) const;
  void read(const std::string& key, bool& out) const;
  void read(const std::string& key, std::string& out) const;
  void require(const std::string& key) const;
  [[noreturn]] void fail(const std::string& key, const std::string& reason) const;

 private:
  const nlohmann::json* find(const std::string& key) const;
  const nlohmann::json& config_;
  std::string source_;
};

/// (pattern, replacement) pairs: our parameter name -> the layout's, the first whole match wins.
using NameRules = std::vector<std::pair<std::regex, std::string>>;
/// `ours` rewritten by the first rule matching it whole; a ConvertError naming `layout` when none does.
std::string rename_parameter(const std::string& ours, const NameRules& rules, const std::string& layout);

/// "float32", "float16", "bfloat16" (the torch_dtype of config.json).
std::string torch_dtype_name(torch::ScalarType dtype);

}  // namespace densessm
