import numpy as np
import pytest
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV, KFold

import probes


def sklearn_grid(x_tr, y_tr, x_te, y_te):
    search = GridSearchCV(KernelRidge(kernel="rbf"), {"alpha": list(probes.ALPHAS),
                                                      "gamma": list(probes.GAMMAS)}, cv=3)
    search.fit(x_tr, y_tr)
    return search, search.score(x_te, y_te)


@pytest.mark.parametrize("n", [7, 8, 9, 301])
def test_kfold_bounds_match_sklearn(n):
    ours = [list(range(lo, hi)) for lo, hi in probes.kfold_bounds(n, 3)]
    theirs = [list(test) for _, test in KFold(3).split(np.zeros(n))]
    assert ours == theirs


def test_parameter_order_matches_sklearn():
    from sklearn.model_selection import ParameterGrid
    grid = ParameterGrid({"alpha": list(probes.ALPHAS), "gamma": list(probes.GAMMAS)})
    assert probes.param_grid() == [(p["alpha"], p["gamma"]) for p in grid]


@pytest.mark.parametrize("mixed_min_rows", [probes.MIXED_MIN_ROWS, 0])
def test_kernel_ridge_grid_equals_gridsearchcv(monkeypatch, mixed_min_rows):
    # 0: every solve takes the float32 + refinement path where its bound allows
    monkeypatch.setattr(probes, "MIXED_MIN_ROWS", mixed_min_rows)
    rng = np.random.default_rng(0)
    n = 240
    x = rng.normal(size=(2 * n, 4))
    targets = [
        np.sin(2 * x[:, :1]) + 0.1 * rng.normal(size=(2 * n, 1)),      # smooth, one output
        np.c_[x[:, 0] * x[:, 1], np.cos(x[:, 2]), x[:, 3] ** 2],       # multi-output
        0.5 * rng.normal(size=(2 * n, 2)),                             # noise: low alpha loses
        np.c_[np.tanh(3 * x[:, 2]), np.zeros(2 * n)],                  # a constant column
    ]
    x_tr, x_te = probes.standardize(x[:n], x[n:])
    ours = probes.kernel_ridge_grid(x_tr, [y[:n] for y in targets], x_te, [y[n:] for y in targets])
    chosen = set()
    for y, res in zip(targets, ours):
        search, r2 = sklearn_grid(x_tr, y[:n], x_te, y[n:])
        assert (res["alpha"], res["gamma"]) == (search.best_params_["alpha"], search.best_params_["gamma"])
        assert abs(res["r2"] - r2) < 1e-6
        np.testing.assert_allclose(res["cv_scores"], search.cv_results_["mean_test_score"], atol=1e-6)
        chosen.add((res["alpha"], res["gamma"]))
    assert len(chosen) > 1  # the refit handles several chosen settings at once


def test_mixed_precision_solve_is_float64_exact_and_falls_back(monkeypatch):
    import torch
    rng = np.random.default_rng(5)
    x = torch.as_tensor(rng.normal(size=(500, 3)))
    y = torch.as_tensor(rng.normal(size=(500, 4)))
    used = []
    real = probes._refined
    monkeypatch.setattr(probes, "_refined", lambda *a: used.append(real(*a) is not None) or real(*a))
    for gamma, alpha in ((1.0, 1.0), (0.01, 0.001)):
        exact = probes._solve_dual(x, y, gamma, alpha, mixed=False)
        mixed = probes._solve_dual(x, y, gamma, alpha, mixed=True)
        torch.testing.assert_close(mixed, exact, rtol=1e-9, atol=1e-9 * float(exact.abs().max()))
    # well-conditioned: refined in float32; cond ~ 500 / 0.001: float64 instead
    assert used == [True, False]


