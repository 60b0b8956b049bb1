"""Probes that measure what an encoding predicts: linear and kernel-ridge regression, classifiers.

The kernel-ridge grid search reproduces, exactly, scikit-learn's
    GridSearchCV(KernelRidge(kernel="rbf"), {"alpha": ALPHAS, "gamma": GAMMAS}, cv=3)
followed by R^2 on the test set, but computed in torch (float64, on any device)
and with every kernel matrix and Cholesky factor shared by all targets that are
predicted from the same encoding. Memory: one n x n float64 matrix (factorised
in place) plus kernel blocks of at most `chunk` rows; about 8 n^2 bytes in all.
"""
import math

import numpy as np
import torch
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor

ALPHAS = (1.0, 0.1, 0.01, 0.001)
GAMMAS = tuple(np.logspace(-2, 2, 4).tolist())
CHUNK_ROWS = 2048


def standardize(train, test):
    """Scale both sets with the training set's mean and standard deviation."""
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def param_grid(alphas=ALPHAS, gammas=GAMMAS):
    """Settings in scikit-learn's ParameterGrid order (keys sorted: alpha outer, gamma inner)."""
    return [(a, g) for a in alphas for g in gammas]


def kfold_bounds(n, k):
    """(start, stop) of each test fold of scikit-learn's unshuffled KFold."""
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    stops = np.cumsum(sizes)
    return [(int(stop - size), int(stop)) for size, stop in zip(sizes, stops)]


def r2_columns(y_true, y_pred):
    """R^2 of each column, with scikit-learn's convention for constant targets."""
    ss_res = ((y_true - y_pred) ** 2).sum(0)
    ss_tot = ((y_true - y_true.mean(0)) ** 2).sum(0)
    r2 = 1.0 - ss_res / torch.where(ss_tot > 0, ss_tot, torch.ones_like(ss_tot))
    constant = ss_tot == 0
    return torch.where(constant, (ss_res == 0).to(r2.dtype), r2)


def _rbf(x, y, gamma, out=None):
    """exp(-gamma ||x_i - y_j||^2), squared distances clamped at 0 as scikit-learn does."""
    k = torch.matmul(x, y.T, out=out).mul_(-2.0)
    k.add_((x * x).sum(1, keepdim=True)).add_((y * y).sum(1))
    return k.clamp_(min=0.0).mul_(-gamma).exp_()


def _solve_dual(x, y, gamma, alpha):
    """Dual coefficients of kernel ridge regression: (K + alpha I)^-1 y.

    The Cholesky factorisation runs in place on a column-major view, so no
    second n x n matrix is allocated.
    """
    n = x.shape[0]
    kt = torch.empty((n, n), dtype=x.dtype, device=x.device).mT  # column-major buffer
    _rbf(x, x, gamma, out=kt.mT)
    kt.diagonal().add_(alpha)
    info = torch.empty((), dtype=torch.int32, device=x.device)
    factor, info = torch.linalg.cholesky_ex(kt, out=(kt, info))
    if int(info) == 0:
        # Two triangular solves: cholesky_solve would copy the factor (a second n x n).
        z = torch.linalg.solve_triangular(factor, y, upper=False)
        return torch.linalg.solve_triangular(factor.mT, z, upper=True)
    # Numerically singular: scikit-learn falls back to least squares, so do we.
    del factor, kt
    k = _rbf(x, x, gamma)
    k.diagonal().add_(alpha)
    return torch.linalg.lstsq(k.cpu(), y.cpu(), driver="gelsd").solution.to(x.device)


def _predict(x_train, dual, x_new, gamma, chunk=CHUNK_ROWS):
    return torch.cat([_rbf(x_new[i:i + chunk], x_train, gamma) @ dual
                      for i in range(0, x_new.shape[0], chunk)])


def _column_groups(ys):
    """Stack targets into one matrix; return it and each target's column slice."""
    slices, start = [], 0
    for y in ys:
        slices.append(slice(start, start + y.shape[1]))
        start += y.shape[1]
    return torch.cat(ys, dim=1), slices


def _as_2d(y, device):
    t = torch.as_tensor(np.asarray(y, dtype=np.float64), device=device)
    return t.reshape(len(t), -1)


