// One-token multi-scale retention for decoding (no autograd), one launch for every (batch, head):
//   KV <- g KV + k^T v,   o = q . KV / sqrt(w_n),   w_n = (1 - g^(n+1)) / (1 - g),  n = position[b],
// the recurrent form of include/densessm/retention.h for a single token. Nothing is allocated and nothing
// waits on the host, so the call can be captured in a CUDA graph.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "dtype.h"

namespace densessm::kernels {

struct RetentionStepParams {
  float* state;              // (B, H, dk, dv), updated in place
  const void* q;             // (B, H, dk)
  const void* k;             // (B, H, dk)
  const void* v;             // (B, H, dv)
  void* o;                   // (B, H, dv)
  const double* decays;      // (H) on the device
  const int64_t* position;   // (B) absolute position of the token, or null for 0
  int64_t batch, heads, dk, dv;
  DType dtype;               // of q, k, v and o
};
cudaError_t retention_step(const RetentionStepParams& p, cudaStream_t stream);

}  // namespace densessm::kernels
