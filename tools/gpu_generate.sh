#!/usr/bin/env bash
# Run ON THE GPU MACHINE after `TARGETS="densessm_tests densessm-generate" bash tools/gpu.sh build`: the
# generation tests (their CUDA cases: graph replay against eager steps, sampling on the device), then the
# decoding speed mode for the four model kinds at the reference's shape (fp16, batch 6, 2-token prompt,
# 2048 new tokens, one warm-up; sweep 128/512/2048) with CUDA graphs, and eager steps for two of them. Logs
# go to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-gpu}
OUT=${OUT:-/tmp/densessm-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="/tmp/densessm-debs/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

"$BUILD_DIR/tests/densessm_tests" --gtest_filter='*Generat*:*Sampl*' > "$OUT/generate-tests.log" 2>&1 || status=$?
grep -E '^\[  (PASSED|FAILED|SKIPPED)|tests ran' "$OUT/generate-tests.log" | head -30
bench() {
  echo "== $*"
  "$BUILD_DIR/densessm-generate" --benchmark --device cuda --dtype fp16 "$@" 2>&1 | tee -a "$OUT/generate-bench.log" | tail -5
}
for config in dense-retnet-1.3b retnet-1.3b dense-mamba-1.4b mamba-1.4b; do
  bench --config "configs/$config.json"
done
# Eager steps for comparison: the reference's length only (they are slow).
for config in dense-retnet-1.3b dense-mamba-1.4b; do
  bench --config "configs/$config.json" --lengths 2048 --no-cuda-graph
done
exit "${status:-0}"
