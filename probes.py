"""Probes that measure what an encoding predicts: linear and kernel-ridge regression, classifiers.

The kernel-ridge grid search reproduces, exactly, scikit-learn's
    GridSearchCV(KernelRidge(kernel="rbf"), {"alpha": ALPHAS, "gamma": GAMMAS}, cv=3)
followed by R^2 on the test set, but computed in torch (float64 accuracy, on any device)
and with every kernel matrix and Cholesky factor shared by all targets that are
predicted from the same encoding. Memory: during cross-validation, the kernel of
the fold's n_tr = 2n/3 training rows (kept for all alphas of a gamma) and one
factorisation buffer (float32, or float64 where needed): 12-16 n_tr^2 bytes; the
refit holds one n x n float64 matrix (factorised in place), plus a float32 one on
the mixed-precision path.
"""
import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor

ALPHAS = (1.0, 0.1, 0.01, 0.001)
GAMMAS = tuple(np.logspace(-2, 2, 4).tolist())
CHUNK_ROWS = 2048


def result_columns(mlp_eval=False):
    """results.csv's R² columns (the published names) and the probe behind each:
    kernel ridge for the nonlinear one, or an MLP with --mlp-eval."""
    return {"r2_linear": "linear", "r2_nonlinear": "mlp" if mlp_eval else "kernel_ridge"}


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


# Mixed precision (as LAPACK's dsposv): factorise K + alpha I in float32 (twice the
# speed of float64) and refine the solution with float64 residuals until it is as
# accurate as a float64 solve. A refinement step costs O(n^2) per target column and
# shrinks the error by about rho = eps32 * cond(K + alpha I); where the bound on rho
# says refinement would be slow, or it does not converge, the float64 factorisation
# is used instead. Below MIXED_MIN_ROWS rows the refinement steps cost as much as the
# float32 factorisation saves (measured on 2 CPU cores: 105 ms either way at 2,731
# rows and 25 target columns), so small problems go straight to float64.
EPS32 = float(torch.finfo(torch.float32).eps)
MAX_RHO = 1e-2
REFINE_STEPS = 6
REFINE_TOL = 1e-11
MIXED_MIN_ROWS = 6000


def _cholesky_solve_in_place(work, y):
    """Factorise the column-major `work` in place; (work)^-1 y, or None if not positive definite."""
    info = torch.empty((), dtype=torch.int32, device=work.device)
    factor, info = torch.linalg.cholesky_ex(work, out=(work, info))
    if int(info) != 0:
        return None
    # Two triangular solves: cholesky_solve would copy the factor (a second n x n).
    z = torch.linalg.solve_triangular(factor, y.to(work.dtype), upper=False)
    return lambda rhs: torch.linalg.solve_triangular(
        factor.mT, torch.linalg.solve_triangular(factor, rhs.to(work.dtype), upper=False),
        upper=True), torch.linalg.solve_triangular(factor.mT, z, upper=True)


def _refined(kernel, alpha, y, work32, bound):
    """float32 factorisation + float64 refinement, or None where it would not pay off.
    `bound` >= the largest eigenvalue of the kernel."""
    if EPS32 * (bound + alpha) / alpha > MAX_RHO:
        return None
    work32.mT.copy_(kernel)  # symmetric: a plain copy in the same memory order
    work32.diagonal().add_(alpha)
    solved = _cholesky_solve_in_place(work32, y)
    if solved is None:
        return None
    solve, x = solved
    x = x.to(y.dtype)
    for _ in range(REFINE_STEPS):
        residual = torch.addmm(y, kernel, x, alpha=-1.0).sub_(x, alpha=alpha)
        step = solve(residual).to(y.dtype)
        x += step
        if float(step.abs().max()) <= REFINE_TOL * float(x.abs().max()):
            return x
    return None


def _eigen_bound(kernel):
    """Gershgorin: an RBF kernel's entries are positive, so its largest row sum
    bounds its largest eigenvalue."""
    return float(kernel.sum(1).max())


def _use_mixed(n, mixed):
    return mixed if mixed is not None else n >= MIXED_MIN_ROWS


def _factor_solve(kernel, y, alpha, work32=None, work64=None, bound=None):
    """(K + alpha I)^-1 y for the symmetric `kernel` K, which is left unchanged.

    float32 with refinement where that is both fast and exact (`work32` given),
    else a float64 factorisation in `work64` (allocated if not given). If K + alpha I
    is numerically singular, scikit-learn falls back to least squares, and so do we.
    """
    if work32 is not None:
        x = _refined(kernel, alpha, y, work32, _eigen_bound(kernel) if bound is None else bound)
        if x is not None:
            return x
    work64 = _column_major(kernel.shape[0], kernel) if work64 is None else work64
    work64.mT.copy_(kernel)
    work64.diagonal().add_(alpha)
    solved = _cholesky_solve_in_place(work64, y)
    if solved is not None:
        return solved[1]
    a = kernel.clone()
    a.diagonal().add_(alpha)
    return torch.linalg.lstsq(a.cpu(), y.cpu(), driver="gelsd").solution.to(y.device)


