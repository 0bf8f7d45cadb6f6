// A small reader of TensorBoard event files for the tests, written from the format's definition (TFRecord
// framing, protobuf wire encoding) independently of src/train/tensorboard.cpp: every record's two masked
// CRC-32Cs are checked, and the Event fields the writer uses are decoded.
#pragma once

#include <boost/crc.hpp>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace densessm::testing {

struct ScalarEvent {
  double wall_time = 0;
  int64_t step = -1;
  std::string file_version;            ///< set on the first event only
  std::vector<std::pair<std::string, float>> values;  ///< (tag, simple_value)
};

inline uint32_t masked_crc32c_for_test(const std::string& bytes) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;  // CRC-32C
  crc.process_bytes(bytes.data(), bytes.size());
  const uint32_t c = crc.checksum();
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

class ProtoReader {
 public:
  explicit ProtoReader(const std::string& bytes) : bytes_(bytes) {}
  bool done() const { return pos_ >= bytes_.size(); }
  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0;; shift += 7) {
      if (pos_ >= bytes_.size() || shift > 63) throw std::runtime_error("bad varint");
      const auto byte = static_cast<uint8_t>(bytes_[pos_++]);
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return value;
    }
  }
  std::string take(size_t n) {
    if (pos_ + n > bytes_.size()) throw std::runtime_error("field runs past the message");
    std::string out = bytes_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  template <typename T>
  T fixed() {
    T value;
    std::memcpy(&value, take(sizeof(T)).data(), sizeof(T));
    return value;
  }
  std::string bytes() { return take(varint()); }

 private:
  std::string bytes_;
  size_t pos_ = 0;
};

inline ScalarEvent parse_event(const std::string& data) {
  ScalarEvent event;
  ProtoReader r(data);
  while (!r.done()) {
    const uint64_t key = r.varint();
    switch (key) {
      case 1 << 3 | 1: event.wall_time = r.fixed<double>(); break;
      case 2 << 3 | 0: event.step = static_cast<int64_t>(r.varint()); break;
      case 3 << 3 | 2: event.file_version = r.bytes(); break;
      case 5 << 3 | 2: {
        ProtoReader summary(r.bytes());
        while (!summary.done()) {
          if (summary.varint() != (1 << 3 | 2)) throw std::runtime_error("unexpected Summary field");
          ProtoReader value(summary.bytes());
          std::pair<std::string, float> tag_value;
          while (!value.done()) {
            const uint64_t k = value.varint();
            if (k == (1 << 3 | 2)) tag_value.first = value.bytes();
            else if (k == (2 << 3 | 5)) tag_value.second = value.fixed<float>();
            else throw std::runtime_error("unexpected Summary.Value field");
          }
          event.values.push_back(tag_value);
        }
        break;
      }
      default: throw std::runtime_error("unexpected Event field " + std::to_string(key));
    }
  }
  return event;
}

/// Every event of the file, in order; throws on a bad checksum or a truncated record.
inline std::vector<ScalarEvent> read_event_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  ProtoReader file(buffer.str());
  std::vector<ScalarEvent> events;
  while (!file.done()) {
    const std::string length_bytes = file.take(8);
    if (file.fixed<uint32_t>() != masked_crc32c_for_test(length_bytes)) throw std::runtime_error("bad length CRC");
    uint64_t length;
    std::memcpy(&length, length_bytes.data(), 8);
    const std::string data = file.take(length);
    if (file.fixed<uint32_t>() != masked_crc32c_for_test(data)) throw std::runtime_error("bad data CRC");
    events.push_back(parse_event(data));
  }
  return events;
}

}  // namespace densessm::testing
