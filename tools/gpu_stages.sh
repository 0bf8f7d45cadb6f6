#!/usr/bin/env bash
# A session's GPU work on an nvidia-h200-x2 as chained device calls, each well inside the 10-minute limit;
# the machine stays warm between them (30 s), keeping the build and the runs started in the background.
# Run from the repository root with .debs and runs/experiments/data carried (the first call). Logs in $OUT.
#   bash tools/gpu_stages.sh start     build; the dense-vs-plain experiment (issue 8) in the background on
#                                      GPU 1; the CUDA test cases and the training benchmark on GPU 0
#   bash tools/gpu_stages.sh generate  the generation speed mode on GPU 0; the experiment's progress
#   bash tools/gpu_stages.sh finish    waits for the experiment and packs its logs into $OUT; then the
#                                      1- against 2-GPU data-parallel run (issue 6)
#   bash tools/gpu_stages.sh verify    (any kind, one call) build, the CUDA test cases, the DenseRetNet
#                                      training benchmark
#   bash tools/gpu_stages.sh profile   (any kind, one call) the longest kernels of a training step and of a
#                                      decode step (--profile of densessm-train and densessm-generate)
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-/tmp/densessm-out} BUILD_DIR=${BUILD_DIR:-build-gpu}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH="/tmp/densessm-debs/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$OUT"
B=$BUILD_DIR
start=$(date +%s)
stamp() { echo "[$(($(date +%s) - start)) s] $*"; }
progress() {
  for log in runs/experiments/*-seed*/console.log; do
    [[ -f $log ]] && echo "$(basename "$(dirname "$log")"): $(grep -E 'step +[0-9]+|validation' "$log" | tail -1 | cut -c1-150)"
  done
}

