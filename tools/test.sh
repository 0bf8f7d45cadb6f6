#!/usr/bin/env bash
# Sets up a Debian 12 machine (tools/setup.sh), builds, and runs the whole test suite with CTest.
# GPU tests skip where no GPU is present. Exits non-zero when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "${JOBS:-$(nproc)}"
