// Logging facade. The implementation uses spdlog, but no spdlog (or fmt) type appears here: LibTorch 2.11
// ships fmt 12 headers that Debian's spdlog 1.10 cannot compile against, so spdlog lives in its own
// library target (densessm_log) whose translation units never see LibTorch's include path.
#pragma once

#include <sstream>
#include <string>

namespace densessm::log {

enum class Level { kDebug, kInfo, kWarn, kError };

void write(Level level, const std::string& message);
void set_level(Level level);
/// Parses "debug", "info", "warn" or "error"; throws std::invalid_argument otherwise.
Level parse_level(const std::string& name);

template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

template <typename... Args>
void debug(const Args&... args) { write(Level::kDebug, concat(args...)); }
template <typename... Args>
void info(const Args&... args) { write(Level::kInfo, concat(args...)); }
template <typename... Args>
void warn(const Args&... args) { write(Level::kWarn, concat(args...)); }
template <typename... Args>
void error(const Args&... args) { write(Level::kError, concat(args...)); }

}  // namespace densessm::log