case ${1:-} in
  start)
    TARGETS="densessm_tests densessm-generate densessm-train densessm-tokenizer densessm-prepare-data densessm-bench" \
      bash tools/gpu.sh build || exit 1
    stamp "built"
    # The experiment's eight small runs side by side on GPU 1, in a session of their own so that they outlive
    # this call (the machine keeps them while it stays warm).
    GPUS=1 setsid nohup bash tools/experiment.sh train > runs/experiments.log 2>&1 < /dev/null &
    export CUDA_VISIBLE_DEVICES=0
    timeout 150 "$B/tests/densessm_tests" --gtest_filter='*/CUDA:*Kernel*:*Generat*:*Sampl*' --gtest_brief=1 \
      > "$OUT/gtest-cuda.log" 2>&1
    echo "CUDA test cases: exit $?"; grep -E '^\[  FAILED|^\[  PASSED|tests ran' "$OUT/gtest-cuda.log" | head -20
    stamp "tests"
    train_bench() {
      local label=$1; shift
      echo "== train $label: $*" >> "$OUT/train-bench.log"
      timeout 100 "$B/densessm-train" --benchmark --config configs/runs/benchmark-h200.json --warmup 2 --steps 5 "$@" \
        >> "$OUT/train-bench.log" 2>&1 || echo "train $label $*: exit $?"
    }
    train_bench kernels --model configs/dense-retnet-1.3b.json --batch 2,4,8
    train_bench kernels --model configs/dense-retnet-350m.json --model configs/dense-mamba-370m.json --batch 8,16
    train_bench kernels --model configs/dense-mamba-1.4b.json --batch 4,8
    stamp "training benchmark, kernels"
    DENSESSM_KERNELS=0 train_bench no-kernels --model configs/dense-retnet-1.3b.json --batch 2
    DENSESSM_KERNELS=0 train_bench no-kernels --model configs/dense-mamba-1.4b.json --batch 4
    stamp "training benchmark, no kernels"
    grep -vE '^\[[0-9:. -]+\] \[info\]' "$OUT/train-bench.log" | head -60
    progress
    ;;
  generate)
    export CUDA_VISIBLE_DEVICES=0
    generate() {
      echo "== generate $*" >> "$OUT/generate-bench.log"
      timeout 80 "$B/densessm-generate" --benchmark --device cuda --dtype fp16 --lengths 2048 "$@" \
        >> "$OUT/generate-bench.log" 2>&1 || echo "generate $*: exit $?"
    }
    for config in dense-retnet-1.3b retnet-1.3b dense-mamba-1.4b mamba-1.4b; do generate --config "configs/$config.json"; done
    stamp "generation, kernels"
    DENSESSM_KERNELS=0 generate --config configs/dense-retnet-1.3b.json
    DENSESSM_KERNELS=0 generate --config configs/dense-mamba-1.4b.json
    stamp "generation, no kernels"
    grep -vE '^\[[0-9:. -]+\] \[info\]' "$OUT/generate-bench.log" | head -80
    progress
    ;;
  finish)
    while pgrep -f 'experiment.sh train' > /dev/null && (($(date +%s) - start < ${WAIT_S:-300})); do sleep 5; done
    progress
    cat runs/experiments.log
    tar czf "$OUT/experiments.tar.gz" runs/experiments.log runs/experiments/*-seed*/{metrics.jsonl,console.log} 2>/dev/null
    stamp "experiment packed"
    if pgrep -f 'experiment.sh train' > /dev/null; then echo "experiment still running: no 2-GPU run now"; exit 1; fi
    STEPS=${STEPS:-40} timeout 300 bash tools/gpu_ddp.sh
    stamp "data parallel"
    ;;
  verify)
    # After a fix: build, every CUDA test case (output kept even when the time runs out), and the training
    # benchmark of the DenseRetNet sizes with the kernels on and off.
    TARGETS="densessm_tests densessm-train" bash tools/gpu.sh build || exit 1
    stamp "built"
    timeout "${TEST_S:-150}" "$B/tests/densessm_tests" --gtest_filter="${GTEST_FILTER:-*/CUDA:*Kernel*}" \
      > "$OUT/gtest-cuda.log" 2>&1
    echo "CUDA test cases: exit $? | $(grep -c '^\[       OK' "$OUT/gtest-cuda.log") passed"
    grep -E '^\[  FAILED|^\[  PASSED|tests ran|warn' "$OUT/gtest-cuda.log" | head -20
    stamp "tests"
    for args in "--model configs/dense-retnet-1.3b.json --batch 2,4,8" "--model configs/dense-retnet-350m.json --batch 8,16"; do
      echo "== train kernels: $args" >> "$OUT/train-bench.log"
      timeout 100 "$B/densessm-train" --benchmark --config configs/runs/benchmark-h200.json --warmup 2 --steps 5 $args \
        >> "$OUT/train-bench.log" 2>&1 || echo "train $args: exit $?"
    done
    stamp "training benchmark"
    grep -vE '^\[[0-9:. -]+\] \[info\]' "$OUT/train-bench.log" | head -40
    ;;
  profile)
    # Where the time goes (one call): the longest kernels of a training step (1.3 B DenseRetNet, 1.4 B
    # DenseMamba, bf16, block 2048) and of a decode step (fp16, batch 6; CUDA graph and eager). The tables are
    # the output; the Chrome traces stay on the machine except the decode ones, gzipped.
    TARGETS="densessm-train densessm-generate" bash tools/gpu.sh build || exit 1
    stamp "built"
    P=/tmp/densessm-profile
    for model in dense-retnet-1.3b dense-mamba-1.4b; do
      timeout 120 "$B/densessm-train" --benchmark --config configs/runs/benchmark-h200.json --model "configs/$model.json" \
        --batch 4 --warmup 2 --steps 3 --profile "$P" 2>&1 | grep -v '\[info\]' | tee -a "$OUT/profile-train.log"
      stamp "$model: training step profiled"
      for graph in "" --no-cuda-graph; do
        timeout 90 "$B/densessm-generate" --benchmark --device cuda --dtype fp16 --lengths 128 --config "configs/$model.json" \
          $graph --profile "$P/decode-$model${graph:+-eager}.trace.json" 2>&1 | tee -a "$OUT/profile-decode.log"
        gzip -c "$P/decode-$model${graph:+-eager}.trace.json" > "$OUT/decode-$model${graph:+-eager}.trace.json.gz" || true
      done
      stamp "$model: decode step profiled"
    done
    ls -la "$P" "$OUT"
    ;;
  *)
    sed -n '2,13p' "$0" >&2
    exit 2
    ;;
esac
