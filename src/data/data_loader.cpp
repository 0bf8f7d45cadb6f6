#include "densessm/data_loader.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <numeric>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "densessm/token_shard.h"
#include "json_reader.h"

namespace densessm {

struct DataLoader::Impl {
  LoaderOptions options;
  std::vector<TokenShard> shards;
  std::vector<uint64_t> shard_start;  // first stream index of each shard
  uint64_t tokens = 0, blocks = 0, batches = 0;
  int64_t vocab = 0;
  // Block order of the epoch in `order_epoch` (shuffled per epoch).
  std::vector<uint64_t> order;
  uint64_t order_epoch = UINT64_MAX;

  // Prefetching.
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<std::pair<LoaderPosition, torch::Tensor>> ready;
  LoaderPosition produce_at, consume_at;
  bool stopping = false;
  std::thread worker;

  void open();
  void read_tokens(uint64_t start, uint64_t n, int64_t* out) const;
  const std::vector<uint64_t>& order_of(uint64_t epoch);
  torch::Tensor make_batch(const LoaderPosition& p);
  static LoaderPosition following(LoaderPosition p, uint64_t batches) {
    if (++p.batch == batches) p = {p.epoch + 1, 0};
    return p;
  }
  void start_worker();
  void stop_worker();
};

void DataLoader::Impl::open() {
  const LoaderOptions& o = options;
  if (o.batch_size <= 0 || o.block_size <= 0) throw std::runtime_error("data loader: batch and block sizes must be positive");
  if (o.world_size <= 0 || o.rank < 0 || o.rank >= o.world_size) {
    throw std::runtime_error("data loader: rank " + std::to_string(o.rank) + " is outside world size " +
                             std::to_string(o.world_size));
  }
  const std::string manifest_path = o.dataset_dir + "/dataset.json";
  const nlohmann::json manifest =
      json_config::read_json_file(manifest_path, "dataset manifest (run densessm-prepare-data first)");
  const char* key = o.split == "train" ? "train_shards" : o.split == "validation" ? "validation_shards" : nullptr;
  if (!key) throw std::runtime_error("data loader: split must be train or validation, got '" + o.split + "'");
  if (!manifest.contains(key) || !manifest[key].is_array() || !manifest.contains("vocab_size")) {
    throw std::runtime_error(manifest_path + ": no \"" + key + "\" list or \"vocab_size\"");
  }
  vocab = manifest["vocab_size"].get<int64_t>();
  if (o.expected_vocab > 0 && vocab != o.expected_vocab) {
    throw std::runtime_error(manifest_path + ": the data has a vocabulary of " + std::to_string(vocab) +
                             " tokens, the model " + std::to_string(o.expected_vocab));
  }
  for (const auto& name : manifest[key]) {
    shards.push_back(TokenShard::open(o.dataset_dir + "/" + name.get<std::string>(), vocab));
    shard_start.push_back(tokens);
    tokens += shards.back().size();
  }
  blocks = tokens > 0 ? (tokens - 1) / static_cast<uint64_t>(o.block_size) : 0;
  const uint64_t global_batch = static_cast<uint64_t>(o.batch_size * o.world_size);
  batches = blocks / global_batch;
  if (batches == 0) {
    throw std::runtime_error(o.dataset_dir + ": the " + o.split + " split has " + std::to_string(tokens) + " tokens, " +
                             std::to_string(blocks) + " blocks of " + std::to_string(o.block_size) +
                             ": fewer than one global batch of " + std::to_string(global_batch));
  }
}

void DataLoader::Impl::read_tokens(uint64_t start, uint64_t n, int64_t* out) const {
  auto shard = std::upper_bound(shard_start.begin(), shard_start.end(), start) - shard_start.begin() - 1;
  while (n > 0) {
    const uint64_t offset = start - shard_start[shard];
    const uint64_t take = std::min<uint64_t>(n, shards[shard].size() - offset);
    shards[shard].read(offset, take, out);
    out += take, start += take, n -= take;
    ++shard;
  }
}

const std::vector<uint64_t>& DataLoader::Impl::order_of(uint64_t epoch) {
  if (order_epoch != epoch) {
    order.resize(blocks);
    std::iota(order.begin(), order.end(), 0);
    if (options.shuffle) {
      // std::shuffle's result depends on the library; this Fisher-Yates with mt19937_64 does not.
      std::mt19937_64 rng(options.seed * 0x9e3779b97f4a7c15ull + epoch);
      for (uint64_t i = blocks - 1; i > 0; --i) std::swap(order[i], order[rng() % (i + 1)]);
    }
    order_epoch = epoch;
  }
  return order;
}

torch::Tensor DataLoader::Impl::make_batch(const LoaderPosition& p) {
  const int64_t B = options.batch_size, T = options.block_size;
  auto batch = torch::empty({B, T + 1}, torch::kLong);  // (B, block + 1)
  const auto& blocks_in_order = order_of(p.epoch);
  const uint64_t first = (p.batch * options.world_size + options.rank) * B;
  for (int64_t i = 0; i < B; ++i) {
    read_tokens(blocks_in_order[first + i] * T, T + 1, batch[i].data_ptr<int64_t>());
  }
  return batch;
}

void DataLoader::Impl::start_worker() {
  stopping = false;
  if (options.prefetch <= 0) return;
  worker = std::thread([this] {
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      changed.wait(lock, [&] { return stopping || static_cast<int64_t>(ready.size()) < options.prefetch; });
      if (stopping) return;
      const LoaderPosition p = produce_at;
      produce_at = following(p, batches);
      lock.unlock();
      auto batch = make_batch(p);
      lock.lock();
      if (stopping) return;
      ready.emplace_back(p, std::move(batch));
      changed.notify_all();
    }
  });
}

void DataLoader::Impl::stop_worker() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stopping = true;
  }
  changed.notify_all();
  if (worker.joinable()) worker.join();
  ready.clear();
}

DataLoader::DataLoader(const LoaderOptions& options) : impl_(std::make_unique<Impl>()) {
  impl_->options = options;
  impl_->open();
  impl_->start_worker();
}

DataLoader::~DataLoader() { impl_->stop_worker(); }

torch::Tensor DataLoader::next() {
  Impl& s = *impl_;
  if (s.options.prefetch <= 0) {
    auto batch = s.make_batch(s.consume_at);
    s.consume_at = Impl::following(s.consume_at, s.batches);
    return batch;
  }
  std::unique_lock<std::mutex> lock(s.mutex);
  s.changed.wait(lock, [&] { return !s.ready.empty(); });
  auto [p, batch] = std::move(s.ready.front());
  s.ready.pop_front();
  s.consume_at = Impl::following(p, s.batches);
  s.changed.notify_all();
  return batch;
}

LoaderPosition DataLoader::position() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->consume_at;
}

void DataLoader::set_position(const LoaderPosition& position) {
  if (position.batch >= impl_->batches) {
    throw std::runtime_error("data loader: saved position batch " + std::to_string(position.batch) +
                             " is past the epoch's " + std::to_string(impl_->batches) +
                             " batches (another dataset, batch size or world size?)");
  }
  impl_->stop_worker();
  impl_->consume_at = impl_->produce_at = position;
  impl_->start_worker();
}

uint64_t DataLoader::num_blocks() const { return impl_->blocks; }
uint64_t DataLoader::batches_per_epoch() const { return impl_->batches; }
uint64_t DataLoader::num_tokens() const { return impl_->tokens; }
int64_t DataLoader::vocab_size() const { return impl_->vocab; }

}  // namespace densessm
