// The reference DenseRetNet code's Hugging Face layout (SPEC.md, "DenseRetNet"): a LlamaConfig with
// query_key_dim, v_factor and dense_block_layers, and the tensors
//   model.embed_tokens.weight, model.layers.{i}.input_layernorm.weight,
//   model.layers.{i}.self_attn.{q_proj, k_proj}.weight, ...self_attn.to_hidden.0.weight, ...to_out.0.weight,
//   ...group_norm.weight, ...{k,v}_select.fc{1,2}.weight, ...{k,v}_norm.weight, model.norm.weight, lm_head.weight,
// plus two buffers that follow from the config: model.retnet_rel_pos.angle (dk) and .decay (H).
#include <cmath>
#include <regex>

#include <torch/torch.h>

#include "densessm/convert.h"
#include "io/hf_layout.h"

namespace densessm {
namespace {

using json = nlohmann::json;

ModelConfig read_config(const json& config, const std::string& source) {
  HfConfigReader r(config, source);
  // The reference code has no defaults for its own keys; LlamaConfig's defaults for the others.
  for (const char* key : {"vocab_size", "hidden_size", "query_key_dim", "num_attention_heads", "num_hidden_layers",
                          "v_factor", "dense_block_layers"}) {
    r.require(key);
  }
  ModelConfig c;
  c.architecture = Architecture::kRetNet;
  c.tie_embeddings = false;
  c.rms_norm_eps = 1e-6;
  c.dropout = 0.0;
  r.read("vocab_size", c.vocab_size);
  r.read("hidden_size", c.hidden_size);
  r.read("num_hidden_layers", c.num_layers);
  r.read("query_key_dim", c.retention.query_key_dim);
  r.read("num_attention_heads", c.retention.num_heads);
  double v_factor = 0;
  r.read("v_factor", v_factor);
  if (v_factor <= 0 || v_factor != std::floor(v_factor)) r.fail("v_factor", "must be a positive integer here");
  c.retention.value_factor = static_cast<int64_t>(v_factor);
  r.read("dense_block_layers", c.dense_block_layers);
  r.read("dense_bottleneck_ratio", c.dense_bottleneck_ratio);  // ours; the reference fixes 32
  r.read("rms_norm_eps", c.rms_norm_eps);
  r.read("dropout", c.dropout);
  r.read("tie_word_embeddings", c.tie_embeddings);
  r.read("initializer_range", c.initializer_range);
  r.read("pad_token_id", c.pad_token_id);
  r.read("bos_token_id", c.bos_token_id);
  r.read("eos_token_id", c.eos_token_id);
  // deepnorm only rescales the reference's initialisation; hidden_act is not read by its GAU (always silu).
  try {
    validate(c, source);
  } catch (const ConfigError& e) {
    throw ConvertError(e.what());
  }
  return c;
}

json write_config(const ModelConfig& c, torch::ScalarType dtype) {
  return {
      {"architectures", {"LlamaForCausalLM"}},
      {"auto_map", {{"AutoModelForCausalLM", "modeling_dense_gau_retnet.LlamaForCausalLM"}}},
      {"model_type", "llama"},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"query_key_dim", c.retention.query_key_dim},
      {"num_attention_heads", c.retention.num_heads},
      {"num_hidden_layers", c.num_layers},
      {"v_factor", c.retention.value_factor},
      {"dense_block_layers", c.dense_block_layers},
      {"dense_bottleneck_ratio", c.dense_bottleneck_ratio},
      {"rms_norm_eps", c.rms_norm_eps},
      {"dropout", c.dropout},
      {"deepnorm", false},
      {"hidden_act", "silu"},
      {"initializer_range", c.initializer_range},
      {"tie_word_embeddings", c.tie_embeddings},
      {"pad_token_id", c.pad_token_id},
      {"bos_token_id", c.bos_token_id},
      {"eos_token_id", c.eos_token_id},
      {"use_cache", false},
      {"torch_dtype", torch_dtype_name(dtype)},
  };
}

std::string external_name(const std::string& ours) {
  static const NameRules rules = {
      {std::regex("embed_tokens\\.weight"), "model.embed_tokens.weight"},
      {std::regex("norm\\.weight"), "model.norm.weight"},
      {std::regex("lm_head\\.weight"), "lm_head.weight"},
      {std::regex("layers\\.([0-9]+)\\.input_layernorm\\.weight"), "model.layers.$1.input_layernorm.weight"},
      {std::regex("layers\\.([0-9]+)\\.(to_hidden|to_out)\\.weight"), "model.layers.$1.self_attn.$2.0.weight"},
      {std::regex("layers\\.([0-9]+)\\.(.+)"), "model.layers.$1.self_attn.$2"},
  };
  return rename_parameter(ours, rules, "hf-dense-retnet");
}

std::vector<int64_t> external_shape(const std::string&, const std::vector<int64_t>& shape) { return shape; }

// The reference's RetNetRelPos buffers, computed as it computes them (float32, the same operations), so
// that exported files match its own bit for bit: angle_i = 1 / 10000^(i/(dk/2-1)) for each pair of
// dimensions, and log(gamma_h) = log(1 - 2^(-5-h)).
NamedTensors derived_tensors(const ModelConfig& c) {
  auto angle = (torch::pow(10000.0, torch::linspace(0, 1, c.head_qk_dim() / 2, torch::kFloat)).reciprocal() * 1.0)
                   .repeat_interleave(2);                                                                   // (dk)
  auto decay = torch::log(1 - torch::pow(2.0, -5 - torch::arange(c.retention.num_heads, torch::kFloat)));  // (H)
  return {{"model.retnet_rel_pos.angle", angle}, {"model.retnet_rel_pos.decay", decay}};
}

}  // namespace

const HfLayout& hf_dense_retnet_layout() {
  static const HfLayout layout{read_config,     write_config, external_name, external_shape, derived_tensors,
                               "model.embed_tokens.weight", "lm_head.weight"};
  return layout;
}

}  // namespace densessm
