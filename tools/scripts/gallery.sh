#!/usr/bin/env bash
# Regenerates docs/gallery.md: one row per class (labels 0..9, left to right) from the
# default config's Fashion-MNIST model, for every sampler at 5, 10 and 20 NFE, side by side,
# and the same for the rectified-flow model (configs/fmnist_flow.yaml) with its samplers.
# Usage: tools/scripts/gallery.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
scorch=${1:-build}/bin/scorch
samplers="ddim euler heun dpmpp_2m dpmpp_3m dpmpp_2s dpm_solver_3s unipc dpmpp_2m_sde dpmpp_3m_sde euler_ancestral"
mkdir -p docs/img
{
  echo "# Gallery"
  echo
  echo "Produced by \`tools/scripts/gallery.sh\`: \`configs/default.yaml\` (the Fashion-MNIST U-Net), seed 0,"
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
  echo
  echo "## The rectified-flow model"
  echo
  echo "\`configs/fmnist_flow.yaml\`: the same U-Net trained with the rectified-flow objective"
  echo "(velocity prediction), on diffusers' flow-matching grid from t = 1 to t = 0, seed 0,"
  echo "classes 0-9 left to right, no guidance."
  echo
  echo "| sampler | 5 NFE | 10 NFE | 20 NFE |"
  echo "|---|---|---|---|"
  for s in euler heun dpmpp_2m unipc; do
    row="| \`$s\` |"
    for nfe in 5 10 20; do
      steps=$nfe
      [ "$s" = heun ] && steps=$((nfe / 2))
      "$scorch" generate -q --config configs/fmnist_flow.yaml --set sampler.name=$s --set sampler.steps=$steps \
        --set batch=10 --set output.nrow=10 --set output.png=docs/img/flow_${s}_${nfe}.png
      row="$row ![flow $s $nfe](img/flow_${s}_${nfe}.png) |"
    done
    echo "$row"
  done
  echo
  echo "## Image to image (SDEdit)"
  echo
  echo "\`init_image\` = the first Fashion-MNIST test image (an ankle boot, drawn from the test"
  echo "set's IDX file), noised to the start time set by \`strength\` and then sampled towards"
  echo "each class 0-9 (left to right) with the default config (dpmpp_2m, 10 steps), seed 0."
  echo
  echo "| strength | samples |"
  echo "|---|---|"
  init=$(mktemp --suffix=.npy)
  /usr/bin/python3 -c "import sys; sys.path.insert(0, 'tools/train'); import fmnist_data, numpy as np; \
np.save('$init', fmnist_data.load('test')[0][0].numpy())"
  for strength in 0.3 0.5 0.7 0.9; do
    "$scorch" generate -q --set init_image="$init" --set strength=$strength --set batch=10 \
      --set output.nrow=10 --set output.png=docs/img/sdedit_${strength}.png
    echo "| $strength | ![strength $strength](img/sdedit_${strength}.png) |"
  done
  echo
  echo "## Inpainting"
  echo
  echo "The same test image with \`inpaint_mask\` = its right half (1 where new content is generated):"
  echo "the left half is kept exactly, the right half is generated towards each class 0-9."
  echo
  mask=$(mktemp --suffix=.npy)
  /usr/bin/python3 -c "import numpy as np; m = np.zeros((28, 28), np.float32); m[:, 14:] = 1; np.save('$mask', m)"
  "$scorch" generate -q --set init_image="$init" --set inpaint_mask="$mask" --set batch=10 \
    --set output.nrow=10 --set output.png=docs/img/inpaint_right.png
  echo "![inpainting the right half](img/inpaint_right.png)"
  rm -f "$init" "$mask"
} > docs/gallery.md.tmp
mv docs/gallery.md.tmp docs/gallery.md
echo "wrote docs/gallery.md"