def test_probes_registry_linear_and_empty_targets():
    from sklearn.linear_model import LinearRegression
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    y = x @ rng.normal(size=(3, 2)) + 0.1 * rng.normal(size=(200, 2))
    targets = {"y": (y[:100], y[100:]), "empty": (np.zeros((100, 0)), np.zeros((100, 0)))}
    out = probes.evaluate_probes(["linear", "kernel_ridge"], x[:100], x[100:], targets)
    expected = LinearRegression().fit(x[:100], y[:100]).score(x[100:], y[100:])
    assert abs(out["y"]["linear"] - expected) < 1e-12
    assert out["y"]["kernel_ridge"] > 0.9
    assert np.isnan(out["empty"]["linear"]) and np.isnan(out["empty"]["kernel_ridge"])
    with pytest.raises(ValueError, match="unknown probe 'svm'"):
        probes.evaluate_probes(["svm"], x[:100], x[100:], targets)


def test_mlp_regression_probe():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 2))
    y = np.sin(x[:, :1])
    out = probes.evaluate_probes(["mlp"], x[:200], x[200:], {"y": (y[:200], y[200:])})
    assert out["y"]["mlp"] > 0.8


def test_progress_counts_every_factorisation():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 2))
    calls = []
    probes.kernel_ridge_grid(x[:30], [x[:30, :1]], x[30:], [x[30:, :1]], progress=lambda: calls.append(1))
    assert len(calls) == 3 * 16 + 1 <= probes.krr_work_units(1)


def test_classification_probes():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 2))
    y = (x[:, 0] > 0).astype(int)
    notes = []
    acc = probes.evaluate_probes(["logistic", "mlp_classifier"], x[:150], x[150:],
                                 {"sign": (y[:150], y[150:]), "one": (np.zeros(150), y[150:])}, notes=notes)
    assert acc["sign"]["logistic"] > 0.9 and acc["sign"]["mlp_classifier"] > 0.9
    assert np.isnan(acc["one"]["logistic"]) and "one/logistic: only one class" in notes[0]


# ------------------------------------------------------------------- MCC ---

def scipy_mcc(latents, encoding, method):
    """MCC computed directly: scipy's correlation of every pair, then linear assignment."""
    from scipy.optimize import linear_sum_assignment
    from scipy.stats import pearsonr, spearmanr
    corr_fn = pearsonr if method == "pearson" else spearmanr
    corr = np.array([[abs(corr_fn(latents[:, i], encoding[:, j])[0]) for j in range(encoding.shape[1])]
                     for i in range(latents.shape[1])])
    rows, cols = linear_sum_assignment(-corr)
    return corr[rows, cols].mean()


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_mcc_of_a_permuted_rescaled_copy_is_one(method):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 4))
    h = z[:, [2, 0, 3, 1]] * np.array([3.0, -0.5, 2.0, -7.0]) + 1.0
    assert probes.mcc(z, h, method) == pytest.approx(1.0)
    if method == "spearman":  # any monotone map per dimension
        assert probes.mcc(z, np.exp(h), method) == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_mcc_of_independent_noise_is_near_zero(method):
    rng = np.random.default_rng(1)
    assert probes.mcc(rng.normal(size=(20000, 3)), rng.normal(size=(20000, 3)), method) < 0.03


@pytest.mark.parametrize("method", ["pearson", "spearman"])
@pytest.mark.parametrize("width", [3, 5, 2])  # as many, more and fewer encoding dimensions
def test_mcc_matches_a_direct_scipy_computation(method, width):
    rng = np.random.default_rng(2)
    z = rng.normal(size=(400, 3))
    h = np.tanh(z @ rng.normal(size=(3, width))) + 0.3 * rng.normal(size=(400, width))
    assert probes.mcc(z, h, method) == pytest.approx(scipy_mcc(z, h, method), abs=1e-12)


def test_mcc_is_a_registered_probe_scored_on_the_test_set():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(300, 2))
    scores = probes.evaluate_probes(["mcc", "mcc_spearman"], rng.normal(size=(300, 2)), z[:, ::-1],
                                    {"c": (rng.normal(size=(300, 2)), z)})
    assert scores["c"]["mcc"] == pytest.approx(1.0) and scores["c"]["mcc_spearman"] == pytest.approx(1.0)
