#include "small_matmul.h"

#include <atomic>
#include <cmath>

#include <cooperative_groups.h>

#include "device_math.cuh"
#include "mma.cuh"

namespace densessm::kernels {
namespace {

namespace cg = cooperative_groups;

// A block computes 16 output columns (weight rows) for every token over a part of the depth: the grid is
// (column blocks, split), the split blocks of a column block form one cluster, and the split x kWarps warps
// each take a contiguous run of 32-deep steps. Each warp keeps a 16 x 8 float32 product; a block's warps
// are summed through shared memory, and the cluster's blocks through the first block's shared memory
// (distributed shared memory), which writes the output. Per step a lane needs 16 bytes of each of its two
// weight rows and of its token's row of x; it copies them with cp.async into its own slots of a
// kStages-deep ring in shared memory (no registers held while they are in flight; out-of-range copies fill
// zeros), so that kStages - 1 steps' loads are in flight while a step multiplies.
#ifndef DENSESSM_SMALL_MATMUL_WARPS
#define DENSESSM_SMALL_MATMUL_WARPS 4
#endif
#ifndef DENSESSM_SMALL_MATMUL_STAGES
#define DENSESSM_SMALL_MATMUL_STAGES 8
#endif
constexpr int kWarps = DENSESSM_SMALL_MATMUL_WARPS;
constexpr int kStages = DENSESSM_SMALL_MATMUL_STAGES;
constexpr int kColumns = 16;  // weight rows per block: the mma's m
constexpr int kDepth = 32;    // k per step: two mma of k 16
constexpr int kThreads = kWarps * 32;
constexpr int64_t kMinStepsPerWarp = 4;  // a split never leaves a warp fewer steps than this

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
/// 16 bytes from global to shared, or 16 zero bytes when !valid (the source is then not read).
__device__ __forceinline__ void copy_async(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void commit_copies() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wait_copies() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

template <typename T>
__global__ void __launch_bounds__(kThreads) small_matmul_kernel(SmallMatmulParams p, int64_t per_warp) {
  // slots[stage][0..2][thread]: this thread's 16 bytes of its low row, its high row and its token's x.
  extern __shared__ uint4 slots[];
  __shared__ float partial[kWarps][32][4];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t low = int64_t{blockIdx.x} * kColumns + g, high = low + 8;  // this lane's weight rows
  const bool low_in = low < p.n, high_in = high < p.n, token_in = g < p.rows;
  const T* w_low = static_cast<const T*>(p.w) + (low_in ? low : 0) * p.k;
  const T* w_high = static_cast<const T*>(p.w) + (high_in ? high : 0) * p.k;
  const T* x = static_cast<const T*>(p.x) + (token_in ? int64_t{g} : 0) * p.x_stride;  // the mma's column g
  const int64_t steps = (p.k + kDepth - 1) / kDepth;
  const int64_t begin = (int64_t{blockIdx.y} * kWarps + warp) * per_warp;
  const int64_t end = begin + per_warp < steps ? begin + per_warp : steps;  // begin >= end: nothing to do
  auto slot = [&](int64_t step, int part) -> uint4* { return &slots[((step % kStages) * 3 + part) * kThreads + threadIdx.x]; };
  auto issue = [&](int64_t step) {  // always commits a group, empty past the end, so that the counts line up
    if (step < end) {
      const int64_t k0 = step * kDepth + 8 * t;  // this lane's 8 consecutive k; k % 8 == 0: all in or all out
      const bool in = k0 < p.k;
      const int64_t k = in ? k0 : 0;
      copy_async(slot(step, 0), w_low + k, in && low_in);
      copy_async(slot(step, 1), w_high + k, in && high_in);
      copy_async(slot(step, 2), x + k, in && token_in);
    }
    commit_copies();
  };
  for (int s = 0; s < kStages - 1; ++s) issue(begin + s);
  float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int64_t step = begin; step < end; ++step) {
    wait_copies<kStages - 2>();  // this step's group (the oldest of kStages - 1) has landed
    const uint4 a_low = *slot(step, 0), a_high = *slot(step, 1), b = *slot(step, 2);
    issue(step + kStages - 1);  // into the slot of step - 1, read in the previous iteration
    // The mma's k (2t, 2t + 1, 2t + 8, 2t + 9) are this lane's k0 + 0..3 in the first product and
    // k0 + 4..7 in the second, in A and B alike: the sum over k does not depend on its order.
    const uint32_t a_first[4] = {a_low.x, a_high.x, a_low.y, a_high.y};
    const uint32_t b_first[2] = {b.x, b.y};
    mma_16x8x16<T>(c, a_first, b_first);
    const uint32_t a_second[4] = {a_low.z, a_high.z, a_low.w, a_high.w};
    const uint32_t b_second[2] = {b.z, b.w};
    mma_16x8x16<T>(c, a_second, b_second);
  }
  wait_copies<0>();
#pragma unroll
  for (int i = 0; i < 4; ++i) partial[warp][lane][i] = c[i];
  __syncthreads();
  if (warp == 0) {
    for (int v = 1; v < kWarps; ++v) {
#pragma unroll
      for (int i = 0; i < 4; ++i) c[i] += partial[v][lane][i];
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) partial[0][lane][i] = c[i];  // the block's sum, for the cluster's first block
  }
  bool writer = warp == 0;
  if (gridDim.y > 1) {  // launched as clusters of gridDim.y blocks along y
    const cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();  // every block's sum is in its shared memory
    writer = writer && cluster.block_rank() == 0;
    if (writer) {
      for (unsigned r = 1; r < cluster.num_blocks(); ++r) {
        const float* other = cluster.map_shared_rank(&partial[0][0][0], r);
#pragma unroll
        for (int i = 0; i < 4; ++i) c[i] += other[lane * 4 + i];
      }
    }
    cluster.sync();  // the other blocks' shared memory stays until it has been read
  }
  if (!writer) return;
  // c holds (row low, tokens 2t and 2t + 1) and (row high, the same tokens).
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t column = i < 2 ? low : high, token = 2 * t + i % 2;
    if (column >= p.n || token >= p.rows) continue;
    T* o = static_cast<T*>(p.out) + token * p.out_stride + column;
    *o = from_float<T>((p.accumulate ? to_float(*o) : 0.0f) + c[i]);
  }
}

constexpr size_t kSlotBytes = size_t{kStages} * 3 * kThreads * sizeof(uint4);

bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The current device's SM count, looked up once per device.
int multiprocessors() {
  static std::atomic<int> counts[64] = {};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64) return 132;
  int count = counts[device].load(std::memory_order_relaxed);
  if (count == 0) {
    if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || count <= 0) count = 132;
    counts[device].store(count, std::memory_order_relaxed);
  }
  return count;
}

