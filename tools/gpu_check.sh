#!/usr/bin/env bash
# On the GPU machine (the `device` tool): builds against that machine's LibTorch (CUDA),
# runs every test (the CUDA tests run there instead of skipping), the CUDA kernel test
# under compute-sanitizer memcheck, and the GPU benchmarks (tools/bench/bench_gpu.cpp), and
# writes the logs and the benchmark tables under $OUT.
# Usage (from the repository root, with .deps carried; ../shared/gpu/README.md):
#   bash tools/gpu_check.sh
set -euo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/root
for f in .deps/debs/*.deb; do dpkg -x "$f" /tmp/root; done
prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)');/tmp/root/usr"
cmake -S . -B /tmp/b -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DSCORCH_WITH_OPENCV=OFF 2>&1 | tee "$OUT/configure.log"
# The library, CLI and tests first; the benchmark separately, so that a benchmark that
# does not build (its SDPA part compiles only against LibTorch >= 2.1) costs no test run.
cmake --build /tmp/b -j16 --target scorch_cli scorch_tests 2>&1 | tail -50 | tee "$OUT/build.log"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/device.txt"
ctest --test-dir /tmp/b -j8 --output-on-failure 2>&1 | tee "$OUT/ctest.log" || true
/tmp/b/bin/scorch_tests --gtest_filter='*Cuda*' 2>&1 | tee "$OUT/cuda_tests.log" || true
if command -v compute-sanitizer >/dev/null; then
  compute-sanitizer --tool memcheck /tmp/b/bin/scorch_tests --gtest_filter='MixtureScore.Cuda*' \
    2>&1 | tail -20 | tee "$OUT/memcheck.log" || true
fi
if cmake --build /tmp/b -j16 --target scorch_bench_gpu > "$OUT/build_bench.log" 2>&1; then
  timeout 300 /tmp/b/bin/scorch_bench_gpu 2>&1 | tee "$OUT/bench_gpu.md" || true
else
  tail -30 "$OUT/build_bench.log"
fi
