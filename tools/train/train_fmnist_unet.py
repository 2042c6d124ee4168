#!/usr/bin/python3
"""Trains the class-conditional noise-prediction U-Net on Fashion-MNIST and exports it
as TorchScript with the contract signature forward(x, t, cond).

DDPM (Ho et al. 2020) discrete schedule: linear betas 1e-4 .. 0.02 over 1000 steps;
the network gets the DDPM index t in 0..999 (model.time_input: index) and a class label
in 0..9, or 10 (the null label) with probability 0.1 for classifier-free guidance.

Usage: /usr/bin/python3 tools/train/train_fmnist_unet.py [--iters N] [--out models/fmnist_unet.pt]
       /usr/bin/python3 tools/train/train_fmnist_unet.py --reexport models/fmnist_unet.pt --out FILE
The second form trains nothing: it loads the weights of an earlier export into this file's
UNet and exports it again, so a change to the forward code reaches the shipped model.
"""
import argparse
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fmnist_data  # noqa: E402

NULL_LABEL = 10


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of the (float) DDPM index (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float().unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, cout)
        self.norm2 = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(e).unsqueeze(-1).unsqueeze(-1)
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """28x28 -> 14x14 -> 7x7 and back, one residual block per level and direction."""

    def __init__(self, ch=32, emb=128, num_classes=11):
        super().__init__()
        self.emb_dim = emb
        self.time_mlp = nn.Sequential(nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label_emb = nn.Embedding(num_classes, emb)
        self.inp = nn.Conv2d(1, ch, 3, padding=1)
        self.down1 = ResBlock(ch, ch, emb)
        self.pool1 = nn.Conv2d(ch, ch, 3, stride=2, padding=1)
        self.down2 = ResBlock(ch, 2 * ch, emb)
        self.pool2 = nn.Conv2d(2 * ch, 2 * ch, 3, stride=2, padding=1)
        self.mid1 = ResBlock(2 * ch, 2 * ch, emb)
        self.mid2 = ResBlock(2 * ch, 2 * ch, emb)
        self.up2 = ResBlock(4 * ch, 2 * ch, emb)
        self.up1 = ResBlock(3 * ch, ch, emb)
        self.out_norm = nn.GroupNorm(8, ch)
        self.out = nn.Conv2d(ch, 1, 3, padding=1)

    def forward(self, x, t, cond):
        # The sinusoids of indices up to 999 need float32; the embedding then follows x's
        # dtype, so the network also runs in bfloat16 / float16 (model.dtype).
        e = self.time_mlp(timestep_embedding(t, self.emb_dim).to(x.dtype)) + self.label_emb(cond)
        h0 = self.inp(x)
        h1 = self.down1(h0, e)                   # 28
        h2 = self.down2(self.pool1(h1), e)       # 14
        h = self.pool2(h2)                       # 7
        h = self.mid2(self.mid1(h, e), e)
        h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        h = self.up2(torch.cat([h, h2], 1), e)   # 14
        h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        h = self.up1(torch.cat([h, h1], 1), e)   # 28
        return self.out(F.silu(self.out_norm(h)))


def reexport(src, out, ch):
    weights = torch.jit.load(src).state_dict()
    model = UNet(ch=ch)
    model.load_state_dict(weights)
    torch.jit.save(torch.jit.script(model.eval()), out)
    print(f"re-exported the weights of {src} to {out} ({os.path.getsize(out)} bytes)", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="models/fmnist_unet.pt")
    ap.add_argument("--reexport", metavar="FILE", help="export FILE's weights with this file's code; no training")
    args = ap.parse_args()
    if args.reexport:
        reexport(args.reexport, args.out, args.ch)
        return
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    x_all, y_all = fmnist_data.load("train")
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0).float()

    def objective(model, x0, y):
        """The eps-prediction loss at a uniformly drawn DDPM index."""
        t = torch.randint(0, 1000, (args.batch,))
        a = abar[t].view(-1, 1, 1, 1)
        eps = torch.randn_like(x0)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        return F.mse_loss(model(xt, t.float(), y), eps)

    train(args, x_all, y_all, objective)


def train(args, x_all, y_all, objective):
    """The training loop both Fashion-MNIST denoisers share (train_fmnist_flow.py too): batches
    with 10% label dropout, objective(model, x0, labels) -> loss, AdamW with a one-cycle rate,
    gradient clipping, EMA weights (decay 0.999), then the EMA model exported as TorchScript."""
    model = UNet(ch=args.ch)
    ema = UNet(ch=args.ch)
    ema.load_state_dict(model.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.iters, pct_start=0.05)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"params {nparams}, iters {args.iters}, batch {args.batch}", flush=True)

    start, running = time.time(), 0.0
    for it in range(1, args.iters + 1):
        idx = torch.randint(0, x_all.shape[0], (args.batch,))
        x0, y = x_all[idx], y_all[idx].clone()
        y[torch.rand(args.batch) < 0.1] = NULL_LABEL
        loss = objective(model, x0, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            decay = min(0.999, (1 + it) / (10 + it))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(decay).add_(pm, alpha=1 - decay)
        running = 0.98 * running + 0.02 * loss.item() if it > 1 else loss.item()
        if it % 100 == 0 or it == args.iters:
            print(f"iter {it} loss {running:.4f} elapsed {time.time() - start:.0f}s", flush=True)

    torch.jit.save(torch.jit.script(ema.eval()), args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes), {time.time() - start:.0f}s", flush=True)

if __name__ == "__main__":
    main()