def kernel_ridge_grid(x_train, ys_train, x_test, ys_test, alphas=ALPHAS, gammas=GAMMAS,
                      cv=3, device="cpu", progress=None):
    """Grid-searched RBF kernel ridge regression for several targets of one encoding.

    Returns, per target, a dict with the test `r2`, the chosen `alpha` and
    `gamma`, and `cv_scores` (mean fold R^2 of every setting, in grid order).
    `progress`, if given, is called once per Cholesky factorisation.
    """
    x_train = torch.as_tensor(np.asarray(x_train, dtype=np.float64), device=device)
    x_test = torch.as_tensor(np.asarray(x_test, dtype=np.float64), device=device)
    y_train, slices = _column_groups([_as_2d(y, device) for y in ys_train])
    y_test, _ = _column_groups([_as_2d(y, device) for y in ys_test])
    grid = param_grid(alphas, gammas)
    n = x_train.shape[0]

    scores = torch.zeros(len(slices), len(grid), cv, dtype=torch.float64)
    for f, (lo, hi) in enumerate(kfold_bounds(n, cv)):
        keep = torch.cat((torch.arange(0, lo), torch.arange(hi, n))).to(device)
        x_tr, y_tr = x_train[keep], y_train[keep]
        for s, (alpha, gamma) in enumerate(grid):
            dual = _solve_dual(x_tr, y_tr, gamma, alpha)
            r2 = r2_columns(y_train[lo:hi], _predict(x_tr, dual, x_train[lo:hi], gamma)).cpu()
            scores[:, s, f] = torch.stack([r2[sl].mean() for sl in slices])
            if progress:
                progress()

    mean_scores = torch.nan_to_num(scores.mean(2), nan=-math.inf)
    best = mean_scores.argmax(1).tolist()  # first maximum, as GridSearchCV's rank
    results = [None] * len(slices)
    for s in sorted(set(best)):
        alpha, gamma = grid[s]
        targets = [t for t, b in enumerate(best) if b == s]
        cols = torch.cat([torch.arange(slices[t].start, slices[t].stop) for t in targets]).to(device)
        dual = _solve_dual(x_train, y_train[:, cols], gamma, alpha)
        r2 = r2_columns(y_test[:, cols], _predict(x_train, dual, x_test, gamma)).cpu()
        start = 0
        for t in targets:
            width = slices[t].stop - slices[t].start
            results[t] = {"r2": r2[start:start + width].mean().item(), "alpha": alpha,
                          "gamma": gamma, "cv_scores": mean_scores[t].tolist()}
            start += width
        if progress:
            progress()
    return results


def linear_r2(x_train, y_train, x_test, y_test):
    model = LinearRegression().fit(x_train, y_train)
    return float(model.score(x_test, y_test))


def mlp_r2(x_train, y_train, x_test, y_test, seed=0):
    y_train = np.asarray(y_train)
    y_fit = y_train.ravel() if y_train.ndim == 2 and y_train.shape[1] == 1 else y_train
    model = MLPRegressor(max_iter=1000, random_state=seed).fit(x_train, y_fit)
    return float(model.score(x_test, np.asarray(y_test).reshape(len(y_test), -1)
                             if y_fit.ndim == 2 else np.asarray(y_test).ravel()))


def regression_scores(x_train, x_test, targets, nonlinear="krr", device="cpu", progress=None):
    """Linear and nonlinear R^2 for each target {name: (y_train, y_test)}.

    Targets with no columns (e.g. absent modality-specific latents) score NaN.
    Kernel-ridge work for all targets is shared; `nonlinear="mlp"` uses
    scikit-learn's MLPRegressor instead.
    """
    out = {name: (math.nan, math.nan) for name in targets}
    real = {name: (np.asarray(a).reshape(len(a), -1), np.asarray(b).reshape(len(b), -1))
            for name, (a, b) in targets.items() if np.asarray(a).size > 0}
    lin = {name: linear_r2(x_train, a, x_test, b) for name, (a, b) in real.items()}
    if nonlinear == "mlp":
        for name, (a, b) in real.items():
            out[name] = (lin[name], mlp_r2(x_train, a, x_test, b))
            if progress:
                progress()
        return out
    names = list(real)
    krr = kernel_ridge_grid(x_train, [real[k][0] for k in names], x_test,
                            [real[k][1] for k in names], device=device, progress=progress)
    for name, res in zip(names, krr):
        out[name] = (lin[name], res["r2"])
    return out


def krr_work_units(n_targets, cv=3):
    """Cholesky factorisations of one kernel_ridge_grid call, for progress bars (upper bound)."""
    return cv * len(ALPHAS) * len(GAMMAS) + min(n_targets, len(ALPHAS) * len(GAMMAS))


def classification_scores(x_train, x_test, targets, seed=0):
    """Logistic-regression and MLP accuracy for each discrete target {name: (y_train, y_test)}."""
    out = {}
    for name, (y_tr, y_te) in targets.items():
        logreg = LogisticRegression(max_iter=1000).fit(x_train, y_tr)
        mlp = MLPClassifier(max_iter=1000, random_state=seed).fit(x_train, y_tr)
        out[name] = (float(logreg.score(x_test, y_te)), float(mlp.score(x_test, y_te)))
    return out