// Splitting the depth pays only when the column blocks are too few to reach most SMs at all (a 160-wide
// output is 10 blocks): the smallest split that makes a block for every fourth SM, within kMinStepsPerWarp
// steps per warp. Measured in a CUDA graph on the H200 (tools/small_matmul_probe.sh, SWEEP=1): from 128
// column blocks up, every split costs more (the cluster's sum, x read once more per block) than the
// better spread gains.
int choose_split(int64_t column_blocks, int64_t steps, int sms) {
  int split = 1;
  while (split < kSmallMatmulMaxSplit && 4 * column_blocks * split < sms &&
         steps >= (split + 1) * kWarps * kMinStepsPerWarp) {
    ++split;
  }
  return split;
}

}  // namespace

bool small_matmul_supported(const SmallMatmulParams& p) {
  return (p.dtype == DType::kFloat16 || p.dtype == DType::kBFloat16) && p.rows >= 1 && p.rows <= kSmallMatmulRows &&
         p.n >= 1 && p.k >= 8 && p.k % 8 == 0 && p.x_stride % 8 == 0 && aligned(p.x) && aligned(p.w) && p.split >= 0 &&
         p.split <= kSmallMatmulMaxSplit;
}

bool small_matmul_preferred(const SmallMatmulParams& p) {
  return small_matmul_supported(p) && (p.n + kColumns - 1) / kColumns < 2 * int64_t{multiprocessors()};
}

cudaError_t small_matmul(const SmallMatmulParams& p, cudaStream_t stream) {
  if (!small_matmul_supported(p)) return cudaErrorInvalidValue;
  const int64_t column_blocks = (p.n + kColumns - 1) / kColumns, steps = (p.k + kDepth - 1) / kDepth;
  const int split = p.split > 0 ? p.split : choose_split(column_blocks, steps, multiprocessors());
  const int64_t per_warp = (steps + split * kWarps - 1) / (split * kWarps);
  auto launch = [&](auto kernel) {
    // Per call (a host-side setting, cheap and allowed during graph capture): it belongs to the current device.
    const cudaError_t attribute =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSlotBytes));
    if (attribute != cudaSuccess) return attribute;
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(static_cast<unsigned>(column_blocks), static_cast<unsigned>(split));
    config.blockDim = dim3(kThreads);
    config.dynamicSmemBytes = kSlotBytes;
    config.stream = stream;
    cudaLaunchAttribute cluster{};
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = 1;
    cluster.val.clusterDim.y = static_cast<unsigned>(split);
    cluster.val.clusterDim.z = 1;
    config.attrs = &cluster;
    config.numAttrs = split > 1 ? 1 : 0;
    const cudaError_t launched = cudaLaunchKernelEx(&config, kernel, p, per_warp);
    return launched != cudaSuccess ? launched : cudaGetLastError();
  };
  return p.dtype == DType::kFloat16 ? launch(small_matmul_kernel<__half>) : launch(small_matmul_kernel<__nv_bfloat16>);
}

}  // namespace densessm::kernels
