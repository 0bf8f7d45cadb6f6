// Data preparation: every input format gives the documents' tokens followed by eos, split between train
// and validation deterministically, in shards of the requested size; malformed input names its line.
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <zstd.h>

#include "densessm/prepare_data.h"
#include "densessm/token_shard.h"
#include "test_helpers.h"
#include "text_fixtures.h"

namespace densessm {
namespace {

namespace fs = std::filesystem;
using densessm::testing::sample_sentence;

class PrepareData : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("densessm-prepare-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    model_ = densessm::testing::train_sample_tokenizer(dir_, "tok");
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string file(const std::string& name) { return (dir_ / name).string(); }

  // All tokens of a split, shard after shard.
  static std::vector<int32_t> tokens(const std::string& out, const std::vector<std::string>& shards) {
    std::vector<int32_t> all;
    for (const auto& name : shards) {
      const auto shard = TokenShard::open(out + "/" + name);
      for (uint64_t i = 0; i < shard.size(); ++i) all.push_back(shard[i]);
    }
    return all;
  }
  // The documents' tokens, each followed by eos, in order.
  static std::vector<int32_t> expected_tokens(const std::vector<std::string>& documents) {
    const auto tokenizer = Tokenizer::load(model_);
    std::vector<int32_t> all;
    for (const auto& d : documents) {
      const auto ids = tokenizer.encode(d);
      all.insert(all.end(), ids.begin(), ids.end());
      all.push_back(tokenizer.eos_id());
    }
    return all;
  }
  static PrepareOptions options(const std::vector<std::string>& inputs, const std::string& out) {
    PrepareOptions o;
    o.inputs = inputs;
    o.tokenizer = model_;
    o.output_dir = file(out);
    o.validation_percent = 0;
    o.threads = 3;
    return o;
  }

  static fs::path dir_;
  static std::string model_;
};
fs::path PrepareData::dir_;
std::string PrepareData::model_;

std::vector<std::string> documents(int n) {
  std::vector<std::string> d;
  for (int i = 0; i < n; ++i) d.push_back(sample_sentence(i) + " " + sample_sentence(i + 7));
  return d;
}

TEST_F(PrepareData, TextParagraphsJsonlAndZstdGiveTheSameTokens) {
  const auto docs = documents(500);
  {
    std::ofstream txt(file("a.txt"));
    for (const auto& d : docs) txt << d.substr(0, d.size() / 2) << "\n" << d.substr(d.size() / 2) << "\n\n\n";
    std::ofstream jsonl(file("a.jsonl"));
    for (const auto& d : docs) jsonl << nlohmann::json{{"text", d}, {"meta", 1}}.dump() << "\n";
  }
  std::string raw;
  for (const auto& d : docs) raw += nlohmann::json{{"text", d}}.dump() + "\n";
  std::string packed(ZSTD_compressBound(raw.size()), '\0');
  packed.resize(ZSTD_compress(packed.data(), packed.size(), raw.data(), raw.size(), 3));
  std::ofstream(file("a.jsonl.zst"), std::ios::binary) << packed;

  const auto expected = expected_tokens(docs);
  // A paragraph of the .txt is the two halves joined by a newline.
  std::vector<std::string> paragraphs;
  for (const auto& d : docs) paragraphs.push_back(d.substr(0, d.size() / 2) + "\n" + d.substr(d.size() / 2));
  for (const auto& [input, want] : {std::pair<std::string, std::vector<int32_t>>{"a.jsonl", expected},
                                    {"a.jsonl.zst", expected},
                                    {"a.txt", expected_tokens(paragraphs)}}) {
    auto o = options({file(input)}, "out-" + input);
    o.shard_tokens = 5000;  // several shards
    const auto stats = prepare_data(o);
    EXPECT_EQ(stats.documents, docs.size()) << input;
    EXPECT_GT(stats.train_shards.size(), 2u) << input;
    EXPECT_EQ(tokens(o.output_dir, stats.train_shards), want) << input;
    EXPECT_TRUE(fs::exists(o.output_dir + "/dataset.json"));
  }
}

TEST_F(PrepareData, ValidationSplitIsDeterministicAndNearTheRequestedShare) {
  const auto docs = documents(2000);
  {
    std::ofstream lines(file("lines.txt"));
    for (const auto& d : docs) lines << d << "\n";
  }
  auto o = options({file("lines.txt")}, "split1");
  o.txt_documents = "line";
  o.validation_percent = 10;
  const auto a = prepare_data(o);
  o.output_dir = file("split2");
  o.threads = 1;
  const auto b = prepare_data(o);
  EXPECT_EQ(a.documents, 2000u);
  EXPECT_NEAR(static_cast<double>(a.validation_documents), 200, 45);
  EXPECT_EQ(a.validation_documents, b.validation_documents);
  EXPECT_EQ(tokens(file("split1"), a.validation_shards), tokens(file("split2"), b.validation_shards));
  EXPECT_EQ(tokens(file("split1"), a.train_shards).size() + tokens(file("split1"), a.validation_shards).size(),
            expected_tokens(docs).size());
  const auto manifest = nlohmann::json::parse(std::ifstream(file("split1/dataset.json")));
  EXPECT_EQ(manifest["validation_documents"].get<uint64_t>(), a.validation_documents);
  EXPECT_EQ(manifest["vocab_size"].get<int>(), 400);
}

TEST_F(PrepareData, MalformedInputNamesTheFileAndLine) {
  {
    std::ofstream bad(file("bad.jsonl"));
    bad << R"({"text": "fine"})" << "\n" << R"({"text": "also fine"})" << "\n" << "{not json\n";
    std::ofstream field(file("field.jsonl"));
    field << R"({"body": "x"})" << "\n";
    std::ofstream(file("corrupt.jsonl.zst"), std::ios::binary) << "this is not zstd";
  }
  auto expect_error = [&](const std::string& input, const std::string& part) {
    try {
      prepare_data(options({file(input)}, "bad-out"));
      ADD_FAILURE() << input;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_error("bad.jsonl", "bad.jsonl:3: malformed JSON");
  expect_error("field.jsonl", "field.jsonl:1: no \"text\" field");
  expect_error("corrupt.jsonl.zst", "corrupt zstd data");
  expect_error("missing.txt", "missing.txt: no such input file");
}

}  // namespace
}  // namespace densessm
