#include "generate/device.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/cuda.h>

#ifdef DENSESSM_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace densessm {

void synchronize(torch::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

at::Generator make_generator(torch::Device device, uint64_t seed) {
  at::Generator generator = device.is_cuda() ? at::detail::getCUDAHooks().getNewGenerator(device.index())
                                             : at::detail::createCPUGenerator(seed);
  generator.set_current_seed(seed);
  return generator;
}

int64_t peak_memory_bytes(torch::Device device) {
#ifdef DENSESSM_WITH_CUDA
  if (device.is_cuda()) {
    const auto index = device.has_index() ? device.index() : c10::DeviceIndex(0);
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
  }
#endif
  (void)device;
  return 0;
}

void reset_peak_memory(torch::Device device) {
#ifdef DENSESSM_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.has_index() ? device.index() : 0);
#endif
  (void)device;
}

}  // namespace densessm
