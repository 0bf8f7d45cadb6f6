#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: set up, build, then describe every shipped model config and
# build the tiny ones to check their parameter counts against the formulas.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
BUILD_DIR=${BUILD_DIR:-build}
"$BUILD_DIR/densessm-info" configs/*.json
"$BUILD_DIR/densessm-info" --build configs/tiny-*.json
