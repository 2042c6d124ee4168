#!/bin/sh
# Per-step overhead and peak memory with networks of real shapes (configs/examples/ on the
# randomly initialised stand-ins of tests/fixtures/shaped/): `scorch generate` at batch 1,
# the CLI's own split of the sampling loop into the network's calls and everything else
# (GenerateResult::network_seconds: wall time inside the TorchScript calls, same run), the
# decoder's time, and the process's peak RSS (/usr/bin/time). Then SDXL's 1024 px decode
# whole against tiled (decoder.tile 64, overlap 12) at 1024 and 2048 px, peak RSS side by side.
# Writes the "shaped" section of docs/benchmarks.md.
# Usage: tools/bench/bench_shaped.sh [build] [repeats] [steps]
set -eu
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD=$(cd "${1:-build}" && pwd); REPS=${2:-3}; STEPS=${3:-10}
OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT
cd "$OUT"
/usr/bin/python3 - <<'PY'
import os
import numpy as np
rng = np.random.default_rng(0)
files = {
    "sd15": [("prompt_embeds", (77, 768)), ("negative_prompt_embeds", (77, 768))],
    "sdxl": [("prompt_embeds", (77, 2048)), ("negative_prompt_embeds", (77, 2048)), ("pooled_prompt_embeds", (1280,)),
             ("negative_pooled_prompt_embeds", (1280,)), ("time_ids", (6,))],
    "flux": [("t5_embeds", (512, 4096)), ("clip_pooled", (768,)), ("img_ids", (1024, 3)), ("txt_ids", (512, 3))],
}
# A network that costs nothing (x / 2), for the decoder's memory rows: the process's peak
# RSS is then the decoder's, not the U-Net's.
import torch
class Null(torch.nn.Module):
    def forward(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids):
        return sample * 0.5
z = torch.zeros
torch.jit.save(torch.jit.trace(Null(), (z(1, 4, 8, 8), z(1), z(1, 77, 2048), z(1, 1280), z(1, 6))), "null_sdxl.pt")
for ex, entries in files.items():
    os.makedirs(ex, exist_ok=True)
    for name, shape in entries:
        np.save(os.path.join(ex, name + ".npy"), rng.standard_normal(shape).astype(np.float32))
