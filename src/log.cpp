#include "densessm/log.h"

#include <stdexcept>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace densessm::log {
namespace {

spdlog::logger& logger() {
  // stderr, so that a program's real output (generated text, counts) stays clean on stdout.
  static std::shared_ptr<spdlog::logger> instance = [] {
    auto created = spdlog::stderr_color_mt("densessm");
    created->set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
    return created;
  }();
  return *instance;
}

spdlog::level::level_enum to_spdlog(Level level) {
  switch (level) {
    case Level::kDebug: return spdlog::level::debug;
    case Level::kInfo: return spdlog::level::info;
    case Level::kWarn: return spdlog::level::warn;
    case Level::kError: return spdlog::level::err;
  }
  return spdlog::level::info;
}

}  // namespace

void write(Level level, const std::string& message) { logger().log(to_spdlog(level), message); }

void set_level(Level level) { logger().set_level(to_spdlog(level)); }

Level parse_level(const std::string& name) {
  if (name == "debug") return Level::kDebug;
  if (name == "info") return Level::kInfo;
  if (name == "warn") return Level::kWarn;
  if (name == "error") return Level::kError;
  throw std::invalid_argument("unknown log level '" + name + "' (expected debug, info, warn or error)");
}

}  // namespace densessm::log
