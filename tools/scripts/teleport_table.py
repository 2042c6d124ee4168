#!/usr/bin/python3
"""Regenerates the teleportation section of docs/benchmarks.md: plain dpmpp_2m and unipc at
every NFE from 4 to 20 against each teleport variant at every inner step count from 3 to 15,
on the Fashion-MNIST U-Net, every row with the same n samples and the same seed (the same x_T
for sample i in every row), metrics by `scorch eval` against the test set.

Variants (the inner sampler is dpmpp_2m in each):
  tp_data_auto   the data's single Gaussian (models/fmnist_gaussian.safetensors), skip point by `auto`
  tp_class_auto  one Gaussian per class (`scorch fit gaussian --labels`, made here), `auto`
  tp_class_s5    the class Gaussians at the fixed skip point sigma/alpha = 5
  tp_gmm_auto    a 50-component GMM of the training set integrated to the skip point (warm_model), `auto`

Rows are kept in docs/teleport_rows.json as they finish (a rerun makes only the missing ones;
--only REGEX selects rows, --redo remakes them), so the hours of sampling can be spread over runs.
The reading below the table (NFE saved at equal FD) is computed from the kept rows.

Usage: /usr/bin/python3 tools/scripts/teleport_table.py [--n 5000] [--only REGEX] [--build build]
"""
import argparse
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from update_doc_section import update_benchmarks  # noqa: E402
from quality_table import ROOT, evaluate, load_cache, run, run_generate, save_cache  # noqa: E402

PLAIN_NFE = list(range(4, 21))
INNER = list(range(3, 16))
CACHE = os.path.join(ROOT, "docs", "teleport_rows.json")
IDX = "/usr/share/datasets/fashion-mnist/"
GAUSSIAN = ["sampler.name=teleport", "sampler.gaussian=models/fmnist_gaussian.safetensors"]
VARIANTS = {
    "tp_data_auto": ("the data's Gaussian, auto", GAUSSIAN + ["sampler.auto=true"]),
    "tp_class_auto": ("class Gaussians, auto", ["sampler.name=teleport", "sampler.gaussian={classes}",
                                               "sampler.auto=true"]),
    "tp_class_s5": ("class Gaussians, sigma_skip 5", ["sampler.name=teleport", "sampler.gaussian={classes}",
                                                     "sampler.sigma_skip=5"]),
    "tp_gmm_auto": ("50-component GMM warm start, auto", GAUSSIAN + ["sampler.warm_model={gmm}", "sampler.auto=true"]),
}


def all_keys():
    keys = [f"dpmpp_2m/{k}" for k in PLAIN_NFE] + [f"unipc/{k}" for k in PLAIN_NFE]
    return keys + [f"{v}/{k}" for v in VARIANTS for k in INNER]


def auto_note(stderr):
    """The skip point, estimated errors and probe calls `auto` reports (one line)."""
    lines = [l for l in stderr.splitlines() if l.startswith("teleport: auto:")]
    return lines[0] if lines else ""


def make_row(scorch, tmp, key, n, files):
    family, steps = key.split("/")
    if family in ("dpmpp_2m", "unipc"):
        sets = [f"sampler.name={family}", f"sampler.steps={steps}"]
    else:
        sets = [s.format(**files) for s in VARIANTS[family][1]] + [f"sampler.steps={steps}",
                                                                   "sampler.inner.name=dpmpp_2m"]
    stderr, seconds = run_generate(scorch, "configs/default.yaml",
                                   [f"batch={n}", "output.png=", f"output.npy={tmp}/row.npy",
                                    f"output.labels={tmp}/row.labels.npy"] + sets)
    r = evaluate(scorch, f"{tmp}/row.npy", f"{tmp}/row.labels.npy")
    return {"n": n, "fd": r["fd"], "accuracy": r["accuracy"], "precision": r["precision"], "recall": r["recall"],
            "seconds": round(seconds, 1), "auto": auto_note(stderr), "sets": sets}


def probe_share(row, n):
    """Network calls of the auto probe per sample of the run: 'probe: C calls of P samples'."""
    m = re.search(r"probe: (\d+) calls of (\d+) samples", row.get("auto", ""))
    return int(m.group(1)) * int(m.group(2)) / n if m else 0.0


def nfe_of(key, row):
    family, steps = key.split("/")
    return int(steps) + probe_share(row, row["n"])


def calls_to_reach(curve, level):
    """The fewest network calls at which a curve reaches FD `level`: the curve's running minimum
    (the best FD at that many calls or fewer) read as a function of NFE, linear between
    measured points; None if it never gets there."""
    prev = None  # (nfe, running minimum) of the last point above the level
    best = float("inf")
    for nfe, fd in sorted(curve):
        best = min(best, fd)
        if best <= level:
            if prev is None:
                return nfe
            return prev[0] + (prev[1] - level) / (prev[1] - best) * (nfe - prev[0])
        prev = (nfe, best)
    return None


