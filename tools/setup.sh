#!/usr/bin/env bash
# Installs every dependency of DenseSSM-cpp on a Debian 12 machine (run as root), pinned:
#   - Debian packages: the card's libraries, GoogleTest, the build tools, ccache and a small English corpus;
#   - Python packages (pip): TensorBoard (tests read our event files with it) and matplotlib (tools/plot_run.py);
#   - LibTorch 2.11.0, taken from PyPI's torch wheel (a complete LibTorch: include/, lib/, share/cmake),
#     plus the three CUDA libraries that wheel links against and the CUDA toolkit does not ship.
# The LibTorch goes to $DENSESSM_DEPS (default /opt/densessm-deps); tools/build.sh finds it there.
# Idempotent: a second run checks and skips what is already in place.
set -euo pipefail

DEPS=${DENSESSM_DEPS:-/opt/densessm-deps}
TORCH_VERSION=2.11.0
# The wheel's own pins for the CUDA libraries it needs beyond the toolkit in /usr/local/cuda.
EXTRA_WHEELS=(nvidia-cusparselt-cu13==0.8.0 nvidia-nvshmem-cu13==3.4.5 nvidia-cufile==1.15.1.6)

APT_PACKAGES=(
  g++ cmake ninja-build pkg-config unzip python3-pip
  libgtest-dev=1.12.1-0.2 libgmock-dev=1.12.1-0.2
  libsentencepiece-dev=0.1.97-3+b1 nlohmann-json3-dev=3.11.2-2 libcli11-dev=2.1.2+ds-1
  libspdlog-dev=1:1.10.0+ds-0.4 libfmt-dev=9.1.0+ds1-2 libzstd-dev=1.5.4+dfsg2-5
  ccache=4.8+really4.7.5-1 bible-kjv-text=4.38 bible-kjv=4.38
  libboost1.74-dev=1.74.0+ds1-21
)
PIP_PACKAGES=(tensorboard==2.20.0 matplotlib==3.10.7)

say() { printf '[setup] %s\n' "$*"; }

missing=()
for spec in "${APT_PACKAGES[@]}"; do
  name=${spec%%=*}
  want=${spec#*=}
  have=$(dpkg-query -W -f='${Version}' "$name" 2>/dev/null || true)
  if [[ -z "$have" || ( "$spec" == *=* && "$have" != "$want" ) ]]; then missing+=("$spec"); fi
done
if ((${#missing[@]})); then
  say "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  say "apt: all ${#APT_PACKAGES[@]} packages present"
fi

missing=()
for spec in "${PIP_PACKAGES[@]}"; do
  have=$(python3 -m pip show "${spec%%==*}" 2>/dev/null | sed -n 's/^Version: //p')
  [[ "$have" == "${spec#*==}" ]] || missing+=("$spec")
done
if ((${#missing[@]})); then
  say "pip: installing ${missing[*]}"
  # Debian's own python3 refuses pip installs without this (PEP 668); a pyenv or venv python ignores it.
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --root-user-action=ignore "${missing[@]}"
else
  say "pip: all ${#PIP_PACKAGES[@]} packages present"
fi

if ! command -v nvcc >/dev/null && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  say "note: no CUDA toolkit found (nvcc); the build will be CPU-only"
fi

stamp="$DEPS/.torch-$TORCH_VERSION"
if [[ -f "$stamp" ]]; then
  say "LibTorch $TORCH_VERSION present in $DEPS"
else
  say "LibTorch $TORCH_VERSION: downloading the torch wheel and its CUDA extras from PyPI (~1 GB)"
  dl=$(mktemp -d)
  trap 'rm -rf "$dl"' EXIT
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$dl" \
    "torch==$TORCH_VERSION" "${EXTRA_WHEELS[@]}"
  rm -rf "$DEPS.partial"
  mkdir -p "$DEPS.partial"
  for whl in "$dl"/*.whl; do
    # Only the C++ parts: LibTorch's headers, libraries and CMake files, and the CUDA libraries.
    unzip -q -o "$whl" 'torch/include/*' 'torch/lib/*' 'torch/share/*' 'nvidia/*' -d "$DEPS.partial" 2>/dev/null \
      || [[ $? -eq 11 ]]  # 11: some patterns match nothing in this wheel
  done
  rm -rf "$DEPS"
  mv "$DEPS.partial" "$DEPS"
  touch "$stamp"
  say "LibTorch installed in $DEPS/torch"
fi
# Gloo's headers only, for LibTorch's ProcessGroupGloo.hpp (the wheel has Gloo's code but not its headers).
# Not installed as a package: Debian's libgloo library must never be linked next to LibTorch's own Gloo.
GLOO_DEB=libgloo-dev=0.0~git20220518.5b14351-3
if [[ -f "$DEPS/gloo/include/gloo/context.h" ]]; then
  say "Gloo headers present in $DEPS/gloo"
else
  say "Gloo headers: unpacking $GLOO_DEB into $DEPS/gloo"
  gloo_dl=$(mktemp -d)
  (cd "$gloo_dl" && apt-get download -q "$GLOO_DEB" && dpkg -x libgloo-dev_*.deb unpacked)
  mkdir -p "$DEPS/gloo"
  cp -r "$gloo_dl/unpacked/usr/include" "$DEPS/gloo/"
  rm -rf "$gloo_dl"
fi
say "done"
