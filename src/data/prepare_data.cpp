#include "densessm/prepare_data.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <thread>

#include <nlohmann/json.hpp>

#include "data/document_reader.h"
#include "densessm/token_shard.h"
#include "densessm/tokenizer.h"

namespace densessm {
namespace {

namespace fs = std::filesystem;

constexpr size_t kBatchBytes = 4 << 20;  // documents handed to one tokenizer thread at a time
constexpr size_t kBatchDocuments = 4096;

// Deterministic pseudo-random choice per document index (splitmix64).
bool is_validation(uint64_t index, double percent) {
  uint64_t z = index + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<double>(z % 1'000'000) < percent * 10'000.0;
}

// Numbered shards of one split, each committed when full.
class ShardSequence {
 public:
  ShardSequence(fs::path dir, std::string split, int64_t vocab, uint64_t shard_tokens)
      : dir_(std::move(dir)), split_(std::move(split)), vocab_(vocab), shard_tokens_(shard_tokens) {}

  void append(const std::vector<int32_t>& ids) {
    size_t done = 0;
    while (done < ids.size()) {
      if (!writer_) start();
      const size_t room = static_cast<size_t>(shard_tokens_ - writer_->token_count());
      const size_t n = std::min(room, ids.size() - done);
      writer_->append(ids.data() + done, n);
      done += n;
      if (writer_->token_count() >= shard_tokens_) finish_shard();
    }
  }
  void finish() {
    if (writer_) finish_shard();
  }
  const std::vector<std::string>& names() const { return names_; }

 private:
  std::string name(size_t i) const {
    char text[64];
    std::snprintf(text, sizeof(text), "%s-%05zu.bin", split_.c_str(), i);
    return text;
  }
  void start() { writer_ = std::make_unique<ShardWriter>((dir_ / name(names_.size())).string(), vocab_); }
  void finish_shard() {
    writer_->commit();
    names_.push_back(name(names_.size()));
    writer_.reset();
  }

  fs::path dir_;
  std::string split_;
  int64_t vocab_;
  uint64_t shard_tokens_;
  std::unique_ptr<ShardWriter> writer_;
  std::vector<std::string> names_;
};

void check_options(const PrepareOptions& o) {
  if (o.inputs.empty()) throw std::runtime_error("prepare: no input files");
  for (const auto& input : o.inputs) {
    if (!fs::is_regular_file(input)) throw std::runtime_error(input + ": no such input file");
  }
  if (o.output_dir.empty()) throw std::runtime_error("prepare: no output folder");
  if (!(o.validation_percent >= 0 && o.validation_percent < 100)) {
    throw std::runtime_error("prepare: the validation percentage must be in [0, 100)");
  }
  if (o.shard_tokens == 0) throw std::runtime_error("prepare: shard size must be positive");
}

void write_manifest(const PrepareOptions& o, const PrepareStats& s, const Tokenizer& tokenizer) {
  const nlohmann::json manifest = {
      {"format", "densessm-token-shards"},
      {"version", 1},
      {"tokenizer", fs::absolute(o.tokenizer).string()},
      {"vocab_size", tokenizer.vocab_size()},
      {"eos_id", tokenizer.eos_id()},
      {"bos_id", tokenizer.bos_id()},
      {"documents", s.documents},
      {"validation_documents", s.validation_documents},
      {"train_tokens", s.train_tokens},
      {"validation_tokens", s.validation_tokens},
      {"validation_percent", o.validation_percent},
      {"train_shards", s.train_shards},
      {"validation_shards", s.validation_shards},
  };
  const fs::path path = fs::path(o.output_dir) / "dataset.json";
  const fs::path temp = path.string() + ".tmp";
  {
    std::ofstream out(temp);
    out << manifest.dump(2) << "\n";
    if (!out) throw std::runtime_error(temp.string() + ": write failed");
  }
  fs::rename(temp, path);
}

}  // namespace

PrepareStats prepare_data(const PrepareOptions& o, const std::function<void(const PrepareStats&)>& progress) {
  check_options(o);
  const auto start = std::chrono::steady_clock::now();
  const Tokenizer tokenizer = Tokenizer::load(o.tokenizer);
  const int eos = tokenizer.eos_id(), bos = tokenizer.bos_id();
  if (eos < 0) throw std::runtime_error(o.tokenizer + ": the tokenizer has no eos piece to separate documents");
  if (o.add_bos && bos < 0) throw std::runtime_error(o.tokenizer + ": the tokenizer has no bos piece");
  fs::create_directories(o.output_dir);
  const int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  ShardSequence train(o.output_dir, "train", tokenizer.vocab_size(), o.shard_tokens);
  ShardSequence validation(o.output_dir, "val", tokenizer.vocab_size(), o.shard_tokens);
  PrepareStats stats;
  uint64_t finished_bytes = 0;  // input bytes of files already done
  auto last_report = start;

  // Documents are read into `threads` batches, tokenized in parallel, then written in order: at most
  // threads * kBatchBytes of text (and its tokens) are in memory at once.
  std::vector<std::vector<std::string>> batches(threads);
  std::vector<std::vector<std::vector<int32_t>>> encoded(threads);
  auto flush = [&] {
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      if (batches[t].empty()) continue;
      workers.emplace_back([&, t] {
        encoded[t].clear();
        for (const auto& document : batches[t]) encoded[t].push_back(tokenizer.encode(document));
      });
    }
    for (auto& worker : workers) worker.join();
    for (int t = 0; t < threads; ++t) {
      for (auto& ids : encoded[t]) {
        if (o.add_bos) ids.insert(ids.begin(), bos);
        ids.push_back(eos);
        const bool held_out = is_validation(stats.documents, o.validation_percent);
        (held_out ? validation : train).append(ids);
        (held_out ? stats.validation_tokens : stats.train_tokens) += ids.size();
        stats.validation_documents += held_out;
        ++stats.documents;
      }
      batches[t].clear();
      encoded[t].clear();
    }
  };

  for (const auto& input : o.inputs) {
    auto reader = open_documents(input, o.text_field, o.txt_documents);
    int current = 0;
    size_t batch_bytes = 0;
    while (auto document = reader->next()) {
      batch_bytes += document->size();
      batches[current].push_back(std::move(*document));
      if (batch_bytes >= kBatchBytes || batches[current].size() >= kBatchDocuments) {
        batch_bytes = 0;
        if (++current == threads) {
          flush();
          current = 0;
          stats.input_bytes = finished_bytes + reader->bytes_read();
          const auto now = std::chrono::steady_clock::now();
          if (progress && now - last_report >= std::chrono::seconds(1)) {
            stats.seconds = std::chrono::duration<double>(now - start).count();
            progress(stats);
            last_report = now;
          }
        }
      }
    }
    flush();
    finished_bytes += reader->bytes_read();
    stats.input_bytes = finished_bytes;
  }
  train.finish();
  validation.finish();
  stats.train_shards = train.names();
  stats.validation_shards = validation.names();
  write_manifest(o, stats, tokenizer);
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (progress) progress(stats);
  return stats;
}

}  // namespace densessm
