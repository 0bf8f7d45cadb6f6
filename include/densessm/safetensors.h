// safetensors files (the format of Hugging Face checkpoints): read memory-mapped and validated, written
// atomically.
//
// Layout: an 8-byte little-endian header length N, a JSON header of N bytes, then the data area. The
// header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end)} (offsets relative to
// the data area) and may hold "__metadata__", a string-to-string map. Sharded checkpoints are several such
// files plus model.safetensors.index.json, whose "weight_map" names the file of each tensor.
//
// Our own reader and writer: Debian packages no C++ safetensors library (the reference implementation is
// Rust with Python bindings), and the format is small enough that a careful reader is safer than a
// vendored one. Every header is validated before any tensor byte is read: a crafted or truncated file
// gives a SafetensorsError naming the file and the tensor, never a crash or an out-of-bounds read.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace densessm {

/// Any problem with a safetensors file or index: what() names the file (and the tensor where one is at fault).
class SafetensorsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// One tensor of a safetensors header.
struct SafetensorsEntry {
  torch::ScalarType dtype = torch::kFloat;  ///< F64, F32, F16, BF16, I64, I32, I16, I8, U8 or BOOL
  std::vector<int64_t> shape;
  uint64_t begin = 0;  ///< byte offsets [begin, end) in the data area
  uint64_t end = 0;
};

/// A safetensors file, memory-mapped read-only and validated on opening.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  /// Tensor names in the order of their data.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return entries_.count(name) > 0; }
  /// Throws SafetensorsError when the file holds no such tensor.
  const SafetensorsEntry& entry(const std::string& name) const;
  /// A CPU tensor owning a copy of the stored bytes, in the stored dtype.
  torch::Tensor tensor(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string path_;
  const uint8_t* map_ = nullptr;  // the whole file
  size_t size_ = 0;
  uint64_t data_start_ = 0;       // 8 + header length
  std::map<std::string, SafetensorsEntry> entries_;
  std::vector<std::string> names_;
  std::map<std::string, std::string> metadata_;
};

/// The tensors of a checkpoint folder: `model.safetensors`, or the shards that
/// `model.safetensors.index.json` lists (preferred when both exist).
class SafetensorsCheckpoint {
 public:
  explicit SafetensorsCheckpoint(const std::string& folder);

  /// Every tensor name, sorted.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return owner_.count(name) > 0; }
  const SafetensorsEntry& entry(const std::string& name) const;
  torch::Tensor tensor(const std::string& name) const;
  /// The files read (one, or the shards).
  std::vector<std::string> files() const;

 private:
  const SafetensorsFile& file_of(const std::string& name) const;

  std::string folder_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> owner_;
};

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

/// Writes `tensors` (any device; stored as they are, so convert the dtype first) to `path` through a
/// temporary file that is fsync'ed and renamed into place. Tensors are stored by decreasing element size
/// so that each starts aligned to its element size; the data area starts at a multiple of 8 bytes.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

/// Writes `tensors` into `folder` (which must exist): `model.safetensors` when they fit in `shard_bytes`
/// (0: no limit), else shards `model-0000i-of-0000N.safetensors` of at most `shard_bytes` each (a larger
/// tensor gets a shard of its own) and `model.safetensors.index.json`. Returns the files written.
std::vector<std::string> write_safetensors_checkpoint(const std::string& folder, const NamedTensors& tensors,
                                                      const std::map<std::string, std::string>& metadata = {},
                                                      uint64_t shard_bytes = 0);

/// "F32", "BF16", ... for a dtype the format stores; throws SafetensorsError otherwise.
std::string safetensors_dtype_name(torch::ScalarType dtype);

}  // namespace densessm
