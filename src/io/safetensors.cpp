#include "densessm/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "io/files.h"

namespace densessm {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors stores little-endian data; this reader copies bytes as they are");

// Headers of real checkpoints are a few hundred KB; the reference implementation refuses more than 100 MB.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

const std::vector<std::pair<std::string, torch::ScalarType>>& dtype_names() {
  static const std::vector<std::pair<std::string, torch::ScalarType>> names = {
      {"F64", torch::kDouble}, {"F32", torch::kFloat}, {"F16", torch::kHalf},  {"BF16", torch::kBFloat16},
      {"I64", torch::kLong},   {"I32", torch::kInt},   {"I16", torch::kShort}, {"I8", torch::kChar},
      {"U8", torch::kByte},    {"BOOL", torch::kBool}};
  return names;
}

uint64_t read_u64_le(const uint8_t* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

// One header entry, checked on its own; overlaps between entries are checked afterwards.
SafetensorsEntry parse_entry(const json& value, uint64_t data_bytes, const std::function<void(const std::string&)>& fail) {
  if (!value.is_object()) fail("expected an object with dtype, shape and data_offsets");
  SafetensorsEntry e;
  const auto dtype = value.find("dtype");
  if (dtype == value.end() || !dtype->is_string()) fail("missing or non-string \"dtype\"");
  const std::string name = dtype->get<std::string>();
  const auto& names = dtype_names();
  const auto known = std::find_if(names.begin(), names.end(), [&](const auto& p) { return p.first == name; });
  if (known == names.end()) fail("unsupported dtype \"" + name + "\" (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
  e.dtype = known->second;

  const auto shape = value.find("shape");
  if (shape == value.end() || !shape->is_array()) fail("missing or non-array \"shape\"");
  uint64_t numel = 1;
  for (const json& dim : *shape) {
    if (!dim.is_number_unsigned()) fail("shape " + shape->dump() + ": dimensions must be non-negative integers");
    const uint64_t d = dim.get<uint64_t>();
    if (d > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, d, &numel)) {
      fail("shape " + shape->dump() + " overflows");
    }
    e.shape.push_back(static_cast<int64_t>(d));
  }
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(c10::elementSize(e.dtype)), &bytes)) {
    fail("shape " + shape->dump() + " overflows");
  }

  const auto offsets = value.find("data_offsets");
  if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
      !(*offsets)[1].is_number_unsigned()) {
    fail("\"data_offsets\" must be two non-negative integers");
  }
  e.begin = (*offsets)[0].get<uint64_t>();
  e.end = (*offsets)[1].get<uint64_t>();
  if (e.begin > e.end) fail("data_offsets " + offsets->dump() + ": begin after end");
  if (e.end > data_bytes) {
    fail("data_offsets " + offsets->dump() + " reach beyond the data area of " + std::to_string(data_bytes) +
         " bytes (truncated file?)");
  }
  if (e.end - e.begin != bytes) {
    fail("data_offsets " + offsets->dump() + " hold " + std::to_string(e.end - e.begin) + " bytes, but shape " +
         shape->dump() + " of " + name + " needs " + std::to_string(bytes));
  }
  return e;
}

}  // namespace

