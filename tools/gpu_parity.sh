#!/usr/bin/env bash
# Parity of our imported models with the Python implementations, on the GPU machine (which has torch,
# transformers and safetensors; nothing is downloaded). Run from the repository root with .debs carried:
#   bash tools/gpu_parity.sh
# Builds densessm-convert through tools/gpu.sh (or uses $BUILD_DIR/densessm-convert when it exists), then
# runs tools/parity_mamba.py (transformers' MambaForCausalLM) and tools/parity_retnet.py (the reference
# DenseRetNet code, only when REFERENCE_DIR names a folder with its modeling_dense_gau_retnet.py; it is
# not part of this project). Both compare on DEVICE (default cuda when available, else cpu) and once on
# the CPU. Logs go to $OUT when set. Exit status: non-zero when any comparison fails.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/densessm-out}
BUILD_DIR=${BUILD_DIR:-build-gpu}
mkdir -p "$OUT"
export BUILD_DIR
if [[ ! -x "$BUILD_DIR/densessm-convert" ]]; then
  TARGETS=densessm-convert bash tools/gpu.sh build
fi
# gpu.sh unpacks the Debian libraries here; densessm-convert needs them at run time.
export LD_LIBRARY_PATH="/tmp/densessm-debs/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
convert="$BUILD_DIR/densessm-convert"
python3 -c 'import torch, transformers, safetensors; print("torch", torch.__version__, "| transformers", transformers.__version__, "| safetensors", safetensors.__version__)'
devices=(cpu)
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then devices=("${DEVICE:-cuda}" cpu); fi

status=0
for device in "${devices[@]}"; do
  python3 tools/parity_mamba.py --convert "$convert" --device "$device" 2>&1 | tee "$OUT/parity-mamba-$device.log" || status=1
  python3 tools/parity_retnet.py --convert "$convert" --device "$device" ${REFERENCE_DIR:+--reference-dir "$REFERENCE_DIR"} \
    2>&1 | tee "$OUT/parity-retnet-$device.log" || status=1
done
echo "gpu_parity: $([[ $status == 0 ]] && echo PASS || echo FAIL)"
exit $status
