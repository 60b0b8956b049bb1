"""directions.py: per-direction R² of a trained simulation model, checked against a whole-block R²."""
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

import directions
import main_mlp
from cli import UserError
from helpers import fails, train_imgtxt

TINY = ["--content-n", "3", "--style-n", "2", "--modality-n", "2", "--encoding-size", "3",
        "--batch-size", "32", "--train-steps", "3", "--log-steps", "2", "--no-cuda",
        "--statistical-dependence"]


@pytest.fixture
def model(tmp_path, monkeypatch):
    monkeypatch.setattr(main_mlp, "EVAL_BATCH", 256)
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "m", "--seed", "5", *TINY])
    return tmp_path / "m"


def test_principal_r2_weighted_by_variance_is_the_block_r2():
    """Linear R² is rotation-invariant in total: the share-weighted mean is sklearn's variance-weighted R²."""
    rng = np.random.default_rng(0)
    h = rng.normal(size=(500, 3))
    y = np.column_stack([3 * h[:, 0], h[:, 1] + rng.normal(size=500), rng.normal(size=500)]) @ rng.normal(size=(3, 3))
    rows = directions.principal_r2(h, y)
    shares = [s for s, _, _ in rows]
    assert shares == sorted(shares, reverse=True) and sum(shares) == pytest.approx(1.0)
    pred = LinearRegression().fit(h, y).predict(h)
    assert sum(s * r for s, r, _ in rows) == pytest.approx(r2_score(y, pred, multioutput="variance_weighted"))


def test_canonical_r2_are_the_squared_canonical_correlations():
    """Against sklearn's CCA, on a block with one direction lost and one half-recovered."""
    from sklearn.cross_decomposition import CCA
    rng = np.random.default_rng(1)
    n = 4000
    z = rng.normal(size=(n, 3))
    y = z @ rng.normal(size=(3, 3))  # correlated coordinates: the canonical basis is not the principal one
    h = np.column_stack([z[:, 0], z[:, 1] + rng.normal(size=n), rng.normal(size=n)]) @ rng.normal(size=(3, 3))
    rows = directions.canonical_r2(h, y)
    r2 = [r for _, r, _ in rows]
    assert r2 == sorted(r2, reverse=True)
    assert r2 == pytest.approx([1.0, 0.5, 0.0], abs=0.03)
    cca = CCA(n_components=3, scale=False, max_iter=5000, tol=1e-12).fit(h, y)
    hs, ys = cca.transform(h, y)
    reference = sorted((np.corrcoef(hs[:, i], ys[:, i])[0, 1] ** 2 for i in range(3)), reverse=True)
    assert r2 == pytest.approx(reference, abs=1e-4)
    # Their sum is rotation-invariant: the summed R² of the whitened block's coordinates.
    white = (y - y.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(y, rowvar=False))).T
    per_coordinate = r2_score(white, LinearRegression().fit(h, white).predict(h), multioutput="raw_values")
    assert sum(r2) == pytest.approx(per_coordinate.sum())
    # Along an axis-aligned block, a direction's share is its variance over the total.
    scaled = np.column_stack([3 * z[:, 0], z[:, 1], z[:, 2]])
    shares = [s for s, _, _ in directions.canonical_r2(z[:, :1], scaled)]
    assert shares[0] == pytest.approx(9 / 11, abs=0.03)


def test_table_of_a_trained_model(model, capsys):
    assert directions.main([str(model), "--no-cuda"]) == 0
    table = pd.read_csv(model / "directions.csv")
    assert list(table.columns) == ["encoding", "block", "basis", "direction", "variance_share", "r2_linear",
                                   "style_gain"]
    assert table["style_gain"].isna().all()  # no content-dependent style, no B
    sizes = {"c": 3, "s": 2, "m1": 2, "m2": 2}
    assert len(table) == 2 * 2 * sum(sizes.values())
    for (encoding, block, basis), group in table.groupby(["encoding", "block", "basis"]):
        assert list(group["direction"]) == list(range(1, sizes[block] + 1))
        if basis == "principal":
            assert group["variance_share"].sum() == pytest.approx(1.0)
        else:
            assert list(group["r2_linear"]) == sorted(group["r2_linear"], reverse=True)
    assert table["r2_linear"].between(-1e-9, 1 + 1e-9).all()
    out = capsys.readouterr().out
    assert "linear R² of each principal direction" in out and "each canonical direction" in out


