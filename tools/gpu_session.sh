#!/usr/bin/env bash
# One device call for a session's GPU checks, in order of priority, each stage bounded in time so that
# a slow one cannot starve the rest (the call's limit is 10 minutes): build for sm_90a, every CUDA test
# case, the generation speed mode (kernels on and off), the training benchmark (kernels on and off), and
# the import parity. Run ON THE GPU MACHINE from the repository root with .debs carried (and .ref, a copy of
# the reference's modeling_dense_gau_retnet.py, for the RetNet parity). Logs under $OUT; a summary last.
#   bash tools/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-/tmp/densessm-out}
mkdir -p "$OUT"
B=${BUILD_DIR:-build-gpu}
start=$(date +%s)
stamp() { echo "[$(($(date +%s) - start)) s] $*"; }

TARGETS="densessm_tests densessm-generate densessm-train densessm-convert" bash tools/gpu.sh build || exit 1
stamp "built"
export LD_LIBRARY_PATH="/tmp/densessm-debs/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# 1. Every CUDA case of the suite (kernels against float64 references, models with kernels on and off,
#    CUDA-graph decoding against eager steps).
timeout 150 "$B/tests/densessm_tests" --gtest_filter='*/CUDA:*Kernel*' --gtest_brief=1 > "$OUT/gtest-cuda.log" 2>&1
echo "CUDA test cases: exit $? | $(grep -cE '^\[       OK|^\[  PASSED' "$OUT/gtest-cuda.log") ok lines"
grep -E '^\[  FAILED|^\[  PASSED|tests ran' "$OUT/gtest-cuda.log" | head -20
stamp "tests"

# 2. Generation speed (issue 4): the reference's test (batch 6, 2-token prompt, 2048 new tokens, greedy, fp16).
generate() {
  local label=$1; shift
  echo "== generate $label: $*" >> "$OUT/generate-bench.log"
  timeout 60 "$B/densessm-generate" --benchmark --device cuda --dtype fp16 --lengths 2048 "$@" >> "$OUT/generate-bench.log" 2>&1 \
    || echo "generate $label: exit $?"
}
for config in dense-retnet-1.3b retnet-1.3b dense-mamba-1.4b mamba-1.4b; do generate "kernels" --config "configs/$config.json"; done
DENSESSM_KERNELS=0 generate "no-kernels" --config configs/dense-retnet-1.3b.json
DENSESSM_KERNELS=0 generate "no-kernels" --config configs/dense-mamba-1.4b.json
stamp "generation"

# 3. Training throughput (issues 3 and 5): bf16, block 2048.
train_bench() {
  local label=$1; shift
  echo "== train $label: $*" >> "$OUT/train-bench.log"
  timeout 90 "$B/densessm-train" --benchmark --config configs/runs/benchmark-h200.json --warmup 2 --steps 5 "$@" \
    >> "$OUT/train-bench.log" 2>&1 || echo "train $label: exit $?"
}
train_bench "kernels" --model configs/dense-retnet-1.3b.json --batch 2,4
train_bench "kernels" --model configs/dense-retnet-350m.json --model configs/dense-mamba-1.4b.json --batch 4
DENSESSM_KERNELS=0 train_bench "no-kernels" --model configs/dense-retnet-1.3b.json --batch 2
stamp "training"

# 4. Import parity (issue 7) on the GPU.
if [[ -d .ref ]]; then export REFERENCE_DIR=.ref; fi
BUILD_DIR=$B DEVICE=cuda timeout 90 bash tools/gpu_parity.sh > "$OUT/parity.log" 2>&1
echo "parity: exit $?"
stamp "parity"

echo "================ summary"
grep -hE '^\[  FAILED|^\[  PASSED' "$OUT/gtest-cuda.log" | head -10
grep -vE '^\[[0-9:. ]+\] \[info\]' "$OUT/generate-bench.log" | grep -E '==|reference|2048|floor|ms' | head -40
grep -E '==|model|M |out of memory|MFU|error' "$OUT/train-bench.log" | head -30
grep -E 'PASS|FAIL|rel|max' "$OUT/parity.log" | tail -15
