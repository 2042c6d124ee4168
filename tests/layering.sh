#!/usr/bin/env bash
# ctest Layering: the folders are the architecture (docs/design.md). Each layer's sources
# and public headers include only headers of their own layer or the layers below:
#   kernels (0) -> engine (1) -> samplers (2) -> pipeline (3) -> tools (4)
# CMake links only downward; this check catches the includes that linking cannot (an
# engine file including a sampler header compiles, since include/ is shared). Also: no
# `#include "../` anywhere.
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"

# The layer of each public header in include/scorch/.
layer_of_header() {
  case "$1" in
    mixture_score.h|lincomb.h) echo 0 ;;
    sampler.h|step_hooks.h|corrector.h|discrete_sampler.h|guidance_reader.h|teleport.h) echo 2 ;;
    config.h|pipeline.h|token_pipeline.h|scorch.h|distributed_pipeline.h|server.h) echo 3 ;;
    *) echo 1 ;;
  esac
}
layer_of_source() {
  case "$1" in
    kernels/*) echo 0 ;;
    engine/*) echo 1 ;;
    samplers/*) echo 2 ;;
    pipeline/*) echo 3 ;;
    tools/*) echo 4 ;;
    include/scorch/*) layer_of_header "$(basename "$1")" ;;
  esac
}

status=0
if grep -rn --include='*.cpp' --include='*.h' --include='*.cu' '#include "\.\./' kernels engine samplers pipeline include tools tests; then
  echo "layering: an include reaches up a folder with ../ (above)"
  status=1
fi
for f in $(find kernels engine samplers pipeline include/scorch tools -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.c'); do
  own=$(layer_of_source "$f")
  [ -n "$own" ] || continue
  for h in $(grep -ho '#include [<"]scorch/[a-z_0-9]*\.h[>"]' "$f" | sed 's/.*scorch\/\([a-z_0-9]*\.h\).*/\1/'); do
    if [ ! -f "include/scorch/$h" ]; then
      echo "layering: $f includes scorch/$h, which is not in include/scorch/"
      status=1
      continue
    fi
    other=$(layer_of_header "$h")
    if [ "$other" -gt "$own" ]; then
      echo "layering: $f (layer $own) includes scorch/$h (layer $other)"
      status=1
    fi
  done
done
[ "$status" -eq 0 ] && echo "layering: ok"
exit "$status"
