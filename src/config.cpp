#include "densessm/config.h"


#include "json_reader.h"

namespace densessm {
namespace {

using json_config::json;
using json_config::ObjectReader;
using json_config::parse_json;

void read_retention(ObjectReader reader, RetentionConfig& out) {
  reader.require("query_key_dim");
  reader.require("num_heads");
  reader.read("query_key_dim", out.query_key_dim);
  reader.read("num_heads", out.num_heads);
  reader.read("value_factor", out.value_factor);
  reader.read("chunk_size", out.chunk_size);
  reader.finish();
}

void read_mamba(ObjectReader reader, MambaConfig& out) {
  reader.read("d_state", out.d_state);
  reader.read("expand", out.expand);
  reader.read_auto("dt_rank", out.dt_rank);
  reader.read("d_conv", out.d_conv);
  reader.read("dt_min", out.dt_min);
  reader.read("dt_max", out.dt_max);
  reader.read("dt_init_floor", out.dt_init_floor);
  reader.read("conv_bias", out.conv_bias);
  reader.finish();
}

// A failed check: "<source>: <key>: <reason>".
class Checker {
 public:
  explicit Checker(std::string source) : source_(std::move(source)) {}
  void operator()(bool ok, const std::string& key, const std::string& reason) const {
    if (!ok) throw ConfigError(source_ + ": " + key + ": " + reason);
  }

 private:
  std::string source_;
};

std::string str(int64_t v) { return std::to_string(v); }

}  // namespace

std::string to_string(Architecture architecture) {
  return architecture == Architecture::kRetNet ? "retnet" : "mamba";
}

void validate(const ModelConfig& c, const std::string& source) {
  Checker check(source);
  check(c.vocab_size > 0, "vocab_size", "must be positive, got " + str(c.vocab_size));
  check(c.hidden_size > 0, "hidden_size", "must be positive, got " + str(c.hidden_size));
  check(c.num_layers > 0, "num_layers", "must be positive, got " + str(c.num_layers));
  check(c.dense_block_layers >= 0, "dense_block_layers", "must be 0 (no dense connection) or more, got " + str(c.dense_block_layers));
  check(c.dense_block_layers < c.num_layers || c.dense_block_layers == 0, "dense_block_layers",
        "must be less than num_layers (" + str(c.num_layers) + "), got " + str(c.dense_block_layers));
  check(c.dense_bottleneck_ratio > 0, "dense_bottleneck_ratio", "must be positive, got " + str(c.dense_bottleneck_ratio));
  check(c.dense_bottleneck_ratio <= c.hidden_size, "dense_bottleneck_ratio",
        "must not exceed hidden_size (" + str(c.hidden_size) + "): the bottleneck would have width 0");
  check(c.rms_norm_eps > 0, "rms_norm_eps", "must be positive");
  check(c.dropout >= 0 && c.dropout < 1, "dropout", "must be in [0, 1)");
  check(c.initializer_range > 0, "initializer_range", "must be positive");
  for (auto [key, id] : {std::pair<const char*, int64_t>{"pad_token_id", c.pad_token_id},
                         {"bos_token_id", c.bos_token_id}, {"eos_token_id", c.eos_token_id}}) {
    check(id >= 0 && id < c.vocab_size, key, "must be a token id in [0, vocab_size = " + str(c.vocab_size) + "), got " + str(id));
  }
  if (c.architecture == Architecture::kRetNet) {
    const RetentionConfig& r = c.retention;
    check(r.query_key_dim > 0, "retention.query_key_dim", "must be positive, got " + str(r.query_key_dim));
    check(r.num_heads > 0, "retention.num_heads", "must be positive, got " + str(r.num_heads));
    // gamma_h = 1 - 2^(-5-h) must stay below 1 in float32: h <= 19.
    check(r.num_heads <= 20, "retention.num_heads",
          "at most 20: the decay 1 - 2^(-5-h) of a later head rounds to 1 in float32, got " + str(r.num_heads));
    check(r.value_factor > 0, "retention.value_factor", "must be positive, got " + str(r.value_factor));
    check(r.chunk_size > 0, "retention.chunk_size", "must be positive, got " + str(r.chunk_size));
    check(r.query_key_dim % r.num_heads == 0, "retention.num_heads",
          str(r.num_heads) + " heads do not divide query_key_dim " + str(r.query_key_dim));
    check(c.value_dim() % r.num_heads == 0, "retention.num_heads",
          str(r.num_heads) + " heads do not divide the value width value_factor * hidden_size = " + str(c.value_dim()));
    check(c.head_qk_dim() % 2 == 0 && c.head_qk_dim() >= 4, "retention.query_key_dim",
          "the per-head key width query_key_dim / num_heads = " + str(c.head_qk_dim()) +
              " must be even and at least 4 (the rotation acts on pairs)");
  } else {
    const MambaConfig& m = c.mamba;
    check(m.d_state > 0 && m.d_state <= 256, "mamba.d_state", "must be in [1, 256], got " + str(m.d_state));
    check(m.expand > 0, "mamba.expand", "must be positive, got " + str(m.expand));
    check(m.dt_rank >= 0, "mamba.dt_rank", "must be positive or \"auto\", got " + str(m.dt_rank));
    check(m.d_conv >= 2 && m.d_conv <= 4, "mamba.d_conv", "must be 2, 3 or 4, got " + str(m.d_conv));
    check(m.dt_min > 0, "mamba.dt_min", "must be positive");
    check(m.dt_max >= m.dt_min, "mamba.dt_max", "must be at least dt_min");
    check(m.dt_init_floor > 0, "mamba.dt_init_floor", "must be positive");
  }
}

ModelConfig parse_model_config(const std::string& json_text, const std::string& source) {
  const json root = parse_json(json_text, source);
  ModelConfig c;
  ObjectReader reader(root, source, "");
  reader.require("architecture");
  std::string architecture;
  reader.read("architecture", architecture);
  if (architecture == "retnet") {
    c.architecture = Architecture::kRetNet;
  } else if (architecture == "mamba") {
    c.architecture = Architecture::kMamba;
  } else {
    reader.fail("architecture", "must be \"retnet\" or \"mamba\", got \"" + architecture + "\"");
  }
  c.tie_embeddings = c.architecture == Architecture::kMamba;
  for (const char* key : {"vocab_size", "hidden_size", "num_layers"}) reader.require(key);
  reader.read("name", c.name);
  reader.read("vocab_size", c.vocab_size);
  reader.read("hidden_size", c.hidden_size);
  reader.read("num_layers", c.num_layers);
  reader.read("dense_block_layers", c.dense_block_layers);
  reader.read("dense_bottleneck_ratio", c.dense_bottleneck_ratio);
  reader.read("rms_norm_eps", c.rms_norm_eps);
  reader.read("dropout", c.dropout);
  reader.read("tie_embeddings", c.tie_embeddings);
  reader.read("initializer_range", c.initializer_range);
  reader.read("pad_token_id", c.pad_token_id);
  reader.read("bos_token_id", c.bos_token_id);
  reader.read("eos_token_id", c.eos_token_id);
  if (c.architecture == Architecture::kRetNet) {
    if (reader.has("mamba")) reader.fail("mamba", "not allowed with architecture \"retnet\"");
    reader.require("retention");
    read_retention(reader.child("retention"), c.retention);
  } else {
    if (reader.has("retention")) reader.fail("retention", "not allowed with architecture \"mamba\"");
    read_mamba(reader.child("mamba"), c.mamba);
  }
  reader.finish();
  validate(c, source);
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  return parse_model_config(json_config::read_config_file(path, "model config"), path);
}

std::string to_json(const ModelConfig& c) {
  json out = {
      {"name", c.name},
      {"architecture", to_string(c.architecture)},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"num_layers", c.num_layers},
      {"dense_block_layers", c.dense_block_layers},
      {"dense_bottleneck_ratio", c.dense_bottleneck_ratio},
      {"rms_norm_eps", c.rms_norm_eps},
      {"dropout", c.dropout},
      {"tie_embeddings", c.tie_embeddings},
      {"initializer_range", c.initializer_range},
      {"pad_token_id", c.pad_token_id},
      {"bos_token_id", c.bos_token_id},
      {"eos_token_id", c.eos_token_id},
  };
  if (c.architecture == Architecture::kRetNet) {
    out["retention"] = {{"query_key_dim", c.retention.query_key_dim},
                        {"num_heads", c.retention.num_heads},
                        {"value_factor", c.retention.value_factor},
                        {"chunk_size", c.retention.chunk_size}};
  } else {
    const MambaConfig& m = c.mamba;
    out["mamba"] = {{"d_state", m.d_state}, {"expand", m.expand}, {"d_conv", m.d_conv},
                    {"dt_min", m.dt_min},   {"dt_max", m.dt_max}, {"dt_init_floor", m.dt_init_floor},
                    {"conv_bias", m.conv_bias}};
    out["mamba"]["dt_rank"] = m.dt_rank > 0 ? json(m.dt_rank) : json("auto");
  }
  return out.dump(2);
}

