#!/bin/sh
# Side-by-side wall and CPU time of one `scorch generate` (the Fashion-MNIST U-Net, DDIM)
# with the CLI's allocator settings (tools/cli/scorch.cpp, keep_freed_memory) and with glibc's
# defaults (SCORCH_SYSTEM_MALLOC=1), alternating so that other load hits both alike.
# Usage: tools/bench/bench_malloc.sh [build] [samples] [steps] [repeats]
set -eu
BUILD=${1:-build}; N=${2:-1000}; STEPS=${3:-10}; REPS=${4:-2}
OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT
run() {
  /usr/bin/time -f "$1 wall %e s user %U s sys %S s" env $2 "$BUILD/bin/scorch" generate -q \
    --config configs/default.yaml --set batch="$N" --set sampler.name=ddim --set sampler.steps="$STEPS" \
    --set seed=0 --set output.png= --set output.npy="$OUT/$1.npy"
}
i=0
while [ "$i" -lt "$REPS" ]; do
  run kept SCORCH_SYSTEM_MALLOC=0
  run glibc SCORCH_SYSTEM_MALLOC=1
  i=$((i + 1))
done
cmp "$OUT/kept.npy" "$OUT/glibc.npy" && echo "outputs bit-identical"
