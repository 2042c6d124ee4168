#!/usr/bin/env bash
# SIGINT and SIGTERM at random points of long `generate`, `fit` and `distill-lsd` runs: after
# each, the output folder must hold either nothing or only complete outputs (a run that
# finished before the signal), and never a temporary file (docs/errors.md).
#
# Usage: tools/scripts/signal_trials.sh [trials per command, default 20] [build dir]
set -uo pipefail
cd "$(dirname "$0")/../.."
trials=${1:-20}
scorch=${2:-build}/bin/scorch
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 -c "import numpy as np; np.save('$work/data.npy', np.random.RandomState(0).randn(4000, 64).astype(np.float32))"

commands=(
  "generate -q --set batch=3000 --set sampler.steps=20 --set output.npy=OUT/x.npy --set output.png=OUT/x.png"
  "fit gmm --data $work/data.npy --k 16 --iters 200 --em-iters 50 -q --out OUT/g.safetensors"
  "distill-lsd --config configs/words.yaml --steps 4 --iters 60 --out OUT/l.yaml"
)
failures=0
runs=0
for cmd in "${commands[@]}"; do
  for ((i = 0; i < trials; i++)); do
    out="$work/out$runs"
    mkdir -p "$out"
    sig=$([ $((RANDOM % 2)) -eq 0 ] && echo INT || echo TERM)
    delay=$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", r / 32767 * 4 }')
    $scorch ${cmd//OUT/$out} > /dev/null 2>&1 &
    pid=$!
    sleep "$delay"
    kill -s "$sig" "$pid" 2> /dev/null
    wait "$pid"
    status=$?
    leftovers=$(find "$out" -name '.*' -type f | wc -l)
    if [ "$leftovers" -ne 0 ]; then
      echo "FAIL: $cmd (SIG$sig after ${delay}s, status $status): temporary files left: $(ls -A "$out")"
      failures=$((failures + 1))
    fi
    # A run the signal ended leaves no output; one that finished first leaves complete ones.
    if [ "$status" -ne 0 ] && [ -n "$(ls -A "$out")" ]; then
      echo "FAIL: $cmd (SIG$sig after ${delay}s, status $status): partial output: $(ls -A "$out")"
      failures=$((failures + 1))
    fi
    runs=$((runs + 1))
  done
done
echo "signal trials: $runs runs, $failures failures"
[ "$failures" -eq 0 ]
