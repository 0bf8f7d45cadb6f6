// Training batches from the token shards of densessm-prepare-data.
//
// The split's shards are one token stream, cut into blocks of block_size + 1 tokens starting every
// block_size tokens (input = block[:-1], target = block[1:]). Each epoch visits the blocks in an order
// shuffled by (seed, epoch) (or in order without shuffling); global batch b of the epoch holds the blocks at
// order positions [b W B, (b+1) W B), and rank r takes the B of them from b W B + r B. So W ranks of batch B
// see exactly the blocks of 1 rank of batch W B, in the same order. A background thread keeps the next
// batches ready; position() is the position of the next batch that next() returns, for checkpoints.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <torch/types.h>

namespace densessm {

struct LoaderOptions {
  std::string dataset_dir;     ///< folder holding dataset.json and the shards
  std::string split = "train";  ///< "train" or "validation"
  int64_t batch_size = 2;      ///< per rank
  int64_t block_size = 2048;
  uint64_t seed = 1995;
  int64_t rank = 0;
  int64_t world_size = 1;
  bool shuffle = true;
  int64_t prefetch = 2;        ///< batches prepared ahead (0: none, no background thread)
  int64_t expected_vocab = 0;  ///< when > 0, shards of another vocabulary are an error
};

struct LoaderPosition {
  uint64_t epoch = 0;
  uint64_t batch = 0;  ///< global batch index within the epoch
  bool operator==(const LoaderPosition& o) const { return epoch == o.epoch && batch == o.batch; }
};

class DataLoader {
 public:
  /// Opens dataset.json and every shard of the split (validated). Throws std::runtime_error naming the
  /// file for a missing or malformed dataset, or when the split has fewer blocks than one global batch.
  explicit DataLoader(const LoaderOptions& options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  /// The next batch: (batch_size, block_size + 1) int64 on the CPU.
  torch::Tensor next();
  LoaderPosition position() const;
  /// Continues from a saved position (drops prefetched batches).
  void set_position(const LoaderPosition& position);

  uint64_t num_blocks() const;        ///< blocks in the split
  uint64_t batches_per_epoch() const;  ///< global batches in an epoch
  uint64_t num_tokens() const;
  int64_t vocab_size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace densessm
