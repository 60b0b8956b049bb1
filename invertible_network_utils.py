"""Random invertible MLPs used as the mixing functions f1, f2 of the simulation."""
import numpy as np
import torch
from torch import nn

MIXING_SLOPE = 0.2


def _random_matrices(rng, count, n):
    """Entries uniform in [-1, 1], each column scaled to unit L2 norm."""
    w = rng.uniform(-1.0, 1.0, size=(count, n, n))
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def condition_threshold(rng, n, cond_thresh_ratio=0.001, n_iter_cond_thresh=25000):
    """The `cond_thresh_ratio` quantile of the condition numbers of random matrices."""
    conds = np.linalg.cond(_random_matrices(rng, n_iter_cond_thresh, n))
    return float(np.percentile(conds, cond_thresh_ratio * 100))


def well_conditioned_matrix(rng, n, threshold, batch=4096):
    """Redraw random matrices until one has condition number at most `threshold`."""
    while True:
        w = _random_matrices(rng, batch, n)
        ok = np.flatnonzero(np.linalg.cond(w) <= threshold)  # as published; 1 x 1 has cond 1 = threshold
        if ok.size:
            return w[ok[0]]


def construct_invertible_mlp(n, n_layers, cond_thresh_ratio=0.001, n_iter_cond_thresh=25000,
                             rng=None, threshold=None):
    """Square bias-free linear layers with LeakyReLU(0.2) between them; frozen.

    The Sequential layout (0.weight, 2.weight, ...) matches the published f1.pt/f2.pt.
    """
    rng = np.random.default_rng() if rng is None else rng
    if threshold is None:
        threshold = condition_threshold(rng, n, cond_thresh_ratio, n_iter_cond_thresh)
    mlp = mlp_shell(n, n_layers)
    for layer in mlp[::2]:
        layer.weight.copy_(torch.as_tensor(well_conditioned_matrix(rng, n, threshold)))
    return mlp


def invert_mlp(mlp, x):
    """Inverse of an MLP built by construct_invertible_mlp (float64, for checks)."""
    x = x.double()
    for layer in reversed(mlp):
        if isinstance(layer, nn.Linear):
            x = torch.linalg.solve(layer.weight.double(), x.T).T
        else:
            x = torch.where(x >= 0, x, x / MIXING_SLOPE)
    return x


def mlp_shell(n, n_layers):
    """An untrained mixing MLP of the right layout, to load f1.pt/f2.pt into."""
    layers = []
    for i in range(n_layers):
        layers.append(nn.Linear(n, n, bias=False))
        if i < n_layers - 1:
            layers.append(nn.LeakyReLU(MIXING_SLOPE))
    return nn.Sequential(*layers).requires_grad_(False)
