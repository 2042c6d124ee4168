#!/usr/bin/python3
"""Trains the evaluation classifier on the Fashion-MNIST training set and exports it as
TorchScript: forward(x) -> logits [B, 10] and features(x) -> the penultimate layer
[B, 128], for x in [-1, 1] of shape [B, 1, 28, 28]. `scorch eval` uses the features for
the Frechet distance and k-NN precision/recall, and the logits for label consistency.

Usage: /usr/bin/python3 tools/train/train_fmnist_classifier.py [--epochs 6] [--out models/fmnist_classifier.pt]
"""
import argparse
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fmnist_data  # noqa: E402


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(128)
        self.fc = nn.Linear(128 * 3 * 3, 128)
        self.head = nn.Linear(128, 10)
        self.drop = nn.Dropout(0.3)

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)   # 14
        h = F.max_pool2d(F.relu(self.bn2(self.conv2(h))), 2)   # 7
        h = F.max_pool2d(F.relu(self.bn3(self.conv3(h))), 2)   # 3
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="models/fmnist_classifier.pt")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    x, y = fmnist_data.load("train")
    xt, yt = fmnist_data.load("test")
    model = Classifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = args.epochs * (x.shape[0] // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(x.shape[0])
        for i in range(x.shape[0] // args.batch):
            idx = perm[i * args.batch:(i + 1) * args.batch]
            xb = x[idx]
            # light augmentation: horizontal flips keep the garment class
            flip = torch.rand(xb.shape[0]) < 0.5
            xb[flip] = xb[flip].flip(-1)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = sum((model(xt[i:i + 1000]).argmax(1) == yt[i:i + 1000]).sum().item()
                      for i in range(0, xt.shape[0], 1000)) / xt.shape[0]
        print(f"epoch {epoch + 1} loss {loss.item():.4f} test accuracy {acc:.4f} elapsed {time.time() - start:.0f}s",
              flush=True)
    model.eval()
    torch.jit.save(torch.jit.script(model), args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes), test accuracy {acc:.4f}", flush=True)


if __name__ == "__main__":
    main()
