#include "mamba_step.h"

#include "device_math.cuh"

namespace densessm::kernels {
namespace {

constexpr int kThreads = 128;

// One thread per (batch, channel).
template <typename T>
__global__ void conv_step_kernel(ConvStepParams p) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= p.batch * p.channels) return;
  const int64_t c = idx % p.channels;
  const int64_t past = p.width - 1;
  T* state = static_cast<T*>(p.state) + idx * past;
  const T* weight = static_cast<const T*>(p.weight) + c * p.width;
  const float x = to_float(static_cast<const T*>(p.x)[idx]);
  float acc = p.bias ? to_float(static_cast<const T*>(p.bias)[c]) : 0.0f;
  for (int64_t j = 0; j < past; ++j) acc += to_float(weight[j]) * to_float(state[j]);
  acc += to_float(weight[past]) * x;
  for (int64_t j = 0; j + 1 < past; ++j) state[j] = state[j + 1];
  if (past > 0) state[past - 1] = from_float<T>(x);
  static_cast<T*>(p.out)[idx] = from_float<T>(silu(acc));
}

// One thread per (batch, channel), looping over the state size.
template <typename T>
__global__ void scan_step_kernel(ScanStepParams p) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= p.batch * p.channels) return;
  const int64_t b = idx / p.channels, c = idx % p.channels;
  const float u = to_float(static_cast<const T*>(p.u)[idx]);
  float delta = to_float(static_cast<const T*>(p.delta)[idx]);
  if (p.delta_bias) delta += to_float(static_cast<const T*>(p.delta_bias)[c]);
  if (p.delta_softplus) delta = softplus(delta);
  const int64_t bc_stride = p.bc_stride > 0 ? p.bc_stride : p.state_size;
  const T* Bm = static_cast<const T*>(p.Bm) + b * bc_stride;
  const T* Cm = static_cast<const T*>(p.Cm) + b * bc_stride;
  const float* A = p.A + c * p.state_size;
  float* state = p.state + idx * p.state_size;
  float y = 0.0f;
  for (int64_t n = 0; n < p.state_size; ++n) {
    const float h = __expf(delta * A[n]) * state[n] + delta * to_float(Bm[n]) * u;
    state[n] = h;
    y += to_float(Cm[n]) * h;
  }
  if (p.D) y += to_float(static_cast<const T*>(p.D)[c]) * u;
  if (p.z) y *= silu(to_float(static_cast<const T*>(p.z)[b * (p.z_stride > 0 ? p.z_stride : p.channels) + c]));
  static_cast<T*>(p.out)[idx] = from_float<T>(y);
}

template <template <typename> class Launch, typename Params>
cudaError_t dispatch(const Params& p, cudaStream_t stream) {
  const int64_t threads = p.batch * p.channels;
  if (threads == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>((threads + kThreads - 1) / kThreads));
  switch (p.dtype) {
    case DType::kFloat32: Launch<float>::run(grid, p, stream); break;
    case DType::kFloat16: Launch<__half>::run(grid, p, stream); break;
    case DType::kBFloat16: Launch<__nv_bfloat16>::run(grid, p, stream); break;
  }
  return cudaGetLastError();
}

template <typename T>
struct LaunchConv {
  static void run(dim3 grid, const ConvStepParams& p, cudaStream_t s) { conv_step_kernel<T><<<grid, kThreads, 0, s>>>(p); }
};
template <typename T>
struct LaunchScan {
  static void run(dim3 grid, const ScanStepParams& p, cudaStream_t s) { scan_step_kernel<T><<<grid, kThreads, 0, s>>>(p); }
};

}  // namespace

cudaError_t causal_conv1d_step(const ConvStepParams& p, cudaStream_t stream) { return dispatch<LaunchConv>(p, stream); }
cudaError_t selective_scan_step(const ScanStepParams& p, cudaStream_t stream) { return dispatch<LaunchScan>(p, stream); }

}  // namespace densessm::kernels
