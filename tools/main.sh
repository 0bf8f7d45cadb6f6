#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: set up, build, get a small real English corpus (the King James
# Bible from Debian's bible-kjv packages, one document per chapter), train a 2048-piece tokenizer, prepare
# token shards and pretrain a small DenseRetNet on the CPU for a few minutes (configs/runs/main-kjv.json).
# Everything lands in runs/kjv/ (metrics.jsonl, checkpoints). A second run starts training afresh. At the end
# the trained model continues a prompt (densessm-generate on the newest checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
BUILD_DIR=${BUILD_DIR:-build}
RUN=runs/kjv
mkdir -p "$RUN"

"$BUILD_DIR/densessm-info" configs/small-dense-retnet.json
if [[ ! -s $RUN/kjv.txt ]]; then
  # "Ge1:1 In the beginning ..." -> verse text, a blank line between chapters.
  bible -f "Gen1:1-Rev22:21" | awk '{ split($1, ref, ":"); if (ref[1] != chapter && NR > 1) print "";
                                      chapter = ref[1]; $1 = ""; sub(/^ /, ""); print }' > "$RUN/kjv.txt.tmp"
  mv "$RUN/kjv.txt.tmp" "$RUN/kjv.txt"
fi
if [[ ! -s $RUN/tokenizer.model ]]; then
  "$BUILD_DIR/densessm-tokenizer" train --input "$RUN/kjv.txt" --model-prefix "$RUN/tokenizer" --vocab-size 2048
fi
"$BUILD_DIR/densessm-prepare-data" "$RUN/kjv.txt" --tokenizer "$RUN/tokenizer.model" --output "$RUN/data" \
  --validation-percent 2
rm -rf "$RUN/train"
"$BUILD_DIR/densessm-train" --config configs/runs/main-kjv.json
echo "main job done: metrics in $RUN/train/metrics.jsonl, checkpoints in $RUN/train/checkpoints"
echo "a sample from the trained model:"
"$BUILD_DIR/densessm-generate" --checkpoint "$RUN/train" --device cpu --prompt "In the beginning" \
  --max-new-tokens 60 --temperature 0.8 --seed 1995
