// Data preparation: documents from text files -> tokens (+ eos after each document) -> token shards.
//
// Inputs: .txt (documents separated by blank lines, or one per line, or one per file), .jsonl and
// .jsonl.zst (one JSON object per line, the document in a configurable string field; the Pile's format).
// Tokenization runs on several threads; memory stays bounded (a few batches of documents in flight)
// whatever the input size. A deterministic share of documents (by their index) goes to validation.
// Shards are written atomically (see token_shard.h); dataset.json lists them once everything is written.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace densessm {

struct PrepareOptions {
  std::vector<std::string> inputs;
  std::string tokenizer;           ///< sentencepiece .model
  std::string output_dir;
  std::string text_field = "text";  ///< the document's field in .jsonl(.zst) lines
  std::string txt_documents = "paragraph";  ///< .txt: "paragraph" (blank-line separated), "line" or "file"
  double validation_percent = 0.1;  ///< share of documents for validation, in percent (the reference: 0.1%)
  uint64_t shard_tokens = 100'000'000;  ///< a new shard after this many tokens
  int threads = 0;                  ///< tokenizer threads, 0: all cores
  bool add_bos = false;             ///< also put bos before each document
};

struct PrepareStats {
  uint64_t documents = 0, validation_documents = 0;
  uint64_t train_tokens = 0, validation_tokens = 0;
  uint64_t input_bytes = 0;
  std::vector<std::string> train_shards, validation_shards;  ///< file names inside output_dir
  double seconds = 0;
};

/// Runs the preparation; `progress` (if set) is called about once a second with the running totals.
/// Throws std::runtime_error naming the file (and line) for unreadable or malformed input.
PrepareStats prepare_data(const PrepareOptions& options, const std::function<void(const PrepareStats&)>& progress = {});

}  // namespace densessm
