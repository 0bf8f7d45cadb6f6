#include "train/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
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
  files::write_folder_atomically(final_path.string(), /*replace=*/true, write);  // the same step again: a resumed run
  auto found = complete_checkpoints(output_dir);
  for (size_t i = 0; i + static_cast<size_t>(keep) < found.size(); ++i) fs::remove_all(found[i].second);
  return final_path.string();
}

}  // namespace densessm
