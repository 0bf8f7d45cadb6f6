# Finds every dependency of the card. LibTorch: point CMAKE_PREFIX_PATH at its share/cmake (tools/build.sh
# does, for the one tools/setup.sh installs).

# Torch's CMake ignores CMAKE_CUDA_ARCHITECTURES and, without a GPU to ask, needs the target named: Hopper.
if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(TORCH_CUDA_ARCH_LIST "9.0a")
endif()
if(DENSESSM_CUDA STREQUAL "OFF")
  # Stops Torch's CMake from configuring CUDA at all: the CUDA-built LibTorch still runs on the CPU.
  set(CAFFE2_USE_CUDA OFF)
endif()
find_package(Torch REQUIRED)

set(DENSESSM_WITH_CUDA OFF)
if(TARGET torch_cuda OR TARGET c10_cuda OR CAFFE2_USE_CUDA)
  set(_torch_has_cuda ON)
else()
  set(_torch_has_cuda OFF)
endif()
if(DENSESSM_CUDA STREQUAL "ON" AND NOT _torch_has_cuda)
  message(FATAL_ERROR "DENSESSM_CUDA=ON but the LibTorch found (${Torch_DIR}) was built without CUDA")
endif()
if(_torch_has_cuda AND NOT DENSESSM_CUDA STREQUAL "OFF")
  set(DENSESSM_WITH_CUDA ON)
endif()
message(STATUS "DenseSSM: LibTorch ${Torch_VERSION} at ${Torch_DIR}; CUDA kernels: ${DENSESSM_WITH_CUDA}")

find_package(nlohmann_json 3.10 REQUIRED)
find_package(CLI11 REQUIRED)
find_package(spdlog REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(SentencePiece REQUIRED IMPORTED_TARGET sentencepiece)
pkg_check_modules(Zstd REQUIRED IMPORTED_TARGET libzstd)
# Header-only: Boost.CRC's CRC-32C for TensorBoard's event files (src/train/tensorboard.cpp says why).
find_package(Boost 1.74 REQUIRED CONFIG)
if(DENSESSM_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
