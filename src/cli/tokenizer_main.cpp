// densessm-tokenizer: train a sentencepiece model on text files, and encode or decode with one.
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>

#include "densessm/log.h"
#include "densessm/tokenizer.h"

int main(int argc, char** argv) {
  CLI::App app{"densessm-tokenizer: train and use sentencepiece tokenizers (BPE or unigram)"};
  app.require_subcommand(1);

  densessm::TokenizerTrainOptions train;
  auto* train_cmd = app.add_subcommand("train", "train a model on text files (one sentence or paragraph per line)");
  train_cmd->add_option("--input", train.inputs, "text files")->required()->check(CLI::ExistingFile);
  train_cmd->add_option("--model-prefix", train.model_prefix, "writes PREFIX.model and PREFIX.vocab")->required();
  train_cmd->add_option("--vocab-size", train.vocab_size, "number of pieces")->capture_default_str()->check(CLI::Range(8, 1 << 24));
  train_cmd->add_option("--model-type", train.model_type, "bpe or unigram")->capture_default_str()->check(CLI::IsMember({"bpe", "unigram"}));
  train_cmd->add_option("--character-coverage", train.character_coverage, "share of characters covered by pieces")
      ->capture_default_str()->check(CLI::Range(0.5, 1.0));
  train_cmd->add_option("--unk-id", train.unk_id, "id of <unk> (LLaMA: 0)")->capture_default_str();
  train_cmd->add_option("--bos-id", train.bos_id, "id of <s>, -1 for none (LLaMA: 1)")->capture_default_str();
  train_cmd->add_option("--eos-id", train.eos_id, "id of </s>, -1 for none (LLaMA: 2)")->capture_default_str();
  train_cmd->add_option("--pad-id", train.pad_id, "id of <pad>, -1 for none (LLaMA: none)")->capture_default_str();
  train_cmd->add_option("--input-sentence-size", train.input_sentence_size, "sentences sampled for training, 0 for all")
      ->capture_default_str();
  train_cmd->add_option("--threads", train.num_threads, "threads, 0 for all cores")->capture_default_str();
  bool no_byte_fallback = false;
  train_cmd->add_flag("--no-byte-fallback", no_byte_fallback, "map unknown characters to <unk> instead of byte pieces");

  std::string model;
  bool as_pieces = false;
  auto* encode_cmd = app.add_subcommand("encode", "text from stdin (one document per line) to ids, one line each");
  encode_cmd->add_option("--model", model, "a sentencepiece .model file")->required()->check(CLI::ExistingFile);
  encode_cmd->add_flag("--pieces", as_pieces, "print pieces instead of ids");
  auto* decode_cmd = app.add_subcommand("decode", "ids from stdin (space separated, one document per line) to text");
  decode_cmd->add_option("--model", model, "a sentencepiece .model file")->required()->check(CLI::ExistingFile);
  auto* info_cmd = app.add_subcommand("info", "vocabulary size and special ids of a model");
  info_cmd->add_option("--model", model, "a sentencepiece .model file")->required()->check(CLI::ExistingFile);

  CLI11_PARSE(app, argc, argv);
  try {
    if (*train_cmd) {
      train.byte_fallback = !no_byte_fallback;
      densessm::log::info("training a ", train.model_type, " tokenizer of ", train.vocab_size, " pieces on ",
                          train.inputs.size(), " file(s)");
      densessm::Tokenizer::train(train);
      densessm::log::info("wrote ", train.model_prefix, ".model and ", train.model_prefix, ".vocab");
      return 0;
    }
    const auto tokenizer = densessm::Tokenizer::load(model);
    if (*info_cmd) {
      std::cout << "vocab_size " << tokenizer.vocab_size() << "\nunk_id " << tokenizer.unk_id() << "\nbos_id "
                << tokenizer.bos_id() << "\neos_id " << tokenizer.eos_id() << "\npad_id " << tokenizer.pad_id() << "\n";
      return 0;
    }
    std::string line;
    while (std::getline(std::cin, line)) {
      if (*encode_cmd) {
        const auto ids = tokenizer.encode(line);
        for (size_t i = 0; i < ids.size(); ++i) {
          std::cout << (i ? " " : "") << (as_pieces ? tokenizer.piece(ids[i]) : std::to_string(ids[i]));
        }
        std::cout << "\n";
      } else {
        std::istringstream fields(line);
        std::vector<int32_t> ids;
        std::string field;
        while (fields >> field) {
          try {
            ids.push_back(static_cast<int32_t>(std::stol(field)));
          } catch (const std::exception&) {
            throw densessm::TokenizerError("decode: '" + field + "' is not a token id");
          }
        }
        std::cout << tokenizer.decode(ids) << "\n";
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "densessm-tokenizer: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
