// Checkpoint folders: <output_dir>/checkpoints/step-<N>/ with model.pt, optimizer.pt, rng-*.pt,
// state.json, model.json, run.json and checksums.json (every other file's size and CRC-32C). A
// checkpoint is written into a temporary folder, every file fsync'ed, then renamed into place, so a crash
// or a full disk never leaves a half checkpoint under a final name, and older checkpoints stay intact.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include <torch/serialize.h>

namespace densessm {

/// The folder of the newest complete checkpoint in output_dir, if any.
std::optional<std::string> latest_checkpoint(const std::string& output_dir);

/// Runs `write(temp_folder)`, fsyncs what it wrote and renames the folder to step-<step>; then keeps only
/// the newest `keep` checkpoints. Returns the final folder. On failure (a full disk) the temporary folder is
/// removed and a std::runtime_error naming the checkpoint and the reason is thrown.
std::string write_checkpoint(const std::string& output_dir, int64_t step, int64_t keep,
                             const std::function<void(const std::string& folder)>& write);

/// Checks every file of a checkpoint folder against the sizes and CRC-32C checksums saved with it; throws
/// std::runtime_error "<folder>: corrupt or truncated checkpoint: <file and what is wrong>".
void verify_checkpoint(const std::string& folder);

/// A file for torch::save to write through, checking every write. torch::save's own file writer aborts
/// the whole process when the disk fills (LibTorch 2.11: a fatal check in its zip writer after the failed
/// write), so the bytes come here instead: a failed write is remembered (torch is told all went well, so
/// it finishes cleanly) and close() throws it, with the system's reason.
class CheckedFile {
 public:
  explicit CheckedFile(std::string path);
  ~CheckedFile();
  CheckedFile(const CheckedFile&) = delete;
  CheckedFile& operator=(const CheckedFile&) = delete;
  /// torch's writer function: `size` bytes of `data`, or a skip of `size` bytes when data is null.
  size_t write(const void* data, size_t size);
  /// Closes the file; throws std::runtime_error "<path>: <reason>" if any write or the close failed.
  void close();

 private:
  std::string path_;
  int fd_ = -1;
  int error_ = 0;  ///< errno of the first failure
};

/// torch::save(value) into `path`, with a clear error instead of an abort on a full disk.
template <typename Value>
void save_checked(const Value& value, const std::string& path) {
  CheckedFile file(path);
  torch::save(value, [&file](const void* data, size_t size) { return file.write(data, size); });
  file.close();
}

}  // namespace densessm
