#!/usr/bin/python3
"""Mixture of score guidance on the Fashion-MNIST U-Net: structure transfer from a
reference image, and the cost of guidance. Writes the `guidance` section of
docs/benchmarks.md and the grids docs/img/msg_w*.png.

The reference is a test-set image (index --ref, default 0: an ankle boot). One MSG term
evaluates the model on the reference's own inverted trajectory x*_t (null label) against
the sample (null label), in the first steps only (window t >= --t-min, as MotionShop
guides the first 10% of steps):
    eps = eps(x, c) + w (eps(x*_t, null) - eps(x, null)).
Rows: w = 0 (unguided), 0.5, 1, 1.5, 2, 3. Columns: the correlation between the 7 x 7 low-pass
(4 x 4 average) of each sample and of the reference (mean over samples), and label
consistency by `scorch eval`.

Usage: /usr/bin/python3 tools/scripts/msg_table.py [--n 500] [--ref 0] [--build build]
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from update_doc_section import update_benchmarks  # noqa: E402
from quality_table import ROOT, evaluate, run_generate  # noqa: E402

WEIGHTS = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0]


def lowpass(x):
    n = x.shape[0]
    return x.reshape(n, 7, 4, 7, 4).mean(axis=(2, 4)).reshape(n, -1)


def correlation(samples, ref):
    a = lowpass(samples)
    b = lowpass(ref[None])[0]
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean()
    return float(((a @ b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b) + 1e-12)).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="samples per row (a multiple of 10)")
    ap.add_argument("--ref", type=int, default=0, help="index of the reference in the test set")
    ap.add_argument("--t-min", type=float, default=0.6, help="the term acts for t >= this")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    args = ap.parse_args()
    scorch = os.path.join(args.build, "bin", "scorch")
    os.chdir(ROOT)
    sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
    import fmnist_data  # noqa: E402

    x_test, y_test = fmnist_data.load("test")
    ref = x_test[args.ref].numpy().astype(np.float32)  # [1, 28, 28] in [-1, 1]
    os.makedirs(os.path.join(ROOT, "docs", "img"), exist_ok=True)
    rows, costs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        ref_path = os.path.join(tmp, "ref.npy")
        np.save(ref_path, ref[None])
        plain_corr = None

        def generate(name, config, extra=(), n=args.n, png=None):
            """Runs scorch generate; returns (npy, labels, seconds, NFE)."""
            npy, labels = os.path.join(tmp, name + ".npy"), os.path.join(tmp, name + ".labels.npy")
            stderr, seconds = run_generate(scorch, config, [f"batch={n}", f"sampler.steps={args.steps}",
                                                            f"output.npy={npy}", f"output.labels={labels}",
                                                            f"output.png={png or ''}"] + list(extra))
            nfe = [l for l in stderr.splitlines() if " NFE," in l][-1].split(" NFE")[0].split()[-1]
            return npy, labels, seconds, nfe

        for w in WEIGHTS:
            cfg = os.path.join(tmp, f"msg{w}.yaml")
            with open(cfg, "w") as f:
                f.write(open(os.path.join(ROOT, "configs", "default.yaml")).read())
                f.write("guidance:\n  terms:\n    - cond: null\n      ref_cond: null\n"
                        f"      weight: {w}\n      window: [{args.t_min}, 1.0]\n"
                        f"      reference: {ref_path}\n      reference_cond: null\n")
            npy, labels, sec, _ = generate(f"w{w}", cfg)
            corr = correlation(np.load(npy), ref)
            r = evaluate(scorch, npy, labels)
            rows.append(f"| {w:g} | {corr:.3f} | {r['accuracy']:.3f} | {r['fd']:.2f} | ![w = {w:g}](img/msg_w{w:g}.png) |")
            print(rows[-1], flush=True)
            generate(f"grid{w}", cfg, n=20, png=os.path.join(ROOT, "docs", "img", f"msg_w{w:g}.png"))

        # Cost: model calls and wall time per configuration, same batch.
        cost_n = 200
        default, msg = os.path.join(ROOT, "configs", "default.yaml"), os.path.join(tmp, "msg2.0.yaml")
        for label, config, extra in [("unguided", default, []),
                                     ("classifier-free, scale 3", default, ["guidance.scale=3"]),
                                     ("MSG term (x*_t on the reference trajectory)", msg, []),
                                     ("classifier-free + MSG term", msg, ["guidance.scale=3"])]:
            _, _, sec, nfe = generate("cost", config, extra, n=cost_n)
            costs.append((label, nfe, sec))
            print(costs[-1], flush=True)

    base_sec = costs[0][2]
    lines = [
        "## Guidance: Fashion-MNIST U-Net",
        "",
        f"Produced by `/usr/bin/python3 tools/scripts/msg_table.py --n {args.n} --ref {args.ref}` on {os.cpu_count()} "
        f"cores, {time.strftime('%Y-%m-%d', time.gmtime())}.",
        "",
        f"**Structure transfer by mixture of score guidance.** Reference: test image {args.ref} (label "
        f"{int(y_test[args.ref])}), inverted with 50 DDIM steps at load. One term "
        "eps += w (eps(x*_t, null) - eps(x, null)) for t >= "
        f"{args.t_min} (the first steps only, as MotionShop guides only the first 10% of its steps); "
        "`configs/default.yaml` otherwise "
        f"(dpmpp_2m, {args.steps} steps, labels 0-9 in equal shares), {args.n} samples per row. Correlation: "
        "between the 7 x 7 low-pass (4 x 4 means) of each sample and of the reference, averaged. Label "
        "consistency and FD by `scorch eval`.",
        "",
        "| MSG weight w | low-pass correlation with the reference | label consistency | FD | samples (2 per class) |",
        "|---|---|---|---|---|",
    ] + rows + [
        "",
        f"**Cost of guidance** ({cost_n} samples, {args.steps} steps; NFE counts batched calls: every "
        "condition of one step goes through the network in one call):",
        "",
        "| configuration | NFE | wall time (s) | time vs unguided |",
        "|---|---|---|---|",
    ] + [f"| {l} | {n} | {s:.1f} | {s / base_sec:.2f}x |" for l, n, s in costs]
    update_benchmarks("guidance", lines)


if __name__ == "__main__":
    main()
