#!/usr/bin/env bash
# The short GPU call for a decode-kernel change when little device time is left: builds only the tests and
# densessm-generate, runs the decode kernels' and generation's CUDA test cases, then the speed mode of the
# four large models (DenseRetNet first). About 6.5 minutes on a fresh H200 machine (5 of them the build).
# Run it unpiped (not into `tail`): a call cut at its time limit returns only what was already printed.
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-/tmp/densessm-out} LD_LIBRARY_PATH="/tmp/densessm-debs/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
start=$(date +%s)
TARGETS="densessm_tests densessm-generate" bash tools/gpu.sh build 2>&1 | grep -vE 'Warray-bounds|^-- ' | tail -3
echo "[$(($(date +%s) - start)) s] built"
timeout 90 build-gpu/tests/densessm_tests --gtest_filter="${GTEST_FILTER:-FusedDecode*:SmallMatmul*:Devices/GenerationTest.*/CUDA}" \
  > "$OUT/gtest-final.log" 2>&1
echo "tests: exit $? | $(grep -c '^\[       OK' "$OUT/gtest-final.log") passed"
grep -E '^\[  (PASSED|FAILED)' "$OUT/gtest-final.log" | head
echo "[$(($(date +%s) - start)) s] tested"
for config in ${MODELS:-dense-retnet-1.3b dense-mamba-1.4b retnet-1.3b mamba-1.4b}; do
  echo "== $config: $(timeout 40 build-gpu/densessm-generate --benchmark --device cuda --dtype fp16 --lengths 2048 \
    --config "configs/$config.json" 2>&1 | grep -E '^2048')"
done
echo "[$(($(date +%s) - start)) s] generated"
