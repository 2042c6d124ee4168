#!/usr/bin/python3
"""Load on `scorch serve` (docs/server.md) with `hey` from Debian (apt-get install hey):
1, 4 and 16 (--clients) concurrent clients for SECONDS against the Fashion-MNIST U-Net (the
default config) at batch 1 (every client sends the same request: label 7, seed 3, 10
dpmpp_2m steps, a PNG back), with request batching off (--batch-window-ms 0) and on (the
default window), one server after the other on loopback.

For each server: requests/s, p50/p99 latency, every status code (any non-200 reply or
transport error is a failed request; requests sent but unanswered are lost: hey counts
both), and the server's resident memory, sampled every second from /proc after a
WARMUP-second warm-up load: its growth over the measured run.

Usage: /usr/bin/python3 tools/bench/bench_server.py [--seconds 60] [--clients 1,4,16] [--warmup 10] [--build build]
Prints Markdown table rows for docs/benchmarks.md.
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def hey(url, body, seconds, clients):
    p = subprocess.run(["hey", "-z", f"{seconds}s", "-c", str(clients), "-m", "POST", "-T", "application/json",
                        "-D", body, url], capture_output=True, text=True, check=True)
    out = p.stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    lat = {int(k): float(v) for k, v in re.findall(r"(\d+)% in ([0-9.]+) secs", out)}
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    errors = re.search(r"Error distribution:\n((?:\s+\[\d+\].*\n?)*)", out)
    failed = sum(int(n) for n in re.findall(r"\[(\d+)\]", errors.group(1))) if errors else 0
    return rps, lat, codes, failed, out


def measure(scorch, window, seconds, clients, warmup, body):
    port = free_port()
    server = subprocess.Popen([scorch, "serve", "--port", str(port), "--batch-window-ms", str(window)],
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/health").read()
            break
        except OSError:
            time.sleep(0.1)
    try:
        hey(url + "/v1/generate", body, warmup, clients)
        samples = []
        stop = threading.Event()

        def sample():
            while not stop.wait(1.0):
                samples.append(rss_kb(server.pid))

        t = threading.Thread(target=sample)
        start_rss = rss_kb(server.pid)
        t.start()
        rps, lat, codes, failed, _ = hey(url + "/v1/generate", body, seconds, clients)
        stop.set()
        t.join()
        health = json.load(urllib.request.urlopen(url + "/health"))
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {"rps": rps, "p50": lat.get(50), "p99": lat.get(99), "codes": codes, "failed": failed,
            "rss0": start_rss, "rss_max": max(samples), "rss_end": samples[-1], "health": health}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--build", default="build")
    a = ap.parse_args()
    scorch = os.path.abspath(os.path.join(a.build, "bin", "scorch"))
    body = os.path.join(tempfile.mkdtemp(), "body.json")
    with open(body, "w") as f:
        json.dump({"config": {"batch": 1, "cond": 7, "seed": 3}, "format": "png"}, f)
    print("| clients | batching | requests/s | on / off | p50 latency | p99 latency | replies | failed | RSS after warm-up | RSS max | growth |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for clients in (int(c) for c in a.clients.split(",")):
        base = None
        for name, window in (("off", 0), ("on, 10 ms", 10)):
            r = measure(scorch, window, a.seconds, clients, a.warmup, body)
            print(name, clients, json.dumps(r), file=sys.stderr)
            base = base or r["rps"]
            codes = ", ".join(f"{c}: {n}" for c, n in sorted(r["codes"].items()))
            growth = 100.0 * (r["rss_max"] - r["rss0"]) / r["rss0"]
            print(f"| {clients} | {name} | {r['rps']:.1f} | {r['rps'] / base:.2f}x | {1e3 * r['p50']:.0f} ms | "
                  f"{1e3 * r['p99']:.0f} ms | {codes} | {r['failed']} | {r['rss0'] / 1024:.0f} MiB | "
                  f"{r['rss_max'] / 1024:.0f} MiB | {growth:+.1f}% |", flush=True)

if __name__ == "__main__":
    main()
