#!/usr/bin/python3
"""DPM-Solver-v3 on the Fashion-MNIST models: for the eps U-Net (configs/default.yaml) and,
with --flow, the rectified-flow model (configs/fmnist_flow.yaml), computes the model's EMS
with `scorch ems` (the time is reported), then measures dpmpp_2m, dpmpp_3m, unipc and v3
(trivial statistics, the model's at order 2 and 3) at every NFE of --nfes on the same n
samples (labels 0-9 in equal shares, seed 0), with `scorch eval` (FD, label consistency,
k-NN precision and recall against the 10k test images), and writes the table as the "v3"
(or "v3flow") section of docs/benchmarks.md.

Usage: /usr/bin/python3 tools/scripts/v3_table.py [--flow] [--n 2000] [--nfes 5,6,8,10]
                                             [--ems-samples 500] [--ems-grid 32] [--build build]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from update_doc_section import update_benchmarks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(cmd):
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr}")
    return res.stdout, res.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--nfes", default="5,6,8,10")
    ap.add_argument("--ems-samples", type=int, default=500)  # a multiple of 10: cond: rows
    ap.add_argument("--ems-grid", type=int, default=32)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--flow", action="store_true", help="the rectified-flow model instead of the U-Net")
    a = ap.parse_args()
    config = "configs/fmnist_flow.yaml" if a.flow else "configs/default.yaml"
    section, title = ("v3flow", "rectified-flow model") if a.flow else ("v3", "U-Net")
    scorch = os.path.join(a.build, "bin", "scorch")
    os.chdir(ROOT)
    nfes = [int(x) for x in a.nfes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        stats = os.path.join(tmp, "unet_ems.safetensors")
        t0 = time.time()
        # the statistics over the range of the sampler's grid (the default config's t range)
        run([scorch, "ems", "-q", "--config", config, "--out", stats, "--samples", str(a.ems_samples), "--grid", str(a.ems_grid),
             "--set", "cond=rows"])
        ems_seconds = time.time() - t0
        samplers = [("dpmpp_2m", []), ("dpmpp_3m", []), ("unipc", []),
                    ("dpm_solver_v3 (trivial statistics)", ["sampler.name=dpm_solver_v3", "sampler.degenerated=true"]),
                    ("dpm_solver_v3", ["sampler.name=dpm_solver_v3", f"sampler.stats={stats}"]),
                    ("dpm_solver_v3 order 3", ["sampler.name=dpm_solver_v3", f"sampler.stats={stats}", "sampler.order=3"])]
        lines = [f"## DPM-Solver-v3: Fashion-MNIST {title}", "",
                 f"Produced by `/usr/bin/python3 tools/scripts/v3_table.py{' --flow' if a.flow else ''} --n {a.n} "
                 f"--ems-samples {a.ems_samples} --ems-grid {a.ems_grid}` on {os.cpu_count()} cores. EMS: `scorch ems` "
                 f"on `{config}` "
                 f"({a.ems_samples} samples the config generates, {a.ems_grid + 1} grid points over its sampler's "
                 f"lambda range, float64): {ems_seconds:.0f} s. Rows: {a.n} class-conditional samples per row (labels "
                 "0-9 in equal shares, seed 0, no guidance), metrics by `scorch eval` against the 10k test images.", "",
                 "| sampler | NFE | n | FD | label consistency | precision | recall | seconds |",
                 "|---|---|---|---|---|---|---|---|"]
        for label, sets in samplers:
            for nfe in nfes:
                npy, labels = os.path.join(tmp, "s.npy"), os.path.join(tmp, "s.labels.npy")
                cmd = [scorch, "generate", "-q", "--config", config, "--set", f"batch={a.n}", "--set", "output.png=", "--set",
                       f"output.npy={npy}", "--set", f"output.labels={labels}", "--set", f"sampler.steps={nfe}"]
                name = label.split(" ")[0]
                if not any(s.startswith("sampler.name=") for s in sets):
                    cmd += ["--set", f"sampler.name={name}"]
                for s in sets:
                    cmd += ["--set", s]
                t1 = time.time()
                run(cmd)
                seconds = time.time() - t1
                r = json.loads(run([scorch, "eval", "--json", "--samples", npy, "--labels", labels])[0])
                line = (f"| {label} | {nfe} | {a.n} | {r['fd']:.2f} | {r['accuracy']:.3f} | {r['precision']:.3f} | "
                        f"{r['recall']:.3f} | {seconds:.0f} |")
                print(line, flush=True)
                lines.append(line)
    update_benchmarks(section, lines)


if __name__ == "__main__":
    main()
