// The protobuf wire encoding of the few Event fields written here is done by hand: Debian packages no C++
// TensorBoard writer, and generating the message classes with protoc would need TensorFlow's .proto files
// (tensorflow/core/util/event.proto, tensorflow/core/framework/summary.proto) in the build. The encoding
// used is the protobuf specification's: a key varint (field number << 3 | wire type) before each field.
// The checksum is CRC-32C (Castagnoli) from Boost.CRC: Google's crc32c library (libcrc32c-dev) is
// packaged only from Debian 13 on, and Debian 12 is this project's platform.
#include "train/tensorboard.h"

#include <unistd.h>

#include <boost/crc.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace densessm {
namespace {

// Protobuf wire types.
constexpr uint32_t kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5;

void put_varint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

void put_key(std::string& out, uint32_t field, uint32_t wire_type) { put_varint(out, field << 3 | wire_type); }

// Little-endian, as protobuf's fixed-width fields and TFRecord's length are (so is every host we build on).
template <typename T>
void put_fixed(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out.append(bytes, sizeof(T));
}

void put_bytes(std::string& out, uint32_t field, const std::string& bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out += bytes;
}

// tensorflow.Event fields: wall_time = 1 (double), step = 2 (int64), file_version = 3 (string),
// summary = 5 (Summary). Summary: value = 1 (repeated Value). Value: tag = 1 (string), simple_value = 2 (float).
std::string event(int64_t step, const std::string& file_version, const std::string& summary) {
  const double wall_time =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::string out;
  put_key(out, 1, kFixed64);
  put_fixed(out, wall_time);
  put_key(out, 2, kVarint);
  put_varint(out, static_cast<uint64_t>(step));
  if (!file_version.empty()) put_bytes(out, 3, file_version);
  if (!summary.empty()) put_bytes(out, 5, summary);
  return out;
}

std::string scalar_summary(const std::string& tag, float value) {
  std::string v;
  put_bytes(v, 1, tag);
  put_key(v, 2, kFixed32);
  put_fixed(v, value);
  std::string summary;
  put_bytes(summary, 1, v);
  return summary;
}

// TFRecord's checksum: CRC-32C, rotated and offset so that a CRC of data holding CRCs stays well spread.
uint32_t masked_crc32c(const char* data, size_t size) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(data, size);
  const uint32_t c = crc.checksum();
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  std::filesystem::create_directories(dir);
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  // The process id keeps two writers started in the same second (a resumed run) apart.
  path_ = dir + "/events.out.tfevents." + std::to_string(seconds) + "." + host_name() + "." + std::to_string(::getpid());
  file_ = std::fopen(path_.c_str(), "ab");
  if (!file_) throw std::runtime_error(path_ + ": cannot create the TensorBoard event file: " + std::strerror(errno));
  write_record(event(0, "brain.Event:2", ""));
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fclose(file_);
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  write_record(event(step, "", scalar_summary(tag, static_cast<float>(value))));
}

void TensorBoardWriter::flush() {
  if (std::fflush(file_) != 0) throw std::runtime_error(path_ + ": write failed: " + std::strerror(errno));
}

void TensorBoardWriter::write_record(const std::string& data) {
  std::string record;
  put_fixed<uint64_t>(record, data.size());
  put_fixed(record, masked_crc32c(record.data(), sizeof(uint64_t)));
  record += data;
  put_fixed(record, masked_crc32c(data.data(), data.size()));
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size()) {
    throw std::runtime_error(path_ + ": write failed: " + std::strerror(errno));
  }
}

}  // namespace densessm
