#!/usr/bin/python3
"""Trains the class-conditional rectified-flow U-Net on Fashion-MNIST (velocity prediction)
and exports it as TorchScript with the contract signature forward(x, t, cond).

Rectified flow as SD3 trains it (Esser et al. 2024): x_t = (1 - t) x_0 + t z, the network
predicts the velocity v = z - x_0 (schedule.type: flow, model.prediction: velocity), t is
drawn logit-normal (t = sigmoid(n), n ~ N(0, 1), SD3's default), and the network gets
1000 t (model.time_input: index under flow, SD3's convention). Labels 0..9, or 10 (the null
label) with probability 0.1 for classifier-free guidance. Same U-Net as the eps model.

Usage: /usr/bin/python3 tools/train/train_fmnist_flow.py [--iters N] [--out models/fmnist_flow.pt]
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fmnist_data  # noqa: E402
from train_fmnist_unet import NULL_LABEL, UNet  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="models/fmnist_flow.pt")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    x_all, y_all = fmnist_data.load("train")
    model = UNet(ch=args.ch)
    ema = UNet(ch=args.ch)
    ema.load_state_dict(model.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.iters, pct_start=0.05)
    print(f"params {sum(p.numel() for p in model.parameters())}, iters {args.iters}, batch {args.batch}", flush=True)

    start, running = time.time(), 0.0
    for it in range(1, args.iters + 1):
        idx = torch.randint(0, x_all.shape[0], (args.batch,))
        x0, y = x_all[idx], y_all[idx].clone()
        y[torch.rand(args.batch) < 0.1] = NULL_LABEL
        t = torch.sigmoid(torch.randn(args.batch))  # logit-normal(0, 1)
        z = torch.randn_like(x0)
        tt = t.view(-1, 1, 1, 1)
        xt = (1 - tt) * x0 + tt * z
        loss = F.mse_loss(model(xt, 1000.0 * t, y), z - x0)
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
