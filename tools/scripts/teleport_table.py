#!/usr/bin/python3
"""Regenerates the teleportation table of docs/benchmarks.md: plain DPM-Solver++(2M) against
`teleport` + dpmpp_2m on the Fashion-MNIST U-Net, FD and label consistency per number of
model calls, with the same seed (the same x_T) in every row.

Rows: dpmpp_2m at NFE 5, 6, 8, 10, 12, 15, 20; teleport with sigma_skip 25, 10 and 3.3 (about
the DDPM indices 800, 700 and 500 of 1000) and with `auto`, each with 5, 8, 10 and 15 inner steps.

Usage: /usr/bin/python3 tools/scripts/teleport_table.py [--n 2000] [--build build]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from update_doc_section import update_benchmarks  # noqa: E402
from quality_table import ROOT, evaluate, generate  # noqa: E402

PLAIN_NFE = [5, 6, 8, 10, 12, 15, 20]
SKIPS = ["25", "10", "3.3", "auto"]
INNER = [5, 8, 10, 15]
AUTO_GRID = 20  # auto probes this entry's 20-step grid


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="samples per row (a multiple of 10)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    args = ap.parse_args()
    scorch = os.path.join(args.build, "bin", "scorch")
    os.chdir(ROOT)
    lines = [
        "## Teleportation: Fashion-MNIST U-Net",
        "",
        f"Produced by `/usr/bin/python3 tools/scripts/teleport_table.py --n {args.n}` on {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}. {args.n} class-conditional samples per row, "
        "`configs/default.yaml` (seed 0: every row starts from the same x_T), metrics by `scorch eval` against "
        "the test set. `teleport` jumps from t = 1 to the skip point with the exact flow map of "
        "`models/fmnist_gaussian.safetensors` (no model call), then dpmpp_2m runs `inner steps` from there. "
        "NFE: model calls per sample; `auto` also probes its 20-step grid on 64 samples of the batch, one "
        "model call of 64 samples per probe, shown as the probes' share of a full call (default `auto_tol` 0.02).",
        "",
        "| sampler | skip point sigma/alpha | inner steps | NFE | FD | label consistency | precision | recall |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(name, skip, inner, nfe, r):
        acc = "-" if r["accuracy"] < 0 else f"{r['accuracy']:.3f}"
        lines.append(f"| {name} | {skip} | {inner} | {nfe} | {r['fd']:.2f} | {acc} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} |")
        print(lines[-1], flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        for nfe in PLAIN_NFE:
            npy, labels, _ = generate(scorch, tmp, f"plain{nfe}", args.n,
                                      ["sampler.name=dpmpp_2m", f"sampler.steps={nfe}"])
            row("dpmpp_2m", "-", "-", nfe, evaluate(scorch, npy, labels))
        for skip in SKIPS:
            for inner in INNER:
                sets = ["sampler.name=teleport", "sampler.gaussian=models/fmnist_gaussian.safetensors",
                        "sampler.inner.name=dpmpp_2m", f"sampler.steps={inner}"]
                if skip == "auto":
                    sets += ["sampler.auto=true", f"sampler.probe_steps={AUTO_GRID}"]
                else:
                    sets += [f"sampler.sigma_skip={skip}"]
                name = f"tp{skip}_{inner}"
                npy, labels, _ = generate(scorch, tmp, name, args.n, sets)
                nfe = str(inner)
                if skip == "auto":
                    # the skip point and the number of probes, from a verbose rerun on 64 samples
                    out = subprocess.run([scorch, "generate", "--config", "configs/default.yaml", "--set",
                                          "batch=70", "--set", "output.png="] + sum([["--set", s] for s in sets], []),
                                         capture_output=True, text=True).stderr
                    note = [l for l in out.splitlines() if l.startswith("teleport: skip point")][0]
                    total = int([l for l in out.splitlines() if l.startswith("teleport:") and "NFE" in l][0]
                                .split(" NFE")[0].split()[-1])
                    probes = total - inner
                    nfe = f"{inner} + {probes} x {64 / args.n:.3f}"
                    shown = "auto: " + note.split("sigma/alpha = ")[1].rstrip(")")[:5]
                else:
                    shown = skip
                row("teleport + dpmpp_2m", shown, inner, nfe, evaluate(scorch, npy, labels))
    update_benchmarks("teleport", lines)


if __name__ == "__main__":
    main()
