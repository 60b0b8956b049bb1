"""Fingerprints of the training and evaluation numerics of every path that produced a recorded result.

Each case trains a small model for a few steps and evaluates it, in-process, with the
entry point's own main(); its fingerprint is
    loss       metrics.csv's train_loss at every step
    weights    32 fixed entries of each trained encoder's saved parameters
    results    every R² / accuracy of results.csv (and partial.csv)
test_numerics.py compares them with numerics.json beside this file. To re-record after
a deliberate change of numerics (and say why in the commit):

    python tests/numerics.py --record

A result made at an older commit may be cited as today's only if that commit gives the
recorded fingerprints too:

    git worktree add /tmp/old <commit>
    python tests/numerics.py --checkout /tmp/old
"""
import argparse
import importlib
import json
import os
import sys
import tempfile

import numpy as np
import pandas as pd
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from m3di_fixture import write_m3di  # noqa: E402

RECORD = os.path.join(HERE, "numerics.json")
EVAL_BATCH = 128  # the simulation's evaluation batch in the tests (conftest.py's)
TINY = ["--content-n", "2", "--style-n", "2", "--modality-n", "2", "--encoding-size", "2"]
QUICK = ["--precision", "bf16", "--encoder-init", "kaiming", "--lr-schedule", "cosine", "--warmup-steps", "2"]
SIM_CASES = {
    "sim_fp32": TINY,                                        # the published recipe: fp32, torch init
    "quick_bf16": TINY + QUICK,                              # the quick scale's recipe
    "views_k3": TINY + QUICK + ["--n-views", "3"],           # K views
    "view_latents": ["--view-latents", "0-2;1,2"] + QUICK,   # partial observability
}
CASES = (*SIM_CASES, "imgtxt_bf16")
# Tolerances, set on a 2-core AMD EPYC: a 0.1 % change of the learning rate moves the
# weights by up to 8e-5 here (test_numerics checks that it fails); 2e-7 is about ten float32
# roundings of a weight of 0.1, room for a CPU whose vector units sum in another order.
TOLERANCE = {"loss": 1e-5, "weights": 2e-7, "results": 1e-4}  # relative, absolute, absolute


def sample_entries(state, n=32):
    """n fixed entries of the concatenated float parameters (keys sorted)."""
    flat = torch.cat([state[k].detach().flatten().double() for k in sorted(state) if state[k].is_floating_point()])
    index = np.random.default_rng(0).choice(flat.numel(), size=min(n, flat.numel()), replace=False)
    return [float(x) for x in flat[torch.as_tensor(np.sort(index))]]


def numeric_columns(path):
    frame = pd.read_csv(path)
    cols = [c for c in frame.columns if c.startswith(("r2_", "acc_"))]
    return [None if pd.isna(x) else float(x) for x in frame[cols].to_numpy().flatten()]


def fingerprint(folder, encoder_files):
    curve = os.path.join(folder, "metrics.csv")  # older commits wrote none: their losses are not compared
    out = {"loss": [float(x) for x in pd.read_csv(curve)["train_loss"]] if os.path.isfile(curve) else None,
           "weights": {name: sample_entries(torch.load(os.path.join(folder, name), weights_only=True))
                       for name in encoder_files},
           "results": numeric_columns(os.path.join(folder, "results.csv"))}
    if os.path.isfile(os.path.join(folder, "partial.csv")):
        out["results"] += numeric_columns(os.path.join(folder, "partial.csv"))
    return out


def entry_point(name):
    """An entry point's module, imported on first use: from the checkout --checkout names, if any."""
    module = importlib.import_module(name)
    if name == "main_mlp":
        module.EVAL_BATCH = EVAL_BATCH
    return module


def run_sim(name, model_dir, lr=1e-3):
    main_mlp = entry_point("main_mlp")
    common = ["--model-dir", model_dir, "--model-id", name, "--no-cuda"]
    flags = SIM_CASES[name]
    main_mlp.main(common + flags + ["--seed", "0", "--batch-size", "64", "--lr", repr(lr),
                                    "--train-steps", "8", "--log-steps", "1"])
    main_mlp.main(common + ["--seed", "1", "--evaluate", "--load-args", "--num-eval-batches", "1"])
    views = 3 if "--n-views" in flags else 2
    return fingerprint(os.path.join(model_dir, name), [f"g{k}.pt" for k in range(1, views + 1)])


