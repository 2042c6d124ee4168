#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/) with clang and runs each for SECONDS (default 600)
# from the committed seed corpus, all the named ones at once (default: every harness);
# prints libFuzzer's final stats and the peak memory of each.
# Usage: tools/fuzz.sh [SECONDS] [HARNESS...]   (harnesses: config safetensors npy pipeline image idx c_api)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -eq 0 ] && harnesses=(config safetensors npy pipeline image idx c_api)
if ! command -v clang++ >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y --no-install-recommends clang; else
    echo "fuzz: clang is missing; run as root: apt-get install clang" >&2; exit 1; fi
fi
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DSCORCH_FUZZ=ON -DSCORCH_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j2 --target "${harnesses[@]/#/fuzz_}"
for h in "${harnesses[@]}"; do
  mkdir -p "build-fuzz/corpus_$h"
  # -timeout: one input running 10 s is a finding (a hang); -rss_limit_mb: so is 2 GB.
  (cd fuzz && ../build-fuzz/bin/fuzz_$h "../build-fuzz/corpus_$h" "corpus/$h" -max_total_time="$secs" \
     -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 > "../build-fuzz/fuzz_$h.log" 2>&1) &
done
wait
for h in "${harnesses[@]}"; do
  echo "fuzz_$h: $(grep -E 'stat::number_of_executed_units' build-fuzz/fuzz_$h.log) $(grep -E 'stat::peak_rss_mb' build-fuzz/fuzz_$h.log)" \
       "$(grep -c -E 'ERROR|SUMMARY|deadly signal|timeout' build-fuzz/fuzz_$h.log) findings"
done