def render(cache, n):
    curves = {}
    for key, row in cache.items():
        if row["n"] != n:
            continue
        curves.setdefault(key.split("/")[0], []).append((nfe_of(key, row), row["fd"], key))
    lines = [
        "## Teleportation: Fashion-MNIST U-Net",
        "",
        f"Produced by `/usr/bin/python3 tools/scripts/teleport_table.py --n {n}` on 2 cores (rows kept in "
        "docs/teleport_rows.json). Every row has the same "
        f"{n} class-conditional samples (`configs/default.yaml`, labels 0-9 in equal shares, seed 0: sample i "
        "starts from the same x_T in every row); FD, label consistency, precision and recall by `scorch eval` "
        "against the test set. NFE counts network calls per sample. Teleport rows run dpmpp_2m for the inner "
        "steps from the skip point; `auto` chooses the skip point for that many inner steps from a probe batch "
        "of 16 samples (docs/samplers.md), and its probe calls are added to the NFE as their share of the run "
        f"(calls x 16 / {n}).",
        "",
        "FD by NFE (rows: network calls per sample; a teleport cell is at NFE = inner steps + probe share):",
        "",
    ]
    names = {"dpmpp_2m": "dpmpp_2m", "unipc": "unipc"}
    names.update({k: v[0] for k, v in VARIANTS.items()})
    present = [f for f in ["dpmpp_2m", "unipc"] + list(VARIANTS) if f in curves]
    lines.append("| steps | " + " | ".join(names[f] for f in present) + " |")
    lines.append("|---" * (len(present) + 1) + "|")
    for steps in range(3, 21):
        cells = []
        for f in present:
            row = cache.get(f"{f}/{steps}")
            if row is None or row["n"] != n:
                cells.append("")
                continue
            extra = probe_share(row, n)
            cells.append(f"{row['fd']:.2f}" + (f" (NFE {steps + extra:.2f})" if extra else ""))
        lines.append(f"| {steps} | " + " | ".join(cells) + " |")
    auto = [(k, r) for k, r in sorted(cache.items(), key=lambda kv: (kv[0].split('/')[0], int(kv[0].split('/')[1])))
            if r.get("auto") and r["n"] == n]
    if auto:
        lines += ["", "The skip points `auto` chose (the line it prints on stderr, unless `-q`):", ""]
        lines.append("| row | skip point and estimated errors |")
        lines.append("|---|---|")
        for k, r in auto:
            lines.append(f"| {k} | {r['auto'].replace('teleport: auto: ', '')} |")
    if "dpmpp_2m" in curves:
        plain = [(c[0], c[1]) for c in curves["dpmpp_2m"]]
        lines += ["", "Network calls needed to reach the FD plain dpmpp_2m reaches at each NFE from 5 to 15 "
                  "(read from each curve's running minimum, linear between measured NFE; saving = 1 - calls / "
                  "plain calls):", ""]
        others = [f for f in present if f != "dpmpp_2m"]
        lines.append("| plain NFE | FD level | " + " | ".join(f"{names[f]}: calls (saving)" for f in others) + " |")
        lines.append("|---" * (len(others) + 2) + "|")
        for k in range(5, 16):
            row = cache.get(f"dpmpp_2m/{k}")
            if row is None:
                continue
            level = row["fd"]
            need = calls_to_reach(plain, level)
            cells = []
            for f in others:
                c = calls_to_reach([(x[0], x[1]) for x in curves[f]], level)
                cells.append("not reached" if c is None else f"{c:.2f} ({1 - c / need:+.0%})")
            lines.append(f"| {k} | {level:.2f} (reached at {need:.2f}) | " + " | ".join(cells) + " |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="samples per row (a multiple of 10)")
    ap.add_argument("--only", default="", help="make only the missing rows whose key matches this regex")
    ap.add_argument("--redo", action="store_true", help="remake the selected rows even if kept")
    ap.add_argument("--render", action="store_true", help="only rewrite the doc section from the kept rows")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    args = ap.parse_args()
    scorch = os.path.join(args.build, "bin", "scorch")
    os.chdir(ROOT)
    cache = load_cache(CACHE)
    if not args.render:
        with tempfile.TemporaryDirectory() as tmp:
            files = {"classes": f"{tmp}/classes.safetensors", "gmm": f"{tmp}/gmm50.safetensors"}
            for key in all_keys():
                if args.only and not re.search(args.only, key):
                    continue
                if not args.redo and key in cache and cache[key]["n"] == args.n:
                    continue
                if "class" in key and not os.path.exists(files["classes"]):
                    run([scorch, "fit", "gaussian", "-q", "--data", IDX + "train-images-idx3-ubyte.gz", "--labels",
                         IDX + "train-labels-idx1-ubyte.gz", "--out", files["classes"]])
                if "gmm" in key and not os.path.exists(files["gmm"]):
                    run([scorch, "fit", "gmm", "-q", "--k", "50", "--data", IDX + "train-images-idx3-ubyte.gz",
                         "--out", files["gmm"]])
                cache[key] = make_row(scorch, tmp, key, args.n, files)
                save_cache(cache, CACHE)
                print(key, json.dumps({k: cache[key][k] for k in ("fd", "accuracy", "seconds", "auto")}), flush=True)
    update_benchmarks("teleport", render(cache, args.n))


if __name__ == "__main__":
    main()