def run_imgtxt(model_dir, data, lr=1e-3):
    main_imgtxt = entry_point("main_imgtxt")
    common = ["--datapath", data, "--model-dir", model_dir, "--model-id", "imgtxt", "--workers", "0"]
    main_imgtxt.main(common + ["--seed", "0", "--batch-size", "8", "--lr", repr(lr), "--train-steps", "4",
                               "--log-steps", "1", "--hidden-size", "16", "--encoding-size", "4",
                               "--precision", "bf16", "--tau", "0.1"])
    main_imgtxt.main(common + ["--seed", "1", "--evaluate", "--load-args"])
    return fingerprint(os.path.join(model_dir, "imgtxt"), ["encoder_img.pt", "encoder_txt.pt"])


def make_data(folder):
    return write_m3di(folder, sizes={"train": 16, "val": 10, "test": 10})


def run_case(name, folder, lr=1e-3):
    """The fingerprint of case `name`, trained and evaluated under `folder`."""
    if name == "imgtxt_bf16":
        return run_imgtxt(os.path.join(folder, "models"), make_data(os.path.join(folder, "m3di")), lr)
    return run_sim(name, os.path.join(folder, "models"), lr)


def differences(actual, recorded):
    """Lines that say what changed, empty where the fingerprints agree within TOLERANCE."""
    out = []
    if actual["loss"] is not None:
        a, r = np.array(actual["loss"]), np.array(recorded["loss"])
        if a.shape != r.shape or not np.allclose(a, r, rtol=TOLERANCE["loss"], atol=0):
            out.append(f"training loss per step: {a.tolist()} != recorded {r.tolist()}")
    for name, values in recorded["weights"].items():
        gap = np.max(np.abs(np.array(actual["weights"].get(name, [np.nan] * len(values))) - np.array(values)))
        if not gap <= TOLERANCE["weights"]:
            out.append(f"weights of {name}: up to {gap:.3g} from the recorded ones")
    a = np.array(actual["results"], dtype=float)
    r = np.array(recorded["results"], dtype=float)
    if a.shape != r.shape or not np.allclose(a, r, rtol=0, atol=TOLERANCE["results"], equal_nan=True):
        gap = np.nanmax(np.abs(a - r)) if a.shape == r.shape else "another shape"
        out.append(f"evaluation results (results.csv): up to {gap} from the recorded ones")
    return out


def compare_checkout(folder):
    """Print, per case, whether the checkout on sys.path gives the recorded numerics."""
    with open(RECORD) as f:
        recorded = json.load(f)
    for name in CASES:
        try:
            changed = differences(run_case(name, os.path.join(folder, name)), recorded[name])
        except (Exception, SystemExit) as err:  # an older commit may lack the case's flags
            print(f"{name}: does not run at this checkout ({type(err).__name__}: {str(err)[:120]})")
            continue
        print(f"{name}: " + ("same numerics" if not changed else "; ".join(changed)), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--record", action="store_true", help="write numerics.json from this checkout")
    p.add_argument("--checkout", help="compare another checkout of this repository (an older commit's "
                                      "worktree) with numerics.json: may its results be cited as today's?")
    p.add_argument("--folder", default=None,
                   help="where the cases train (default: a fresh temporary folder, removed after)")
    args = p.parse_args()
    if args.folder is None:
        with tempfile.TemporaryDirectory(prefix="numerics-") as folder:
            return run(args, folder)
    if os.path.exists(args.folder) and os.listdir(args.folder):
        sys.exit(f"numerics.py: error: --folder {args.folder} is not empty (the cases train there afresh)")
    return run(args, args.folder)


def run(args, folder):
    if args.checkout:
        sys.path.insert(0, os.path.abspath(args.checkout))
    torch.set_num_threads(1)
    if args.checkout:
        return compare_checkout(folder)
    prints = {name: run_case(name, os.path.join(folder, name)) for name in CASES}
    if args.record:
        with open(RECORD, "w") as f:
            json.dump(prints, f, indent=1)
            f.write("\n")
        print(f"wrote {RECORD}")


if __name__ == "__main__":
    main()
