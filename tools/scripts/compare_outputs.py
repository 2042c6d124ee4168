#!/usr/bin/python3
"""Runs a fixed list of configs on two scorch binaries and compares their outputs byte for byte.

    /usr/bin/python3 tools/scripts/compare_outputs.py OLD_SCORCH NEW_SCORCH [--keep DIR]

For a change that must not change behaviour (a refactor): every sampler family, guidance
(CFG, MSG terms, the msg wrapper), teleport, SDEdit, inpainting with a corrector, inversion,
trajectories, float64, and the discrete samplers. Each case is `--set` overrides on a config
from configs/; a case whose spelling changed between the two binaries gives both spellings
(old, new) and says why. Exit status 0 when every output is identical.
"""
import argparse
import filecmp
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNET = os.path.join(ROOT, "configs/default.yaml")
GAUSS = os.path.join(ROOT, "configs/fmnist_gaussian.yaml")
WORDS = os.path.join(ROOT, "configs/words.yaml")
MSG = os.path.join(ROOT, "configs/msg_structure.yaml")

# (name, config, overrides[, overrides for the old binary when the spelling changed])
SMALL = ["batch=20", "cond=rows"]
CASES = [
    ("unet_dpmpp_2m_default", UNET, []),
    ("unet_ddim_eta1", UNET, SMALL + ["sampler.name=ddim", "sampler.eta=1", "sampler.steps=8"]),
    ("unet_euler_ancestral", UNET, SMALL + ["sampler.name=euler_ancestral", "sampler.steps=8"]),
    ("unet_cfg", UNET, SMALL + ["guidance.scale=3", "sampler.steps=6"]),
    ("unet_dpmpp_2m_sde", UNET, SMALL + ["sampler.name=dpmpp_2m_sde", "sampler.steps=8"]),
    ("unet_sdedit", UNET, SMALL + ["init_image=@UNET_INIT", "strength=0.6", "sampler.steps=8"]),
    ("unet_msg_reference", MSG, SMALL + ["sampler.steps=6"]),
    ("unet_msg_wrapper", UNET, SMALL + ["sampler.name=msg", "sampler.steps=6", "sampler.scale=1.5",
                                        "sampler.terms=[{cond: 3, ref_cond: null, weight: 1.5, window: [0.5, 1]}]",
                                        "sampler.inner.name=dpmpp_2m"]),
    ("gauss_ddim_f64", GAUSS, ["dtype=float64", "sampler.name=ddim", "sampler.steps=12"]),
    ("gauss_euler_churn", GAUSS, ["sampler.name=euler", "sampler.s_churn=2", "sampler.skip_type=karras"]),
    ("gauss_heun", GAUSS, []),
    ("gauss_dpm_solver_3s", GAUSS, ["sampler.name=dpm_solver_3s", "sampler.steps=10"]),
    ("gauss_dpm_solver_time_uniform", GAUSS, ["sampler.name=dpm_solver", "sampler.algorithm_type=dpmsolver",
                                              "sampler.method=singlestep", "sampler.order=2",
                                              "sampler.skip_type=time_uniform", "sampler.steps=9"]),
    ("gauss_dpmpp_2s", GAUSS, ["sampler.name=dpmpp_2s", "sampler.steps=10"]),
    ("gauss_dpmpp_3m_f64", GAUSS, ["dtype=float64", "sampler.name=dpmpp_3m", "sampler.steps=7",
                                   "sampler.denoise_to_zero=true"]),
    ("gauss_dpm_adaptive", GAUSS, ["sampler.name=dpm_adaptive", "sampler.rtol=0.05"]),
    ("gauss_dpmpp_3m_sde", GAUSS, ["sampler.name=dpmpp_3m_sde", "sampler.steps=10"]),
    ("gauss_unipc_bh2", GAUSS, ["sampler.name=unipc", "sampler.variant=bh2", "sampler.order=3", "sampler.steps=8"]),
    # teleport's inner sampler took its own `steps` (the wrapper's `steps` set the grid that auto and
    # skip_fraction read); now the wrapper's `steps` are the inner ones and that grid is `probe_steps`.
    ("gauss_teleport", GAUSS, ["sampler.name=teleport", "sampler.gaussian=models/fmnist_gaussian.safetensors",
                               "sampler.sigma_skip=5", "sampler.steps=5", "sampler.inner.name=dpmpp_2m"],
     ["sampler.name=teleport", "sampler.gaussian=models/fmnist_gaussian.safetensors", "sampler.sigma_skip=5",
      "sampler.inner.steps=5", "sampler.inner.name=dpmpp_2m"]),
    ("unet_teleport_auto", UNET, SMALL + ["sampler.name=teleport", "sampler.gaussian=models/fmnist_gaussian.safetensors",
                                          "sampler.auto=true", "sampler.steps=6"],
     SMALL + ["sampler.name=teleport", "sampler.gaussian=models/fmnist_gaussian.safetensors", "sampler.auto=true",
              "sampler.inner.steps=6"]),
    ("unet_teleport_fraction", UNET, SMALL + ["sampler.name=teleport", "sampler.skip_fraction=0.25",
                                              "sampler.gaussian=models/fmnist_gaussian.safetensors", "sampler.steps=5",
                                              "sampler.probe_steps=8"],
     SMALL + ["sampler.name=teleport", "sampler.skip_fraction=0.25", "sampler.steps=8",
              "sampler.gaussian=models/fmnist_gaussian.safetensors", "sampler.inner.steps=5"]),
    ("gauss_inpaint_mala", GAUSS, ["dtype=float64", "init_image=@ONE_GAUSS", "inpaint_mask=@MASK", "sampler.name=ddim",
                                   "sampler.steps=8", "guidance.corrector.type=mala", "guidance.corrector.steps=2"]),
    ("gauss_ula_window", GAUSS, ["sampler.name=dpmpp_2m", "sampler.steps=8", "guidance.corrector.type=ula",
                                 "guidance.corrector.window=[0.1, 0.6]"]),
    ("gauss_invert", GAUSS, ["dtype=float64", "invert=@GAUSS_SAMPLES", "sampler.name=dpmpp_2m", "sampler.steps=10"]),
    ("gauss_trajectory", GAUSS, ["sampler.name=ddim", "sampler.steps=5", "output.trajectory=@OUT.traj.npy"]),
    ("words_tweedie", WORDS, []),
    ("words_euler_blocks", WORDS, ["sampler.name=euler", "sampler.blocks=3", "sampler.steps=12"]),
    ("words_first_hitting", WORDS, ["sampler.name=first_hitting", "batch=8"]),
    ("words_cached", WORDS, ["sampler.name=cached"]),
    ("words_maskgit", WORDS, ["sampler.name=maskgit", "sampler.steps=8", "sampler.top_k=5"]),
    ("words_remdm_conf", WORDS, ["sampler.name=remdm", "sampler.strategy=conf", "sampler.steps=10",
                                 "sampler.temperature=0.8"]),
    ("words_lsd", WORDS, ["sampler.name=lsd", "sampler.steps=8", "sampler.coefficients=configs/lsd/words_lsd8.yaml"]),
]


