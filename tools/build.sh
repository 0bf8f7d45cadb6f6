#!/usr/bin/env bash
# Configures and builds DenseSSM-cpp against the LibTorch that tools/setup.sh installed (or the one named
# by TORCH_PREFIX: a folder holding share/cmake/Torch). Extra arguments go to CMake's configure step.
#   BUILD_DIR (default build), BUILD_TYPE (default Release), JOBS (default: all cores).
set -euo pipefail
cd "$(dirname "$0")/.."

DEPS=${DENSESSM_DEPS:-/opt/densessm-deps}
TORCH_PREFIX=${TORCH_PREFIX:-$DEPS/torch}
BUILD_DIR=${BUILD_DIR:-build}
BUILD_TYPE=${BUILD_TYPE:-Release}
JOBS=${JOBS:-$(nproc)}

if [[ ! -d "$TORCH_PREFIX/share/cmake/Torch" ]]; then
  echo "build.sh: no LibTorch at $TORCH_PREFIX (run tools/setup.sh first, or set TORCH_PREFIX)" >&2
  exit 1
fi

launcher=()
if command -v ccache >/dev/null; then
  # Precompiled headers need these to be cacheable.
  export CCACHE_SLOPPINESS=${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
cuda=()
if [[ -x /usr/local/cuda/bin/nvcc ]]; then cuda=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc); fi
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi

cmake -S . -B "$BUILD_DIR" "${generator[@]}" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX/share/cmake" "${launcher[@]}" "${cuda[@]}" "$@"
cmake --build "$BUILD_DIR" -j "$JOBS"
