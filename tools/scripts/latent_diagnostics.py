#!/usr/bin/python3
"""Where the text-to-image model's FD comes from (models/README.md, fmnist_prompt_*): every
FD here is `scorch eval` against the Fashion-MNIST test set, on images made from the test
set itself.

1. Decoder sensitivity: the test images encoded, Gaussian noise of standard deviation s
   (in units of the scaled latents, s = 0 the bare round trip) added, decoded.
2. Where the denoiser errs: the test latents noised to t0 along the rectified-flow path,
   x = (1 - t0) z + t0 e, then solved back to t = 0 with 20 Euler steps under their class
   prompts (no guidance) and decoded. t0 = 1 is plain generation; a small t0 tests only
   the low-noise end of the flow.

Usage: /usr/bin/python3 tools/scripts/latent_diagnostics.py [--prefix models/fmnist_prompt]
       [--n 10000] [--build build]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import fmnist_data  # noqa: E402
import prompts  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", default="models/fmnist_prompt")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--build", default="build")
    args = ap.parse_args()
    torch.manual_seed(0)
    with open(os.path.join(ROOT, "configs", "fmnist_prompt.yaml")) as f:
        config = yaml.safe_load(f)
    shift, scale = config["decoder"]["shift_factor"], config["decoder"]["scale_factor"]
    def load(part):
        path = os.path.join(ROOT, f"{args.prefix}_{part}.pt")
        if not os.path.isfile(path):
            print(f"latent_diagnostics.py: --prefix {args.prefix}: no file {path}", file=sys.stderr)
            sys.exit(2)
        return torch.jit.load(path)

    enc, dec, text, flow = load("encoder"), load("decoder"), load("text_encoder"), load("flow")
    x, y = fmnist_data.load("test")
    x, y = x[:args.n], y[:args.n]
    z = (fmnist_data.batched(enc, x) - shift) * scale
    scorch = os.path.join(ROOT, args.build, "bin", "scorch")

    def fd(latents):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "s.npy")
            np.save(path, fmnist_data.batched(dec, latents / scale + shift).numpy())
            out = subprocess.run([scorch, "eval", "--json", "--samples", path], check=True, capture_output=True,
                                 text=True, cwd=ROOT).stdout
            return json.loads(out)["fd"]

    for s in [0.0, 0.05, 0.1, 0.2, 0.3]:
        print(f"decoder: latent noise {s}: FD {fd(z + s * torch.randn_like(z)):.2f}", flush=True)
    tokens = torch.tensor([prompts.tokenize(prompts.CLASS_PROMPTS[int(c)]) for c in y])
    context = fmnist_data.batched(text, tokens)
    for t0 in [0.3, 0.6, 0.85, 1.0]:
        xt = (1 - t0) * z + t0 * torch.randn_like(z)
        ts = torch.linspace(t0, 0.0, 21)
        for k in range(20):
            with torch.no_grad():
                v = torch.cat([flow(xt[i:i + 1000], 1000 * ts[k].expand(xt[i:i + 1000].shape[0]), context[i:i + 1000])
                               for i in range(0, xt.shape[0], 1000)])
            xt = xt + (ts[k + 1] - ts[k]) * v
        print(f"denoiser: from t0 = {t0}, 20 Euler steps: FD {fd(xt):.2f}", flush=True)


if __name__ == "__main__":
    main()
