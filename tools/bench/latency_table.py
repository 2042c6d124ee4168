#!/usr/bin/python3
"""Small-batch latency, side by side: scorch's sampling loop, the bare TorchScript calls it
makes (both timed in one C++ process by scorch_bench_latency), and the official DPM-Solver's
Python loop (dpm_solver_pytorch.py of LuChengTHU/dpm-solver, kept outside this repository and
passed by path) driving the same TorchScript file: the shipped U-Net, DPM-Solver++(2M),
10 steps, logSNR grid, one class label, the same thread count, warm. Writes the `latency`
section of docs/benchmarks.md.

Usage: /usr/bin/python3 tools/bench/latency_table.py --dpm-solver DIR [--build build]
       [--threads 2] [--repeats 5] [--batches 1,4,16,64,256]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "scripts"))
from update_doc_section import update_benchmarks  # noqa: E402


def official_ms(dpm_dir, batch, threads, repeats):
    """Median ms of the official multistep DPM-Solver++ order 2, 10 steps, on the TorchScript U-Net."""
    sys.path.insert(0, dpm_dir)
    from dpm_solver_pytorch import DPM_Solver, NoiseScheduleVP, model_wrapper  # noqa: E402
    torch.set_num_threads(threads)
    model = torch.jit.load(os.path.join(ROOT, "models", "fmnist_unet.pt")).eval()
    ns = NoiseScheduleVP("discrete", betas=torch.linspace(1e-4, 0.02, 1000))
    labels = torch.full((batch,), 3, dtype=torch.long)
    model_fn = model_wrapper(model, ns, model_type="noise", guidance_type="classifier-free", condition=labels,
                             unconditional_condition=None, guidance_scale=1.0)
    solver = DPM_Solver(model_fn, ns, algorithm_type="dpmsolver++")
    x = torch.randn(batch, 1, 28, 28)
    times = []
    with torch.inference_mode():
        for r in range(repeats + 2):  # two warm runs: the profiling executor optimises the first calls
            start = time.perf_counter()
            solver.sample(x, steps=10, order=2, skip_type="logSNR", method="multistep", lower_order_final=True)
            if r >= 2:
                times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dpm-solver", required=True, help="folder holding dpm_solver_pytorch.py")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", default="1,4,16,64,256")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    out = subprocess.run([os.path.join(args.build, "bin", "scorch_bench_latency"), str(args.threads),
                          str(args.repeats)] + [str(b) for b in batches],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n")[1:]
    rows = {int(l.split()[0]): [float(v) for v in l.split()[1:]] for l in out if l.strip()}
    lines = [f"Produced by `/usr/bin/python3 tools/bench/latency_table.py --dpm-solver DIR --threads {args.threads} --repeats "
             f"{args.repeats}` on {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}: the shipped U-Net, "
             "DPM-Solver++(2M), 10 steps, one class label, warm, median of the repeats, model load excluded. "
             "bare: the 10 TorchScript calls alone (C++, the module as torch::jit::load gives it, whole batch "
             "per call); scorch: `Pipeline::generate` in the same process; official: the DPM-Solver "
             "repository's Python loop (dpm_solver_pytorch.py, multistep, logSNR) on the same TorchScript file; "
             "cold: the first scorch run after loading, with LibTorch's profiling executor (the library keeps it, "
             "the CLI does not); intra_op: scorch with `model.cpu_parallel: intra_op` (LibTorch's threads inside "
             "each call, as the bare calls; round-off then varies with --threads); start-up: `Pipeline::from_config` "
             "(load, freeze, validate by a one-sample dry run), reported apart from sampling.",
             "",
             "| batch | bare calls (ms) | scorch loop (ms) | scorch / bare | scorch cold (ms) | official DPM-Solver (ms) "
             "| official / scorch | scorch intra_op (ms) | intra_op / bare | official / intra_op | start-up (ms) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in batches:
        bare, mine, ratio, cold, intra, intra_ratio, startup = rows[b]
        off = official_ms(args.dpm_solver, b, args.threads, args.repeats)
        lines.append(f"| {b} | {bare:.1f} | {mine:.1f} | {ratio:.2f} | {cold:.1f} | {off:.1f} | {off / mine:.2f} "
                     f"| {intra:.1f} | {intra_ratio:.2f} | {off / intra:.2f} | {startup:.1f} |")
        print(lines[-1], flush=True)
    update_benchmarks("latency", lines)


if __name__ == "__main__":
    main()
