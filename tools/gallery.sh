#!/usr/bin/env bash
# Regenerates docs/gallery.md: one row per class (labels 0..9, left to right) from the
# default config's Fashion-MNIST model, for every sampler at 5, 10 and 20 NFE, side by side.
# Usage: tools/gallery.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
scorch=${1:-build}/bin/scorch
samplers="ddim euler heun dpmpp_2m dpmpp_3m dpmpp_2s dpm_solver_3s unipc dpmpp_2m_sde dpmpp_3m_sde euler_ancestral"
mkdir -p docs/img
{
  echo "# Gallery"
  echo
  echo "Produced by \`tools/gallery.sh\`: \`configs/default.yaml\` (the Fashion-MNIST U-Net), seed 0,"
  echo "classes 0-9 left to right, no guidance; the same x_T in every image. Heun uses 2 NFE per step"
  echo "(4, 10 and 20 NFE)."
  echo
  echo "| sampler | 5 NFE | 10 NFE | 20 NFE |"
  echo "|---|---|---|---|"
  for s in $samplers; do
    row="| \`$s\` |"
    for nfe in 5 10 20; do
      steps=$nfe
      [ "$s" = heun ] && steps=$((nfe / 2))
      "$scorch" generate -q --set sampler.name=$s --set sampler.steps=$steps --set batch=10 \
        --set output.nrow=10 --set output.png=docs/img/${s}_${nfe}.png
      row="$row ![$s $nfe](img/${s}_${nfe}.png) |"
    done
    echo "$row"
  done
} > docs/gallery.md.tmp
mv docs/gallery.md.tmp docs/gallery.md
echo "wrote docs/gallery.md"
