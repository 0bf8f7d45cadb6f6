// The few device services generation needs beyond tensor ops: waiting for the device, a seeded random
// generator on it, and CUDA's peak memory counter. No CUDA type appears here.
#pragma once

#include <cstdint>

#include <ATen/core/Generator.h>
#include <torch/types.h>

namespace densessm {

/// Waits until the device has finished its queued work (nothing on the CPU).
void synchronize(torch::Device device);

/// A random generator of its own on `device`, seeded (the device's default generator stays untouched).
at::Generator make_generator(torch::Device device, uint64_t seed);

/// Peak bytes allocated by LibTorch on a CUDA device since the last reset; 0 on the CPU.
int64_t peak_memory_bytes(torch::Device device);
void reset_peak_memory(torch::Device device);

}  // namespace densessm
