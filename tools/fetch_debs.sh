#!/usr/bin/env bash
# Run on a CPU (Debian 12) machine: downloads the Debian packages the GPU machine lacks into .debs/
# (ignored by git) so that `device` calls can carry them; tools/gpu.sh unpacks them there.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(
  libsentencepiece-dev=0.1.97-3+b1 libsentencepiece0=0.1.97-3+b1
  nlohmann-json3-dev=3.11.2-2 libcli11-dev=2.1.2+ds-1
  libspdlog-dev=1:1.10.0+ds-0.4 libspdlog1.10=1:1.10.0+ds-0.4 libfmt-dev=9.1.0+ds1-2 libfmt9=9.1.0+ds1-2
  libgtest-dev=1.12.1-0.2 libgmock-dev=1.12.1-0.2
  libzstd-dev=1.5.4+dfsg2-5 libzstd1=1.5.4+dfsg2-5
  libgloo-dev=0.0~git20220518.5b14351-3  # headers only: LibTorch's Gloo is inside libtorch_cpu (distributed.cpp)
  libboost1.74-dev=1.74.0+ds1-21
)
mkdir -p .debs
cd .debs
apt-get download "${PACKAGES[@]}"
ls -la