def _column_major(n, like, dtype=None):
    return torch.empty((n, n), dtype=dtype or like.dtype, device=like.device).mT


def _solve_dual(x, y, gamma, alpha, mixed=None):
    """Dual coefficients of kernel ridge regression, (K + alpha I)^-1 y, for one setting.
    mixed: float32 + refinement (True), float64 (False), by size (None). A float64
    factorisation runs in place in the kernel's own memory (no second n x n float64)."""
    kernel = _rbf(x, x, gamma)
    if _use_mixed(x.shape[0], mixed):
        work32 = _column_major(x.shape[0], x, torch.float32)
        dual = _refined(kernel, alpha, y, work32, _eigen_bound(kernel))
        del work32
        if dual is not None:
            return dual
    work = kernel.mT  # the symmetric kernel, seen column-major
    work.diagonal().add_(alpha)
    solved = _cholesky_solve_in_place(work, y)
    if solved is not None:
        return solved[1]
    del kernel, work, solved
    return _factor_solve(_rbf(x, x, gamma), y, alpha)  # rebuilt for the least-squares fallback


def _predict(x_train, dual, x_new, gamma, chunk=CHUNK_ROWS):
    return torch.cat([_rbf(x_new[i:i + chunk], x_train, gamma) @ dual
                      for i in range(0, x_new.shape[0], chunk)])


def _cv_fold(x_tr, y_tr, x_held, alphas, gammas, mixed=None):
    """Held-out predictions of every grid setting for one fold: {(alpha, gamma): prediction}.

    The kernel of a gamma is computed once and serves all alphas, and the
    held-out kernel rows are computed once per gamma for the duals of all alphas."""
    out = {}
    n = x_tr.shape[0]
    kernel = torch.empty((n, n), dtype=x_tr.dtype, device=x_tr.device)
    mixed = _use_mixed(n, mixed)
    work32 = _column_major(n, x_tr, torch.float32) if mixed else None
    work64 = None
    for gamma in gammas:
        _rbf(x_tr, x_tr, gamma, out=kernel)
        bound = _eigen_bound(kernel) if mixed else None
        duals = []
        for alpha in alphas:
            dual = _refined(kernel, alpha, y_tr, work32, bound) if mixed else None
            if dual is None:
                work64 = _column_major(n, x_tr) if work64 is None else work64
                dual = _factor_solve(kernel, y_tr, alpha, work64=work64)
            duals.append(dual)
        preds = _predict(x_tr, torch.cat(duals, dim=1), x_held, gamma).split(y_tr.shape[1], dim=1)
        out.update({(alpha, gamma): p for alpha, p in zip(alphas, preds)})
    return out


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
        preds = _cv_fold(x_train[keep], y_train[keep], x_train[lo:hi], alphas, gammas)
        for s, setting in enumerate(grid):
            r2 = r2_columns(y_train[lo:hi], preds[setting]).cpu()
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


def linear_r2(x_train, y_train, x_test, y_test, seed=0):
    model = LinearRegression().fit(x_train, y_train)
    return float(model.score(x_test, y_test))


def mlp_r2(x_train, y_train, x_test, y_test, seed=0):
    y_train = np.asarray(y_train)
    y_fit = y_train.ravel() if y_train.ndim == 2 and y_train.shape[1] == 1 else y_train
    model = MLPRegressor(max_iter=1000, random_state=seed).fit(x_train, y_fit)
    return float(model.score(x_test, np.asarray(y_test).reshape(len(y_test), -1)
                             if y_fit.ndim == 2 else np.asarray(y_test).ravel()))


def krr_work_units(n_targets, cv=3):
    """Cholesky factorisations of one kernel_ridge_grid call, for progress bars (upper bound)."""
    return cv * len(ALPHAS) * len(GAMMAS) + min(n_targets, len(ALPHAS) * len(GAMMAS))


def logistic_accuracy(x_train, y_train, x_test, y_test, seed=0):
    return float(LogisticRegression(max_iter=1000).fit(x_train, y_train).score(x_test, y_test))


def mlp_accuracy(x_train, y_train, x_test, y_test, seed=0):
    return float(MLPClassifier(max_iter=1000, random_state=seed).fit(x_train, y_train).score(x_test, y_test))