std::string safetensors_dtype_name(torch::ScalarType dtype) {
  for (const auto& [name, type] : dtype_names()) {
    if (type == dtype) return name;
  }
  throw SafetensorsError(std::string("safetensors cannot store dtype ") + c10::toString(dtype));
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  auto fail = [&](const std::string& why) -> void { throw SafetensorsError(path_ + ": " + why); };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(std::string("cannot open: ") + std::strerror(errno));
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    fail("not a regular file");
  }
  size_ = static_cast<size_t>(info.st_size);
  if (size_ < 8) {
    ::close(fd);
    fail("too short (" + std::to_string(size_) + " bytes) to hold the 8-byte header length");
  }
  void* map = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) fail(std::string("cannot map: ") + std::strerror(errno));
  map_ = static_cast<const uint8_t*>(map);
  try {
    const uint64_t header_bytes = read_u64_le(map_);
    if (header_bytes > size_ - 8) {
      fail("header length " + std::to_string(header_bytes) + " reaches beyond the end of the file (" +
           std::to_string(size_) + " bytes): truncated or not a safetensors file");
    }
    if (header_bytes > kMaxHeaderBytes) fail("header length " + std::to_string(header_bytes) + " exceeds the 100 MB limit");
    data_start_ = 8 + header_bytes;
    const uint64_t data_bytes = size_ - data_start_;
    json header;
    try {
      header = json::parse(map_ + 8, map_ + data_start_);
    } catch (const json::exception& e) {
      fail(std::string("header is not valid JSON: ") + e.what());
    }
    if (!header.is_object()) fail("header is not a JSON object");
    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") {
        if (!it->is_object()) fail("__metadata__ is not an object");
        for (auto m = it->begin(); m != it->end(); ++m) {
          if (!m->is_string()) fail("__metadata__: value of \"" + m.key() + "\" is not a string");
          metadata_[m.key()] = m->get<std::string>();
        }
        continue;
      }
      entries_[it.key()] = parse_entry(*it, data_bytes, [&](const std::string& why) { fail("tensor \"" + it.key() + "\": " + why); });
    }
    for (const auto& [name, entry] : entries_) names_.push_back(name);
    std::sort(names_.begin(), names_.end(), [&](const std::string& a, const std::string& b) {
      return std::make_pair(entries_[a].begin, entries_[a].end) < std::make_pair(entries_[b].begin, entries_[b].end);
    });
    // The data area must be the tensors, back to back: what the reference implementation writes and requires.
    uint64_t expected = 0;
    std::string previous;
    for (const std::string& name : names_) {
      const SafetensorsEntry& e = entries_[name];
      if (e.begin < expected) fail("tensor \"" + name + "\": its data overlaps that of tensor \"" + previous + "\"");
      if (e.begin > expected) fail("tensor \"" + name + "\": a gap of " + std::to_string(e.begin - expected) + " bytes before its data");
      expected = e.end;
      previous = name;
    }
    if (expected != data_bytes) {
      fail(std::to_string(data_bytes - expected) + " bytes after the last tensor's data that no tensor claims");
    }
  } catch (...) {
    ::munmap(const_cast<uint8_t*>(map_), size_);
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() { ::munmap(const_cast<uint8_t*>(map_), size_); }

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw SafetensorsError(path_ + ": no tensor named \"" + name + "\"");
  return it->second;
}

torch::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  auto out = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));  // offsets were checked on opening
  if (e.end > e.begin) std::memcpy(out.data_ptr(), map_ + data_start_ + e.begin, e.end - e.begin);
  return out;
}

SafetensorsCheckpoint::SafetensorsCheckpoint(const std::string& folder) : folder_(folder) {
  const fs::path index_path = fs::path(folder) / kIndexName;
  const fs::path single_path = fs::path(folder) / kSingleName;
  if (fs::exists(index_path)) {
    const std::string source = index_path.string();
    std::ifstream in(index_path);
    if (!in) throw SafetensorsError(source + ": cannot open");
    json index;
    try {
      index = json::parse(in);
    } catch (const json::exception& e) {
      throw SafetensorsError(source + ": not valid JSON: " + e.what());
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      throw SafetensorsError(source + ": expected an object with a \"weight_map\" object");
    }
    std::map<std::string, const SafetensorsFile*> opened;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it->is_string()) throw SafetensorsError(source + ": weight_map: \"" + it.key() + "\" does not name a file");
      const std::string file = it->get<std::string>();
      // Shards live beside the index: a path elsewhere would let a crafted index read any file.
      if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..") {
        throw SafetensorsError(source + ": weight_map: \"" + it.key() + "\": shard \"" + file + "\" is not a file name in the folder");
      }
      if (!opened.count(file)) {
        files_.push_back(std::make_unique<SafetensorsFile>((fs::path(folder) / file).string()));
        opened[file] = files_.back().get();
      }
      if (!opened[file]->contains(it.key())) {
        throw SafetensorsError(source + ": tensor \"" + it.key() + "\" is not in its shard " + file);
      }
      owner_[it.key()] = opened[file];
    }
    for (const auto& shard : files_) {
      for (const std::string& name : shard->names()) {
        const auto owner = owner_.find(name);
        if (owner == owner_.end() || owner->second != shard.get()) {
          throw SafetensorsError(shard->path() + ": tensor \"" + name + "\" is not mapped to this shard by " + kIndexName);
        }
      }
    }
  } else if (fs::exists(single_path)) {
    files_.push_back(std::make_unique<SafetensorsFile>(single_path.string()));
    for (const std::string& name : files_.back()->names()) owner_[name] = files_.back().get();
  } else {
    throw SafetensorsError(folder + ": neither " + kSingleName + " nor " + kIndexName + " found");
  }
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> names;
  for (const auto& [name, file] : owner_) names.push_back(name);
  return names;
}

