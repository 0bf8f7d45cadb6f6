#!/usr/bin/env bash
# A session's GPU work as device calls, each well inside the 10-minute limit. Chained calls find the machine
# warm (30 s) with the build and any runs started in the background still there. Run from the repository
# root with .debs carried (and runs/experiments/data for `start`, .ref for `parity`). Logs go to $OUT.
#   bash tools/gpu_stages.sh verify    build; every CUDA test case; the DenseRetNet training benchmark
#   bash tools/gpu_stages.sh profile   build; the longest kernels of a training step and of a decode step
#                                      (densessm-train / densessm-generate --profile) for both families
#   bash tools/gpu_stages.sh parity    build; import parity against transformers and the reference code
#   bash tools/gpu_stages.sh kernels   build; every CUDA test case; the operator benchmarks (SCAN=0: not the
#                                      scan's); the generation speed mode of MODELS (default the four large
#                                      ones), and of AB_MODELS with DENSESSM_SMALL_MATMUL=0
#   bash tools/gpu_stages.sh sanitize  compute-sanitizer memcheck and racecheck on the kernels' tests
#   bash tools/gpu_stages.sh decode    build; every CUDA test case; the decode products; the generation speed
#                                      mode (kernels on) for MODELS, AB_MODELS again under AB_ENV (default
#                                      DENSESSM_SMALL_MATMUL=0), and a profile of the DenseRetNet step
#   bash tools/gpu_stages.sh check     (warm, after decode) sanitize, then the 1.3-1.4 B training benchmark
#   bash tools/gpu_stages.sh quick     build tests and generate only; decode and generation CUDA cases; the
#                                      speed mode of MODELS, printed as it comes
#   bash tools/gpu_stages.sh probes    no build: the standalone kernel probes (tools/*_probe.cu); BUILD_TARGETS
#                                      builds those targets meanwhile, for the next call
# On an nvidia-h200-x2, three chained calls:
#   bash tools/gpu_stages.sh start     build; the dense-vs-plain experiment (docs/RESULTS.md) in the
#                                      background on GPU 1; CUDA tests and the training benchmark (kernels on
#                                      and off) on GPU 0
#   bash tools/gpu_stages.sh generate  the generation speed mode (kernels on and off) on GPU 0
#   bash tools/gpu_stages.sh finish    waits for the experiment and packs its logs into $OUT; then the
#                                      1- against 2-GPU data-parallel run (tools/gpu_ddp.sh)
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-/tmp/densessm-out} BUILD_DIR=${BUILD_DIR:-build-gpu}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH="/tmp/densessm-debs/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$OUT"
B=$BUILD_DIR
start=$(date +%s)
stamp() { echo "[$(($(date +%s) - start)) s] $*"; }
quiet() { grep -vE '^\[[0-9:. -]+\] \[info\]'; }  # progress lines off