def correlation_matrix(a, b):
    """|Pearson correlation| of every column of a with every column of b; a constant
    column correlates 0 with everything (rather than NaN)."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    a, b = a - a.mean(0), b - b.mean(0)
    na, nb = np.sqrt((a * a).sum(0)), np.sqrt((b * b).sum(0))
    corr = (a.T @ b) / np.outer(np.where(na > 0, na, 1.0), np.where(nb > 0, nb, 1.0))
    return np.abs(corr)


def mcc(latents, encoding, method="pearson"):
    """Mean correlation coefficient (as cl-ica reports it): each latent dimension is matched
    to one encoding dimension by linear assignment on the absolute correlations, and the
    matched absolute correlations are averaged. With more encoding than latent dimensions
    every latent is matched (the rest of the encoding is ignored); with fewer, only as many
    latents as there are encoding dimensions. method: "pearson", or "spearman" (Pearson
    on ranks, which ignores monotone rescalings of each dimension)."""
    if method not in ("pearson", "spearman"):
        raise ValueError(f"unknown correlation {method!r}")
    latents, encoding = np.asarray(latents), np.asarray(encoding)
    if method == "spearman":
        latents, encoding = (rankdata(x.reshape(len(x), -1), axis=0) for x in (latents, encoding))
    corr = correlation_matrix(latents, encoding)
    rows, cols = linear_sum_assignment(corr, maximize=True)
    return float(corr[rows, cols].mean())


def mcc_pearson(x_train, y_train, x_test, y_test, seed=0):
    """MCC between the targets and the encoding on the test set: nothing is fitted, so the
    training set is not used."""
    return mcc(y_test, x_test, "pearson")


def mcc_spearman(x_train, y_train, x_test, y_test, seed=0):
    return mcc(y_test, x_test, "spearman")


# Probes too quick to count in progress bars (which count the slow fits).
UNCOUNTED = ("linear", "mcc", "mcc_spearman")

# The probes, by name: (metric, function(x_train, y_train, x_test, y_test, seed)). The
# kernel-ridge grid search has no per-target function: it shares its factorisations
# across the targets of an encoding, so evaluate_probes runs it for all of them at once.
PROBES = {
    "linear": ("r2", linear_r2),
    "kernel_ridge": ("r2", None),
    "mlp": ("r2", mlp_r2),
    "logistic": ("accuracy", logistic_accuracy),
    "mlp_classifier": ("accuracy", mlp_accuracy),
    "mcc": ("mcc", mcc_pearson),
    "mcc_spearman": ("mcc", mcc_spearman),
}


def evaluate_probes(names, x_train, x_test, targets, device="cpu", progress=None, seed=0, notes=None):
    """{target: {probe: score}} of the named probes for targets {name: (y_train, y_test)}.

    Regression probes score R^2, classifiers accuracy, "mcc" and "mcc_spearman" the mean
    correlation coefficient on the test set (probes.mcc). A target without columns
    (absent modality-specific latents) scores NaN, and so does a classifier
    whose training labels hold one class only. `progress` is called once per
    fit (per factorisation for kernel ridge); `notes` collects one line per
    classifier that stopped at max_iter before converging."""
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        raise ValueError(f"unknown probe {unknown[0]!r} (known: {', '.join(PROBES)})")
    out = {t: {n: math.nan for n in names} for t in targets}
    real = {t: (np.asarray(a), np.asarray(b)) for t, (a, b) in targets.items() if np.asarray(a).size > 0}
    for name in names:
        metric, fn = PROBES[name]
        if fn is None:
            continue
        for t, (a, b) in real.items():
            if metric == "accuracy":
                out[t][name] = _classify(fn, x_train, a, x_test, b, seed, f"{t}/{name}", notes)
            else:
                out[t][name] = fn(x_train, a.reshape(len(a), -1), x_test, b.reshape(len(b), -1), seed)
            if progress and name not in UNCOUNTED:
                progress()
    if "kernel_ridge" in names and real:
        fits = kernel_ridge_grid(x_train, [a.reshape(len(a), -1) for a, _ in real.values()], x_test,
                                 [b.reshape(len(b), -1) for _, b in real.values()], device=device,
                                 progress=progress)
        for t, res in zip(real, fits):
            out[t]["kernel_ridge"] = res["r2"]
    return out


def _classify(fn, x_train, y_train, x_test, y_test, seed, what, notes):
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    if len(np.unique(y_train)) < 2:
        if notes is not None:
            notes.append(f"{what}: only one class in the training labels: accuracy NaN")
        return math.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        score = fn(x_train, y_train, x_test, y_test, seed)
    if notes is not None and any(issubclass(w.category, ConvergenceWarning) for w in caught):
        notes.append(f"{what}: stopped at max_iter=1000 before converging")
    return score
