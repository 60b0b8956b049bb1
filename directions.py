"""Which directions of each latent block a trained simulation model recovers.

    python directions.py runs/table1/p0.75_stat_multi_s1 [more model folders] [--batches 1]

results.csv reports a block's R² as the mean over the block's coordinates, so a
direction of small variance can be lost while that mean stays high: with
--statistical-dependence the block covariances are Wishart draws whose
smallest eigenvalue is often a few per cent of the largest, or less. This
script draws fresh samples (batches of 4,096 pairs) from a model's own latent
space, rotates each block onto its principal directions (eigenvectors of the
sample covariance, largest variance first) and prints the linear R² of every
direction from every encoding (fitted and scored on the same samples: a few
coefficients on thousands of pairs), with the direction's share of the
block's variance. Where a block's directions have equal variance (content without
--statistical-dependence) they are arbitrary, so each block is also rotated onto
its canonical directions: those of the linear fit from the encoding, the best
recovered first (their R² are the squared canonical correlations), so the
weakest shows the one direction a model has not learned. The table is also
written to <folder>/directions.csv, a row per encoding, block, basis
("principal" or "canonical") and direction.

With --content-dependent-style the style is s = s0 + B c + a, so a content
direction u (a unit vector) is copied into the style with gain |B u|. The
column style_gain holds it for every content direction (empty for the other
blocks and for models without B): it shows whether the content the encoder
learns least is the content that the style copies least.
"""
from cli import OneLineParser, UserError, run_cli  # first: a Ctrl-C while torch loads then gives one line
from facts import ARGS_FILE
import os

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LinearRegression

import main_mlp
import run
import shared_content
from losses import MultiViewLpLoss
from files import FolderLock, atomic_write_csv, check_writable
from utils import get_device, set_seed


def load_model(folder, device):
    """(args, latent space, encoders) of a main_mlp.py model folder, as trained."""
    parser = main_mlp.build_parser()
    path = os.path.join(folder, ARGS_FILE)
    saved = run.read_saved_args(path, parser)
    if "datapath" in saved or not os.path.isfile(os.path.join(folder, "f1.pt")):
        raise UserError(f"{folder} is not a simulation model of main_mlp.py (no f1.pt"
                        f"{', an image/text run' if 'datapath' in saved else ''})")
    if saved.get("view_latents"):
        raise UserError(f"{folder} is a partial-observability model (--view-latents): its content "
                        "differs per set of views; `main_mlp.py --evaluate` writes it to partial.csv")
    if "seed" not in saved:
        raise UserError(f"{path} records no training seed")
    args = parser.parse_args([])
    vars(args).update({k: v for k, v in saved.items() if k in vars(args)})
    main_mlp.check_identity(folder, args, path)  # before the flags that depend on the view list
    run.check_restored(main_mlp.check_args, args, path, saved)
    run.check_seed(f"{path}: seed", saved["seed"])
    return (args, *shared_content.load_trained(args, folder, saved, device))


def covariance(x):
    """x's sample covariance as a matrix, also for one column (np.cov then gives a scalar)."""
    return np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def principal_r2(h, y):
    """[(share of variance, linear R² from h, unit direction)] of y's principal directions,
    largest first."""
    variances, vectors = np.linalg.eigh(covariance(y))
    order = np.argsort(variances)[::-1]
    z = (y - y.mean(axis=0)) @ vectors[:, order]
    shares = variances[order] / variances.sum()
    return [(float(share), float(LinearRegression().fit(h, z[:, i]).score(h, z[:, i])), vectors[:, order[i]])
            for i, share in enumerate(shares)]


