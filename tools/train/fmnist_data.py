"""Fashion-MNIST from Debian's dataset-fashion-mnist (IDX .gz files), scaled to [-1, 1]."""
import gzip
import struct

import numpy as np
import torch

ROOT = "/usr/share/datasets/fashion-mnist"


def _read(path, magic_expected):
    with gzip.open(path, "rb") as f:
        magic = struct.unpack(">I", f.read(4))[0]
        if magic != magic_expected:
            raise SystemExit(f"{path}: not an IDX file (magic {magic})")
        if magic == 2051:
            n, rows, cols = struct.unpack(">III", f.read(12))
            return np.frombuffer(f.read(), dtype=np.uint8).reshape(n, rows, cols)
        n = struct.unpack(">I", f.read(4))[0]
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(n)


def load(split="train"):
    """Returns (images float32 [N, 1, 28, 28] in [-1, 1], labels int64 [N])."""
    prefix = "train" if split == "train" else "t10k"
    x = _read(f"{ROOT}/{prefix}-images-idx3-ubyte.gz", 2051)
    y = _read(f"{ROOT}/{prefix}-labels-idx1-ubyte.gz", 2049)
    x = torch.from_numpy(x.astype(np.float32) / 127.5 - 1.0).unsqueeze(1)
    return x, torch.from_numpy(y.astype(np.int64))


def batched(fn, x, size=1000):
    """fn over x in chunks of `size` rows without gradients (a network over the whole set at
    once would hold every activation in memory)."""
    with torch.no_grad():
        return torch.cat([fn(x[i:i + size]) for i in range(0, x.shape[0], size)])
