#!/usr/bin/env bash
# On the GPU machine: builds tools/small_matmul_probe.cu against kernels/small_matmul.cu for several block
# shapes (VARIANTS: "warps:stages" pairs) and runs each: correctness, then in-graph timings against cuBLAS
# (every split with SWEEP=1). A minute or so; no LibTorch build needed.
set -uo pipefail
cd "$(dirname "$0")/.."
for variant in ${VARIANTS:-4:6}; do
  warps=${variant%%:*} stages=${variant##*:}
  echo "== $warps warps, $stages stages"
  flags=(-O3 -std=c++17 -arch=sm_90a -Ikernels -DDENSESSM_SMALL_MATMUL_WARPS="$warps" -DDENSESSM_SMALL_MATMUL_STAGES="$stages")
  bin=/tmp/small_matmul_probe_${warps}_$stages
  nvcc "${flags[@]}" -DPROBE_CUBLAS tools/small_matmul_probe.cu kernels/small_matmul.cu -lcublas -o "$bin" 2>/dev/null ||
    nvcc "${flags[@]}" tools/small_matmul_probe.cu kernels/small_matmul.cu -o "$bin" || continue
  "$bin" ${SWEEP:+--sweep}
done
