#include "densessm/kernels.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace densessm {
namespace {

bool enabled_from_environment() {
  const char* value = std::getenv("DENSESSM_KERNELS");
  return value == nullptr || std::strcmp(value, "0") != 0;
}

std::atomic<bool>& enabled_flag() {
  static std::atomic<bool> flag{enabled_from_environment()};
  return flag;
}

}  // namespace

bool kernels_built() {
#ifdef DENSESSM_WITH_CUDA
  return true;
#else
  return false;
#endif
}

bool kernels_enabled() { return kernels_built() && enabled_flag().load(); }

void set_kernels_enabled(bool enabled) { enabled_flag().store(enabled); }

}  // namespace densessm