def canonical_r2(h, y):
    """[(share of variance, linear R² from h, unit direction)] of y's canonical directions,
    best recovered first.

    In whitened coordinates (unit covariance) the fit's covariance holds each direction's R²,
    so its eigenvalues are the squared canonical correlations. A direction's share is the
    block's variance along it (a unit vector in y's own coordinates) over the total."""
    y = y - y.mean(axis=0)
    cov = covariance(y)
    unwhiten = np.linalg.cholesky(cov)  # cov = L L^T; y L^-T has unit covariance
    white = np.linalg.solve(unwhiten, y.T).T
    fit = LinearRegression().fit(h, white).predict(h)
    r2, vectors = np.linalg.eigh(covariance(fit))
    order = np.argsort(r2)[::-1]
    # The variate y·a with a = L^-T u has unit variance, so the share along a/|a| is 1/(|a|² tr cov).
    weights = np.linalg.solve(unwhiten.T, vectors[:, order])
    norms = np.linalg.norm(weights, axis=0)
    shares = 1.0 / (norms ** 2 * np.trace(cov))
    return [(float(share), float(value), weights[:, i] / norms[i])
            for i, (share, value) in enumerate(zip(shares, r2[order]))]


def directions(folder, batches, seed, device):
    """One row per encoding, block, basis (principal, canonical) and direction."""
    args, space, net = load_model(folder, device)
    generator = torch.Generator(device=device).manual_seed(seed)
    data, _ = shared_content.encode_batches(space, net, MultiViewLpLoss(), batches, generator, False,
                                            main_mlp.EVAL_BATCH)
    B = space.params["B"].double().numpy() if "B" in space.params else None
    views = range(1, args.n_views + 1)
    blocks = ["c", "s", *(f"m{k}" for k in views)]
    rows = []
    for encoding in (f"hz{k}" for k in views):
        for block in (b for b in blocks if data[b].shape[1] > 0):
            for basis, fn in (("principal", principal_r2), ("canonical", canonical_r2)):
                for rank, (share, r2, u) in enumerate(fn(data[encoding], data[block]), start=1):
                    gain = float(np.linalg.norm(B @ u)) if B is not None and block == "c" else np.nan
                    rows.append({"encoding": encoding, "block": block, "basis": basis, "direction": rank,
                                 "variance_share": share, "r2_linear": r2, "style_gain": gain})
    return pd.DataFrame(rows)


def wide_table(table, basis):
    """One basis of the table: a row per block and direction, a column per encoding
    (and per encoding its style gains, for the content of a model with content-dependent style)."""
    part = table[table["basis"] == basis]
    wide = part.pivot_table(index=["block", "direction"], columns="encoding", values="r2_linear")
    if basis == "principal":  # the canonical shares differ per encoding
        wide.insert(0, "variance_share", part.groupby(["block", "direction"])["variance_share"].first())
    if part["style_gain"].notna().any():
        gains = part.pivot_table(index=["block", "direction"], columns="encoding", values="style_gain")
        wide = wide.join(gains.rename(columns=lambda e: f"{e} style_gain"))
    return wide.round(3).to_string(na_rep="")


def main(argv=None):
    p = OneLineParser(description=__doc__.split("\n\n")[0])  # a bad flag: one line, as every other bad input
    p.add_argument("folders", nargs="+", help="model folders of main_mlp.py")
    p.add_argument("--batches", type=int, default=1, help="batches of 4,096 pairs to sample (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    p.add_argument("--no-cuda", action="store_true")
    args = p.parse_args(argv)
    if not 1 <= args.batches <= main_mlp.MAX_EVAL_BATCHES:
        raise UserError(f"--batches must be in 1..{main_mlp.MAX_EVAL_BATCHES}, got {args.batches} "
                        "(each of 4,096 pairs, held in memory)")
    run.check_seed("--seed", args.seed)
    device = get_device(args.no_cuda)
    for folder in args.folders:
        if not os.path.isdir(folder):
            raise UserError(f"model folder not found: {folder}")
        check_writable(folder, "directions.csv")
    for folder in args.folders:
        set_seed(args.seed)
        with FolderLock(folder):  # not beside a training still writing the encoders
            table = directions(folder, args.batches, args.seed, device)
            atomic_write_csv(table, os.path.join(folder, "directions.csv"))
        print(f"{folder}: linear R² of each principal direction (largest variance first)")
        print(wide_table(table, "principal"))
        print("and of each canonical direction (best recovered first; share: the block's variance along it)")
        print(wide_table(table, "canonical"), flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
