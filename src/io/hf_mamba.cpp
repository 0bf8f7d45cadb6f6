// transformers' MambaForCausalLM layout (SPEC.md, "Mamba and DenseMamba"):
//   backbone.embeddings.weight, backbone.layers.{i}.norm.weight,
//   backbone.layers.{i}.mixer.{in_proj.weight, conv1d.weight (d_inner, 1, d_conv), conv1d.bias, x_proj.weight,
//   dt_proj.weight, dt_proj.bias, A_log, D, out_proj.weight}, backbone.norm_f.weight, lm_head.weight
// (absent when tie_word_embeddings). DenseMamba adds mixer.x_select.fc{1,2}.weight and mixer.x_norm.weight.
#include <cmath>
#include <regex>

#include "densessm/convert.h"
#include "io/hf_layout.h"

namespace densessm {
namespace {

using json = nlohmann::json;

ModelConfig read_config(const json& config, const std::string& source) {
  HfConfigReader r(config, source);
  std::string model_type = "mamba";
  r.read("model_type", model_type);
  if (model_type != "mamba" && model_type != "dense_mamba") {
    r.fail("model_type", "\"" + model_type + "\" is not a Mamba model (expected \"mamba\" or \"dense_mamba\")");
  }
  // Absent keys take transformers' MambaConfig defaults (import_model settles tie_word_embeddings).
  ModelConfig c;
  c.architecture = Architecture::kMamba;
  c.vocab_size = 50280;
  c.hidden_size = 768;
  c.num_layers = 32;
  c.rms_norm_eps = 1e-5;
  c.initializer_range = 0.1;
  c.pad_token_id = c.bos_token_id = c.eos_token_id = 0;
  c.dense_block_layers = 0;
  r.read("vocab_size", c.vocab_size);
  r.read("hidden_size", c.hidden_size);
  r.read("num_hidden_layers", c.num_layers);
  r.read("layer_norm_epsilon", c.rms_norm_eps);
  r.read("tie_word_embeddings", c.tie_embeddings);
  r.read("initializer_range", c.initializer_range);
  r.read("pad_token_id", c.pad_token_id);
  r.read("bos_token_id", c.bos_token_id);
  r.read("eos_token_id", c.eos_token_id);
  r.read("state_size", c.mamba.d_state);
  r.read("conv_kernel", c.mamba.d_conv);
  r.read("use_conv_bias", c.mamba.conv_bias);
  r.read("time_step_min", c.mamba.dt_min);
  r.read("time_step_max", c.mamba.dt_max);
  r.read("time_step_floor", c.mamba.dt_init_floor);
  double expand = 2;
  r.read("expand", expand);
  if (expand <= 0 || expand != std::floor(expand)) r.fail("expand", "must be a positive integer here, got " + std::to_string(expand));
  c.mamba.expand = static_cast<int64_t>(expand);
  if (config.contains("intermediate_size") && !config["intermediate_size"].is_null()) {
    int64_t inner = 0;
    r.read("intermediate_size", inner);
    if (inner != c.d_inner()) {
      r.fail("intermediate_size", std::to_string(inner) + " differs from expand * hidden_size = " + std::to_string(c.d_inner()));
    }
  }
  if (config.contains("time_step_rank") && config["time_step_rank"].is_string()) {
    std::string rank;
    r.read("time_step_rank", rank);
    if (rank != "auto") r.fail("time_step_rank", "expected an integer or \"auto\", got \"" + rank + "\"");
  } else {
    r.read("time_step_rank", c.mamba.dt_rank);
  }
  bool use_bias = false;
  r.read("use_bias", use_bias);
  if (use_bias) r.fail("use_bias", "in_proj/out_proj biases are not supported (Mamba's published models have none)");
  std::string activation = "silu";
  r.read("hidden_act", activation);
  if (activation != "silu") r.fail("hidden_act", "only \"silu\" is supported, got \"" + activation + "\"");
  r.read("dense_block_layers", c.dense_block_layers);
  r.read("dense_bottleneck_ratio", c.dense_bottleneck_ratio);
  if (model_type == "mamba" && c.dense_block_layers != 0) {
    r.fail("dense_block_layers", "model_type \"mamba\" has no dense connections (DenseMamba is \"dense_mamba\")");
  }
  try {
    validate(c, source);
  } catch (const ConfigError& e) {
    throw ConvertError(e.what());
  }
  return c;
}

json write_config(const ModelConfig& c, torch::ScalarType dtype) {
  json out = {
      {"architectures", {c.dense() ? "DenseMambaForCausalLM" : "MambaForCausalLM"}},
      {"model_type", c.dense() ? "dense_mamba" : "mamba"},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.d_inner()},
      {"num_hidden_layers", c.num_layers},
      {"state_size", c.mamba.d_state},
      {"expand", c.mamba.expand},
      {"conv_kernel", c.mamba.d_conv},
      {"time_step_rank", c.dt_rank()},
      {"time_step_min", c.mamba.dt_min},
      {"time_step_max", c.mamba.dt_max},
      {"time_step_floor", c.mamba.dt_init_floor},
      {"time_step_init_scheme", "random"},
      {"time_step_scale", 1.0},
      {"use_bias", false},
      {"use_conv_bias", c.mamba.conv_bias},
      {"hidden_act", "silu"},
      {"layer_norm_epsilon", c.rms_norm_eps},
      {"residual_in_fp32", true},
      {"rescale_prenorm_residual", false},
      {"initializer_range", c.initializer_range},
      {"tie_word_embeddings", c.tie_embeddings},
      {"pad_token_id", c.pad_token_id},
      {"bos_token_id", c.bos_token_id},
      {"eos_token_id", c.eos_token_id},
      {"use_cache", true},
      {"torch_dtype", torch_dtype_name(dtype)},
  };
  if (c.dense()) {
    out["dense_block_layers"] = c.dense_block_layers;
    out["dense_bottleneck_ratio"] = c.dense_bottleneck_ratio;
  }
  return out;
}

std::string external_name(const std::string& ours) {
  static const NameRules rules = {
      {std::regex("embed_tokens\\.weight"), "backbone.embeddings.weight"},
      {std::regex("norm\\.weight"), "backbone.norm_f.weight"},
      {std::regex("lm_head\\.weight"), "lm_head.weight"},
      {std::regex("layers\\.([0-9]+)\\.norm\\.weight"), "backbone.layers.$1.norm.weight"},
      {std::regex("layers\\.([0-9]+)\\.conv_weight"), "backbone.layers.$1.mixer.conv1d.weight"},
      {std::regex("layers\\.([0-9]+)\\.conv_bias"), "backbone.layers.$1.mixer.conv1d.bias"},
      {std::regex("layers\\.([0-9]+)\\.(.+)"), "backbone.layers.$1.mixer.$2"},
  };
  return rename_parameter(ours, rules, "hf-mamba");
}

std::vector<int64_t> external_shape(const std::string& ours, const std::vector<int64_t>& shape) {
  // nn.Conv1d's depthwise weight is (d_inner, 1, d_conv); ours drops the single input channel.
  static const std::regex conv("layers\\.[0-9]+\\.conv_weight");
  if (std::regex_match(ours, conv)) return {shape.at(0), 1, shape.at(1)};
  return shape;
}

NamedTensors derived_tensors(const ModelConfig&) { return {}; }

}  // namespace

const HfLayout& hf_mamba_layout() {
  static const HfLayout layout{read_config,     write_config, external_name, external_shape, derived_tensors,
                               "backbone.embeddings.weight", "lm_head.weight"};
  return layout;
}

}  // namespace densessm
