#include "densessm/kernels.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <string>

#include "densessm/log.h"
#include "ops/fallback.h"

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

std::atomic<int64_t> fallbacks{0};

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

int64_t kernel_fallbacks() { return fallbacks.load(); }

void note_reference_fallback(const char* op, const torch::Tensor& x, const std::function<std::string()>& why) {
  if (!kernels_enabled() || !x.is_cuda()) return;
  fallbacks.fetch_add(1);
  static std::mutex mutex;
  static std::set<std::string> warned;
  const std::lock_guard<std::mutex> lock(mutex);
  if (warned.insert(op).second) {
    log::warn(op, ": CUDA tensors run the LibTorch reference form, not the kernel (", why(),
              "); later fallbacks of this operator are counted, not logged");
  }
}

}  // namespace densessm
