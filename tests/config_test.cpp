// The JSON model configuration: what parses, and the error for each way a config can be wrong.
#include <filesystem>
#include <fstream>

#include "densessm/config.h"
#include "test_helpers.h"

namespace densessm {
namespace {

using densessm::testing::config_path;

const char* kValidRetNet = R"({
  "architecture": "retnet", "vocab_size": 100, "hidden_size": 64, "num_layers": 2,
  "retention": {"query_key_dim": 32, "num_heads": 2}
})";

// Expects parsing to fail with a message that contains every one of `parts`.
void expect_error(const std::string& json, std::initializer_list<std::string> parts) {
  try {
    parse_model_config(json, "test.json");
    FAIL() << "accepted: " << json;
  } catch (const ConfigError& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.rfind("test.json: ", 0), 0u) << message;
    for (const auto& part : parts) EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
  }
}

// kValidRetNet with one replacement of `from` by `to`.
std::string edited(const std::string& from, const std::string& to) {
  std::string json = kValidRetNet;
  const auto at = json.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return json.replace(at, from.size(), to);
}

TEST(Config, ParsesAMinimalRetNetWithDefaults) {
  const ModelConfig c = parse_model_config(kValidRetNet);
  EXPECT_EQ(c.architecture, Architecture::kRetNet);
  EXPECT_EQ(c.dense_block_layers, 1);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_EQ(c.value_dim(), 128);
  EXPECT_EQ(c.head_qk_dim(), 16);
  EXPECT_EQ(c.head_v_dim(), 64);
}

TEST(Config, MambaDefaultsFollowMambaOne) {
  const ModelConfig c = parse_model_config(R"({"architecture": "mamba", "vocab_size": 10, "hidden_size": 40,
                                               "num_layers": 2, "mamba": {"dt_rank": "auto"}})");
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_EQ(c.d_inner(), 80);
  EXPECT_EQ(c.dt_rank(), 3);  // ceil(40 / 16)
  EXPECT_EQ(c.mamba.d_state, 16);
  EXPECT_EQ(c.mamba.d_conv, 4);
}

TEST(Config, RoundTripsThroughJson) {
  for (const char* name : {"dense-retnet-1.3b.json", "dense-mamba-370m.json", "tiny-mamba.json"}) {
    const ModelConfig a = load_model_config(config_path(name));
    const ModelConfig b = parse_model_config(to_json(a));
    EXPECT_EQ(to_json(a), to_json(b)) << name;
  }
}

TEST(Config, EveryShippedConfigIsValid) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(DENSESSM_SOURCE_DIR) + "/configs")) {
    if (entry.path().extension() != ".json") continue;
    EXPECT_NO_THROW(load_model_config(entry.path().string())) << entry.path();
    ++count;
  }
  EXPECT_GE(count, 14);
}

TEST(ConfigErrors, MalformedJson) { expect_error("{\"architecture\": ", {"malformed JSON"}); }

TEST(ConfigErrors, MissingFile) {
  try {
    load_model_config("/nonexistent/model.json");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.json: cannot open"), std::string::npos) << e.what();
  }
}

TEST(ConfigErrors, RootIsNotAnObject) { expect_error("[1, 2]", {"expected a JSON object"}); }

TEST(ConfigErrors, UnknownTopLevelKey) { expect_error(edited("\"num_layers\"", "\"num_layer\": 3, \"num_layers\""), {"num_layer", "unknown key"}); }

TEST(ConfigErrors, UnknownNestedKey) {
  expect_error(edited("\"num_heads\": 2", "\"num_heads\": 2, \"head\": 1"), {"retention.head", "unknown key"});
}

