// The switch between the CUDA kernels and the LibTorch reference forms.
//
// For CUDA tensors the operators use the custom kernels where one exists for the case at hand; the
// reference forms run otherwise (CPU, float64, or a backward pass a kernel does not provide). The
// environment variable DENSESSM_KERNELS=0 turns the kernels off at start-up; set_kernels_enabled() at
// run time.
#pragma once

#include <cstdint>

namespace densessm {

/// True when this build has the CUDA kernels (the LibTorch it was built against had CUDA).
bool kernels_built();
/// True when the kernels are built and not switched off.
bool kernels_enabled();
void set_kernels_enabled(bool enabled);
/// How many times an operator ran its LibTorch reference form on CUDA tensors while the kernels were
/// enabled: a case the kernels do not cover (mixed dtypes, sizes beyond their limits, a gradient a kernel
/// does not provide). The first such fallback of each operator is logged as a warning with its reason, so
/// that a slow path never goes unnoticed.
int64_t kernel_fallbacks();

}  // namespace densessm
