#!/usr/bin/python3
"""How far `inpaint_mask` (replacement after every step) is from exact conditional sampling,
on a correlated Gaussian where the conditional is known in closed form.

Data: N(mu, Sigma) in 6 dimensions with correlations between the kept coordinates (0-2)
and the generated ones (3-5). The model file is the data's Gaussian (`scorch fit gaussian`
on 200k exact samples, read back here so that the reference uses the same mean and
covariance). For one kept value x_k, the exact conditional of the generated part is
N(mu_u + S_uk S_kk^-1 (x_k - mu_k), S_uu - S_uk S_kk^-1 S_ku). Every sampler runs
`scorch generate` with init_image = x (x_k in the kept part), inpaint_mask = (0,0,0,1,1,1),
float64, and the table reports, over the generated coordinates, the largest error of the
sample mean in conditional standard deviations and the relative error of the sample
covariance (Frobenius); the unconditional columns run the same sampler without a mask, against
the data's own mean and covariance: the sampling error itself. Rows with a corrector add
guidance.corrector iterations after every step, alternating with the replacement.

Usage: /usr/bin/python3 tools/scripts/inpaint_check.py [--n 20000] [--scorch build/bin/scorch]
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

KEPT, GEN = [0, 1, 2], [3, 4, 5]


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        dtype = {"F64": np.float64, "F32": np.float32}[info["dtype"]]
        out[name] = np.frombuffer(data[a:b], dtype=dtype).reshape(info["shape"]).astype(np.float64)
    return out


def run(cmd):
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{res.stderr}")


def errors(samples, mean, cov):
    std = np.sqrt(np.diag(cov))
    mean_err = np.max(np.abs(samples.mean(0) - mean) / std)
    cov_err = np.linalg.norm(np.cov(samples.T) - cov) / np.linalg.norm(cov)
    return mean_err, cov_err


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--scorch", default="build/bin/scorch")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    sigma = a @ a.T / 6 + 0.1 * np.eye(6)
    mu = rng.normal(size=6)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data.npy")
        np.save(data, rng.multivariate_normal(mu, sigma, size=200000))
        model = os.path.join(tmp, "g.safetensors")
        run([args.scorch, "fit", "gaussian", "--data", data, "--out", model, "-q"])
        g = read_safetensors(model)
        mu = g["mean"]
        sigma = g["eigenvectors"] @ np.diag(g["eigenvalues"]) @ g["eigenvectors"].T
        x = mu + np.array([1.5, -1.0, 0.5, 0, 0, 0]) * np.sqrt(np.diag(sigma))
        s_kk, s_uk = sigma[np.ix_(KEPT, KEPT)], sigma[np.ix_(GEN, KEPT)]
        cond_mean = mu[GEN] + s_uk @ np.linalg.solve(s_kk, x[KEPT] - mu[KEPT])
        cond_cov = sigma[np.ix_(GEN, GEN)] - s_uk @ np.linalg.solve(s_kk, s_uk.T)
        init, mask = os.path.join(tmp, "x.npy"), os.path.join(tmp, "m.npy")
        np.save(init, x)
        np.save(mask, np.array([0, 0, 0, 1, 1, 1], dtype=np.float64))
        print(f"Produced by `/usr/bin/python3 tools/scripts/inpaint_check.py --n {args.n}`: {args.n} samples a row, float64, "
              "vp_linear, t_end 1e-3.\n")
        print("| sampler | steps | corrector | inpainting: mean error (cond. std) | inpainting: cov. error "
              "| unconditional: mean error (std) | unconditional: cov. error |")
        print("|---|---|---|---|---|---|---|")
        for sampler, steps, corrector, iters in [
                ("heun", 50, "", 0), ("dpmpp_2m", 50, "", 0), ("dpmpp_2m", 200, "", 0),
                ("euler_ancestral", 200, "", 0), ("dpmpp_2m_sde", 200, "", 0), ("dpmpp_2m", 50, "mala", 1),
                ("dpmpp_2m_sde", 200, "mala", 1), ("dpmpp_2m_sde", 200, "mala", 5), ("dpmpp_2m_sde", 200, "ula", 5)]:
            common = ["--set", "model.type=gaussian", "--set", f"model.path={model}", "--set", "dtype=float64",
                      "--set", f"batch={args.n}", "--set", f"sampler.name={sampler}", "--set",
                      f"sampler.steps={steps}", "--set", "sampler.t_end=0.001", "--set", "output.png=",
                      "--set", "schedule.type=vp_linear"]
            if corrector:
                common += ["--set", f"guidance.corrector.type={corrector}", "--set", f"guidance.corrector.steps={iters}"]
            out = os.path.join(tmp, "s.npy")
            run([args.scorch, "generate", "-q", "--config", "configs/fmnist_gaussian.yaml", *common,
                 "--set", f"init_image={init}", "--set", f"inpaint_mask={mask}", "--set", f"output.npy={out}"])
            inp = errors(np.load(out).astype(np.float64)[:, GEN], cond_mean, cond_cov)
            run([args.scorch, "generate", "-q", "--config", "configs/fmnist_gaussian.yaml", *common,
                 "--set", f"output.npy={out}"])
            unc = errors(np.load(out).astype(np.float64), mu, sigma)
            label = f"{corrector} x {iters}" if corrector else "-"
            print(f"| {sampler} | {steps} | {label} | {inp[0]:.3f} | {inp[1]:.3f} | {unc[0]:.3f} | {unc[1]:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