PY
# run NAME EXTRA... -> "sampling network decoding rss_kb" (a later --set model.path wins)
run() {
  ex=$1; shift
  cd "$OUT/$ex"
  /usr/bin/time -f "rss %M" "$BUILD/bin/scorch" generate --config "$ROOT/configs/examples/$ex.yaml" \
    --set model.path="$ROOT/$(sed -n 's/^  path: \(tests[^ ]*\).*/\1/p' "$ROOT/configs/examples/$ex.yaml" | head -1)" \
    --set decoder.path="$ROOT/$(sed -n 's/^  path: \(tests[^ ]*\).*/\1/p' "$ROOT/configs/examples/$ex.yaml" | tail -1)" \
    --set sampler.steps="$STEPS" --set output.png= --set output.npy=out.npy "$@" 2>&1 |
    sed -n 's/.*sampling \([0-9.]*\) ms (network \([0-9.]*\) ms), decoding \([0-9.]*\) ms.*/\1 \2 \3/p; s/^rss \([0-9]*\)/\1/p' |
    tr '\n' ' '
  cd "$OUT"
}
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
{
  echo "Produced by \`tools/bench/bench_shaped.sh ${1:-build} $REPS $STEPS\` on $(nproc) cores, $(date -u +%Y-%m-%d):"
  echo "\`scorch generate\` at batch 1, $STEPS steps, the example configs on the stand-in networks (random"
  echo "weights, real interfaces and shapes); median of $REPS runs. network: wall time inside the"
  echo "TorchScript calls, measured in the same run; overhead: the rest of the sampling loop."
  echo
  echo "| network | sampling (ms) | network (ms) | overhead (ms) | overhead / sampling | decoding (ms) | peak RSS (MB) |"
  echo "|---|---|---|---|---|---|---|"
  for ex in sd15 sdxl flux; do
    : > "$OUT/rows"
    i=0
    while [ "$i" -lt "$REPS" ]; do run "$ex" >> "$OUT/rows"; echo >> "$OUT/rows"; i=$((i + 1)); done
    s=$(awk 'NF {print $1}' "$OUT/rows" | median); n=$(awk 'NF {print $2}' "$OUT/rows" | median)
    d=$(awk 'NF {print $3}' "$OUT/rows" | median); r=$(awk 'NF {print $4}' "$OUT/rows" | median)
    echo "| $ex | $s | $n | $(awk "BEGIN {printf \"%.1f\", $s - $n}") | $(awk "BEGIN {printf \"%.2f%%\", 100 * ($s - $n) / $s}") | $d | $(awk "BEGIN {printf \"%.0f\", $r / 1024}") |"
  done
  echo
  echo "Per step: the same runs at 2 and at 28 steps (median of $REPS each); the marginal overhead per"
  echo "step, (overhead(28) - overhead(2)) / 26, against the network's marginal time per step. The"
  echo "difference leaves out what a run pays once (its seeded start noise, the first calls)."
  echo
  echo "| network | overhead per step (ms) | network per step (ms) | overhead / network |"
  echo "|---|---|---|---|"
  for ex in sd15 sdxl flux; do
    for n in 2 28; do
      : > "$OUT/rows$n"
      i=0
      while [ "$i" -lt "$REPS" ]; do
        STEPS_SAVED=$STEPS; STEPS=$n; run "$ex" >> "$OUT/rows$n"; echo >> "$OUT/rows$n"; STEPS=$STEPS_SAVED; i=$((i + 1))
      done
    done
    o2=$(awk 'NF {print $1 - $2}' "$OUT/rows2" | median); o28=$(awk 'NF {print $1 - $2}' "$OUT/rows28" | median)
    n2=$(awk 'NF {print $2}' "$OUT/rows2" | median); n28=$(awk 'NF {print $2}' "$OUT/rows28" | median)
    echo "| $ex | $(awk "BEGIN {printf \"%.3f\", ($o28 - $o2) / 26}") | $(awk "BEGIN {printf \"%.2f\", ($n28 - $n2) / 26}") | $(awk "BEGIN {printf \"%.2f%%\", 100 * ($o28 - $o2) / ($n28 - $n2)}") |"
  done
  echo
  echo "SDXL's decoder whole against tiled (tile 64, overlap 12) at 1024 and 2048 px (latents 4x128x128 and"
  echo "4x256x256; 2 sampling steps of a network that costs nothing, x / 2, so that the process's peak RSS"
  echo "is the decoder's; median of $REPS): decoding time and peak RSS."
  echo
  echo "| image | decoder | decoding (ms) | peak RSS (MB) |"
  echo "|---|---|---|---|"
  for size in 128 256; do
    for t in 0 64; do
      : > "$OUT/rows"
      i=0
      while [ "$i" -lt "$REPS" ]; do
        STEPS_SAVED=$STEPS; STEPS=2
        run sdxl --set decoder.tile=$t --set "model.shape=[4, $size, $size]" --set model.path="$OUT/null_sdxl.pt" \
          >> "$OUT/rows"; echo >> "$OUT/rows"
        STEPS=$STEPS_SAVED; i=$((i + 1))
      done
      d=$(awk 'NF {print $3}' "$OUT/rows" | median); r=$(awk 'NF {print $4}' "$OUT/rows" | median)
      echo "| $((size * 8)) px | $( [ "$t" = 0 ] && echo whole || echo "tile $t, overlap 12" ) | $d | $(awk "BEGIN {printf \"%.0f\", $r / 1024}") |"
    done
  done
} | /usr/bin/python3 "$ROOT/tools/scripts/update_doc_section.py" "$ROOT/docs/benchmarks.md" shaped
sed -n '/shaped:begin/,/shaped:end/p' "$ROOT/docs/benchmarks.md"
