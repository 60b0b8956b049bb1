"""directions.py: per-direction R² of a trained simulation model, checked against a whole-block R²."""
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

import directions
import main_mlp
from cli import UserError

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
    shares = [s for s, _ in rows]
    assert shares == sorted(shares, reverse=True) and sum(shares) == pytest.approx(1.0)
    pred = LinearRegression().fit(h, y).predict(h)
    assert sum(s * r for s, r in rows) == pytest.approx(r2_score(y, pred, multioutput="variance_weighted"))


def test_table_of_a_trained_model(model, capsys):
    assert directions.main([str(model), "--no-cuda"]) == 0
    table = pd.read_csv(model / "directions.csv")
    assert list(table.columns) == ["encoding", "block", "direction", "variance_share", "r2_linear"]
    sizes = {"c": 3, "s": 2, "m1": 2, "m2": 2}
    assert len(table) == 2 * sum(sizes.values())
    for (encoding, block), group in table.groupby(["encoding", "block"]):
        assert list(group["direction"]) == list(range(1, sizes[block] + 1))
        assert group["variance_share"].sum() == pytest.approx(1.0)
    assert table["r2_linear"].between(-1e-9, 1 + 1e-9).all()
    assert "linear R² of each principal direction" in capsys.readouterr().out


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
