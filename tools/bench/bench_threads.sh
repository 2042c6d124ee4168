#!/bin/sh
# Sampling time by batch and thread count, side by side in one script: the shipped U-Net,
# dpmpp_2m, 10 steps, batches 1 to 64, --threads 1 and 2 alternating (median of REPS runs),
# and whether the two thread counts give bit-identical samples. Writes the `threads`
# section of docs/benchmarks.md.
# Usage: tools/bench/bench_threads.sh [build] [repeats]
set -eu
cd "$(dirname "$0")/../.."
BUILD=${1:-build}; REPS=${2:-5}
OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT
ms() {  # batch threads -> sampling milliseconds (and $OUT/b<batch>t<threads>.npy)
  "$BUILD/bin/scorch" generate --threads "$2" --set batch="$1" --set cond=3 --set output.png= \
    --set output.npy="$OUT/b$1t$2.npy" 2>&1 | sed -n 's/.*sampling \([0-9.]*\) ms.*/\1/p'
}
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
{
  echo "Produced by \`tools/bench/bench_threads.sh $BUILD $REPS\` on $(nproc) cores, $(date -u +%Y-%m-%d):"
  echo "the sampling loop of \`scorch generate\` (shipped U-Net, dpmpp_2m, 10 steps; model load excluded),"
  echo "median of $REPS alternating runs per cell."
  echo
  echo "| batch | --threads 1 (ms) | --threads 2 (ms) | 2 threads / 1 | samples bit-identical |"
  echo "|---|---|---|---|---|"
  for b in 1 4 16 64; do
    : > "$OUT/t1"; : > "$OUT/t2"
    i=0
    while [ "$i" -lt "$REPS" ]; do
      ms "$b" 1 >> "$OUT/t1"; ms "$b" 2 >> "$OUT/t2"; i=$((i + 1))
    done
    t1=$(median < "$OUT/t1"); t2=$(median < "$OUT/t2")
    same=$(cmp -s "$OUT/b${b}t1.npy" "$OUT/b${b}t2.npy" && echo yes || echo NO)
    echo "| $b | $t1 | $t2 | $(awk "BEGIN {printf \"%.2f\", $t2 / $t1}") | $same |"
  done
} | /usr/bin/python3 tools/scripts/update_doc_section.py docs/benchmarks.md threads
sed -n '/threads:begin/,/threads:end/p' docs/benchmarks.md
