// The sentencepiece tokenizer: training (BPE and unigram), loading, encoding and decoding in the same
// process as LibTorch (the combination that crashes with Debian's LibTorch 1.13), and its errors.
#include <filesystem>
#include <fstream>

#include "densessm/tokenizer.h"
#include "test_helpers.h"
#include "text_fixtures.h"

namespace densessm {
namespace {

namespace fs = std::filesystem;

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("densessm-tokenizer-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    densessm::testing::write_sample_corpus(corpus(), 3000);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string corpus() { return (dir_ / "corpus.txt").string(); }
  static std::string prefix(const std::string& name) { return (dir_ / name).string(); }
  static Tokenizer train(const std::string& name, const std::string& type, int vocab) {
    return Tokenizer::load(densessm::testing::train_sample_tokenizer(dir_, name, type, vocab));
  }

  static fs::path dir_;
};
fs::path TokenizerTest::dir_;

TEST_F(TokenizerTest, TrainsEncodesAndDecodesNextToLibTorch) {
  auto product = torch::randn({8, 8}).matmul(torch::randn({8, 8}));  // LibTorch is live in this process
  for (const char* type : {"bpe", "unigram"}) {
    const Tokenizer t = train(std::string("m-") + type, type, 400);
    EXPECT_EQ(t.vocab_size(), 400);
    EXPECT_EQ(t.unk_id(), 0);
    EXPECT_EQ(t.bos_id(), 1);
    EXPECT_EQ(t.eos_id(), 2);
    EXPECT_EQ(t.pad_id(), -1);
    const std::string text = "the old king carried seven stones toward the city gate";
    const auto ids = t.encode(text);
    EXPECT_GT(ids.size(), 2u);
    EXPECT_LT(ids.size(), text.size() * 2 / 3) << type << ": a trained model should merge characters";
    EXPECT_EQ(t.decode(ids), text);
    // Characters never seen in training survive through byte fallback.
    const std::string unseen = "Zürich 42 €";
    EXPECT_EQ(t.decode(t.encode(unseen)), unseen);
  }
  EXPECT_EQ(product.sizes(), torch::IntArrayRef({8, 8}));
}

TEST_F(TokenizerTest, CustomSpecialIds) {
  TokenizerTrainOptions o;
  o.inputs = {corpus()};
  o.model_prefix = prefix("special");
  o.vocab_size = 400;
  o.pad_id = 0, o.unk_id = 1, o.bos_id = 2, o.eos_id = 3;
  Tokenizer::train(o);
  const Tokenizer t = Tokenizer::load(prefix("special") + ".model");
  EXPECT_EQ(t.pad_id(), 0);
  EXPECT_EQ(t.unk_id(), 1);
  EXPECT_EQ(t.eos_id(), 3);
}

TEST_F(TokenizerTest, Errors) {
  EXPECT_THROW(Tokenizer::load(prefix("missing.model")), TokenizerError);
  try {
    Tokenizer::load(corpus());  // not a model
    ADD_FAILURE();
  } catch (const TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find(corpus()), std::string::npos) << e.what();
  }
  TokenizerTrainOptions o;
  o.inputs = {corpus()};
  o.model_prefix = prefix("bad");
  o.model_type = "wordpiece";
  EXPECT_THROW(Tokenizer::train(o), TokenizerError);
  o.model_type = "bpe";
  o.inputs = {prefix("no-such-input.txt")};
  EXPECT_THROW(Tokenizer::train(o), TokenizerError);
  const Tokenizer t = train("m-errors", "bpe", 400);
  EXPECT_THROW(t.decode({5, 400}), TokenizerError);
  EXPECT_THROW(t.decode({-1}), TokenizerError);
}

}  // namespace
}  // namespace densessm
