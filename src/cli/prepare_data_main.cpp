// densessm-prepare-data: text files -> token shards for densessm-train.
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "densessm/log.h"
#include "densessm/prepare_data.h"

int main(int argc, char** argv) {
  CLI::App app{"densessm-prepare-data: tokenize .txt, .jsonl or .jsonl.zst files into token shards"};
  densessm::PrepareOptions o;
  app.add_option("--input,inputs", o.inputs, "input files (.txt, .jsonl, .jsonl.zst)")->required()->check(CLI::ExistingFile);
  app.add_option("--tokenizer", o.tokenizer, "sentencepiece .model")->required()->check(CLI::ExistingFile);
  app.add_option("--output", o.output_dir, "output folder (shards and dataset.json)")->required();
  app.add_option("--field", o.text_field, "JSON field holding a document's text")->capture_default_str();
  app.add_option("--txt-documents", o.txt_documents, "how .txt files split into documents")
      ->capture_default_str()->check(CLI::IsMember({"paragraph", "line", "file"}));
  app.add_option("--validation-percent", o.validation_percent, "share of documents held out for validation, in %")
      ->capture_default_str()->check(CLI::Range(0.0, 99.999));
  app.add_option("--shard-tokens", o.shard_tokens, "tokens per shard")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--threads", o.threads, "tokenizer threads, 0 for all cores")->capture_default_str();
  app.add_flag("--add-bos", o.add_bos, "put bos before each document (eos always follows one)");
  CLI11_PARSE(app, argc, argv);
  auto report = [](const densessm::PrepareStats& s) {
    const double mb = static_cast<double>(s.input_bytes) / 1e6;
    char rate[64];  // one decimal: a loaded machine tokenizes well under 1 MB/s
    std::snprintf(rate, sizeof(rate), "%.1f MB read, %.2f MB/s", mb, s.seconds > 0 ? mb / s.seconds : 0.0);
    densessm::log::info("documents ", s.documents, ", tokens ", s.train_tokens + s.validation_tokens, " (validation ",
                        s.validation_tokens, "), ", rate);
  };
  try {
    const auto stats = densessm::prepare_data(o, report);
    std::cout << "wrote " << stats.train_shards.size() << " train and " << stats.validation_shards.size()
              << " validation shard(s) and dataset.json to " << o.output_dir << "\n";
  } catch (const std::exception& e) {
    std::cerr << "densessm-prepare-data: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
