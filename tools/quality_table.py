#!/usr/bin/python3
"""Regenerates the sample-quality table of docs/benchmarks.md and the sample grids of
docs/gallery.md for the Fashion-MNIST model, with `scorch generate` and `scorch eval`.

Rows: every sampler at NFE 5, 10, 20, 50, 1000-step DDIM (the reference row), and two
anchors measured the same way: the training set against the test set (the floor) and
samples of the analytic Gaussian of the data (a ceiling). Columns: FD in the evaluation
classifier's feature space, label consistency, k-NN precision and recall, against the
Fashion-MNIST test set.

Usage: /usr/bin/python3 tools/quality_table.py [--n 10000] [--samplers ddim,dpmpp_2m,...] [--build build]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from update_doc_section import update_benchmarks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLERS = ["ddim", "euler", "heun", "dpmpp_2m", "dpmpp_3m", "dpmpp_2s", "dpm_solver_3s", "unipc",
            "dpmpp_2m_sde", "dpmpp_3m_sde", "euler_ancestral"]
NFES = [5, 10, 20, 50]
NFE_PER_STEP = {"heun": 2}


def run(cmd):
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr}")
    return res.stdout


def generate(scorch, out_dir, name, n, sets, config="configs/default.yaml"):
    npy, labels = os.path.join(out_dir, name + ".npy"), os.path.join(out_dir, name + ".labels.npy")
    cmd = [scorch, "generate", "-q", "--config", config, "--set", f"batch={n}", "--set", "output.png=",
           "--set", f"output.npy={npy}"]
    for s in sets:
        cmd += ["--set", s]
    if config == "configs/default.yaml":
        cmd += ["--set", f"output.labels={labels}"]
    t0 = time.time()
    run(cmd)
    return npy, (labels if os.path.exists(labels) else None), time.time() - t0


def evaluate(scorch, npy, labels):
    cmd = [scorch, "eval", "--json", "--samples", npy]
    if labels:
        cmd += ["--labels", labels]
    return json.loads(run(cmd))


def row(label, nfe, r, seconds):
    acc = "-" if r["accuracy"] < 0 else f"{r['accuracy']:.3f}"
    return f"| {label} | {nfe} | {r['fd']:.2f} | {acc} | {r['precision']:.3f} | {r['recall']:.3f} | {seconds:.0f} |"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="samples per row (a multiple of 10)")
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--no-reference", action="store_true", help="skip the 1000-step DDIM row")
    args = ap.parse_args()
    scorch = os.path.join(args.build, "bin", "scorch")
    os.chdir(ROOT)
    sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
    import fmnist_data  # noqa: E402

    lines = [
        "## Sample quality: Fashion-MNIST U-Net",
        "",
        f"Produced by `/usr/bin/python3 tools/quality_table.py --n {args.n}` on {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}. {args.n} class-conditional samples per row (labels 0-9 in "
        "equal shares, no guidance), `configs/default.yaml`'s model and schedule, seed 0; metrics by `scorch eval` "
        "against the 10k test images in the feature space of `models/fmnist_classifier.pt`. Seconds: wall time of "
        "`scorch generate`.",
        "",
        "| samples | NFE | FD | label consistency | precision | recall | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        x, y = fmnist_data.load("train")
        np.save(os.path.join(tmp, "train.npy"), x[: args.n].numpy())
        np.save(os.path.join(tmp, "train.labels.npy"), y[: args.n].numpy())
        r = evaluate(scorch, os.path.join(tmp, "train.npy"), os.path.join(tmp, "train.labels.npy"))
        lines.append(row("training set (floor)", "-", r, 0))
        print(lines[-1], flush=True)
        npy, labels, sec = generate(scorch, tmp, "gauss", args.n, ["sampler.name=heun", "sampler.steps=50"],
                                    config="configs/fmnist_gaussian.yaml")
        lines.append(row("analytic Gaussian (ceiling)", 100, evaluate(scorch, npy, None), sec))
        print(lines[-1], flush=True)
        if not args.no_reference:
            npy, labels, sec = generate(scorch, tmp, "ref", args.n, ["sampler.name=ddim", "sampler.steps=1000"])
            lines.append(row("ddim, 1000 steps (reference)", 1000, evaluate(scorch, npy, labels), sec))
            print(lines[-1], flush=True)
        for sampler in args.samplers.split(","):
            for nfe in NFES:
                steps = nfe // NFE_PER_STEP.get(sampler, 1)
                if steps < 2:
                    continue
                npy, labels, sec = generate(scorch, tmp, f"{sampler}{nfe}", args.n,
                                            [f"sampler.name={sampler}", f"sampler.steps={steps}"])
                lines.append(row(sampler, steps * NFE_PER_STEP.get(sampler, 1), evaluate(scorch, npy, labels), sec))
                print(lines[-1], flush=True)
    update_benchmarks("quality", lines)


if __name__ == "__main__":
    main()