const SafetensorsFile& SafetensorsCheckpoint::file_of(const std::string& name) const {
  auto it = owner_.find(name);
  if (it == owner_.end()) throw SafetensorsError(folder_ + ": no tensor named \"" + name + "\"");
  return *it->second;
}

const SafetensorsEntry& SafetensorsCheckpoint::entry(const std::string& name) const { return file_of(name).entry(name); }
torch::Tensor SafetensorsCheckpoint::tensor(const std::string& name) const { return file_of(name).tensor(name); }

std::vector<std::string> SafetensorsCheckpoint::files() const {
  std::vector<std::string> paths;
  for (const auto& file : files_) paths.push_back(file->path());
  return paths;
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // Larger elements first: every tensor's bytes then start at a multiple of its element size.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return tensors[a].second.element_size() > tensors[b].second.element_size();
  });
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<torch::Tensor> contiguous;
  for (size_t i : order) {
    const auto& [name, tensor] = tensors[i];
    if (name.empty() || name == "__metadata__" || header.contains(name)) {
      throw SafetensorsError(path + ": invalid or repeated tensor name \"" + name + "\"");
    }
    auto t = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", safetensors_dtype_name(t.scalar_type())}, {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contiguous.push_back(t);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data area starts 8-byte aligned
  files::write_file_atomically(path, [&](const std::string& temporary) {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    uint8_t length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
    out.write(reinterpret_cast<const char*>(length), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& t : contiguous) {
      out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
    }
    if (!out.flush()) throw SafetensorsError(path + ": write failed (disk full?)");
  });
}

std::vector<std::string> write_safetensors_checkpoint(const std::string& folder, const NamedTensors& tensors,
                                                      const std::map<std::string, std::string>& metadata,
                                                      uint64_t shard_bytes) {
  std::vector<NamedTensors> shards(1);
  uint64_t total = 0, in_shard = 0;
  for (const auto& item : tensors) {
    const uint64_t bytes = static_cast<uint64_t>(item.second.numel()) * item.second.element_size();
    if (shard_bytes > 0 && in_shard > 0 && in_shard + bytes > shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(item);
    in_shard += bytes;
    total += bytes;
  }
  std::vector<std::string> written;
  if (shards.size() == 1) {
    written.push_back((fs::path(folder) / kSingleName).string());
    write_safetensors(written.back(), tensors, metadata);
    return written;
  }
  json weight_map = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    for (const auto& item : shards[i]) weight_map[item.first] = name;
    written.push_back((fs::path(folder) / name).string());
    write_safetensors(written.back(), shards[i], metadata);
  }
  json index_metadata = metadata;
  index_metadata["total_size"] = total;
  const json index = {{"metadata", index_metadata}, {"weight_map", weight_map}};
  written.push_back((fs::path(folder) / kIndexName).string());
  files::write_file_atomically(written.back(), [&](const std::string& temporary) {
    std::ofstream out(temporary);
    out << index.dump(2) << "\n";
    if (!out.flush()) throw SafetensorsError(written.back() + ": write failed (disk full?)");
  });
  return written;
}

}  // namespace densessm
