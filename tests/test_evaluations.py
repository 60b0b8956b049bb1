"""evaluations.py: one model, several evaluation seeds, each equal to a plain --evaluate with that seed."""
import json
import os

import pandas as pd
import pytest

import evaluations
import main_mlp
from cli import UserError

TINY = ["--content-n", "2", "--style-n", "2", "--modality-n", "2", "--encoding-size", "2",
        "--batch-size", "32", "--no-cuda"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    main_mlp.main(["--model-dir", str(root), "--model-id", "m", "--seed", "0", "--train-steps", "3", *TINY])
    return root


def test_each_seed_equals_a_plain_evaluation(model, capsys):
    folder = str(model / "m")
    before = sorted(os.listdir(folder))
    evaluations.main([folder, "--seeds", "7-8", "--num-eval-batches", "1"])
    table = pd.read_csv(os.path.join(folder, evaluations.FILE))
    assert sorted(set(table.eval_seed)) == [7, 8] and len(table) == 2 * 12
    assert sorted(os.listdir(folder)) == sorted(before + [evaluations.FILE])  # results.csv untouched
    assert [e["eval_seed"] for e in json.loads(open(os.path.join(folder, "provenance.json")).read())["evaluations"]] == [7, 8]
    out = capsys.readouterr().out
    assert "r2_nonlinear_mean" in out and out.rstrip().endswith(evaluations.FILE)
    main_mlp.main(["--model-dir", str(model), "--model-id", "m", "--evaluate", "--load-args", "--seed", "8",
                   "--num-eval-batches", "1"])
    plain = pd.read_csv(os.path.join(folder, "results.csv"), index_col=0)
    ours = table[table.eval_seed == 8].drop(columns="eval_seed").reset_index(drop=True)
    pd.testing.assert_frame_equal(ours, plain.reset_index(drop=True), check_exact=False, rtol=1e-12)


def test_summary_is_mean_std_min_max_over_seeds():
    table = pd.DataFrame({"encoding": ["hz1", "hz1"], "predicted_factors": ["c", "c"],
                          "r2_nonlinear": [0.94, 0.96], "eval_seed": [1, 2]})
    row = evaluations.summary(table).iloc[0]
    assert (row.r2_nonlinear_mean, row.r2_nonlinear_min, row.r2_nonlinear_max) == pytest.approx((0.95, 0.94, 0.96))
    assert row.r2_nonlinear_std == pytest.approx(0.0141421, rel=1e-5)


@pytest.mark.parametrize("seeds, message", [("3-1", "must give 1 to 100 distinct seeds"),
                                            ("1,1", "must give 1 to 100 distinct seeds"),
                                            ("a", "is not A-B or a comma list"),
                                            ("0", "includes the training seed 0")])
def test_bad_seeds_are_one_line(model, seeds, message):
    with pytest.raises(UserError, match=message):
        evaluations.main([str(model / "m"), "--seeds", seeds])


def test_a_folder_without_a_model_is_one_line(tmp_path):
    with pytest.raises(UserError, match="args.json not found"):
        evaluations.main([str(tmp_path), "--seeds", "1"])


def test_image_text_models_take_their_datapath_from_args_json(tmp_path):
    import main_imgtxt
    from m3di_fixture import write_m3di
    data = write_m3di(str(tmp_path / "m3di"), sizes={"train": 16, "val": 10, "test": 10})
    main_imgtxt.main(["--datapath", data, "--model-dir", str(tmp_path), "--model-id", "it", "--seed", "0",
                      "--batch-size", "8", "--train-steps", "2", "--hidden-size", "16", "--workers", "0"])
    evaluations.main([str(tmp_path / "it"), "--seeds", "1,2"])
    table = pd.read_csv(tmp_path / "it" / evaluations.FILE)
    assert list(table.eval_seed.unique()) == [1, 2] and {"modality", "factor_name"} <= set(table.columns)


def test_a_rerun_keeps_finished_seeds_and_evaluates_the_rest(model, monkeypatch):
    folder = str(model / "m")
    evaluations.main([folder, "--seeds", "11-12", "--num-eval-batches", "1"])
    first = pd.read_csv(os.path.join(folder, evaluations.FILE))
    calls = []
    real = evaluations.evaluate_once
    monkeypatch.setattr(evaluations, "evaluate_once", lambda main, d, seed, *a: calls.append(seed) or real(main, d, seed, *a))
    evaluations.main([folder, "--seeds", "11-13", "--num-eval-batches", "1"])
    assert calls == [13]  # 11 and 12 kept
    table = pd.read_csv(os.path.join(folder, evaluations.FILE))
    pd.testing.assert_frame_equal(table[table.eval_seed < 13].reset_index(drop=True), first, check_exact=True)
    entries = json.loads(open(os.path.join(folder, "provenance.json")).read())["evaluations"]
    assert [e["eval_seed"] for e in entries] == [11, 12, 13]
    calls.clear()
    evaluations.main([folder, "--seeds", "12", "--num-eval-batches", "2"])  # another size: evaluated afresh
    assert calls == [12] and set(pd.read_csv(os.path.join(folder, evaluations.FILE)).eval_seed) == {12}


def test_a_kill_keeps_the_seeds_already_evaluated(model, monkeypatch):
    folder = str(model / "m")
    real = evaluations.evaluate_once

    def killed_at_22(main, d, seed, *a):
        if seed == 22:
            raise KeyboardInterrupt
        return real(main, d, seed, *a)
    monkeypatch.setattr(evaluations, "evaluate_once", killed_at_22)
    with pytest.raises(KeyboardInterrupt):
        evaluations.main([folder, "--seeds", "21-22", "--num-eval-batches", "1"])
    assert set(pd.read_csv(os.path.join(folder, evaluations.FILE)).eval_seed) == {21}


def test_a_foreign_evaluations_file_is_one_line(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / evaluations.FILE).write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="has no eval_seed column"):
        evaluations.finished(str(folder), [1], None)
