// The element types the kernels take, named without CUDA or LibTorch types so that every entry point's
// header can share them.
#pragma once

namespace densessm::kernels {

enum class DType { kFloat32, kFloat16, kBFloat16 };

}  // namespace densessm::kernels
