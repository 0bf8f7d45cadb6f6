#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/crc.hpp>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <stdexcept>
#include <vector>

#include "io/files.h"

namespace densessm {
namespace {

namespace fs = std::filesystem;

std::vector<std::pair<int64_t, fs::path>> complete_checkpoints(const std::string& output_dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  const fs::path dir = fs::path(output_dir) / "checkpoints";
  if (!fs::is_directory(dir)) return found;
  static const std::regex name("step-([0-9]+)");
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::smatch m;
    const std::string file = entry.path().filename().string();
    if (entry.is_directory() && std::regex_match(file, m, name)) found.emplace_back(std::stoll(m[1]), entry.path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

constexpr const char* kChecksums = "checksums.json";

// CRC-32C (Boost.CRC, as for TensorBoard's files) and size of a file.
std::pair<uint32_t, uint64_t> checksum(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot read");
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  std::vector<char> buffer(1 << 20);
  uint64_t bytes = 0;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    crc.process_bytes(buffer.data(), static_cast<size_t>(in.gcount()));
    bytes += static_cast<uint64_t>(in.gcount());
  }
  return {crc.checksum(), bytes};
}

// checksums.json: the size and CRC-32C of every file of the checkpoint, written last, so that resuming
// notices a corrupt or truncated file (LibTorch's loader checks neither its tensors' bytes nor their CRCs).
void write_checksums(const fs::path& folder) {
  nlohmann::json files = nlohmann::json::object();
  for (const auto& entry : fs::directory_iterator(folder)) {
    const auto [crc, bytes] = checksum(entry.path());
    files[entry.path().filename().string()] = {{"bytes", bytes}, {"crc32c", crc}};
  }
  std::ofstream out(folder / kChecksums);
  out << nlohmann::json{{"files", files}}.dump(2) << "\n";
  if (!out.flush()) throw std::runtime_error((folder / kChecksums).string() + ": write failed");
}

}  // namespace

std::optional<std::string> latest_checkpoint(const std::string& output_dir) {
  const auto found = complete_checkpoints(output_dir);
  if (found.empty()) return std::nullopt;
  return found.back().second.string();
}

std::string write_checkpoint(const std::string& output_dir, int64_t step, int64_t keep,
                             const std::function<void(const std::string& folder)>& write) {
  const fs::path dir = fs::path(output_dir) / "checkpoints";
  fs::create_directories(dir);
  char name[32];
  std::snprintf(name, sizeof(name), "step-%08lld", static_cast<long long>(step));
  const fs::path final_path = dir / name;
  // Temporary folders of processes killed while saving: never checkpoints, only space.
  static const std::regex temporary("step-[0-9]+\\.tmp-[0-9]+");
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (std::regex_match(entry.path().filename().string(), temporary)) fs::remove_all(entry.path());
  }
  try {
    // replace: the same step saved again by a resumed run.
    files::write_folder_atomically(final_path.string(), /*replace=*/true, [&](const std::string& temp) {
      write(temp);
      write_checksums(temp);
    });
  } catch (const std::exception& e) {
    // torch::save's errors carry a C++ backtrace that says nothing to a user; the reason is enough.
    const auto* torch_error = dynamic_cast<const c10::Error*>(&e);
    throw std::runtime_error(final_path.string() + ": cannot write the checkpoint (disk full?); the earlier " +
                             "checkpoints are intact: " + (torch_error ? torch_error->what_without_backtrace() : e.what()));
  }
  auto found = complete_checkpoints(output_dir);
  for (size_t i = 0; i + static_cast<size_t>(keep) < found.size(); ++i) fs::remove_all(found[i].second);
  return final_path.string();
}

void verify_checkpoint(const std::string& folder) {
  const fs::path dir(folder);
  auto fail = [&](const std::string& why) {
    throw std::runtime_error(folder + ": corrupt or truncated checkpoint: " + why);
  };
  if (!fs::exists(dir / kChecksums)) return;  // written before checksums existed: LibTorch's checks only
  nlohmann::json manifest;
  try {
    manifest = nlohmann::json::parse(std::ifstream(dir / kChecksums)).at("files");
  } catch (const nlohmann::json::exception& e) {
    fail(std::string(kChecksums) + ": " + e.what());
  }
  for (const auto& [name, expected] : manifest.items()) {
    if (!fs::exists(dir / name)) fail(name + " is missing");
    const auto [crc, bytes] = checksum(dir / name);
    const auto want_bytes = expected.at("bytes").get<uint64_t>();
    if (bytes != want_bytes) fail(name + " has " + std::to_string(bytes) + " bytes, " + std::to_string(want_bytes) + " were written");
    if (crc != expected.at("crc32c").get<uint32_t>()) fail(name + " does not match its checksum");
  }
}

CheckedFile::CheckedFile(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw std::runtime_error(path_ + ": cannot create: " + std::strerror(errno));
}

CheckedFile::~CheckedFile() {
  if (fd_ >= 0) ::close(fd_);
}

size_t CheckedFile::write(const void* data, size_t size) {
  if (error_ != 0) return size;
  if (data == nullptr) {
    if (::lseek(fd_, static_cast<off_t>(size), SEEK_CUR) < 0) error_ = errno;
    return size;
  }
  const char* bytes = static_cast<const char*>(data);
  for (size_t done = 0; done < size;) {
    const ssize_t n = ::write(fd_, bytes + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error_ = n < 0 ? errno : ENOSPC;
      break;
    }
    done += static_cast<size_t>(n);
  }
  return size;
}

void CheckedFile::close() {
  if (::close(fd_) != 0 && error_ == 0) error_ = errno;
  fd_ = -1;
  if (error_ != 0) throw std::runtime_error(path_ + ": write failed: " + std::strerror(error_));
}

}  // namespace densessm
