#!/bin/sh
# The CLI's plain TorchScript executor against LibTorch's profiling one (SCORCH_PROFILING_EXECUTOR=1),
# side by side in one script: `scorch generate` with the shipped U-Net, dpmpp_2m, 10 steps, at
# batches 1 to 64, 2 threads, the two alternating (median of REPS runs; every CLI run loads
# the network afresh, as users run it), and whether the samples are bit-identical. Writes the
# `executor` section of docs/benchmarks.md.
# Usage: tools/bench/bench_executor.sh [build] [repeats]
set -eu
cd "$(dirname "$0")/../.."
BUILD=${1:-build}; REPS=${2:-5}
OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT
ms() {  # batch profiling(0|1) -> sampling milliseconds (and $OUT/b<batch>p<profiling>.npy)
  SCORCH_PROFILING_EXECUTOR=$2 "$BUILD/bin/scorch" generate --threads 2 --set batch="$1" --set cond=3 \
    --set output.png= --set output.npy="$OUT/b$1p$2.npy" 2>&1 | sed -n 's/.*sampling \([0-9.]*\) ms.*/\1/p'
}
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
{
  echo "Produced by \`tools/bench/bench_executor.sh $BUILD $REPS\` on $(nproc) cores, $(date -u +%Y-%m-%d):"
  echo "\`scorch generate\` sampling time (shipped U-Net, dpmpp_2m, 10 steps, 2 threads; a fresh process"
  echo "each run), median of $REPS alternating runs per cell."
  echo
  echo "| batch | plain executor (ms) | profiling executor (ms) | plain / profiling | samples bit-identical |"
  echo "|---|---|---|---|---|"
  for b in 1 4 16 64; do
    : > "$OUT/p0"; : > "$OUT/p1"
    i=0
    while [ "$i" -lt "$REPS" ]; do
      ms "$b" 0 >> "$OUT/p0"; ms "$b" 1 >> "$OUT/p1"; i=$((i + 1))
    done
    p0=$(median < "$OUT/p0"); p1=$(median < "$OUT/p1")
    same=$(cmp -s "$OUT/b${b}p0.npy" "$OUT/b${b}p1.npy" && echo yes || echo NO)
    echo "| $b | $p0 | $p1 | $(awk "BEGIN {printf \"%.2f\", $p0 / $p1}") | $same |"
  done
} | /usr/bin/python3 tools/scripts/update_doc_section.py docs/benchmarks.md executor
sed -n '/executor:begin/,/executor:end/p' docs/benchmarks.md
