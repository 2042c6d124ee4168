#!/bin/sh
# Two side-by-side CLI comparisons at small batches, each written to its section of
# docs/benchmarks.md: `scorch generate` with the shipped U-Net, dpmpp_2m, 10 steps, batches
# 1 to 64, the two variants alternating (median of REPS runs; a fresh process each run, as
# users run it), and whether the variants' samples are bit-identical.
#   threads:  --threads 1 against --threads 2;
#   executor: the CLI's plain TorchScript executor against LibTorch's profiling one
#             (SCORCH_PROFILING_EXECUTOR=1), 2 threads.
# Usage: tools/bench/bench_small_batch.sh [build] [repeats]
set -eu
cd "$(dirname "$0")/../.."
BUILD=${1:-build}; REPS=${2:-5}
OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT
ms() {  # name batch threads profiling -> sampling milliseconds (and $OUT/<name><batch>.npy)
  SCORCH_PROFILING_EXECUTOR=$4 "$BUILD/bin/scorch" generate --threads "$3" --set batch="$2" --set cond=3 \
    --set output.png= --set output.npy="$OUT/$1$2.npy" 2>&1 | sed -n 's/.*sampling \([0-9.]*\) ms.*/\1/p'
}
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
# section, what, label A, threads A, profiling A, label B, threads B, profiling B
side_by_side() {
  {
    echo "Produced by \`tools/bench/bench_small_batch.sh $BUILD $REPS\` on $(nproc) cores, $(date -u +%Y-%m-%d):"
    echo "$2: \`scorch generate\` sampling time (shipped U-Net, dpmpp_2m, 10 steps; a fresh process each run),"
    echo "median of $REPS alternating runs per cell."
    echo
    echo "| batch | $3 (ms) | $6 (ms) | $3 / $6 | samples bit-identical |"
    echo "|---|---|---|---|---|"
    for b in 1 4 16 64; do
      : > "$OUT/a"; : > "$OUT/b"
      i=0
      while [ "$i" -lt "$REPS" ]; do
        ms a "$b" "$4" "$5" >> "$OUT/a"; ms b "$b" "$7" "$8" >> "$OUT/b"; i=$((i + 1))
      done
      ta=$(median < "$OUT/a"); tb=$(median < "$OUT/b")
      same=$(cmp -s "$OUT/a$b.npy" "$OUT/b$b.npy" && echo yes || echo NO)
      echo "| $b | $ta | $tb | $(awk "BEGIN {printf \"%.2f\", $ta / $tb}") | $same |"
    done
  } | /usr/bin/python3 tools/scripts/update_doc_section.py docs/benchmarks.md "$1"
  sed -n "/$1:begin/,/$1:end/p" docs/benchmarks.md
}
side_by_side threads "2 threads against 1" "--threads 2" 2 0 "--threads 1" 1 0
side_by_side executor "the plain TorchScript executor against the profiling one, 2 threads" \
  "plain executor" 2 0 "profiling executor" 2 1
