#!/usr/bin/env bash
# ctest InstallExample: installs the build into a temporary prefix, builds the C example
# (tools/examples) against it with find_package(scorch), runs it and checks its image.
set -euo pipefail
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" > "$tmp/install.log"
test -f "$tmp/prefix/include/scorch/scorch.h"
test -f "$tmp/prefix/lib/pkgconfig/scorch.pc"
cmake -S "$src/tools/examples" -B "$tmp/ex" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_BUILD_TYPE=Release > "$tmp/cfg.log"
cmake --build "$tmp/ex" > "$tmp/build.log"
(cd "$tmp" && "$tmp/ex/render_grid" grid.pgm sampler.steps=4 2> run.log)
# a 10 x 1 grid of 28 x 28 images: header "P5\n280 28\n255\n" then 7840 bytes, not all equal
head -c 14 "$tmp/grid.pgm" | grep -q "280 28"
size=$(stat -c %s "$tmp/grid.pgm")
test "$size" -eq $((14 + 280 * 28))
distinct=$(tail -c 7840 "$tmp/grid.pgm" | od -An -tu1 -v | tr -s ' ' '\n' | sort -u | wc -l)
test "$distinct" -gt 50
grep -q "wrote grid.pgm: 10 samples, 4 model calls" "$tmp/run.log"
echo "install example: ok ($distinct grey levels)"
