#!/usr/bin/python3
"""Regenerates the sample-quality table of docs/benchmarks.md and the sample grids of
docs/gallery.md for the Fashion-MNIST model, with `scorch generate` and `scorch eval`.

Rows: every sampler at NFE 5, 10, 20, 50, 1000-step DDIM (the reference row), the
rectified-flow model of configs/fmnist_flow.yaml with euler, heun, dpmpp_2m and unipc at
the same NFE (rows "flow: ...", --flow-samplers), and two
anchors measured the same way: the training set against the test set (the floor) and
samples of the analytic Gaussian of the data (a ceiling). Columns: FD in the evaluation
classifier's feature space, label consistency, k-NN precision and recall, against the
Fashion-MNIST test set.

Every measured row is kept in docs/quality_rows.json (its sample count, metrics and wall
time), so the table can be built over several runs: a run measures only the rows whose kept
sample count is below --n (the anchors first, then the samplers in --samplers order, the
1000-step reference last), starts no new row after --max-minutes, and always rewrites the
table from everything kept (each row says its sample count).

The 1000-step reference (about 2.5 hours at 10k samples on 2 cores) is longer than one
session, so it is made a chunk of 1000 samples at a time (chunk i with seed i), each chunk
kept in docs/quality_chunks/ (uint8 images and labels, xz: about 0.5 MB) until the row has
all of its chunks; then the row is measured on their concatenation and the chunks are
removed. Quantising to uint8 moves FD by about 0.001 (1000 dpmpp_2m samples: 14.849 float,
14.850 uint8). `--samplers ""` runs only the anchors and the reference.

Usage: /usr/bin/python3 tools/scripts/quality_table.py [--n 10000] [--samplers ddim,dpmpp_2m,...]
                                                [--flow-samplers euler,...] [--nfes 10,20] [--max-minutes M] [--build build]
"""
import argparse
import io
import json
import lzma
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from update_doc_section import update_benchmarks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLERS = ["ddim", "euler", "heun", "dpmpp_2m", "dpmpp_3m", "dpmpp_2s", "dpm_solver_3s", "unipc",
            "dpmpp_2m_sde", "dpmpp_3m_sde", "euler_ancestral"]
# The samplers added later, measured at 10 and 20 NFE (--nfes): listed after the first ones.
MORE_SAMPLERS = ["lms", "ipndm", "deis", "res_multistep", "dpm_2", "er_sde", "sa_solver", "ddpm", "dpm_2_ancestral",
                 "dpmpp_2s_ancestral", "dpmpp_sde", "res_multistep_ancestral"]
FLOW_SAMPLERS = ["euler", "heun", "dpmpp_2m", "unipc"]
FLOW_CONFIG = "configs/fmnist_flow.yaml"
NFES = [5, 10, 20, 50]
NFE_PER_STEP = {"heun": 2, "dpm_2": 2, "dpm_2_ancestral": 2, "dpmpp_2s_ancestral": 2, "dpmpp_sde": 2}
CHUNKED = {"ddim1000": 1000}  # rows made in chunks of this many samples, kept between runs
CHUNKS = os.path.join(ROOT, "docs", "quality_chunks")


def run(cmd):
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr}")
    return res.stdout


def run_generate(scorch, config, sets):
    """`scorch generate --config CONFIG --set S ...`; exits with its message on failure,
    else returns (stderr, seconds): the tables read the run's notes from stderr."""
    cmd = [scorch, "generate", "--config", config]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr}")
    return res.stderr, time.time() - t0


def generate(scorch, out_dir, name, n, sets, config="configs/default.yaml"):
    npy, labels = os.path.join(out_dir, name + ".npy"), os.path.join(out_dir, name + ".labels.npy")
    cmd = [scorch, "generate", "-q", "--config", config, "--set", f"batch={n}", "--set", "output.png=",
           "--set", f"output.npy={npy}"]
    for s in sets:
        cmd += ["--set", s]
    if config in ("configs/default.yaml", FLOW_CONFIG):
        cmd += ["--set", f"output.labels={labels}"]
    t0 = time.time()
    run(cmd)
    return npy, (labels if os.path.exists(labels) else None), time.time() - t0


