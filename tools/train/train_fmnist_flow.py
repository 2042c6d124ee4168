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

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fmnist_data  # noqa: E402
from train_fmnist_unet import train  # noqa: E402


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

    def objective(model, x0, y):
        """The velocity loss at a logit-normal t."""
        t = torch.sigmoid(torch.randn(args.batch))
        z = torch.randn_like(x0)
        tt = t.view(-1, 1, 1, 1)
        return F.mse_loss(model((1 - tt) * x0 + tt * z, 1000.0 * t, y), z - x0)

    train(args, x_all, y_all, objective)

if __name__ == "__main__":
    main()
