// Peak memory of the CUDA caching allocator for one device, for the training benchmark and the trainer's
// log; every call is a no-op (zeros) on the CPU.
#pragma once

#include <utility>

#include <ATen/DeviceAccelerator.h>
#include <torch/torch.h>

namespace densessm {

// The caching allocator's counters for `device` (CUDA); nothing on the CPU.
struct DeviceMemory {
  // "cuda" without an index is the current device.
  explicit DeviceMemory(torch::Device device)
      : cuda_(device.is_cuda()), index_(device.has_index() || !cuda_ ? device.index() : at::accelerator::getDeviceIndex()) {
    // The caching allocator sets up its per-device counters at the first allocation; before that, asking
    // for its statistics fails with "Invalid device argument" (seen on the H200).
    if (cuda_) torch::empty({1}, torch::TensorOptions().device(torch::kCUDA, index_));
  }
  void reset() {
    if (!cuda_) return;
    at::accelerator::emptyCache();
    at::accelerator::resetPeakStats(index_);
  }
  void synchronize() const {
    if (cuda_) at::accelerator::synchronizeDevice(index_);
  }
  std::pair<double, double> peak_allocated_and_reserved() const {
    if (!cuda_) return {0, 0};
    const auto stats = at::accelerator::getDeviceStats(index_);
    const auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    return {static_cast<double>(stats.allocated_bytes[all].peak), static_cast<double>(stats.reserved_bytes[all].peak)};
  }

 private:
  bool cuda_;
  c10::DeviceIndex index_;
};

}  // namespace densessm
