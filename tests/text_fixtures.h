// A small deterministic English corpus and a tokenizer trained on it, for the text-pipeline tests.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>

#include "densessm/prepare_data.h"
#include "densessm/tokenizer.h"

namespace densessm::testing {

/// The i-th sentence of the corpus: word lists combined so that BPE has something to merge.
inline std::string sample_sentence(int i) {
  static const char* subjects[] = {"the farmer", "a young child", "the old king", "my neighbour", "the river", "a quiet bird"};
  static const char* verbs[] = {"walked toward", "looked at", "remembered", "carried", "followed", "painted"};
  static const char* objects[] = {"the green hill", "a wooden boat", "the morning light", "seven stones", "the city gate",
                                  "an empty road"};
  return std::string(subjects[i % 6]) + " " + verbs[(i / 6) % 6] + " " + objects[(i / 36) % 6] + ", and then " +
         subjects[(i * 5) % 6] + " " + verbs[(i * 7) % 6] + " it again (" + std::to_string(i) + ").";
}

/// Writes `lines` sentences, one per line.
inline void write_sample_corpus(const std::string& path, int lines) {
  std::ofstream out(path);
  for (int i = 0; i < lines; ++i) out << sample_sentence(i) << "\n";
}

/// Trains a `type` tokenizer of `vocab` pieces on a fresh sample corpus in `dir`; returns the .model path.
inline std::string train_sample_tokenizer(const std::filesystem::path& dir, const std::string& name,
                                          const std::string& type = "bpe", int vocab = 400) {
  const std::string corpus = (dir / (name + ".txt")).string();
  write_sample_corpus(corpus, 3000);
  TokenizerTrainOptions o;
  o.inputs = {corpus};
  o.model_prefix = (dir / name).string();
  o.model_type = type;
  o.vocab_size = vocab;
  o.num_threads = 2;
  Tokenizer::train(o);
  return o.model_prefix + ".model";
}

/// A dataset (10% validation) of the sample corpus in dir/data, tokenized by a 400-piece tokenizer.
inline std::string prepare_sample_dataset(const std::filesystem::path& dir) {
  PrepareOptions p;
  p.tokenizer = train_sample_tokenizer(dir, "tok");
  p.inputs = {(dir / "tok.txt").string()};
  p.txt_documents = "line";
  p.output_dir = (dir / "data").string();
  p.validation_percent = 10;
  p.threads = 2;
  prepare_data(p);
  return p.output_dir;
}

}  // namespace densessm::testing