TEST(ConfigErrors, WrongTypes) {
  expect_error(edited("\"hidden_size\": 64", "\"hidden_size\": \"64\""), {"hidden_size", "expected an integer", "string"});
  expect_error(edited("\"hidden_size\": 64", "\"hidden_size\": 64.5"), {"hidden_size", "expected an integer"});
  expect_error(edited("\"num_layers\": 2", "\"num_layers\": 2, \"dropout\": \"high\""), {"dropout", "expected a number"});
  expect_error(edited("\"num_layers\": 2", "\"num_layers\": 2, \"tie_embeddings\": 1"), {"tie_embeddings", "expected true or false"});
  expect_error(edited("\"query_key_dim\": 32", "\"query_key_dim\": [32]"), {"retention.query_key_dim", "expected an integer", "array"});
  expect_error(R"({"architecture": "mamba", "vocab_size": 10, "hidden_size": 40, "num_layers": 2, "mamba": {"dt_rank": "big"}})",
               {"mamba.dt_rank", "\"auto\""});
}

TEST(ConfigErrors, MissingRequiredKeys) {
  expect_error(R"({"vocab_size": 1})", {"architecture", "required"});
  expect_error(R"({"architecture": "retnet", "vocab_size": 100, "hidden_size": 64, "num_layers": 2})", {"retention", "required"});
  expect_error(edited("\"num_heads\": 2", "\"value_factor\": 2"), {"retention.num_heads", "required"});
}

TEST(ConfigErrors, ImpossibleValues) {
  expect_error(edited("\"vocab_size\": 100", "\"vocab_size\": 0"), {"vocab_size", "positive"});
  expect_error(edited("\"num_layers\": 2", "\"num_layers\": 2, \"dense_block_layers\": -1"), {"dense_block_layers", "0"});
  expect_error(edited("\"num_layers\": 2", "\"num_layers\": 2, \"dense_block_layers\": 2"), {"dense_block_layers", "less than num_layers"});
  expect_error(edited("\"num_heads\": 2", "\"num_heads\": 3"), {"retention.num_heads", "do not divide query_key_dim"});
  expect_error(edited("\"query_key_dim\": 32, \"num_heads\": 2", "\"query_key_dim\": 36, \"num_heads\": 6"),
               {"retention.num_heads", "value width"});
  expect_error(edited("\"query_key_dim\": 32", "\"query_key_dim\": 6"), {"retention.query_key_dim", "even"});
  expect_error(edited("\"num_heads\": 2", "\"num_heads\": 32"), {"retention.num_heads", "at most 20"});
  expect_error(edited("\"num_layers\": 2", "\"num_layers\": 2, \"dropout\": 1.0"), {"dropout", "[0, 1)"});
  expect_error(edited("\"num_layers\": 2", "\"num_layers\": 2, \"eos_token_id\": 100"), {"eos_token_id", "token id"});
  expect_error(edited("\"num_layers\": 2", "\"num_layers\": 2, \"dense_bottleneck_ratio\": 0"), {"dense_bottleneck_ratio", "positive"});
  expect_error(edited("\"architecture\": \"retnet\"", "\"architecture\": \"transformer\""), {"architecture", "\"transformer\""});
  expect_error(R"({"architecture": "mamba", "vocab_size": 10, "hidden_size": 40, "num_layers": 2, "mamba": {"d_conv": 5}})",
               {"mamba.d_conv", "2, 3 or 4"});
  expect_error(R"({"architecture": "mamba", "vocab_size": 10, "hidden_size": 40, "num_layers": 2, "mamba": {"d_state": 0}})",
               {"mamba.d_state"});
}

TEST(ConfigErrors, ObjectOfTheOtherArchitecture) {
  expect_error(edited("\"num_layers\": 2", "\"num_layers\": 2, \"mamba\": {}"), {"mamba", "not allowed"});
  expect_error(R"({"architecture": "mamba", "vocab_size": 10, "hidden_size": 40, "num_layers": 2,
                   "retention": {"query_key_dim": 8, "num_heads": 2}})", {"retention", "not allowed"});
}

}  // namespace
}  // namespace densessm
