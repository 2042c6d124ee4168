#!/usr/bin/python3
"""Classifier-free guidance and its variants on the two Fashion-MNIST models: label
consistency, FD and how saturated the samples are, at guidance scales 1-7. Writes the
`guidance-variants` section of docs/guidance.md.

Variants (docs/guidance.md): rescale (phi 0.7, Lin et al.'s value), interval (EDM2's
(0.28, 5.42] in VE sigma, Kynkaanniemi et al.), APG (eta 0 as Sadat et al., norm_threshold 5,
no momentum: their momentum -0.5 diverges at 10 steps here, docs/guidance.md), CFG-Zero*
(the optimised scale; zero-init of step 0, the reference code's default, on the flow). Models: configs/default.yaml's eps U-Net (VP) and
configs/fmnist_flow.yaml's rectified-flow velocity U-Net, dpmpp_2m with 10 steps, labels
0-9 in equal shares, seed 0, the same samples' noise in every row.

Saturation: the share of sample values more than 0.1 beyond [-1, 1] (the pixel range; what clipping to
an image loses), and the mean pixel value (the test set's is printed with the table).

Usage: /usr/bin/python3 tools/scripts/guidance_variants_table.py [--n 1000] [--build build]
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from update_doc_section import update  # noqa: E402
from quality_table import ROOT, evaluate, generate  # noqa: E402

SCALES = [1, 2, 3, 5, 7]
VARIANTS = [
    ("CFG", []),
    ("rescale 0.7", ["guidance.rescale=0.7"]),
    ("interval (0.28, 5.42]", ["guidance.interval=[0.28, 5.42]"]),
    ("APG", ["guidance.apg.eta=0", "guidance.apg.norm_threshold=5"]),
    ("CFG-Zero*", ["guidance.cfg_zero_star.zero_steps=0"]),  # zero-init on the flow only
]
MODELS = [("eps U-Net (VP)", "configs/default.yaml"), ("flow U-Net", "configs/fmnist_flow.yaml")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="samples per row (a multiple of 10)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    args = ap.parse_args()
    scorch = os.path.join(args.build, "bin", "scorch")
    os.chdir(ROOT)
    sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
    import fmnist_data  # noqa: E402

    x_test, _ = fmnist_data.load("test")
    data_mean = float(x_test.numpy().mean())
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, config in MODELS:
            rows = []
            for name, sets in VARIANTS:
                for s in SCALES:
                    if s == 1 and name != "CFG":
                        continue  # scale 1 is unguided for every variant (CFG-Zero*: but for its zero-init)
                    npy, labels, sec = generate(scorch, tmp, "row", args.n,
                                                [f"guidance.scale={s}"] + sets, config=config)
                    x = np.load(npy)
                    r = evaluate(scorch, npy, labels)
                    outside = float((np.abs(x) > 1.1).mean())
                    rows.append(f"| {name if s != 1 else 'none'} | {s} | {r['accuracy']:.3f} | {r['fd']:.2f} | "
                                f"{100 * outside:.2f} | {x.mean():.3f} | {sec:.0f} |")
                    print(model, rows[-1], flush=True)
            tables.append((model, config, rows))
    lines = [
        f"Produced by `/usr/bin/python3 tools/scripts/guidance_variants_table.py --n {args.n}` on "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d', time.gmtime())}. {args.n} samples per row "
        "(labels 0-9 in equal shares, seed 0), dpmpp_2m with 10 steps; label consistency and FD by "
        "`scorch eval` (FD at this sample count is biased upwards, the same for every row). "
        f"Beyond +-1.1: the share of values more than 0.1 outside the pixel range [-1, 1] (what clipping loses; a few values just beyond -1 are the background). The test set's mean pixel is {data_mean:.3f}.",
    ]
    for model, config, rows in tables:
        lines += [
            "",
            f"**{model}** (`{config}`):",
            "",
            "| variant | scale | label consistency | FD | beyond +-1.1 (%) | mean pixel | seconds |",
            "|---|---|---|---|---|---|---|",
        ] + rows
    update(os.path.join(ROOT, "docs", "guidance.md"), "guidance-variants", "\n".join(lines))
    print("updated docs/guidance.md (guidance-variants)")


if __name__ == "__main__":
    main()
