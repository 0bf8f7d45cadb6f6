#!/usr/bin/env bash
# Run ON A GPU MACHINE WITH 2 GPUS (the `run` tool's kind nvidia-h200-x2), from the repository root with
# .debs carried: builds densessm-train for sm_90a against the machine's PyTorch LibTorch and NCCL (tools/gpu.sh
# finds the matching nccl.h), then trains configs/dense-retnet-350m.json for STEPS steps on 1 GPU and, data
# parallel over NCCL with the same batch per GPU, on 2 GPUs, without and with the optimizer state sharded
# ("shard_optimizer"), and prints the tokens/s of each, the 2-GPU speed-up and the peak memory of rank 0.
#   STEPS (default 60), BATCH per GPU (default 8), BLOCK (default 2048), PRECISION (default bf16).
set -euo pipefail
cd "$(dirname "$0")/.."
# Never NVLink multicast on shared GPUs (see the device notes): every process inherits these.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
STEPS=${STEPS:-60} BATCH=${BATCH:-8} BLOCK=${BLOCK:-2048} PRECISION=${PRECISION:-bf16}
OUT=${OUT:-/tmp/densessm-out}
BUILD_DIR=${BUILD_DIR:-build-gpu}
mkdir -p "$OUT"
gpus=$(nvidia-smi -L | wc -l)
(( gpus >= 2 )) || { echo "gpu_ddp.sh: needs 2 GPUs, found $gpus" >&2; exit 1; }

TARGETS="densessm-train densessm-tokenizer densessm-prepare-data" bash tools/gpu.sh build
export LD_LIBRARY_PATH="/tmp/densessm-debs/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

W=/tmp/densessm-ddp
BUILD_DIR=$BUILD_DIR bash tools/license_data.sh "$W"

# Mean tokens/s of the logged windows after the first third of the run (start-up and warm-up excluded).
rate() {
  python3 -c 'import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if "tokens_per_second" in l]
rows = [r["tokens_per_second"] for r in rows if r["step"] > int(sys.argv[2]) // 3]
print(round(sum(rows) / len(rows)))' "$1" "$STEPS"
}
# Peak allocated GiB that rank 0 logged last.
peak() { python3 -c 'import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if "peak_memory_gib" in l]
print(round(rows[-1]["peak_memory_gib"], 2) if rows else "-")' "$1"; }
# Runs: 1 GPU, 2 GPUs, and 2 GPUs with the optimizer state sharded (ZeRO-1).
for run in 1 2 2-sharded; do
  n=${run%%-*}
  shard=false
  [[ $run == *sharded ]] && shard=true
  cat > "$W/run-$run.json" <<JSON
{"model": "$PWD/configs/dense-retnet-350m.json", "data": "$W/data", "output_dir": "$W/train-$run",
 "device": "cuda", "precision": "$PRECISION", "batch_size": $BATCH, "gradient_accumulation": 1, "block_size": $BLOCK,
 "max_steps": $STEPS, "log_every": 5, "eval_every": 0, "checkpoint_every": 0, "keep_checkpoints": 1,
 "shard_optimizer": $shard}
JSON
  launcher=()
  (( n > 1 )) && launcher=(--nproc-per-node "$n")
  echo "== $run: densessm-train ${launcher[*]} --config run-$run.json (batch $BATCH x block $BLOCK per GPU, $PRECISION)"
  "$BUILD_DIR/densessm-train" "${launcher[@]}" --config "$W/run-$run.json" 2>&1 | tee "$OUT/ddp-$run.log" \
    | grep -E 'parameters|shard_optimizer|step [0-9]+/|error' | tail -4
  cp "$W/train-$run/metrics.jsonl" "$OUT/metrics-$run.jsonl"
done
one=$(rate "$W/train-1/metrics.jsonl")
two=$(rate "$W/train-2/metrics.jsonl")
sharded=$(rate "$W/train-2-sharded/metrics.jsonl")
echo "tokens/s: 1 GPU $one, 2 GPUs $two, speed-up $(python3 -c "print(f'{$two / $one:.3f}')")x"
echo "2 GPUs with shard_optimizer: $sharded tokens/s; peak GiB on rank 0: 1 GPU $(peak "$W/train-1/metrics.jsonl"), 2 GPUs $(peak "$W/train-2/metrics.jsonl"), sharded $(peak "$W/train-2-sharded/metrics.jsonl")"
