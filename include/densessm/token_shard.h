// Token shards: the files that data preparation writes and the training loader memory-maps.
//
// Layout (little endian): a 64-byte header, then token_count ids of token_bytes each.
//   0  char[8]  magic "DSSMTOK\0"
//   8  uint32   version (1)
//   12 uint32   token_bytes: 2 (uint16, vocab <= 65536) or 4 (uint32)
//   16 uint64   vocab_size
//   24 uint64   token_count
//   32 ...      zero
// A shard is written to a temporary file in the same folder, fsync'ed and renamed, so a reader never sees
// a partial shard under the final name.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace densessm {

class ShardError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Bytes per token for a vocabulary: 2 when every id fits in uint16, else 4.
int token_bytes_for(int64_t vocab_size);

class ShardWriter {
 public:
  /// Starts <path>.tmp-<pid>; nothing appears at `path` before commit().
  ShardWriter(std::string path, int64_t vocab_size);
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;
  /// Removes the temporary file unless committed.
  ~ShardWriter();

  /// Appends ids; throws ShardError for an id outside [0, vocab_size).
  void append(const int32_t* ids, size_t count);
  void append(const std::vector<int32_t>& ids) { append(ids.data(), ids.size()); }
  /// Writes the final header, flushes to disk and renames to `path`.
  void commit();
  uint64_t token_count() const { return count_; }

 private:
  std::string path_, temp_path_;
  int64_t vocab_size_;
  int token_bytes_;
  uint64_t count_ = 0;
  int fd_ = -1;
  bool committed_ = false;
  std::vector<uint8_t> buffer_;
  void flush_buffer();
};

/// A shard memory-mapped read-only, validated on open.
class TokenShard {
 public:
  /// Throws ShardError naming the file for a missing file, a bad magic or version, an unknown token
  /// width, a size that disagrees with the header, or (when expected_vocab > 0) another vocabulary size.
  static TokenShard open(const std::string& path, int64_t expected_vocab = 0);

  uint64_t size() const { return count_; }
  int64_t vocab_size() const { return vocab_; }
  int token_bytes() const { return token_bytes_; }
  const std::string& path() const { return path_; }
  int32_t operator[](uint64_t i) const;
  /// Copies ids [start, start + n) into out (as int64, the dtype of LibTorch's token tensors).
  void read(uint64_t start, uint64_t n, int64_t* out) const;

 private:
  int32_t at(uint64_t i) const;  // unchecked
  struct Mapping;
  std::shared_ptr<const Mapping> mapping_;
  const uint8_t* tokens_ = nullptr;
  std::string path_;
  uint64_t count_ = 0;
  int64_t vocab_ = 0;
  int token_bytes_ = 0;
};

}  // namespace densessm