BG_PID=/tmp/densessm-bg-build.pid
build() {
  # A build that `probes` started in the background (BUILD_TARGETS) is waited for first. By its pid: a
  # pgrep -f for its command line also matches the device call's own shell, whose text names it.
  if [[ -f $BG_PID ]]; then
    while kill -0 "$(cat "$BG_PID")" 2>/dev/null; do sleep 2; done
    rm -f "$BG_PID"
    stamp "background build done: $(tail -1 "/tmp/densessm-bg-build.log")"
  fi
  TARGETS="$*" bash tools/gpu.sh build || exit 1
  stamp "built"
}
# Every CUDA test case (gtest's full output, so that a timeout still leaves what ran): the parameterised
# /CUDA cases, the kernels' suites and the GPU half of FusedDecode.
cuda_tests() {
  timeout "${TEST_S:-170}" "$B/tests/densessm_tests" --gtest_filter="${GTEST_FILTER:-*/CUDA:*Kernel*:FusedDecode.*}" \
    > "$OUT/gtest-cuda.log" 2>&1
  echo "CUDA test cases: exit $? | $(grep -c '^\[       OK' "$OUT/gtest-cuda.log") passed"
  grep -E '^\[  FAILED|^\[  PASSED|tests ran|\[warning\]' "$OUT/gtest-cuda.log" | head -20
  stamp "tests"
}
# densessm-train --benchmark on the H200 run config (bf16, block 2048); LABEL then densessm-train options.
train_bench() {
  local label=$1; shift
  echo "== train $label: $*" >> "$OUT/train-bench.log"
  timeout 100 "$B/densessm-train" --benchmark --config configs/runs/benchmark-h200.json --warmup 2 --steps 5 "$@" \
    >> "$OUT/train-bench.log" 2>&1 || echo "train $label $*: exit $?"
}
# densessm-generate --benchmark at the reference's shape (fp16, batch 6, 2-token prompt, 2048 new tokens).
generate_bench() {
  local label=$1; shift
  echo "== generate $label: $*" >> "$OUT/generate-bench.log"
  timeout 80 "$B/densessm-generate" --benchmark --device cuda --dtype fp16 --lengths 2048 "$@" \
    >> "$OUT/generate-bench.log" 2>&1 || echo "generate $label $*: exit $?"
}
progress() {  # the experiment's runs
  for log in runs/experiments/*-seed*/console.log; do
    [[ -f $log ]] && echo "$(basename "$(dirname "$log")"): $(grep -E 'step +[0-9]+|validation' "$log" | tail -1 | cut -c1-150)"
  done
}

