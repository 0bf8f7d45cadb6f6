// TensorBoard event files, so that a run's curves show in TensorBoard (the reference reports there too).
// The file is <dir>/events.out.tfevents.<seconds>.<host>: TFRecord records (uint64 length, masked CRC-32C
// of the length, data, masked CRC-32C of the data) around serialized tensorflow.Event messages, the first
// one the "brain.Event:2" file version. Each scalar is an Event with a Summary of one simple_value.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace densessm {

class TensorBoardWriter {
 public:
  /// Creates dir (if needed) and a new event file in it; throws std::runtime_error naming the file when
  /// it cannot be written.
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void add_scalar(const std::string& tag, double value, int64_t step);
  /// Hands what was written to the OS, so that a TensorBoard watching the folder shows it now.
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace densessm
