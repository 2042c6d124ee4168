#!/usr/bin/python3
"""Measures the Fashion-MNIST text-to-image model (configs/fmnist_prompt.yaml) with
`scorch generate` and `scorch eval` and writes the "prompt" section of docs/benchmarks.md
and its gallery (docs/img/prompt_gallery.png, one row per class prompt).

Rows, each on N samples (N / 10 per class, the prompt of each sample's class, seed 0):
- the ten class prompts of tools/train/prompts.py at classifier-free guidance scales
  1, 2, 4, 7 (dpmpp_2m, 10 NFE): FD against the test set and label consistency (the
  evaluation classifier's label against the prompt's class);
- the held-out paraphrases (never seen in training) at the same scales;
- FD at 5, 10 and 20 NFE without guidance, next to the pixel-space flow model's rows of
  docs/quality_rows.json at the same NFE and sampler (class labels, no guidance).

Usage: /usr/bin/python3 tools/scripts/prompt_table.py [--n 10000] [--build build]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import yaml

from update_doc_section import update_benchmarks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import prompts  # noqa: E402

CONFIG = os.path.join(ROOT, "configs", "fmnist_prompt.yaml")
SCALES = [1, 2, 4, 7]


def run(cmd):
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr}")
    return res.stdout


def with_prompts(tmp, texts):
    """The config with one prompt per sample, as a file: 10k prompts exceed what one
    command-line argument may hold (128 KiB). Relative model paths resolve from ROOT."""
    with open(CONFIG) as f:
        config = yaml.safe_load(f)
    config["prompt"] = list(texts)
    path = os.path.join(tmp, "prompts.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


def measure(scorch, tmp, per_class_prompt, n, scale, steps):
    """Generates n samples (class i / (n / 10)'s prompt) and evaluates them."""
    per = n // 10
    texts = [per_class_prompt[i // per] for i in range(10 * per)]
    labels = np.repeat(np.arange(10, dtype=np.int64), per)
    out, lab = os.path.join(tmp, "s.npy"), os.path.join(tmp, "l.npy")
    np.save(lab, labels)
    start = time.time()
    run([scorch, "generate", "-q", "--config", with_prompts(tmp, texts), "--set", f"batch={10 * per}",
         "--set", f"guidance.scale={scale}", "--set", f"sampler.steps={steps}", "--set", "output.png=",
         "--set", f"output.npy={out}"])
    seconds = time.time() - start
    r = json.loads(run([scorch, "eval", "--json", "--samples", out, "--labels", lab]))
    return r, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--build", default="build")
    args = ap.parse_args()
    scorch = os.path.join(ROOT, args.build, "bin", "scorch")
    held = prompts.HELD_OUT
    lines = [f"Produced by `/usr/bin/python3 tools/scripts/prompt_table.py --n {args.n}` on {os.cpu_count()} cores, "
             f"{time.strftime('%Y-%m-%d', time.gmtime())}: `configs/fmnist_prompt.yaml` (dpmpp_2m on the flow "
             f"grid, seed 0), {args.n} samples per row, {args.n // 10} per class, each with its class's prompt; FD "
             f"against the Fashion-MNIST test set and label consistency (the evaluation classifier's label equals "
             f"the prompt's class). Class prompts: {', '.join(prompts.CLASS_PROMPTS)}. Held-out paraphrases (not "
             f"in training): {', '.join(held)}.", "",
             "| prompts | guidance scale | NFE | FD | label consistency | precision | recall | wall (s) |",
             "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, texts in [("class prompts", prompts.CLASS_PROMPTS), ("held-out paraphrases", held)]:
            for scale in SCALES:
                r, s = measure(scorch, tmp, texts, args.n, scale, 10)
                lines.append(f"| {name} | {scale} | 10 | {r['fd']:.2f} | {r['accuracy']:.3f} | "
                             f"{r['precision']:.3f} | {r['recall']:.3f} | {s:.0f} |")
                print(lines[-1], flush=True)
        kept = {}
        rows_path = os.path.join(ROOT, "docs", "quality_rows.json")
        if os.path.exists(rows_path):
            with open(rows_path) as f:
                kept = json.load(f)
        lines += ["", "Against the pixel-space flow model (configs/fmnist_flow.yaml, class labels, dpmpp_2m, "
                  "rows of the quality table) at the same NFE, both without guidance:", "",
                  "| NFE | prompt model FD | pixel flow FD (samples) | ratio | prompt model label consistency |",
                  "|---|---|---|---|---|"]
        for nfe in [5, 10, 20]:
            r, _ = measure(scorch, tmp, prompts.CLASS_PROMPTS, args.n, 1, nfe)
            ref = kept.get(f"flow_dpmpp_2m{nfe}") or {}
            fd_ref = ref.get("fd")
            ratio = f"{r['fd'] / fd_ref:.2f}" if fd_ref else "n/a"
            ref_text = f"{fd_ref:.2f} ({ref.get('n')})" if fd_ref else "not measured"
            lines.append(f"| {nfe} | {r['fd']:.2f} | {ref_text} | {ratio} | {r['accuracy']:.3f} |")
            print(lines[-1], flush=True)
    # The gallery: one row of 8 per class prompt, guidance 2.
    texts = [p for p in prompts.CLASS_PROMPTS for _ in range(8)]
    with tempfile.TemporaryDirectory() as tmp:
        run([scorch, "generate", "-q", "--config", with_prompts(tmp, texts), "--set", "batch=80",
             "--set", "output.nrow=8", "--set", "output.png=docs/img/prompt_gallery.png"])
    update_benchmarks("prompt", lines)


if __name__ == "__main__":
    main()
