// Checkpoint interchange: export -> import round trips of all four model kinds (bit-exact parameters and
// logits), the Hugging Face names and shapes, low-precision storage, model folders, and errors that
// name the tensor at fault.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "densessm/convert.h"
#include "densessm/generate.h"  // parse_dtype
#include "densessm/safetensors.h"
#include "test_helpers.h"

namespace densessm {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using densessm::testing::tiny_config;

class ConvertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("densessm-convert-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    torch::manual_seed(11);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

struct Kind {
  std::string name;
  Architecture architecture;
  int64_t m;
  bool tied;
};

const std::vector<Kind>& kinds() {
  static const std::vector<Kind> all = {{"retnet", Architecture::kRetNet, 0, false},
                                        {"dense-retnet", Architecture::kRetNet, 1, false},
                                        {"dense-retnet-m2-tied", Architecture::kRetNet, 2, true},
                                        {"mamba", Architecture::kMamba, 0, true},
                                        {"mamba-untied", Architecture::kMamba, 0, false},
                                        {"dense-mamba", Architecture::kMamba, 1, true}};
  return all;
}

ExternalFormat format_of(Architecture a) {
  return a == Architecture::kMamba ? ExternalFormat::kHfMamba : ExternalFormat::kHfDenseRetNet;
}

CausalLM make_model(const Kind& kind) {
  ModelConfig c = tiny_config(kind.architecture, kind.m);
  c.tie_embeddings = kind.tied;
  c.name = kind.name;
  CausalLM model(c);
  model->eval();
  return model;
}

torch::Tensor tokens_for(const CausalLM& model) {
  return torch::randint(0, model->config().vocab_size, {2, 9}, torch::kLong);  // (B, T)
}

// A config as JSON without what the layouts do not store: the name (the folder's on import) and the
// retention chunk size (how, not what, the model computes); dt_rank "auto" is stored as its value.
std::string comparable(ModelConfig c) {
  c.name.clear();
  c.retention.chunk_size = 64;
  c.mamba.dt_rank = c.dt_rank();
  return to_json(c);
}

void expect_same_parameters(CausalLM& a, CausalLM& b) {
  const auto pa = a->named_parameters(), pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& item : pa) {
    ASSERT_TRUE(pb.contains(item.key())) << item.key();
    EXPECT_EQ(pb[item.key()].scalar_type(), item.value().scalar_type()) << item.key();
    EXPECT_TRUE(torch::equal(pb[item.key()], item.value())) << item.key();
  }
}

TEST_F(ConvertTest, ExportImportRoundTripsEveryKindBitExactly) {
  for (const Kind& kind : kinds()) {
    SCOPED_TRACE(kind.name);
    CausalLM model = make_model(kind);
    for (uint64_t shard_bytes : {uint64_t{0}, uint64_t{40000}}) {
      const std::string folder = path(kind.name + "-" + std::to_string(shard_bytes));
      ExportOptions options;
      options.shard_bytes = shard_bytes;
      export_model(format_of(kind.architecture), model, folder, options);
      EXPECT_EQ(fs::exists(fs::path(folder) / "model.safetensors.index.json"), shard_bytes > 0);
      CausalLM back = import_model(format_of(kind.architecture), folder);
      back->eval();
      EXPECT_EQ(comparable(back->config()), comparable(model->config()));
      expect_same_parameters(model, back);
      const auto tokens = tokens_for(model);
      ForwardOptions same_chunks;  // the layouts do not store the chunk size
      same_chunks.chunk_size = model->config().retention.chunk_size;
      torch::NoGradGuard no_grad;
      EXPECT_TRUE(torch::equal(back->forward(tokens, nullptr, same_chunks), model->forward(tokens, nullptr, same_chunks)));
    }
  }
}

TEST_F(ConvertTest, HuggingFaceNamesAndShapes) {
  CausalLM mamba = make_model({"mamba", Architecture::kMamba, 0, true});
  export_model(ExternalFormat::kHfMamba, mamba, path("mamba"));
  const ModelConfig& c = mamba->config();
  SafetensorsCheckpoint m(path("mamba"));
  EXPECT_EQ(m.entry("backbone.embeddings.weight").shape, (std::vector<int64_t>{c.vocab_size, c.hidden_size}));
  EXPECT_EQ(m.entry("backbone.layers.2.mixer.conv1d.weight").shape, (std::vector<int64_t>{c.d_inner(), 1, c.mamba.d_conv}));
  EXPECT_EQ(m.entry("backbone.layers.0.mixer.A_log").shape, (std::vector<int64_t>{c.d_inner(), c.mamba.d_state}));
  for (const char* name : {"backbone.layers.0.norm.weight", "backbone.layers.0.mixer.in_proj.weight",
                           "backbone.layers.0.mixer.conv1d.bias", "backbone.layers.0.mixer.x_proj.weight",
                           "backbone.layers.0.mixer.dt_proj.weight", "backbone.layers.0.mixer.dt_proj.bias",
                           "backbone.layers.0.mixer.D", "backbone.layers.0.mixer.out_proj.weight", "backbone.norm_f.weight"}) {
    EXPECT_TRUE(m.contains(name)) << name;
  }
  EXPECT_FALSE(m.contains("lm_head.weight"));  // tied, as transformers saves it
  const json mc = json::parse(std::ifstream(path("mamba/config.json")));
  EXPECT_EQ(mc["model_type"], "mamba");
  EXPECT_EQ(mc["tie_word_embeddings"], true);
  EXPECT_EQ(mc["state_size"], c.mamba.d_state);
  EXPECT_EQ(mc["time_step_rank"], c.dt_rank());
  EXPECT_EQ(SafetensorsFile(path("mamba/model.safetensors")).metadata().at("format"), "pt");

  CausalLM retnet = make_model({"dense-retnet", Architecture::kRetNet, 1, false});
  export_model(ExternalFormat::kHfDenseRetNet, retnet, path("retnet"));
  const ModelConfig& r = retnet->config();
  SafetensorsCheckpoint rt(path("retnet"));
  EXPECT_EQ(rt.entry("model.layers.1.self_attn.to_hidden.0.weight").shape, (std::vector<int64_t>{2 * r.value_dim(), r.hidden_size}));
  EXPECT_EQ(rt.entry("model.layers.1.self_attn.to_out.0.weight").shape, (std::vector<int64_t>{r.hidden_size, r.value_dim()}));
  EXPECT_EQ(rt.entry("model.layers.0.self_attn.group_norm.weight").shape, (std::vector<int64_t>{r.head_v_dim()}));
  EXPECT_EQ(rt.entry("model.retnet_rel_pos.angle").shape, (std::vector<int64_t>{r.head_qk_dim()}));
  for (const char* name : {"model.embed_tokens.weight", "model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.q_proj.weight",
                           "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.k_select.fc1.weight",
                           "model.layers.0.self_attn.v_select.fc2.weight", "model.layers.0.self_attn.k_norm.weight",
                           "model.layers.0.self_attn.v_norm.weight", "model.norm.weight", "lm_head.weight",
                           "model.retnet_rel_pos.decay"}) {
    EXPECT_TRUE(rt.contains(name)) << name;
  }
  const json rc = json::parse(std::ifstream(path("retnet/config.json")));
  EXPECT_EQ(rc["query_key_dim"], r.retention.query_key_dim);
  EXPECT_EQ(rc["v_factor"], r.retention.value_factor);
  EXPECT_EQ(rc["dense_block_layers"], 1);
}

TEST_F(ConvertTest, LowPrecisionStorageKeepsTheRoundedValues) {
  CausalLM model = make_model({"dense-mamba", Architecture::kMamba, 1, true});
  for (const char* name : {"fp16", "bf16"}) {
    SCOPED_TRACE(name);
    ExportOptions options;
    options.dtype = parse_dtype(name);
    export_model(ExternalFormat::kHfMamba, model, path(name), options);
    EXPECT_EQ(SafetensorsCheckpoint(path(name)).entry("backbone.norm_f.weight").dtype, options.dtype);
    CausalLM back = import_model(ExternalFormat::kHfMamba, path(name), torch::kFloat);
    for (const auto& item : model->named_parameters()) {
      EXPECT_TRUE(torch::equal(back->named_parameters()[item.key()], item.value().to(options.dtype).to(torch::kFloat))) << item.key();
    }
    CausalLM low = import_model(ExternalFormat::kHfMamba, path(name), options.dtype);
    EXPECT_EQ(low->named_parameters()["norm.weight"].scalar_type(), options.dtype);
  }
}

TEST_F(ConvertTest, ModelFoldersRoundTripAndImportedModelsSaveAsOnes) {
  CausalLM model = make_model({"dense-retnet", Architecture::kRetNet, 1, false});
  save_model_folder(model, path("ours"));
  EXPECT_TRUE(fs::exists(path("ours/model.json")) && fs::exists(path("ours/model.pt")));
  EXPECT_THROW(save_model_folder(model, path("ours")), std::exception);  // exists: not replaced by default
  std::ofstream(path("tok.model")) << "sentencepiece bytes";
  save_model_folder(model, path("ours"), /*replace=*/true, path("tok.model"));
  EXPECT_TRUE(fs::exists(path("ours/tokenizer.model")));
  EXPECT_THROW(save_model_folder(model, path("ours"), true, path("no-such.model")), ConvertError);
  EXPECT_TRUE(fs::exists(path("ours/tokenizer.model")));  // the failed save left the folder as it was
  CausalLM back = load_model_folder(path("ours"));
  expect_same_parameters(model, back);
  for (auto dtype : {torch::kBFloat16, torch::kHalf, torch::kDouble}) {  // imports may be of any of these
    CausalLM low = load_model_folder(path("ours"));
    low->to(dtype);
    save_model_folder(low, path("low"), /*replace=*/true);
    CausalLM low_back = load_model_folder(path("low"));
    expect_same_parameters(low, low_back);
  }
  // export -> import -> model folder -> export gives the same bytes.
  export_model(ExternalFormat::kHfDenseRetNet, back, path("hf1"));
  CausalLM imported = import_model(ExternalFormat::kHfDenseRetNet, path("hf1"));
  save_model_folder(imported, path("ours2"));
  CausalLM reloaded = load_model_folder(path("ours2"));
  export_model(ExternalFormat::kHfDenseRetNet, reloaded, path("hf2"));
  auto bytes = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(bytes(path("hf1/model.safetensors")), bytes(path("hf2/model.safetensors")));
  EXPECT_NE(bytes(path("hf1/config.json")).find("\"query_key_dim\""), std::string::npos);
}

TEST_F(ConvertTest, ModelFolderWithOtherShapesIsAnError) {
  CausalLM model = make_model({"dense-retnet", Architecture::kRetNet, 1, false});
  save_model_folder(model, path("ours"));
  ModelConfig other = model->config();
  other.hidden_size = 32;
  other.retention.query_key_dim = 16;
  std::ofstream(path("ours/model.json")) << to_json(other);
  EXPECT_THROW(load_model_folder(path("ours")), std::exception);
}

// Rewrites folder/model.safetensors with `edit` applied to its tensors.
void edit_tensors(const std::string& folder, const std::function<void(NamedTensors&)>& edit) {
  NamedTensors tensors;
  {
    SafetensorsCheckpoint checkpoint(folder);
    for (const auto& name : checkpoint.names()) tensors.emplace_back(name, checkpoint.tensor(name));
  }
  edit(tensors);
  write_safetensors(folder + "/model.safetensors", tensors, {{"format", "pt"}});
}

void expect_import_error(ExternalFormat format, const std::string& folder, const std::vector<std::string>& parts) {
  try {
    import_model(format, folder);
    ADD_FAILURE() << "imported";
  } catch (const ConvertError& e) {
    for (const auto& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST_F(ConvertTest, MissingExtraAndMisshapenTensorsAreNamed) {
  CausalLM model = make_model({"mamba-untied", Architecture::kMamba, 0, false});
  const std::string folder = path("m");
  const std::string conv = "backbone.layers.1.mixer.conv1d.weight";
  auto fresh = [&] {
    ExportOptions options;
    options.replace = true;
    export_model(ExternalFormat::kHfMamba, model, folder, options);
  };
  fresh();
  edit_tensors(folder, [&](NamedTensors& t) {
    t.erase(std::remove_if(t.begin(), t.end(), [&](const auto& p) { return p.first == conv; }), t.end());
  });
  expect_import_error(ExternalFormat::kHfMamba, folder, {"missing tensor \"" + conv + "\"", "[128, 1, 4]"});
  fresh();
  edit_tensors(folder, [&](NamedTensors& t) { t.emplace_back("backbone.layers.1.mixer.extra", torch::zeros({3})); });
  expect_import_error(ExternalFormat::kHfMamba, folder, {"unexpected tensor \"backbone.layers.1.mixer.extra\"", "[3]"});
  fresh();
  edit_tensors(folder, [&](NamedTensors& t) {
    for (auto& p : t) {
      if (p.first == conv) p.second = p.second.reshape({128, 4});  // our own layout, not transformers'
    }
  });
  expect_import_error(ExternalFormat::kHfMamba, folder, {"tensor \"" + conv + "\"", "[128, 4]", "[128, 1, 4]"});
  fresh();
  edit_tensors(folder, [&](NamedTensors& t) {
    for (auto& p : t) {
      if (p.first == "backbone.norm_f.weight") p.second = p.second.to(torch::kLong);
    }
  });
  expect_import_error(ExternalFormat::kHfMamba, folder, {"backbone.norm_f.weight", "floating-point"});
}

TEST_F(ConvertTest, TiedOutputProjectionMayBeStoredOnlyIfEqual) {
  CausalLM model = make_model({"mamba", Architecture::kMamba, 0, true});
  export_model(ExternalFormat::kHfMamba, model, path("m"));
  edit_tensors(path("m"), [&](NamedTensors& t) {
    t.emplace_back("lm_head.weight", model->named_parameters()["embed_tokens.weight"].clone());
  });
  CausalLM back = import_model(ExternalFormat::kHfMamba, path("m"));
  expect_same_parameters(model, back);
  edit_tensors(path("m"), [&](NamedTensors& t) {
    for (auto& p : t) {
      if (p.first == "lm_head.weight") p.second = p.second + 1;
    }
  });
  expect_import_error(ExternalFormat::kHfMamba, path("m"), {"\"lm_head.weight\" differs", "tie_word_embeddings"});
}

TEST_F(ConvertTest, ConfigProblemsNameTheKey) {
  CausalLM mamba = make_model({"mamba", Architecture::kMamba, 0, true});
  export_model(ExternalFormat::kHfMamba, mamba, path("m"));
  auto edit_config = [&](const std::string& folder, const std::function<void(json&)>& edit) {
    json c = json::parse(std::ifstream(folder + "/config.json"));
    edit(c);
    std::ofstream(folder + "/config.json") << c.dump();
  };
  edit_config(path("m"), [](json& c) { c["use_bias"] = true; });
  expect_import_error(ExternalFormat::kHfMamba, path("m"), {"config.json: use_bias"});
  edit_config(path("m"), [](json& c) { c["use_bias"] = false; c["intermediate_size"] = 100; });
  expect_import_error(ExternalFormat::kHfMamba, path("m"), {"config.json: intermediate_size"});
  edit_config(path("m"), [](json& c) { c["intermediate_size"] = nullptr; c["state_size"] = "sixteen"; });
  expect_import_error(ExternalFormat::kHfMamba, path("m"), {"config.json: state_size", "integer"});
  edit_config(path("m"), [](json& c) { c["state_size"] = 8; c["model_type"] = "llama"; });
  expect_import_error(ExternalFormat::kHfMamba, path("m"), {"model_type"});

  CausalLM retnet = make_model({"dense-retnet", Architecture::kRetNet, 1, false});
  export_model(ExternalFormat::kHfDenseRetNet, retnet, path("r"));
  edit_config(path("r"), [](json& c) { c.erase("query_key_dim"); });
  expect_import_error(ExternalFormat::kHfDenseRetNet, path("r"), {"query_key_dim", "required"});
  edit_config(path("r"), [](json& c) { c["query_key_dim"] = 32; c["num_attention_heads"] = 3; });
  expect_import_error(ExternalFormat::kHfDenseRetNet, path("r"), {"num_heads"});
  std::ofstream(path("r/config.json")) << "{";
  expect_import_error(ExternalFormat::kHfDenseRetNet, path("r"), {"config.json: not valid JSON"});
  // The layouts hold one architecture each.
  EXPECT_THROW(export_model(ExternalFormat::kHfMamba, retnet, path("x")), ConvertError);
  EXPECT_THROW(parse_external_format("gguf"), ConvertError);
}

}  // namespace
}  // namespace densessm
