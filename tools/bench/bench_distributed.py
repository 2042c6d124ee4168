#!/usr/bin/python3
"""Images per second of the Fashion-MNIST U-Net (the default config) on this machine:
1 process x 1 thread, 1 process x 2 threads, and torchrun with 2 ranks x 1 thread, side by
side in one script, each run REPEAT times (the median is reported). For each: the wall time
of the whole command (start-up, model load, sampling, writing), the sampling time (the
slowest rank's), and for the distributed run the communication time scorch reports (the
exchange of the rank that finished last: outcomes and the samples).

Usage: /usr/bin/python3 tools/bench/bench_distributed.py [--batch 80] [--steps 10] [--repeat 5] [--build build]
Prints Markdown table rows for docs/benchmarks.md.
"""
import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time


def run(cmd, env):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    sampling = re.findall(r"sampling ([0-9.]+) ms", p.stderr)
    comm = re.findall(r"communication ([0-9.]+) ms", p.stderr)
    return wall, float(sampling[-1]) / 1e3, (float(comm[-1]) / 1e3 if comm else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=80)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--build", default="build")
    a = ap.parse_args()
    scorch = os.path.abspath(os.path.join(a.build, "bin", "scorch"))
    work = tempfile.mkdtemp()
    args = ["generate", "--set", f"batch={a.batch}", "--set", f"sampler.steps={a.steps}", "--set", "output.png=",
            "--set", f"output.npy={work}/x.npy"]
    base = dict(os.environ)
    base.pop("OMP_NUM_THREADS", None)
    setups = [
        ("1 process x 1 thread", [scorch] + args + ["--threads", "1"], base),
        ("1 process x 2 threads", [scorch] + args + ["--threads", "2"], base),
        ("torchrun: 2 ranks x 1 thread",
         ["/usr/bin/torchrun", "--no_python", "--redirects", "1", "--tee", "2", "--nproc_per_node", "2",
          "--master_port", "29671", scorch] + args, base),
    ]
    results = {name: [] for name, _, _ in setups}
    # interleaved, so that a slow moment of the machine hits every setup alike
    for _ in range(a.repeat):
        for name, cmd, env in setups:
            results[name].append(run(cmd, env))
    print(f"| setup (batch {a.batch}, {a.steps} steps, median of {a.repeat}) | wall s | images/s (wall) "
          f"| sampling s | images/s (sampling) | communication ms |")
    print("|---|---|---|---|---|---|")
    for name, _, _ in setups:
        wall = statistics.median(r[0] for r in results[name])
        samp = statistics.median(r[1] for r in results[name])
        comms = [r[2] for r in results[name] if r[2] is not None]
        comm = f"{1e3 * statistics.median(comms):.1f}" if comms else "-"
        print(f"| {name} | {wall:.2f} | {a.batch / wall:.1f} | {samp:.2f} | {a.batch / samp:.1f} | {comm} |")


if __name__ == "__main__":
    main()
