#!/usr/bin/python3
"""Fits the Gaussian N(mu, U diag(lam) U^T) to the Fashion-MNIST training set
(pixels scaled to [-1, 1]) and writes it as a scorch `gaussian` safetensors file.

Usage: /usr/bin/python3 tools/fit_gaussian.py [--rank 256] [--out models/fmnist_gaussian.safetensors]
"""
import argparse
import gzip
import json
import struct

import numpy as np


def read_idx_images(path):
    with gzip.open(path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051:
            raise SystemExit(f"{path}: not an IDX image file")
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(n, rows, cols)


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
    ap.add_argument("--rank", type=int, default=256)
    ap.add_argument("--out", default="models/fmnist_gaussian.safetensors")
    args = ap.parse_args()

    x = read_idx_images(args.data).reshape(-1, 784).astype(np.float64) / 127.5 - 1.0
    mean = x.mean(axis=0)
    cov = np.cov(x, rowvar=False)
    lam, u = np.linalg.eigh(cov)
    order = np.argsort(lam)[::-1][: args.rank]
    lam, u = np.clip(lam[order], 0.0, None), u[:, order]
    explained = lam.sum() / np.trace(cov)
    write_safetensors(args.out, {"mean": mean, "eigenvalues": lam, "eigenvectors": u},
                      {"scorch.type": "gaussian", "scorch.shape": "[1, 28, 28]",
                       "scorch.source": "fashion-mnist train, [-1, 1]", "scorch.rank": str(args.rank)})
    print(f"wrote {args.out}: rank {args.rank}, {explained:.4f} of the variance")


if __name__ == "__main__":
    main()
