#!/usr/bin/env bash
# Run ON THE GPU MACHINE from the repository root, with .debs/ carried (as tools/gpu.sh): builds the
# tests and densessm-bench, runs the retention kernel tests and the CPU/CUDA retention and model tests,
# the retention benchmark, then the kernel tests under compute-sanitizer (memcheck and racecheck, on
# the small shapes). Logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/densessm-out}
mkdir -p "$OUT"
BUILD_DIR=${BUILD_DIR:-build-gpu}
TARGETS="densessm_tests densessm-bench" bash tools/gpu.sh build || exit 1
tests="$BUILD_DIR/tests/densessm_tests"
echo "== tests"
timeout 240 "$tests" --gtest_filter='*RetentionKernel*:*StepKernel*:Devices/Retention.*:Devices/Model.*/CUDA' > "$OUT/tests.log" 2>&1
echo "tests exit $?"
grep -E '^\[  (FAILED|PASSED|SKIPPED) |Failure|error|relative' "$OUT/tests.log" | head -60
tail -4 "$OUT/tests.log"
echo "== bench"
timeout 180 "$BUILD_DIR/densessm-bench" retention --csv "$OUT/retention.csv" > "$OUT/bench.log" 2>&1
echo "bench exit $?"
cat "$OUT/bench.log"
echo "== sanitizer"
for tool in memcheck racecheck; do
  timeout 100 compute-sanitizer --tool "$tool" --error-exitcode 3 "$tests" \
    --gtest_filter="${GTEST_FILTER:-ChunkRetentionKernel.Small*:RetentionStepKernel.*}" > "$OUT/sanitizer-$tool.log" 2>&1
  echo "compute-sanitizer $tool exit $?"
  grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED' "$OUT/sanitizer-$tool.log" | head -8
done
