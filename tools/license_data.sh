#!/usr/bin/env bash
# Token shards for GPU smoke and scaling runs, from text every Debian machine has (the GPU machine reaches no
# registry): the common licenses, a 2048-piece tokenizer, 5% held out. Needs densessm-tokenizer and
# densessm-prepare-data in BUILD_DIR (default build-gpu).
#   bash tools/license_data.sh DIR   # -> DIR/tok.model, DIR/data (DIR is emptied first)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:?usage: tools/license_data.sh DIR}
BUILD_DIR=${BUILD_DIR:-build-gpu}
rm -rf "$W" && mkdir -p "$W"
cat /usr/share/common-licenses/* > "$W/corpus.txt"
"$BUILD_DIR/densessm-tokenizer" train --input "$W/corpus.txt" --model-prefix "$W/tok" --vocab-size 2048 2>&1 | tail -1
"$BUILD_DIR/densessm-prepare-data" "$W/corpus.txt" --tokenizer "$W/tok.model" --output "$W/data" --validation-percent 5
