#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/) with clang and runs each for SECONDS (default 600)
# from the committed seed corpus, three at once; prints libFuzzer's final stats.
# Usage: tools/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
if ! command -v clang++ >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y --no-install-recommends clang; else
    echo "fuzz: clang is missing; run as root: apt-get install clang" >&2; exit 1; fi
fi
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DSCORCH_FUZZ=ON -DSCORCH_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j2 --target fuzz_config fuzz_safetensors fuzz_npy
for h in config safetensors npy; do
  mkdir -p "build-fuzz/corpus_$h"
  (cd fuzz && ../build-fuzz/bin/fuzz_$h "../build-fuzz/corpus_$h" "corpus/$h" -max_total_time="$secs" \
     -print_final_stats=1 > "../build-fuzz/fuzz_$h.log" 2>&1) &
done
wait
for h in config safetensors npy; do
  echo "fuzz_$h: $(grep -E 'stat::number_of_executed_units' build-fuzz/fuzz_$h.log) $(grep -c 'ERROR' build-fuzz/fuzz_$h.log) errors"
done
