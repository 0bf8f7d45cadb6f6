#!/usr/bin/env bash
# Run ON THE GPU MACHINE (the `device` tool), from the repository root, with .debs/ carried
# (tools/fetch_debs.sh fills it on a CPU machine). Builds against the machine's own PyTorch LibTorch
# (2.11, CUDA 13) for Hopper and runs the whole test suite there, then the kernel tests under
# compute-sanitizer (memcheck and racecheck). Logs go to $OUT when set.
#   tools/gpu.sh [build|test|sanitize|all]   (default all)
# TARGETS (default all) limits what `build` builds; GTEST_FILTER limits the sanitizer runs
# (default: every CUDA kernel test).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
OUT=${OUT:-/tmp/densessm-out}
mkdir -p "$OUT"
# Never NVLink multicast on shared GPUs (see the device notes).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# CTest runs 4 test processes at once: give each a share of the cores instead of all of them.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / 4 > 0 ? $(nproc) / 4 : 1 ))}

DEPS=/tmp/densessm-debs
if [[ ! -d "$DEPS/usr" ]]; then
  ls .debs/*.deb >/dev/null 2>&1 || { echo "gpu.sh: no .debs/ (run tools/fetch_debs.sh here and carry .debs)" >&2; exit 1; }
  for f in .debs/*.deb; do dpkg -x "$f" "$DEPS"; done
  sed -i "s|^prefix=.*|prefix=$DEPS/usr|" "$DEPS"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc
fi
export PKG_CONFIG_PATH="$DEPS/usr/lib/x86_64-linux-gnu/pkgconfig"
export LD_LIBRARY_PATH="$DEPS/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
TORCH_CMAKE=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
# nccl.h of the NCCL version this PyTorch was built with (ProcessGroupNCCL's options embed its ncclConfig_t;
# densessm-train checks the match at start): the first candidate of that major.minor. Without it the build
# has no NCCL backend (multi-GPU training then says so).
want=$(python3 -c 'import torch; v = torch.cuda.nccl.version(); print(v[0], v[1])' 2>/dev/null || true)
candidates=$(python3 -c 'import nvidia; print(*nvidia.__path__, sep="\n")' 2>/dev/null | xargs -r -I{} find {} -name nccl.h -printf '%h\n' 2>/dev/null || true)
for dir in $candidates /usr/local/cuda/include /usr/include; do
  [[ -n $want && -f $dir/nccl.h ]] || continue
  have=$(awk '/^#define NCCL_MAJOR/{a=$3} /^#define NCCL_MINOR/{b=$3} END{print a, b}' "$dir/nccl.h")
  if [[ $have == "$want" ]]; then export CMAKE_INCLUDE_PATH="$dir"; echo "nccl.h: $dir (NCCL $want, as PyTorch)"; break; fi
done
BUILD_DIR=${BUILD_DIR:-build-gpu}

if [[ $mode == build || $mode == test || $mode == all ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDENSESSM_CUDA=ON -DTORCH_CUDA_ARCH_LIST=9.0a \
    -DCMAKE_PREFIX_PATH="$TORCH_CMAKE;$DEPS/usr" 2>&1 | tail -3
  cmake --build "$BUILD_DIR" -j "$(nproc)" --target ${TARGETS:-all} 2>&1 | tee "$OUT/build.log" | grep -E 'warning|error|FAILED' || true
  [[ $mode == build && -n ${TARGETS:-} ]] || test -x "$BUILD_DIR/tests/densessm_tests"
fi
if [[ $mode == test || $mode == all ]]; then
  ctest --test-dir "$BUILD_DIR" --output-on-failure -j 4 > "$OUT/ctest.log" 2>&1 || status=$?
  grep -E 'tests passed|tests failed|\*\*\*Failed|Skipped|Not Run' "$OUT/ctest.log" | head -40
  "$BUILD_DIR/tests/densessm_tests" --gtest_brief=1 > "$OUT/gtest.log" 2>&1 || true
  grep -c '^\[  SKIPPED' "$OUT/gtest.log" | sed 's/^/gtest cases skipped on the GPU machine: /' || true
  tail -3 "$OUT/gtest.log"
  [[ -z ${status:-} ]] || { echo "ctest failed ($status)"; grep -B2 -A12 'Failure' "$OUT/ctest.log" | head -80; }
fi
if [[ $mode == sanitize || $mode == all ]]; then
  [[ -x "$BUILD_DIR/tests/densessm_tests" ]] || { echo "gpu.sh: build first" >&2; exit 1; }
  for tool in memcheck racecheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 3 "$BUILD_DIR/tests/densessm_tests" \
      --gtest_filter="${GTEST_FILTER:-*Kernel*}" > "$OUT/sanitizer-$tool.log" 2>&1 && echo "compute-sanitizer $tool: clean" \
      || { echo "compute-sanitizer $tool: FAILED"; tail -30 "$OUT/sanitizer-$tool.log"; exit 3; }
    grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-$tool.log" || true
  done
fi
exit "${status:-0}"
