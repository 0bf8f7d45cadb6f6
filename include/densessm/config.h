// Model configuration: the JSON schema of configs/*.json as typed structs.
//
// One struct per JSON object. Parsing and validation happen in one place (src/config.cpp); every error
// names the file, the key and the reason, and unknown keys are rejected.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace densessm {

/// Thrown for any problem with a configuration: unreadable file, malformed JSON, unknown key,
/// wrong type or impossible value. what() reads "<source>: <key>: <reason>".
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Architecture { kRetNet, kMamba };

/// "retention" object: the multi-scale retention of (Dense)RetNet's gated attention unit.
struct RetentionConfig {
  int64_t query_key_dim = 0;  ///< K: total query/key width over all heads.
  int64_t num_heads = 0;      ///< H: heads; head h decays with gamma_h = 1 - 2^(-5-h).
  int64_t value_factor = 2;   ///< E = value_factor * hidden_size: total value width.
  int64_t chunk_size = 64;    ///< chunk length of the chunkwise form.
};

/// "mamba" object: the Mamba-1 mixer (selective SSM).
struct MambaConfig {
  int64_t d_state = 16;   ///< N: state size per channel.
  int64_t expand = 2;     ///< d_inner = expand * hidden_size.
  int64_t dt_rank = 0;    ///< R: 0 means "auto", ceil(hidden_size / 16).
  int64_t d_conv = 4;     ///< width of the causal depthwise convolution (2 to 4).
  double dt_min = 1e-3;   ///< initial delta is log-uniform in [dt_min, dt_max].
  double dt_max = 1e-1;
  double dt_init_floor = 1e-4;
  bool conv_bias = true;
};

struct ModelConfig {
  std::string name;
  Architecture architecture = Architecture::kRetNet;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;  ///< D
  int64_t num_layers = 0;   ///< L
  /// m: how many previous layers' hidden states each layer receives (0: plain RetNet / Mamba,
  /// with no dense parameters at all).
  int64_t dense_block_layers = 1;
  /// The selective transition module is a bottleneck MLP D -> D / ratio -> out.
  int64_t dense_bottleneck_ratio = 32;
  double rms_norm_eps = 1e-6;
  double dropout = 0.0;
  bool tie_embeddings = false;  ///< default: false for RetNet (reference), true for Mamba.
  double initializer_range = 0.02;
  int64_t pad_token_id = 0;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  RetentionConfig retention;  ///< used when architecture == kRetNet
  MambaConfig mamba;          ///< used when architecture == kMamba

  bool dense() const { return dense_block_layers > 0; }
  int64_t dense_hidden_size() const { return hidden_size / dense_bottleneck_ratio; }
  // RetNet derived sizes.
  int64_t value_dim() const { return retention.value_factor * hidden_size; }               ///< E
  int64_t head_qk_dim() const { return retention.query_key_dim / retention.num_heads; }  ///< dk
  int64_t head_v_dim() const { return value_dim() / retention.num_heads; }               ///< dv
  // Mamba derived sizes.
  int64_t d_inner() const { return mamba.expand * hidden_size; }
  int64_t dt_rank() const { return mamba.dt_rank > 0 ? mamba.dt_rank : (hidden_size + 15) / 16; }
};

/// Parses and validates a configuration held in `json_text`; `source` names it in errors.
ModelConfig parse_model_config(const std::string& json_text, const std::string& source = "<config>");

/// Reads and parses a configuration file.
ModelConfig load_model_config(const std::string& path);

/// Checks every constraint between values; throws ConfigError naming the key.
void validate(const ModelConfig& config, const std::string& source = "<config>");

/// The configuration as JSON text that parse_model_config reads back to an equal configuration.
std::string to_json(const ModelConfig& config);

std::string to_string(Architecture architecture);

/// Parameter counts by the closed-form formulas (no model is built).
struct ParameterCount {
  int64_t embeddings = 0;  ///< token embeddings (V x D)
  int64_t lm_head = 0;     ///< 0 when tied to the embeddings
  int64_t per_layer = 0;   ///< one layer, dense parameters included
  int64_t dense_per_layer = 0;  ///< of which: selective transition and fusion norms
  int64_t final_norm = 0;
  int64_t total = 0;
};
ParameterCount count_parameters(const ModelConfig& config);

}  // namespace densessm
