#include "densessm/tokenizer.h"

#include <fstream>
#include <thread>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

namespace densessm {

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor processor;
  std::string path;
};

Tokenizer::Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

Tokenizer Tokenizer::load(const std::string& path) {
  auto impl = std::make_shared<Impl>();
  impl->path = path;
  const auto status = impl->processor.Load(path);
  if (!status.ok()) throw TokenizerError(path + ": cannot load the sentencepiece model: " + status.ToString());
  return Tokenizer(std::move(impl));
}

void Tokenizer::train(const TokenizerTrainOptions& o) {
  if (o.inputs.empty()) throw TokenizerError("tokenizer training: no input files");
  if (o.model_prefix.empty()) throw TokenizerError("tokenizer training: no model prefix");
  if (o.model_type != "bpe" && o.model_type != "unigram") {
    throw TokenizerError("tokenizer training: model type must be bpe or unigram, got '" + o.model_type + "'");
  }
  if (o.vocab_size < 8) throw TokenizerError("tokenizer training: vocab size must be at least 8");
  std::string inputs;
  for (const auto& input : o.inputs) {
    if (!std::ifstream(input)) throw TokenizerError(input + ": cannot open the training text");
    inputs += (inputs.empty() ? "" : ",") + input;
  }
  const int threads = o.num_threads > 0 ? o.num_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const std::unordered_map<std::string, std::string> args = {
      {"input", inputs},
      {"model_prefix", o.model_prefix},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"model_type", o.model_type},
      {"character_coverage", std::to_string(o.character_coverage)},
      {"unk_id", std::to_string(o.unk_id)},
      {"bos_id", std::to_string(o.bos_id)},
      {"eos_id", std::to_string(o.eos_id)},
      {"pad_id", std::to_string(o.pad_id)},
      {"byte_fallback", o.byte_fallback ? "true" : "false"},
      {"input_sentence_size", std::to_string(o.input_sentence_size)},
      {"shuffle_input_sentence", "true"},
      {"num_threads", std::to_string(threads)},
      {"minloglevel", "1"},
  };
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) throw TokenizerError("tokenizer training failed: " + status.ToString());
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  const auto status = impl_->processor.Encode(text, &ids);
  if (!status.ok()) throw TokenizerError("encode: " + status.ToString());
  return {ids.begin(), ids.end()};
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  const int size = vocab_size();
  for (int32_t id : ids) {
    if (id < 0 || id >= size) {
      throw TokenizerError("decode: token id " + std::to_string(id) + " is outside [0, " + std::to_string(size) + ")");
    }
  }
  std::string text;
  const auto status = impl_->processor.Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  if (!status.ok()) throw TokenizerError("decode: " + status.ToString());
  return text;
}

std::string Tokenizer::piece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) throw TokenizerError("piece: token id " + std::to_string(id) + " is out of range");
  return impl_->processor.IdToPiece(id);
}

int Tokenizer::vocab_size() const { return impl_->processor.GetPieceSize(); }
int Tokenizer::unk_id() const { return impl_->processor.unk_id(); }
int Tokenizer::bos_id() const { return impl_->processor.bos_id(); }
int Tokenizer::eos_id() const { return impl_->processor.eos_id(); }
int Tokenizer::pad_id() const { return impl_->processor.pad_id(); }
const std::string& Tokenizer::path() const { return impl_->path; }

}  // namespace densessm
