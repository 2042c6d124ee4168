#!/usr/bin/env bash
# Builds the tests with AddressSanitizer (LeakSanitizer included) in build-asan/ and runs
# the C API tests (cancellation from another thread, 1,000 create-generate-free cycles,
# threads, every error path). A leak or memory error makes the run fail.
# Usage: tools/asan_check.sh [gtest filter, default CApi*]
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="-fsanitize=address -fno-omit-frame-pointer" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address" >/dev/null
cmake --build build-asan -j2 --target scorch_tests
ASAN_OPTIONS=detect_leaks=1 build-asan/bin/scorch_tests --gtest_filter="${1:-CApi*}"
