#include "densessm/token_shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace densessm {
namespace {

constexpr char kMagic[8] = {'D', 'S', 'S', 'M', 'T', 'O', 'K', '\0'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 64;
constexpr size_t kBufferBytes = 1 << 20;

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t token_bytes;
  uint64_t vocab_size;
  uint64_t token_count;
  uint8_t reserved[32];
};
static_assert(sizeof(Header) == kHeaderBytes, "the shard header is 64 bytes");

std::string system_error(const std::string& what) { return what + ": " + std::strerror(errno); }

void write_all(int fd, const void* data, size_t bytes, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw ShardError(system_error(path + ": write failed"));
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

}  // namespace

int token_bytes_for(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

ShardWriter::ShardWriter(std::string path, int64_t vocab_size)
    : path_(std::move(path)), vocab_size_(vocab_size), token_bytes_(token_bytes_for(vocab_size)) {
  if (vocab_size <= 0) throw ShardError(path_ + ": vocab size must be positive");
  temp_path_ = path_ + ".tmp-" + std::to_string(::getpid());
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw ShardError(system_error(temp_path_ + ": cannot create"));
  const Header placeholder{};  // the real header is written by commit()
  write_all(fd_, &placeholder, sizeof(placeholder), temp_path_);
  buffer_.reserve(kBufferBytes);
}

ShardWriter::~ShardWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_path_.c_str());
}

void ShardWriter::append(const int32_t* ids, size_t count) {
  if (committed_) throw ShardError(path_ + ": append after commit");
  for (size_t i = 0; i < count; ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size_) {
      throw ShardError(path_ + ": token id " + std::to_string(id) + " is outside [0, " + std::to_string(vocab_size_) + ")");
    }
    if (token_bytes_ == 2) {
      const uint16_t v = static_cast<uint16_t>(id);
      buffer_.insert(buffer_.end(), reinterpret_cast<const uint8_t*>(&v), reinterpret_cast<const uint8_t*>(&v) + 2);
    } else {
      const uint32_t v = static_cast<uint32_t>(id);
      buffer_.insert(buffer_.end(), reinterpret_cast<const uint8_t*>(&v), reinterpret_cast<const uint8_t*>(&v) + 4);
    }
    if (buffer_.size() >= kBufferBytes) flush_buffer();
  }
  count_ += count;
}

void ShardWriter::flush_buffer() {
  write_all(fd_, buffer_.data(), buffer_.size(), temp_path_);
  buffer_.clear();
}

void ShardWriter::commit() {
  if (committed_) return;
  flush_buffer();
  Header header{};
  std::memcpy(header.magic, kMagic, sizeof(kMagic));
  header.version = kVersion;
  header.token_bytes = static_cast<uint32_t>(token_bytes_);
  header.vocab_size = static_cast<uint64_t>(vocab_size_);
  header.token_count = count_;
  if (::lseek(fd_, 0, SEEK_SET) != 0) throw ShardError(system_error(temp_path_ + ": seek failed"));
  write_all(fd_, &header, sizeof(header), temp_path_);
  if (::fsync(fd_) != 0) throw ShardError(system_error(temp_path_ + ": fsync failed"));
  if (::close(fd_) != 0) {
    fd_ = -1;
    throw ShardError(system_error(temp_path_ + ": close failed"));
  }
  fd_ = -1;
  if (std::rename(temp_path_.c_str(), path_.c_str()) != 0) throw ShardError(system_error(path_ + ": rename failed"));
  committed_ = true;
}

struct TokenShard::Mapping {
  void* address = MAP_FAILED;
  size_t bytes = 0;
  ~Mapping() {
    if (address != MAP_FAILED) ::munmap(address, bytes);
  }
};

TokenShard TokenShard::open(const std::string& path, int64_t expected_vocab) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ShardError(system_error(path + ": cannot open token shard"));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw ShardError(system_error(path + ": cannot stat"));
  }
  const auto bytes = static_cast<size_t>(st.st_size);
  if (bytes < kHeaderBytes) {
    ::close(fd);
    throw ShardError(path + ": not a token shard (" + std::to_string(bytes) + " bytes, shorter than the header)");
  }
  auto mapping = std::make_shared<Mapping>();
  mapping->address = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  mapping->bytes = bytes;
  ::close(fd);
  if (mapping->address == MAP_FAILED) throw ShardError(system_error(path + ": mmap failed"));
  Header header;
  std::memcpy(&header, mapping->address, sizeof(header));
  if (std::memcmp(header.magic, kMagic, sizeof(kMagic)) != 0) throw ShardError(path + ": not a token shard (bad magic)");
  if (header.version != kVersion) {
    throw ShardError(path + ": shard version " + std::to_string(header.version) + " is not supported (expected " +
                     std::to_string(kVersion) + ")");
  }
  if (header.token_bytes != 2 && header.token_bytes != 4) {
    throw ShardError(path + ": unknown token width " + std::to_string(header.token_bytes) + " bytes");
  }
  if (header.vocab_size == 0 || header.vocab_size > (1ull << 31) ||
      static_cast<int>(header.token_bytes) != token_bytes_for(static_cast<int64_t>(header.vocab_size))) {
    throw ShardError(path + ": header vocab size " + std::to_string(header.vocab_size) + " and token width " +
                     std::to_string(header.token_bytes) + " disagree");
  }
  const uint64_t payload = static_cast<uint64_t>(bytes - kHeaderBytes);
  if (header.token_count > payload / header.token_bytes || payload != header.token_count * header.token_bytes) {
    throw ShardError(path + ": truncated or corrupt: the header says " + std::to_string(header.token_count) +
                     " tokens, the file holds " + std::to_string(payload) + " bytes of tokens");
  }
  if (expected_vocab > 0 && static_cast<int64_t>(header.vocab_size) != expected_vocab) {
    throw ShardError(path + ": shard vocab size " + std::to_string(header.vocab_size) + " does not match the expected " +
                     std::to_string(expected_vocab));
  }
  TokenShard shard;
  shard.mapping_ = mapping;
  shard.tokens_ = static_cast<const uint8_t*>(mapping->address) + kHeaderBytes;
  shard.path_ = path;
  shard.count_ = header.token_count;
  shard.vocab_ = static_cast<int64_t>(header.vocab_size);
  shard.token_bytes_ = static_cast<int>(header.token_bytes);
  return shard;
}

int32_t TokenShard::at(uint64_t i) const {
  if (token_bytes_ == 2) {
    uint16_t v;
    std::memcpy(&v, tokens_ + i * 2, 2);
    return v;
  }
  uint32_t v;
  std::memcpy(&v, tokens_ + i * 4, 4);
  return static_cast<int32_t>(v);
}

int32_t TokenShard::operator[](uint64_t i) const {
  if (i >= count_) throw ShardError(path_ + ": token index " + std::to_string(i) + " past the end");
  return at(i);
}

void TokenShard::read(uint64_t start, uint64_t n, int64_t* out) const {
  if (start > count_ || n > count_ - start) {
    throw ShardError(path_ + ": read of [" + std::to_string(start) + ", " + std::to_string(start + n) + ") past " +
                     std::to_string(count_) + " tokens");
  }
  for (uint64_t i = 0; i < n; ++i) out[i] = at(start + i);
}

}  // namespace densessm
