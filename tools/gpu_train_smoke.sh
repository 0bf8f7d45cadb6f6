#!/usr/bin/env bash
# Run ON THE GPU MACHINE after tools/gpu.sh build: trains a tokenizer on the license texts there, prepares
# shards and runs densessm-train on CUDA in bf16 and fp16 for a few steps (checks the CUDA training path).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-gpu}
export LD_LIBRARY_PATH="/tmp/densessm-debs/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
W=/tmp/densessm-smoke
BUILD_DIR=$BUILD_DIR bash tools/license_data.sh "$W"
for precision in bf16 fp16; do
  cat > "$W/run-$precision.json" <<JSON
{"model": "$PWD/configs/small-dense-retnet.json", "data": "$W/data", "output_dir": "$W/train-$precision",
 "device": "cuda", "precision": "$precision", "batch_size": 8, "gradient_accumulation": 1, "block_size": 128,
 "max_steps": 60, "log_every": 20, "eval_every": 30, "eval_batches": 4, "checkpoint_every": 30,
 "optimizer": {"lr": 3e-3}}
JSON
  "$BUILD_DIR/densessm-train" --config "$W/run-$precision.json" 2>&1 | grep -E 'parameters|step (20|60)/|validation|error'
done
