#!/usr/bin/env bash
# Regenerates the solver section of docs/benchmarks.md: builds and runs the sampler
# benchmarks (accuracy against exact references, solver cost per step).
# Usage: tools/bench/bench.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$build" -j2 --target scorch_bench > /dev/null
{
  echo "## Solvers: accuracy and cost"
  echo
  echo "Produced by \`tools/bench/bench.sh\` (\`$build/bin/scorch_bench\`) on $(nproc) cores,"
  echo "$(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%Y-%m-%d)."
  echo
  "$build/bin/scorch_bench"
} | /usr/bin/python3 tools/scripts/update_doc_section.py docs/benchmarks.md solvers
echo "updated docs/benchmarks.md (solvers)"