def test_directions_are_unit_vectors_along_which_the_share_and_r2_hold():
    rng = np.random.default_rng(2)
    y = rng.normal(size=(3000, 3)) @ rng.normal(size=(3, 3))
    h = y[:, :2] + 0.5 * rng.normal(size=(3000, 2))
    yc = y - y.mean(0)
    for fn in (directions.principal_r2, directions.canonical_r2):
        for share, r2, u in fn(h, y):
            assert np.linalg.norm(u) == pytest.approx(1.0)
            assert share == pytest.approx((yc @ u).var(ddof=1) / np.trace(np.cov(y, rowvar=False)))
            assert r2 == pytest.approx(LinearRegression().fit(h, yc @ u).score(h, yc @ u))


def test_style_gain_of_content_directions_with_content_dependent_style(tmp_path, monkeypatch, capsys):
    """s = s0 + B c + a: the gains |B u| of orthonormal (principal) directions square-sum to |B|_F^2,
    and every gain lies between the extremes of |B u| over unit u (from B^T B's eigenvalues)."""
    import torch
    monkeypatch.setattr(main_mlp, "EVAL_BATCH", 256)
    flags = [f for f in TINY if f != "--statistical-dependence"]
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "cau", "--seed", "5", *flags,
                   "--content-dependent-style", "--style-change-prob", "0.75"])
    assert directions.main([str(tmp_path / "cau"), "--no-cuda"]) == 0
    table = pd.read_csv(tmp_path / "cau" / "directions.csv")
    B = torch.load(tmp_path / "cau" / "latent_space.pt")["B"].double().numpy()
    singular = np.sqrt(np.clip(np.linalg.eigvalsh(B.T @ B), 0, None))  # B is 2x3: one is 0
    content = table[table["block"] == "c"]
    assert content["style_gain"].notna().all() and table[table["block"] != "c"]["style_gain"].isna().all()
    for (_, basis), group in content.groupby(["encoding", "basis"]):
        assert group["style_gain"].between(singular.min() - 1e-9, singular.max() + 1e-9).all()
        if basis == "principal":
            assert (group["style_gain"] ** 2).sum() == pytest.approx((B ** 2).sum())
    assert "hz1 style_gain" in capsys.readouterr().out


def test_same_seed_same_table(model):
    directions.main([str(model), "--no-cuda", "--seed", "3"])
    first = pd.read_csv(model / "directions.csv")
    directions.main([str(model), "--no-cuda", "--seed", "3"])
    pd.testing.assert_frame_equal(first, pd.read_csv(model / "directions.csv"))


def test_bad_input(tmp_path):
    with pytest.raises(UserError, match="model folder not found"):
        directions.main([str(tmp_path / "nothing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="args.json not found"):
        directions.main([str(tmp_path / "empty")])
    with pytest.raises(UserError, match="--batches must be in 1..1000, got 0"):
        directions.main([str(tmp_path / "empty"), "--batches", "0"])


def test_partial_observability_model_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(main_mlp, "EVAL_BATCH", 64)
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "p", "--view-latents", "0-2;0,1,3",
                   "--encoding-size", "1", "--batch-size", "32", "--train-steps", "2", "--no-cuda"])
    with pytest.raises(UserError, match="is a partial-observability model .*partial.csv"):
        directions.main([str(tmp_path / "p"), "--no-cuda"])


# ------------------------------------------- bad input and hostile conditions ---

def test_directions_on_an_imgtxt_folder(data, tmp_path, capsys):
    folder = train_imgtxt(data, tmp_path)
    fails(capsys, directions.main, [folder, "--no-cuda"], "is not a simulation model of main_mlp.py")
