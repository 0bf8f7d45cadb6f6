// LibTorch wrappers of kernels/chunk_retention.h and kernels/retention_step.h, used by the retention
// forms (src/ops/retention.cpp) for CUDA tensors.
#pragma once

#include <torch/types.h>

#include "densessm/retention.h"

namespace densessm::cuda {

/// Whether the kernels can take this call: kernels enabled, q, k, v on a CUDA device and all of one
/// dtype among float32, float16 and bfloat16 (float64 stays with the reference forms).
bool can_run_retention(const RetentionArgs& args);

/// The chunkwise form on the kernels (chunk size kRetentionChunk whatever args.chunk_size says: the
/// result does not depend on it), differentiable in q, k, v and the initial state. Same contract as
/// densessm::retention_chunkwise.
torch::Tensor retention_chunkwise(const RetentionArgs& args, torch::Tensor* state);

/// The recurrent form one token at a time on the step kernel, without autograd: the state is updated
/// in place (made float32 and contiguous first if it is not). Same contract as
/// densessm::retention_recurrent otherwise.
torch::Tensor retention_recurrent(const RetentionArgs& args, torch::Tensor* state);

}  // namespace densessm::cuda
