#!/bin/sh
# Side-by-side wall and CPU time of one `scorch generate` (the Fashion-MNIST U-Net of
# configs/default.yaml, dpmpp_2m) with the network in float32 and in bfloat16
# (model.dtype), alternating so that other load hits both alike. The solver runs in
# float32 in both.
# Usage: tools/bench/bench_model_dtype.sh [build] [samples] [steps] [repeats]
set -eu
BUILD=${1:-build}; N=${2:-400}; STEPS=${3:-10}; REPS=${4:-2}
OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT
run() {
  /usr/bin/time -f "$1 wall %e s user %U s sys %S s" "$BUILD/bin/scorch" generate -q \
    --config configs/default.yaml --set batch="$N" --set sampler.steps="$STEPS" --set seed=0 \
    --set model.dtype="$1" --set output.png= --set output.npy="$OUT/$1.npy"
}
i=0
while [ "$i" -lt "$REPS" ]; do
  run float32
  run bfloat16
  i=$((i + 1))
done
