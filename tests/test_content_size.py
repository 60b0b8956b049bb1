"""content_size.py and size_estimates.py: the intrinsic dimension of the encodings estimates the content size."""
import os

import numpy as np
import pandas as pd
import pytest

import content_size
import size_estimates
import main_mlp
from cli import UserError


def embed(z, out_dim, seed):
    """A smooth nonlinear embedding of z into out_dim dimensions (a random two-layer network)."""
    rng = np.random.default_rng(seed)
    w1, w2 = rng.normal(size=(z.shape[1], 32)), rng.normal(size=(32, out_dim)) / np.sqrt(32)
    return np.tanh(z @ w1 * 0.5) @ w2


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_nonlinear_embeddings_of_a_k_dimensional_gaussian_give_k(k):
    z = np.random.default_rng(k).normal(size=(4000, k))
    table, estimate = size_estimates.estimate({"hz1": embed(z, 10, 1), "hz2": embed(z, 10, 2)}, truth=k)
    assert estimate == k
    assert set(table.estimator) == {"twonn", "mle", "lpca", "cca"} and (table.truth == k).all()
    twonn = table[table.estimator == "twonn"].value
    assert (abs(twonn - k) < 0.5).all()


def test_canonical_correlations_match_the_shared_directions():
    rng = np.random.default_rng(0)
    shared, a_own, b_own = rng.normal(size=(5000, 2)), rng.normal(size=(5000, 2)), rng.normal(size=(5000, 3))
    a = np.hstack([shared, a_own]) @ rng.normal(size=(4, 4))
    b = np.hstack([shared, b_own]) @ rng.normal(size=(5, 5))
    rho = size_estimates.canonical_correlations(a, b)
    assert rho[:2] == pytest.approx([1.0, 1.0], abs=1e-9) and (rho[2:] < 0.1).all()
    assert size_estimates.cca(a, b) == 2


def test_the_script_on_a_trained_model(tmp_path, capsys):
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "m", "--seed", "0", "--content-n", "2",
                   "--style-n", "2", "--modality-n", "2", "--encoding-size", "4", "--batch-size", "64",
                   "--train-steps", "20", "--no-cuda"])
    content_size.main([str(tmp_path / "m"), "--no-cuda", "--num-batches", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == "true content size: 2" and lines[-1].startswith("content size: ")
    table = pd.read_csv(tmp_path / "m" / size_estimates.FILE)
    assert (table.truth == 2).all() and lines[-1] == f"content size: {table.estimate[0]}"
    assert list(table[table.estimator == "cca"].encoding) == ["hz1~hz2"]


def test_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="args.json not found"):
        content_size.main([str(tmp_path)])
    with pytest.raises(UserError, match="100 pairs to estimate from, need at least 200"):
        size_estimates.check_pairs({"hz1": np.zeros((100, 3))}, "m")
    with pytest.raises(UserError, match="hz1 has non-finite encodings"):
        size_estimates.check_pairs({"hz1": np.full((300, 3), np.nan)}, "m")


def test_image_text_models_are_estimated_per_modality(tmp_path, capsys, monkeypatch):
    import main_imgtxt
    from m3di_fixture import write_m3di
    monkeypatch.setattr(size_estimates, "MIN_PAIRS", 20)  # the fixture's test split is small
    data = write_m3di(str(tmp_path / "m3di"), sizes={"train": 16, "val": 10, "test": 40})
    main_imgtxt.main(["--datapath", data, "--model-dir", str(tmp_path), "--model-id", "it", "--seed", "0",
                      "--batch-size", "8", "--train-steps", "2", "--hidden-size", "16", "--workers", "0",
                      "--encoding-size", "4"])
    content_size.main([str(tmp_path / "it")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == "true content size: 3" and lines[-1].startswith("content size: ")
    table = pd.read_csv(tmp_path / "it" / size_estimates.FILE)
    assert set(table.encoding) == {"image", "text", "image~text"} and (table.truth == 3).all()
    # the evaluation's flag estimates from the same test-split encodings
    os.remove(tmp_path / "it" / size_estimates.FILE)
    main_imgtxt.main(["--datapath", data, "--model-dir", str(tmp_path), "--model-id", "it", "--evaluate",
                      "--load-args", "--workers", "0", "--estimate-content-size"])
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "it" / size_estimates.FILE), table)


def test_image_text_content_is_what_both_modalities_state():
    from datasets import Multimodal3DIdent as M
    both = set(M.FACTORS["image"].values()) & set(M.FACTORS["text"].values())
    assert set(M.CONTENT_FACTORS) == both  # the colour differs in name: image hue, text colour index


def test_the_evaluation_estimates_it_before_writing_results(tmp_path, capsys):
    common = ["--model-dir", str(tmp_path), "--model-id", "m", "--content-n", "2", "--style-n", "1",
              "--modality-n", "1", "--encoding-size", "4", "--batch-size", "32", "--no-cuda", "--n-views", "3"]
    main_mlp.main(common + ["--seed", "0", "--train-steps", "3"])
    # conftest's evaluation batches of 128 pairs: two give 256 test pairs, above MIN_PAIRS
    main_mlp.main(common + ["--seed", "1", "--evaluate", "--num-eval-batches", "2", "--estimate-content-size"])
    table = pd.read_csv(tmp_path / "m" / size_estimates.FILE)
    assert (table.truth == 2).all() and set(table.encoding) >= {"hz1", "hz2", "hz3", "hz1~hz3"}
    assert f"content size: {table.estimate[0]}" in capsys.readouterr().out


def test_the_evaluation_refuses_it_for_partial_observability(tmp_path):
    with pytest.raises(UserError, match="--estimate-content-size assumes one content shared by all views"):
        main_mlp.main(["--model-dir", str(tmp_path), "--view-latents", "0-2;1,2", "--estimate-content-size",
                       "--train-steps", "2"])


def test_the_estimate_is_the_smaller_upper_bound():
    """Views sharing 2 latents exactly and 2 more only in part: the encodings carry all 4 (TwoNN
    reads 4), the canonical correlations near 1 count the 2 shared ones."""
    rng = np.random.default_rng(3)
    content, style = rng.normal(size=(4000, 2)), rng.normal(size=(4000, 2))
    style_tilde = 0.6 * style + 0.8 * rng.normal(size=(4000, 2))       # correlated 0.6, not shared
    a = np.hstack([content, style]) @ rng.normal(size=(4, 6))
    b = np.hstack([content, style_tilde]) @ rng.normal(size=(4, 6))
    table, estimate = size_estimates.estimate({"hz1": a, "hz2": b})
    assert round(table[table.estimator == "twonn"].value.mean()) == 4 and estimate == 2
