#include "io/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>

namespace densessm::files {
namespace {

namespace fs = std::filesystem;

std::string temporary_name(const fs::path& path) {
  return path.string() + ".tmp-" + std::to_string(::getpid());
}

}  // namespace

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path + ": cannot open to sync");
  const int status = ::fsync(fd);
  ::close(fd);
  if (status != 0) throw std::runtime_error(path + ": fsync failed (disk full?)");
}

void write_file_atomically(const std::string& path, const std::function<void(const std::string& temporary)>& write) {
  const fs::path final_path = fs::absolute(path);
  const std::string temp = temporary_name(final_path);
  try {
    write(temp);
    fsync_path(temp);
    fs::rename(temp, final_path);
    fsync_path(final_path.parent_path().string());
  } catch (...) {
    std::error_code ignored;
    fs::remove(temp, ignored);
    throw;
  }
}

void write_folder_atomically(const std::string& folder, bool replace,
                             const std::function<void(const std::string& temporary)>& write) {
  const fs::path final_path = fs::absolute(folder).lexically_normal();
  if (fs::exists(final_path) && !replace) {
    throw std::runtime_error(final_path.string() + " already exists and is left as it is (choose another folder, or replace "
                             "it: densessm-convert --replace)");
  }
  fs::create_directories(final_path.parent_path());
  const fs::path temp = temporary_name(final_path);
  const fs::path old = final_path.string() + ".old-" + std::to_string(::getpid());
  fs::remove_all(temp);
  try {
    fs::create_directories(temp);
    write(temp.string());
    for (const auto& entry : fs::directory_iterator(temp)) fsync_path(entry.path().string());
    fsync_path(temp.string());
    const bool had_old = fs::exists(final_path);
    if (had_old) fs::rename(final_path, old);
    fs::rename(temp, final_path);
    fsync_path(final_path.parent_path().string());
    if (had_old) fs::remove_all(old);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(temp, ignored);
    throw;
  }
}

}  // namespace densessm::files