def run(binary, config, sets, out, cwd):
    cmd = [binary, "generate", "--config", config, "-q", "--set", "output.png=", "--set", "output.npy=" + out]
    for s in sets:
        cmd += ["--set", s]
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{binary}: {' '.join(sets)}: exit {r.returncode}: {r.stderr.strip()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--keep", help="folder for the outputs (default: a temporary one)")
    args = ap.parse_args()
    tmp = args.keep or tempfile.mkdtemp(prefix="scorch_compare_")
    os.makedirs(tmp, exist_ok=True)
    # Inputs: a U-Net image batch and a Gaussian batch from the old binary, a half mask.
    inputs = {"@UNET_INIT": os.path.join(tmp, "init.npy"), "@GAUSS_SAMPLES": os.path.join(tmp, "gauss.npy"),
              "@ONE_GAUSS": os.path.join(tmp, "init1.npy"), "@MASK": os.path.join(tmp, "mask.npy")}
    run(args.old, UNET, SMALL + ["sampler.steps=5"], inputs["@UNET_INIT"], ROOT)
    run(args.old, GAUSS, ["dtype=float64"], inputs["@GAUSS_SAMPLES"], ROOT)
    np.save(inputs["@ONE_GAUSS"], np.load(inputs["@GAUSS_SAMPLES"])[:1])
    mask = np.zeros((1, 28, 28), np.float32)
    mask[:, :, 14:] = 1.0
    np.save(inputs["@MASK"], mask)
    failed = 0
    for case in CASES:
        name, config, sets = case[:3]
        old_sets = case[3] if len(case) > 3 else sets
        outs = []
        for tag, binary, s in (("old", args.old, old_sets), ("new", args.new, sets)):
            out = os.path.join(tmp, f"{name}.{tag}.npy")
            s = [x.replace("@OUT", os.path.join(tmp, f"{name}.{tag}")) for x in s]
            for key, path in inputs.items():
                s = [x.replace(key, path) for x in s]
            run(binary, config, s, out, ROOT)
            outs.append(out)
        same = filecmp.cmp(outs[0], outs[1], shallow=False)
        traj = [o.replace(".npy", ".traj.npy") for o in outs]
        if os.path.exists(traj[0]):
            same = same and filecmp.cmp(traj[0], traj[1], shallow=False)
        failed += not same
        print(f"{'identical' if same else 'DIFFERENT':10s} {name}" + ("  (old spelling differs)" if len(case) > 3 else ""))
    print(f"{len(CASES) - failed} of {len(CASES)} cases bit-identical")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