def chunked(scorch, tmp, key, n, size, sets, config, out_of_time):
    """Makes the chunks of a chunked row that are not kept yet (while out_of_time() is false);
    returns (samples .npy, labels .npy, seconds) once all n // size exist, else None."""
    os.makedirs(CHUNKS, exist_ok=True)
    parts = []
    for i in range(n // size):
        path = os.path.join(CHUNKS, f"{key}.{i}.npz.xz")
        if not os.path.exists(path):
            if out_of_time():
                print(f"--max-minutes reached; {key} has {i} of {n // size} chunks", flush=True)
                return None
            npy, labels, sec = generate(scorch, tmp, key, size, sets + [f"seed={i}"], config=config)
            x = np.load(npy)
            u = np.clip(np.rint((x + 1) * 127.5), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            np.savez(buf, images=u, labels=np.load(labels), seconds=np.float64(sec))
            with open(path + ".tmp", "wb") as f:
                f.write(lzma.compress(buf.getvalue(), preset=9))
            os.replace(path + ".tmp", path)
            print(f"{key}: chunk {i + 1} of {n // size} ({sec:.0f} s)", flush=True)
        with open(path, "rb") as f:
            parts.append(np.load(io.BytesIO(lzma.decompress(f.read()))))
    npy, labels = os.path.join(tmp, key + ".npy"), os.path.join(tmp, key + ".labels.npy")
    np.save(npy, np.concatenate([p["images"] for p in parts]).astype(np.float32) / 127.5 - 1)
    np.save(labels, np.concatenate([p["labels"] for p in parts]))
    return npy, labels, float(sum(p["seconds"] for p in parts))


def remove_chunks(key):
    for name in os.listdir(CHUNKS) if os.path.isdir(CHUNKS) else []:
        if name.startswith(key + "."):
            os.remove(os.path.join(CHUNKS, name))


def evaluate(scorch, npy, labels):
    cmd = [scorch, "eval", "--json", "--samples", npy]
    if labels:
        cmd += ["--labels", labels]
    return json.loads(run(cmd))


CACHE = os.path.join(ROOT, "docs", "quality_rows.json")


def row(label, nfe, n, r, seconds):
    acc = "-" if r["accuracy"] < 0 else f"{r['accuracy']:.3f}"
    return (f"| {label} | {nfe} | {n} | {r['fd']:.2f} | {acc} | {r['precision']:.3f} | {r['recall']:.3f} | "
            f"{seconds:.0f} |")


def load_cache(path=CACHE):
    """Rows kept from earlier runs (a JSON object), or {}."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def save_cache(cache, path=CACHE):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cache, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="samples per row (a multiple of 10)")
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--flow-samplers", default=",".join(FLOW_SAMPLERS), help="samplers of the flow model's rows")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--no-reference", action="store_true", help="skip the 1000-step DDIM row")
    ap.add_argument("--max-minutes", type=float, default=0, help="start no new row after this many minutes (0: no limit)")
    ap.add_argument("--nfes", default=",".join(map(str, NFES)), help="the NFE columns this run measures")
    args = ap.parse_args()
    scorch = os.path.join(args.build, "bin", "scorch")
    os.chdir(ROOT)
    sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
    import fmnist_data  # noqa: E402

    # The rows in table order: (key, label, NFE, how to make the samples, nominal NFE).
    rows = [("floor", "training set (floor)", "-", None, 0),
            ("gaussian", "analytic Gaussian (ceiling)", 100, ("configs/fmnist_gaussian.yaml", "heun", 50), 0)]
    if not args.no_reference:
        rows.append(("ddim1000", "ddim, 1000 steps (reference)", 1000, ("configs/default.yaml", "ddim", 1000), 1000))
    # The table lists every sampler (kept rows only); this run measures those in --samplers.
    order = [x for x in args.samplers.split(",") if x]
    nfes = [int(x) for x in args.nfes.split(",") if x]
    for sampler in SAMPLERS + MORE_SAMPLERS + [x for x in order if x not in SAMPLERS + MORE_SAMPLERS]:
        for nfe in NFES:
            steps = nfe // NFE_PER_STEP.get(sampler, 1)
            if steps >= 2:
                rows.append((f"{sampler}{nfe}", sampler, steps * NFE_PER_STEP.get(sampler, 1),
                             ("configs/default.yaml", sampler, steps), nfe))
    flow_order = [x for x in args.flow_samplers.split(",") if x]
    for sampler in FLOW_SAMPLERS + [x for x in flow_order if x not in FLOW_SAMPLERS]:
        for nfe in NFES:
            steps = nfe // NFE_PER_STEP.get(sampler, 1)
            if steps >= 2:
                # heun's last step, into t = 0, is Euler: one NFE less
                calls = steps * NFE_PER_STEP.get(sampler, 1) - (1 if sampler == "heun" else 0)
                rows.append((f"flow_{sampler}{nfe}", f"flow: {sampler}", calls, (FLOW_CONFIG, sampler, steps), nfe))
    cache = load_cache()
    start = time.time()
    def priority(r):  # anchors, the samplers in --samplers order, the flow rows, the 1000-step reference last
        sampler = r[3][1] if r[3] and r[0] != "gaussian" else ""
        if r[0].startswith("flow_"):
            return (r[0] == "ddim1000", len(order) + flow_order.index(sampler))
        return (r[0] == "ddim1000", order.index(sampler) if sampler in order else -1)
    def wanted(r):
        if r[0].startswith("flow_"):
            return r[3][1] in flow_order and r[4] in nfes
        return r[3] is None or r[0] in ("gaussian", "ddim1000") or (r[3][1] in order and r[4] in nfes)
    selected = [r for r in rows if wanted(r)]
    pending = sorted((r for r in selected if cache.get(r[0], {}).get("n", 0) < args.n), key=priority)
    def out_of_time():
        return args.max_minutes and time.time() - start > 60 * args.max_minutes
    with tempfile.TemporaryDirectory() as tmp:
        for key, label, nfe, how, _ in pending:
            if key not in CHUNKED and out_of_time():
                print(f"--max-minutes reached; {key} and later rows keep their earlier measurement", flush=True)
                break
            if how is None:
                x, y = fmnist_data.load("train")
                np.save(os.path.join(tmp, "train.npy"), x[: args.n].numpy())
                np.save(os.path.join(tmp, "train.labels.npy"), y[: args.n].numpy())
                r, sec = evaluate(scorch, os.path.join(tmp, "train.npy"), os.path.join(tmp, "train.labels.npy")), 0
            else:
                config, sampler, steps = how
                sets = [f"sampler.name={sampler}", f"sampler.steps={steps}"]
                if args.n > CHUNKED.get(key, args.n) and args.n % CHUNKED[key] == 0:
                    made = chunked(scorch, tmp, key, args.n, CHUNKED[key], sets, config, out_of_time)
                    if made is None:
                        break
                    npy, labels, sec = made
                else:
                    npy, labels, sec = generate(scorch, tmp, key, args.n, sets, config=config)
                r = evaluate(scorch, npy, labels)
            cache[key] = {"n": args.n, "seconds": sec, "date": time.strftime("%Y-%m-%d", time.gmtime()), **r}
            save_cache(cache)
            if key in CHUNKED:
                remove_chunks(key)
            print(row(label, nfe, args.n, r, sec), flush=True)

    counts = sorted({cache[r[0]]["n"] for r in rows if r[0] in cache})
    lines = [
        "## Sample quality: Fashion-MNIST U-Net",
        "",
        f"Produced by `/usr/bin/python3 tools/scripts/quality_table.py --n {args.n}` on {os.cpu_count()} cores "
        f"(rows kept in `docs/quality_rows.json`; sample counts here: {', '.join(map(str, counts))}). "
        "Class-conditional samples (labels 0-9 in equal shares, no guidance), `configs/default.yaml`'s model and "
        "schedule (the rows \"flow: ...\": `configs/fmnist_flow.yaml`'s rectified-flow model on each sampler's default flow grid), seed 0 (the chunked reference: seed i for its chunk i of 1000); metrics by `scorch eval` against the 10k test images in the feature space of "
        "`models/fmnist_classifier.pt`. n: samples in the row. Seconds: wall time of `scorch generate`.",
        "",
        "| samples | NFE | n | FD | label consistency | precision | recall | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label, nfe, _, _ in rows:
        if key in cache:
            c = cache[key]
            lines.append(row(label, nfe, c["n"], c, c["seconds"]))
    update_benchmarks("quality", lines)


if __name__ == "__main__":
    main()
