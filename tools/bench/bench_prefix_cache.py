#!/usr/bin/python3
"""Prefix-cached semi-autoregressive blocks against whole-sequence calls, side by side.

Writes a randomly initialised block-causal transformer (BD3-LM style: a position attends to
its own block and the blocks before it; pre-norm layers; no claim on quality) to a temporary
folder as TorchScript with the prefix-cache methods scorch looks for (prefix_cache,
forward_block, block_size), then times `scorch generate` with sampler.kv_cache true and
false, alternating, at every block count, and checks that both draw the same tokens.

Usage: /usr/bin/python3 tools/bench/bench_prefix_cache.py [--build build] [--length 128]
       [--block 16] [--width 256] [--layers 4] [--batch 16] [--steps 64] [--repeat 3]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
from update_doc_section import update_benchmarks  # noqa: E402

V = 64  # vocabulary; the mask token is V


class Layer(torch.nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.proj = torch.nn.Linear(d, d)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(d, 4 * d), torch.nn.GELU(), torch.nn.Linear(4 * d, d))

    def split(self, x):
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, h, k_prev, v_prev, allowed):
        """h [B, n, d]; k_prev / v_prev [B, heads, P, dh] of the positions before; allowed [n, P + n]."""
        q, k, v = self.qkv(self.norm1(h)).chunk(3, -1)
        k = torch.cat([k_prev, self.split(k)], 2)
        v = torch.cat([v_prev, self.split(v)], 2)
        a = (self.split(q) @ k.transpose(2, 3)) / float(q.size(-1) // self.heads) ** 0.5
        w = torch.softmax(a.masked_fill(~allowed, float("-inf")), -1)
        out = (w @ v).transpose(1, 2).reshape(h.shape)
        h = h + self.proj(out)
        return h + self.mlp(self.norm2(h)), k, v


class BlockCausal(torch.nn.Module):
    block_size: int

    def __init__(self, length, block, d, layers, heads=4):
        super().__init__()
        self.block_size = block
        self.tok = torch.nn.Embedding(V + 1, d)
        self.pos = torch.nn.Parameter(torch.randn(length, d) * 0.02)
        self.layers = torch.nn.ModuleList([Layer(d, heads) for _ in range(layers)])
        self.norm = torch.nn.LayerNorm(d)
        self.head = torch.nn.Linear(d, V)
        self.heads = heads
        self.dh = d // heads

    def empty(self, b: int):
        return torch.zeros(b, self.heads, 0, self.dh)

    def run(self, tokens, start: int, cache: torch.Tensor, allowed):
        """cache [B, layers, 2, heads, P, dh]; returns the hidden states and the new keys and values."""
        h = self.tok(tokens) + self.pos[start:start + tokens.size(1)]
        ks, vs = [], []
        for i, layer in enumerate(self.layers):
            h, k, v = layer(h, cache[:, i, 0], cache[:, i, 1], allowed)
            ks.append(k)
            vs.append(v)
        return h, torch.stack([torch.stack(ks, 1), torch.stack(vs, 1)], 2)

    def allowed(self, start: int, queries: int, keys: int):
        """query i (position start + i) sees key j if j's block is not after i's"""
        q = (torch.arange(queries) + start) // self.block_size
        return q.view(-1, 1) >= (torch.arange(keys) // self.block_size).view(1, -1)

    def forward(self, tokens, t):
        n = tokens.size(1)
        allowed = self.allowed(0, n, n)
        cache = torch.zeros(tokens.size(0), len(self.layers), 2, self.heads, 0, self.dh)
        h, _ = self.run(tokens, 0, cache, allowed)
        return torch.log_softmax(self.head(self.norm(h)), -1)

    @torch.jit.export
    def prefix_cache(self, prefix):
        n = prefix.size(1)
        allowed = self.allowed(0, n, n)
        cache = torch.zeros(prefix.size(0), len(self.layers), 2, self.heads, 0, self.dh)
        _, kv = self.run(prefix, 0, cache, allowed)
        return kv

    @torch.jit.export
    def forward_block(self, block, t, cache, start: int):
        allowed = self.allowed(start, block.size(1), cache.size(4) + block.size(1))
        h, _ = self.run(block, start, cache, allowed)
        return torch.log_softmax(self.head(self.norm(h)), -1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    scorch = os.path.join(root, args.build, "bin", "scorch")
    torch.manual_seed(0)
    model = BlockCausal(args.length, args.block, args.width, args.layers).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "block_causal.pt")
        torch.jit.script(model).save(path)
        base = [scorch, "generate", "--config", os.path.join(root, "configs", "words.yaml"), "--set", f"model.path={path}",
                "--set", f"model.vocab={V}", "--set", f"model.length={args.length}", "--set", f"model.mask_id={V}",
                "--set", "model.pad=", "--set", f"batch={args.batch}", "--set", "sampler.name=tweedie",
                "--set", f"sampler.steps={args.steps}"]
        lines = ["## Prefix cache", "",
                 f"Produced by `/usr/bin/python3 tools/bench/bench_prefix_cache.py --length {args.length} --block "
                 f"{args.block} --width {args.width} --layers {args.layers} --batch {args.batch} --steps {args.steps} "
                 f"--repeat {args.repeat}` on {os.cpu_count()} cores, {time.strftime('%Y-%m-%d', time.gmtime())}: a "
                 f"random block-causal transformer (L = {args.length}, attention blocks of {args.block}, width "
                 f"{args.width}, {args.layers} layers, V = {V}; written by the script, not shipped), tweedie, "
                 f"{args.steps} steps, batch {args.batch}, float32; sampling time as scorch reports it, median of "
                 f"{args.repeat} alternating runs per cell. Same tokens: both runs drew identical tokens (float32 "
                 "round-off of the two call shapes may flip a rare draw).", "",
                 "| sampler blocks | kv_cache false (ms) | kv_cache true (ms) | true / false | positions per sequence "
                 "(false, true) | same tokens |",
                 "|---|---|---|---|---|---|"]
        for line in lines:
            print(line)
        for blocks in [args.length // args.block // 4, args.length // args.block // 2, args.length // args.block]:
            if blocks < 2 or args.steps < blocks:
                continue
            times = {True: [], False: []}
            positions, tokens = {}, {}
            for _ in range(args.repeat):
                for cache in (False, True):
                    out = os.path.join(tmp, f"t{int(cache)}.npy")
                    res = subprocess.run(base + ["--set", f"sampler.blocks={blocks}", "--set",
                                                 f"sampler.kv_cache={'true' if cache else 'false'}",
                                                 "--set", f"output.npy={out}"], capture_output=True, text=True)
                    if res.returncode != 0:
                        sys.exit(res.stderr)
                    times[cache].append(float(re.search(r"sampling ([0-9.]+) ms", res.stderr).group(1)))
                    m = re.search(r"([0-9.]+) positions evaluated", res.stderr)
                    calls = float(re.search(r"([0-9.]+) model calls per sequence", res.stderr).group(1))
                    positions[cache] = float(m.group(1)) if m else calls * args.length
                    tokens[cache] = np.load(out)
            f, t = statistics.median(times[False]), statistics.median(times[True])
            same = "yes" if np.array_equal(tokens[False], tokens[True]) else "no"
            lines.append(f"| {blocks} | {f:.0f} | {t:.0f} | {t / f:.2f} | {positions[False]:.0f}, "
                         f"{positions[True]:.0f} | {same} |")
            print(lines[-1], flush=True)
    update_benchmarks("prefix_cache", lines)


if __name__ == "__main__":
    main()
