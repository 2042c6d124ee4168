#!/usr/bin/env bash
# Installs the Debian packages scorch needs, only those missing (idempotent).
# As root it runs apt-get; otherwise it prints the exact command to run.
set -euo pipefail

packages=(
  build-essential cmake ccache
  libtorch-dev python3-torch
  libopenblas0-pthread     # without it LibTorch falls back to the reference BLAS (~30x slower sgemm)
  libopencv-dev libyaml-cpp-dev libgtest-dev libgmock-dev libcli11-dev nlohmann-json3-dev
  zlib1g-dev dataset-fashion-mnist wamerican
  libgloo-dev              # the Gloo headers LibTorch's c10d headers include (distributed runs)
  libcpp-httplib-dev pkg-config   # scorch serve
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present"
  exit 0
fi

cmd=(apt-get install -y --no-install-recommends "${missing[@]}")
if [ "$(id -u)" -eq 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${cmd[@]}"
else
  echo "setup: missing packages; run as root:" >&2
  echo "  sudo apt-get update && sudo ${cmd[*]}" >&2
  exit 1
fi