case ${1:-} in
  verify)
    build densessm_tests densessm-train
    cuda_tests
    train_bench kernels --model configs/dense-retnet-1.3b.json --batch 2,4,8
    train_bench kernels --model configs/dense-retnet-350m.json --batch 8,16
    stamp "training benchmark"
    quiet < "$OUT/train-bench.log" | head -40
    ;;
  decode)
    # The decode step's kernels: their tests, the decode products against cuBLAS, the speed mode of MODELS
    # (default the four 1.3-1.4 B models; AB_MODELS again with DENSESSM_SMALL_MATMUL=0) and a profile of the
    # DenseRetNet step (the longest kernels of a CUDA-graph step). Builds densessm-train too, for `check`.
    build densessm_tests densessm-generate densessm-bench densessm-train
    cuda_tests
    timeout 60 "$B/densessm-bench" decode_matmul --device cuda 2>&1 | quiet | tee "$OUT/bench-decode-matmul.log" | tail -14
    for config in ${MODELS:-dense-retnet-1.3b retnet-1.3b dense-mamba-1.4b mamba-1.4b}; do
      generate_bench kernels --config "configs/$config.json"
    done
    for config in ${AB_MODELS:-}; do
      # A subshell, not env(1): generate_bench is a shell function.
      (export ${AB_ENV:-DENSESSM_SMALL_MATMUL=0}; generate_bench "${AB_ENV:-DENSESSM_SMALL_MATMUL=0}" --config "configs/$config.json")
    done
    stamp "generation, kernels"
    quiet < "$OUT/generate-bench.log" | grep -E '^(2048|==)'
    timeout 90 "$B/densessm-generate" --benchmark --device cuda --dtype fp16 --lengths 128 \
      --config configs/dense-retnet-1.3b.json --profile /tmp/decode.trace.json 2>&1 | quiet | tail -${PROFILE_LINES:-30}
    stamp "decode profiled"
    ;;
  probes)
    # BUILD_TARGETS (e.g. "densessm_tests densessm-generate densessm-bench densessm-train"): build them in the
    # background meanwhile, for the next chained call's stage (its build() waits for this one).
    if [[ -n ${BUILD_TARGETS:-} ]]; then
      setsid nohup env TARGETS="$BUILD_TARGETS" bash tools/gpu.sh build > "/tmp/densessm-bg-build.log" 2>&1 < /dev/null &
      echo $! > "$BG_PID"
    fi
    # The standalone probes (plain nvcc, no LibTorch build; about 2 minutes): correctness against float64
    # and in-graph or event timings of the decode prepare kernel (new against DENSESSM_DECODE_PREPARE=0's),
    # the retention forwards (two-pass, fused, fused with precomputed scores) and the small matmul.
    nvcc -O3 -std=c++17 -arch=sm_90a -Ikernels tools/decode_prepare_probe.cu kernels/decode_step.cu -o /tmp/prepare_probe &&
      /tmp/prepare_probe 2>&1 | tee "$OUT/probe-prepare.log"
    stamp "prepare probe"
    nvcc -O3 -std=c++17 -arch=sm_90a -Ikernels tools/retention_forward_probe.cu kernels/chunk_retention.cu -o /tmp/retention_probe &&
      /tmp/retention_probe 2>&1 | tee "$OUT/probe-retention.log"
    stamp "retention probe"
    VARIANTS=4:8 bash tools/small_matmul_probe.sh 2>&1 | tee "$OUT/probe-small-matmul.log"
    stamp "small matmul probe"
    ;;
  check)
    # On the machine a `decode` or `kernels` call left warm: compute-sanitizer on GTEST_FILTER's kernel tests,
    # then the DenseRetNet and DenseMamba training benchmark.
    bash "$0" sanitize
    train_bench kernels --model configs/dense-retnet-1.3b.json --batch 4,8
    train_bench kernels --model configs/dense-mamba-1.4b.json --batch 4,8
    stamp "training benchmark"
    quiet < "$OUT/train-bench.log" | grep -vE '^\s*$' | head -40
    ;;
  quick)
    # The shortest check of a decode-kernel change when little device time is left (about 6.5 minutes on a
    # fresh machine, 5 of them the build): the decode kernels' and generation's CUDA cases, then the speed
    # mode of MODELS, each figure printed as it comes (run unpiped: a call cut at its limit returns only
    # what was printed).
    build densessm_tests densessm-generate
    GTEST_FILTER=${GTEST_FILTER:-FusedDecode*:SmallMatmul*:Devices/GenerationTest.*/CUDA} TEST_S=${TEST_S:-90} cuda_tests
    for config in ${MODELS:-dense-retnet-1.3b dense-mamba-1.4b retnet-1.3b mamba-1.4b}; do
      generate_bench kernels --config "configs/$config.json"
      echo "$config: $(grep -E '^2048' "$OUT/generate-bench.log" | tail -1)"
    done
    stamp "generation"
    ;;
  kernels)
    # Everything a kernel change needs: every CUDA test case, the operator benchmarks and the generation
    # speed mode of the four large models.
    build densessm_tests densessm-bench densessm-generate
    cuda_tests
    timeout 120 "$B/densessm-bench" retention 2>&1 | quiet | tee "$OUT/bench-retention.log" | tail -25
    echo "== the two-pass forward (DENSESSM_RETENTION_FUSED=0):"
    DENSESSM_RETENTION_FUSED=0 timeout 90 "$B/densessm-bench" retention --shapes train 2>&1 | quiet | tail -5
    if [[ ${SCAN:-1} != 0 ]]; then
      timeout 90 "$B/densessm-bench" selective_scan --repeats 30 2>&1 | quiet | tee "$OUT/bench-scan.log" | tail -15
    fi
    timeout 60 "$B/densessm-bench" decode_matmul --device cuda 2>&1 | quiet | tee "$OUT/bench-decode-matmul.log" | tail -15
    stamp "operator benchmarks"
    for config in ${MODELS:-dense-retnet-1.3b retnet-1.3b dense-mamba-1.4b mamba-1.4b}; do
      generate_bench kernels --config "configs/$config.json"
    done
    # A/B: every decode product on cuBLAS instead of the small-matmul kernel.
    for config in ${AB_MODELS:-dense-retnet-1.3b}; do
      DENSESSM_SMALL_MATMUL=0 generate_bench cublas-products --config "configs/$config.json"
    done
    stamp "generation, kernels"
    quiet < "$OUT/generate-bench.log" | grep -E '^(2048|==)'
    ;;
  sanitize)
    # compute-sanitizer memcheck and racecheck on the kernels' own tests (run after a stage that built them,
    # on the still warm machine). Each tool gets at most SANITIZE_S seconds.
    [[ -x $B/tests/densessm_tests ]] || build densessm_tests
    filter=${GTEST_FILTER:-ChunkRetentionKernel.SmallShapesMatchTheReference:RetentionStepKernel.*:SelectiveScanKernel.ForwardMatchesTheReference:SelectiveScanKernel.BackwardStartsFromTheInitialState:CausalConv1dKernel.ForwardAndBackwardMatchTheReference:MambaStepKernel.*:FusedDecodeKernel.Float32StepsMatchTheFloat64Reference}
    for tool in memcheck racecheck; do
      timeout "${SANITIZE_S:-150}" compute-sanitizer --tool "$tool" --error-exitcode 3 "$B/tests/densessm_tests" \
        --gtest_filter="$filter" > "$OUT/sanitizer-$tool.log" 2>&1
      echo "compute-sanitizer $tool: exit $? | $(grep -c '^\[       OK' "$OUT/sanitizer-$tool.log") tests passed"
      grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|^\[  FAILED' "$OUT/sanitizer-$tool.log" | head -5
      stamp "$tool"
    done
    ;;
  profile)
    # The tables are the output; the Chrome traces stay on the machine except the decode ones, gzipped.
    build densessm-train densessm-generate
    P=/tmp/densessm-profile
    for model in dense-retnet-1.3b dense-mamba-1.4b; do
      timeout 120 "$B/densessm-train" --benchmark --config configs/runs/benchmark-h200.json --model "configs/$model.json" \
        --batch 4 --warmup 2 --steps 3 --profile "$P" 2>&1 | quiet | tee -a "$OUT/profile-train.log"
      stamp "$model: training step profiled"
      for graph in "" --no-cuda-graph; do
        trace="decode-$model${graph:+-eager}.trace.json"
        timeout 90 "$B/densessm-generate" --benchmark --device cuda --dtype fp16 --lengths 128 --config "configs/$model.json" \
          $graph --profile "$P/$trace" 2>&1 | tee -a "$OUT/profile-decode.log"
        gzip -c "$P/$trace" > "$OUT/$trace.gz" || true
      done
      stamp "$model: decode step profiled"
    done
    ;;
  parity)
    build densessm-convert densessm-generate
    if [[ -d .ref ]]; then export REFERENCE_DIR=.ref; fi
    BUILD_DIR=$B DEVICE=cuda timeout 300 bash tools/gpu_parity.sh 2>&1 | tee "$OUT/parity.log" | grep -E 'PASS|FAIL|rel|max' | tail -20
    ;;
  start)
    build densessm_tests densessm-generate densessm-train densessm-tokenizer densessm-prepare-data densessm-bench
    # The experiment's eight small runs side by side on GPU 1, in a session of their own so that they outlive
    # this call (the machine keeps them while it stays warm).
    GPUS=1 setsid nohup bash tools/experiment.sh train > runs/experiments.log 2>&1 < /dev/null &
    export CUDA_VISIBLE_DEVICES=0
    cuda_tests
    train_bench kernels --model configs/dense-retnet-1.3b.json --batch 2,4,8
    train_bench kernels --model configs/dense-retnet-350m.json --model configs/dense-mamba-370m.json --batch 8,16
    train_bench kernels --model configs/dense-mamba-1.4b.json --batch 4,8
    stamp "training benchmark, kernels"
    DENSESSM_KERNELS=0 train_bench no-kernels --model configs/dense-retnet-1.3b.json --model configs/dense-retnet-350m.json --batch 2,8
    stamp "training benchmark, no kernels"
    quiet < "$OUT/train-bench.log" | head -60
    progress
    ;;
  generate)
    export CUDA_VISIBLE_DEVICES=0
    for config in dense-retnet-1.3b retnet-1.3b dense-mamba-1.4b mamba-1.4b; do generate_bench kernels --config "configs/$config.json"; done
    stamp "generation, kernels"
    for config in dense-retnet-1.3b dense-mamba-1.4b; do DENSESSM_KERNELS=0 generate_bench no-kernels --config "configs/$config.json"; done
    stamp "generation, no kernels"
    quiet < "$OUT/generate-bench.log" | head -80
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
  *)
    sed -n '2,15p' "$0" >&2
    exit 2
    ;;
esac
