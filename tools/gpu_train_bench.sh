#!/usr/bin/env bash
# Run ON THE GPU MACHINE after `tools/gpu.sh build`: the training benchmark of docs/PERFORMANCE.md
# (tokens/s, peak memory and MFU at block 2048 in bf16, the largest batch that fits) for the DenseRetNet
# and DenseMamba sizes; extra arguments go to densessm-train (e.g. --batch 2 --steps 5). Output also in
# $OUT/train-bench.log when OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-gpu}
export LD_LIBRARY_PATH="/tmp/densessm-debs/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
MODELS=${MODELS:-"dense-retnet-350m dense-retnet-1.3b dense-mamba-370m dense-mamba-1.4b"}
args=()
for m in $MODELS; do args+=(--model "configs/$m.json"); done
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
"$BUILD_DIR/densessm-train" --benchmark --config configs/runs/benchmark-h200.json "${args[@]}" "$@" 2>&1 \
  | tee "${OUT:-/tmp}/train-bench.log"
