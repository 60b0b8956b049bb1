"""Content-size estimates from two or more views' encodings alone (no ground truth).

content_size.py reads them off a trained model folder; main_mlp.py --estimate-content-size
off its evaluation's encodings.

Two upper bounds of the content size, each read off held-out encodings alone:
    twonn  the intrinsic dimension of each view's encodings (TwoNN, Facco et al., 2017;
           rounded mean over the views): an encoder that recovers the content maps onto
           a manifold of at least the content's dimension, more where it also carries
           what is correlated between the views without being shared (style that
           changes between views but stays correlated)
    cca    the number of canonical correlations of at least 0.9 between two views'
           encodings (the fewest over pairs of views): the content is the same in both
           views, so it gives correlations near 1, but a curved content manifold spans
           more linear directions than its dimension
The estimate is the smaller of the two. TwoNN alone was the first choice; on
the tuning model (p1.0_multi at the quick scale, encoding size 6, seed 0) it
read 5.5 for a content of 3, its encodings carrying style, while the canonical
correlations counted 3. Beside them, content_size.csv reports
    mle    Levina and Bickel's maximum likelihood (20 neighbours)
    lpca   the number of principal components above 5 % of the largest's variance
and, where the data have one (the simulation's --content-n), the true content
size. The last line printed is `content size: N`.
"""
import os

import numpy as np
import pandas as pd

from cli import UserError
from files import atomic_write_csv

FILE = "content_size.csv"
MIN_PAIRS = 200      # TwoNN and MLE need enough neighbours to be stable
CCA_SHARED = 0.9
LPCA_ALPHA = 0.05


def twonn(x):
    import skdim  # numba's compilation: only when estimating
    return float(skdim.id.TwoNN().fit(x).dimension_)


def mle(x):
    import skdim
    return float(skdim.id.MLE(K=20).fit(x).dimension_)


def lpca(x):
    """Principal components with at least LPCA_ALPHA of the largest component's variance."""
    var = np.linalg.eigvalsh(np.cov(x, rowvar=False))[::-1]
    return float(np.sum(var >= LPCA_ALPHA * var[0])) if var[0] > 0 else 0.0


def canonical_correlations(a, b, eps=1e-9):
    """The canonical correlations of a and b (rows: pairs), largest first."""
    def whiten(x):
        x = x - x.mean(0)
        u, s, _ = np.linalg.svd(x, full_matrices=False)
        return u[:, s > eps * s.max()] if s.size and s.max() > 0 else u[:, :0]
    wa, wb = whiten(a), whiten(b)
    return np.linalg.svd(wa.T @ wb, compute_uv=False)


def cca(a, b):
    return float(np.sum(canonical_correlations(a, b) >= CCA_SHARED))


def estimate(encodings, truth=None):
    """The estimates table of {view name: encodings (pairs x encoding size)}, and the estimate."""
    rows = []
    for name, x in encodings.items():
        for estimator, fn in (("twonn", twonn), ("mle", mle), ("lpca", lpca)):
            rows.append((estimator, name, fn(x)))
    names = list(encodings)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            rows.append(("cca", f"{a}~{b}", cca(encodings[a], encodings[b])))
    table = pd.DataFrame(rows, columns=["estimator", "encoding", "value"])
    bounds = [round(table[table.estimator == "twonn"].value.mean())]
    if len(names) > 1:
        bounds.append(table[table.estimator == "cca"].value.min())
    content_size = int(min(bounds))
    table["estimate"] = content_size
    table["truth"] = truth
    return table, content_size


def add_argument(parser):
    """--estimate-content-size, an evaluation flag of both entry points."""
    parser.add_argument("--estimate-content-size", action="store_true",
                        help="evaluation: also estimate the content size from the test encodings alone "
                             "(size_estimates.py; writes content_size.csv)")


def check_pairs(encodings, where):
    for name, x in encodings.items():
        if x.shape[0] < MIN_PAIRS:
            raise UserError(f"{where}: {x.shape[0]} pairs to estimate from, need at least {MIN_PAIRS}")
        if not np.isfinite(x).all():
            raise UserError(f"{where}: {name} has non-finite encodings (a diverged training?)")



def write(model_dir, encodings, truth=None):
    """Estimate, write content_size.csv into the model folder and print the table; the last
    line printed is `content size: N`. (content_size.py, main_mlp.py --estimate-content-size)"""
    check_pairs(encodings, model_dir)
    table, content_size = estimate(encodings, truth)
    atomic_write_csv(table, os.path.join(model_dir, FILE))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if truth is not None:
        print(f"true content size: {truth}")
    print(f"content size: {content_size}")
    return content_size
