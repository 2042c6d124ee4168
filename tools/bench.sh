#!/usr/bin/env bash
# Regenerates docs/benchmarks.md: builds and runs the sampler benchmarks.
# Usage: tools/bench.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$build" -j2 --target scorch_bench > /dev/null
{
  echo "# Benchmarks"
  echo
  echo "Produced by \`tools/bench.sh\` (\`$build/bin/scorch_bench\`) on $(nproc) cores,"
  echo "$(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%Y-%m-%d)."
  echo
  "$build/bin/scorch_bench"
} > docs/benchmarks.md.tmp
mv docs/benchmarks.md.tmp docs/benchmarks.md
echo "wrote docs/benchmarks.md"
