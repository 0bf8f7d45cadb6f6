#!/usr/bin/env bash
# Dense versus plain at small scale (docs/RESULTS.md): the same tokens, hyperparameters, seeds and token
# budget for RetNet / DenseRetNet and Mamba / DenseMamba of matched size (configs/experiments/).
#
#   bash tools/experiment.sh data            # CPU machine: corpus, tokenizer, shards -> runs/experiments/data
#   bash tools/experiment.sh train [RUN...]  # GPU machine, after a build: the runs (default: all eight;
#                                           # GPUS="0 1" picks the GPUs)
#   bash tools/experiment.sh plot            # the curves of every finished run -> docs/results/*.png
#
# The corpus is English text from Debian's package registry: the King James Bible (bible-kjv, one document
# per chapter) and Webster's 1913 dictionary as revised by GCIDE (dict-gcide, one document per entry),
# about 44 MB. `data` runs where the packages install (the GPU machine has no registry: carry
# runs/experiments/data there, about 25 MB of token shards). BUILD_DIR defaults to build (build-gpu for train).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
shift || true
DIR=runs/experiments
RUNS=(retnet-24m dense-retnet-24m mamba-24m dense-mamba-24m)

case $mode in
  data)
    BUILD_DIR=${BUILD_DIR:-build}
    if ! dpkg-query -W dict-gcide >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends dict-gcide=0.48.5+nmu2
    fi
    mkdir -p "$DIR/corpus"
    if [[ ! -s $DIR/corpus/kjv.txt ]]; then
      bible -f "Gen1:1-Rev22:21" | awk '{ split($1, ref, ":"); if (ref[1] != chapter && NR > 1) print "";
                                          chapter = ref[1]; $1 = ""; sub(/^ /, ""); print }' > "$DIR/corpus/kjv.txt.tmp"
      mv "$DIR/corpus/kjv.txt.tmp" "$DIR/corpus/kjv.txt"
    fi
    if [[ ! -s $DIR/corpus/gcide.txt ]]; then
      # Entries ("word \\word\\ n." then indented senses) are separated by blank lines already. Keep from the
      # first entry on (after the licence preamble), without the source tags ("[WordNet 1.5 +PJC]") and indents.
      zcat /usr/share/dictd/gcide.dict.dz |
        awk 'found || /^0 \\0\\ / { found = 1; if ($0 !~ /^ *\[[^]]*\] *$/) { sub(/^ +/, ""); print } }' \
        > "$DIR/corpus/gcide.txt.tmp"
      mv "$DIR/corpus/gcide.txt.tmp" "$DIR/corpus/gcide.txt"
    fi
    if [[ ! -s $DIR/tokenizer.model ]]; then
      "$BUILD_DIR/densessm-tokenizer" train --input "$DIR/corpus/kjv.txt" --input "$DIR/corpus/gcide.txt" \
        --model-prefix "$DIR/tokenizer" --vocab-size 8192
    fi
    rm -rf "$DIR/data"
    "$BUILD_DIR/densessm-prepare-data" "$DIR/corpus/kjv.txt" "$DIR/corpus/gcide.txt" --tokenizer "$DIR/tokenizer.model" \
      --output "$DIR/data" --validation-percent 1
    ;;
  train)
    BUILD_DIR=${BUILD_DIR:-build-gpu}
    export NCCL_NVLS_ENABLE=0
    selected=("$@")
    if ((${#selected[@]} == 0)); then
      for model in "${RUNS[@]}"; do selected+=("$model-seed1" "$model-seed2"); done
    fi
    # Small models leave most of an H200 idle: run them side by side, each its own process, spread over
    # the machine's GPUs in turn (each process sees one).
    # GPUS (default: all of them) lists the GPUs to use, e.g. GPUS="1" keeps GPU 0 free for other work.
    read -ra gpu_list <<< "${GPUS:-$(nvidia-smi --query-gpu=index --format=csv,noheader | tr '\n' ' ')}"
    gpus=${#gpu_list[@]}
    ((gpus > 0)) || { echo "experiment.sh: no GPU" >&2; exit 1; }
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
    pids=()
    for i in "${!selected[@]}"; do
      run=${selected[$i]}
      rm -rf "$DIR/$run"
      mkdir -p "$DIR/$run"
      CUDA_VISIBLE_DEVICES=${gpu_list[$((i % gpus))]} "$BUILD_DIR/densessm-train" --config "configs/experiments/runs/$run.json" \
        > "$DIR/$run/console.log" 2>&1 &
      pids+=($!)
    done
    status=0
    for i in "${!pids[@]}"; do
      if wait "${pids[$i]}"; then echo "${selected[$i]}: done"; else echo "${selected[$i]}: FAILED"; tail -5 "$DIR/${selected[$i]}/console.log"; status=1; fi
    done
    for run in "${selected[@]}"; do
      grep '"validation_loss"' "$DIR/$run/metrics.jsonl" | tail -1 | sed "s/^/$run: /" || true
    done
    exit $status
    ;;
  plot)
    mkdir -p docs/results
    for family in retnet mamba; do
      runs=()
      for run in "$DIR"/*"$family"-24m-seed*/; do [[ -s $run/metrics.jsonl ]] && runs+=("$run/metrics.jsonl"); done
      ((${#runs[@]})) || { echo "no finished $family runs in $DIR" >&2; continue; }
      python3 tools/plot_run.py "${runs[@]}" --output "docs/results/$family-validation.png" --title "$family: dense vs plain"
    done
    ;;
  *)
    sed -n '2,13p' "$0" >&2
    exit 2
    ;;
esac