ParameterCount count_parameters(const ModelConfig& c) {
  ParameterCount n;
  const int64_t D = c.hidden_size;
  const int64_t r = c.dense_hidden_size();
  n.embeddings = c.vocab_size * D;
  n.lm_head = c.tie_embeddings ? 0 : c.vocab_size * D;
  n.final_norm = D;
  int64_t mixer = 0;
  if (c.architecture == Architecture::kRetNet) {
    const int64_t K = c.retention.query_key_dim, E = c.value_dim();
    // q_proj, k_proj (K x D); to_hidden (2E x D); to_out (D x E); group norm (dv).
    mixer = 2 * K * D + 2 * E * D + D * E + c.head_v_dim();
    // Selective transitions for keys and values (D -> r -> K, D -> r -> E), fusion norms over K and E.
    if (c.dense()) n.dense_per_layer = (D * r + r * K) + (D * r + r * E) + K + E;
  } else {
    const int64_t I = c.d_inner(), N = c.mamba.d_state, R = c.dt_rank(), W = c.mamba.d_conv;
    mixer = D * 2 * I                           // in_proj
            + I * W + (c.mamba.conv_bias ? I : 0)  // conv1d
            + I * (R + 2 * N)                   // x_proj
            + R * I + I                         // dt_proj (weight, bias)
            + I * N + I                         // A_log, D
            + I * D;                            // out_proj
    // Selective transition for the x branch (D -> r -> d_inner), fusion norm over d_inner.
    if (c.dense()) n.dense_per_layer = D * r + r * I + I;
  }
  n.per_layer = D /* input norm */ + mixer + n.dense_per_layer;
  n.total = n.embeddings + n.lm_head + n.final_norm + c.num_layers * n.per_layer;
  return n;
}

}  // namespace densessm
