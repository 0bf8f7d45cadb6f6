// The tensor-core product the kernels share: one warp-wide mma.sync m16n8k16 with float32 accumulation
// (sm_80 and later), for float16 or bfloat16 operands.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace densessm::kernels {

/// c (16 x 8, float32) += a (16 x 16, row-major) b (16 x 8, column-major), in the fragment layouts of the
/// PTX manual: with g = lane / 4 and t = lane % 4, a holds (g, 2t..2t+1), (g+8, 2t..2t+1), (g, 2t+8..2t+9),
/// (g+8, 2t+8..2t+9); b holds (2t..2t+1, g), (2t+8..2t+9, g); c holds (g, 2t..2t+1), (g+8, 2t..2t+1).
template <typename T>
__device__ __forceinline__ void mma_16x8x16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

}  // namespace densessm::kernels
