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

# Data parallelism (src/train/distributed.cpp) uses LibTorch's c10d. Its Gloo and NCCL code is inside
# libtorch_cpu / libtorch_cuda, but two of the headers it needs are not in the wheel:
#  - Gloo's headers, which ProcessGroupGloo.hpp includes: Debian's libgloo-dev, headers only (tools/setup.sh
#    unpacks them into $DENSESSM_DEPS/gloo; Debian's libgloo itself is never linked). Why a header version
#    other than the one LibTorch was built with is safe here: the comment at the top of distributed.cpp.
#  - nccl.h, for ProcessGroupNCCL.hpp: the CUDA toolkit's, or (better, the version LibTorch loads) the one of
#    the PyTorch install's nvidia/nccl/include; set DENSESSM_NCCL_INCLUDE_DIR to choose.
# Without Gloo's headers CPU training still works with one process; without nccl.h, CUDA training does.
find_path(DENSESSM_GLOO_INCLUDE_DIR gloo/rendezvous/store.h HINTS "$ENV{DENSESSM_DEPS}/gloo/include" /opt/densessm-deps/gloo/include)
set(DENSESSM_WITH_NCCL OFF)
if(DENSESSM_WITH_CUDA)
  find_path(DENSESSM_NCCL_INCLUDE_DIR nccl.h HINTS /usr/local/cuda/include)
  if(DENSESSM_NCCL_INCLUDE_DIR)
    set(DENSESSM_WITH_NCCL ON)
  endif()
endif()
message(STATUS "DenseSSM: data parallelism over Gloo: ${DENSESSM_GLOO_INCLUDE_DIR}; over NCCL: ${DENSESSM_WITH_NCCL} (${DENSESSM_NCCL_INCLUDE_DIR})")
