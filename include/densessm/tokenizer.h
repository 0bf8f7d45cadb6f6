// Text <-> token ids through a sentencepiece model (BPE or unigram), trained here or loaded as is
// (LLaMA's 32000-piece tokenizer.model, for example).
//
// sentencepiece is used in src/data/tokenizer.cpp alone; no sentencepiece type appears here. With the
// LibTorch 2.11 of tools/setup.sh both live in one process without conflict (Debian's LibTorch 1.13 would
// clash over protobuf; see README). tests/tokenizer_test.cpp trains, loads and encodes next to LibTorch.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace densessm {

class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TokenizerTrainOptions {
  std::vector<std::string> inputs;  ///< text files, one sentence (or paragraph) per line
  std::string model_prefix;         ///< writes <prefix>.model and <prefix>.vocab
  int vocab_size = 32000;
  std::string model_type = "bpe";   ///< "bpe" or "unigram"
  double character_coverage = 0.9995;
  // Special ids: the reference's LLaMA layout by default (unk 0, bos 1, eos 2, no pad piece: the model
  // configs pad with id 0). -1 disables a piece; unk must exist.
  int unk_id = 0;
  int bos_id = 1;
  int eos_id = 2;
  int pad_id = -1;
  bool byte_fallback = true;        ///< unknown characters become byte pieces, as in LLaMA
  int64_t input_sentence_size = 2'000'000;  ///< sentences sampled for training (0: all)
  int num_threads = 0;              ///< 0: all cores
};

class Tokenizer {
 public:
  /// Loads a sentencepiece .model file. Throws TokenizerError naming the file.
  static Tokenizer load(const std::string& path);
  /// Trains a model and writes <prefix>.model / .vocab. Throws TokenizerError with sentencepiece's reason.
  static void train(const TokenizerTrainOptions& options);

  std::vector<int32_t> encode(std::string_view text) const;
  /// Throws TokenizerError for an id outside [0, vocab_size()).
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string piece(int32_t id) const;

  int vocab_size() const;
  int unk_id() const;
  int bos_id() const;
  int eos_id() const;
  int pad_id() const;  ///< -1 when the model has none
  const std::string& path() const;

 private:
  struct Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl);
  std::shared_ptr<const Impl> impl_;
};

}  // namespace densessm
