#!/usr/bin/python3
"""Regenerates the word-model table of docs/benchmarks.md: for each discrete sampler at
4, 8, 16, 32 and 64 steps, --n words from `configs/words.yaml`'s model (seed 0): the
fraction that are dictionary words (valid), the fraction of valid words that are not in
the training list (held-out words the model was never shown), distinct words, and model
calls per word. `lsd` uses coefficients distilled by `scorch distill-lsd` for each step
count (written to configs/lsd/, and used from there). The first rows are character n-gram
models counted from the same training list, for scale.

Usage: /usr/bin/python3 tools/scripts/words_table.py [--n 1000] [--build build] [--no-distill]
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import words_data  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tools", "scripts"))
from update_doc_section import update_benchmarks  # noqa: E402
from quality_table import run_generate  # noqa: E402

# (row label, sampler, extra config settings, distill-lsd target or None)
VARIANTS = [("euler", "euler", [], None), ("tweedie", "tweedie", [], None), ("cached", "cached", [], None),
            ("first_hitting", "first_hitting", [], None), ("maskgit", "maskgit", [], None),
            ("remdm", "remdm", [], None), ("lsd (final)", "lsd", [], "final"), ("lsd (joint)", "lsd", [], "joint"),
            ("euler, temperature 0.7", "euler", ["sampler.temperature=0.7"], None),
            ("euler, temperature 0.5", "euler", ["sampler.temperature=0.5"], None)]
STEPS = [4, 8, 16, 32, 64]


def coefficients_file(steps, target):
    return f"configs/lsd/words_lsd{steps}.yaml" if target == "final" else f"configs/lsd/words_lsd_{target}{steps}.yaml"


def cell(valid, total):
    """valid fraction with its binomial standard error"""
    p = valid / total
    return f"{p:.3f} ± {(p * (1 - p) / total) ** 0.5:.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--no-distill", action="store_true", help="use the committed configs/lsd/*.yaml")
    args = ap.parse_args()
    scorch = os.path.join(args.build, "bin", "scorch")
    os.chdir(ROOT)
    train, held = words_data.split()
    train, every = set(train), set(train) | set(held)
    os.makedirs("configs/lsd", exist_ok=True)
    lines = [
        "## Discrete samplers: the word model",
        "",
        f"Produced by `/usr/bin/python3 tools/scripts/words_table.py --n {args.n}` on {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}. {args.n} words per row from `models/words_mdm.pt` "
        "(`configs/words.yaml`: log-linear schedule, seed 0, `final: sample`). Valid: the generated word is in "
        "Debian's wamerican list (a-z, at most 12 letters; a letter after the pad or an empty word is invalid). "
        "New: valid words that are not in the training list (the 10% held out). Calls: model calls per word "
        "(`cached` re-runs the model only for words that changed; `first_hitting` makes one call per letter or "
        "pad, 12, whatever the steps). `lsd`: coefficients from `scorch distill-lsd --steps N --teacher-steps 256 "
        "--batch 512 --learn-step-sizes --target final` (configs/lsd/words_lsdN.yaml) or `--target joint` "
        "(configs/lsd/words_lsd_jointN.yaml). Valid: the fraction ± its binomial standard error.",
        "",
        "| sampler | steps | valid | new among valid | distinct | calls per word | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    # Baselines: character n-gram models counted from the same training list, sampled
    # (no network; words_data.ngram_sample), the same number of words.
    for order in (2, 3, 4, 5):
        t0 = time.time()
        words = words_data.ngram_sample(sorted(train), order, args.n)
        valid = [w for w in words if w in every]
        new = [w for w in valid if w not in train]
        lines.append(f"| {order}-gram (counted, no network) | - | {cell(len(valid), len(words))} | "
                     f"{len(new) / max(1, len(valid)):.3f} | {len(set(words))} | - | {time.time() - t0:.1f} |")
        print(lines[-1], flush=True)
    for label, sampler, extra, target in VARIANTS:
        for steps in STEPS if sampler != "first_hitting" else [12]:
            sets = [f"sampler.name={sampler}", f"sampler.steps={steps}"] + extra
            if target:
                coef = coefficients_file(steps, target)
                if not args.no_distill:
                    subprocess.run([scorch, "distill-lsd", "--config", "configs/words.yaml", "--steps", str(steps),
                                    "--teacher-steps", "256", "--batch", "512", "--learn-step-sizes", "--target", target,
                                    "--out", coef], check=True, capture_output=True)
                sets.append(f"sampler.coefficients={coef}")
            npy = "/tmp/words_table.npy"
            stderr, sec = run_generate(scorch, "configs/words.yaml", [f"batch={args.n}", f"output.npy={npy}"] + sets)
            calls = float(stderr.split(" model calls per sequence")[0].split()[-1])
            words = [words_data.decode(t) for t in np.load(npy)]
            valid = [w for w in words if w is not None and w in every]
            new = [w for w in valid if w not in train]
            distinct = len(set(w for w in words if w))
            lines.append(f"| {label} | {steps if sampler != 'first_hitting' else '-'} | {cell(len(valid), len(words))} | "
                         f"{len(new) / max(1, len(valid)):.3f} | {distinct} | {calls:.1f} | {sec:.1f} |")
            print(lines[-1], flush=True)
    update_benchmarks("words", lines)


if __name__ == "__main__":
    main()
