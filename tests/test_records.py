"""records.py: a finished grid's small files are copied into results/, never its weights."""
import os

import pytest

import records
from cli import UserError


def fake_run(folder, name, finished=True, extra=()):
    path = folder / name
    path.mkdir(parents=True)
    for f in ("args.json", "metrics.csv", "provenance.json", "g1.pt", "checkpoint.pt", "train.log",
              "directions.csv", *extra):
        (path / f).write_text("{}" if f.endswith(".json") else f"{name}/{f}")
    if finished:
        (path / "results.csv").write_text(",encoding,predicted_factors,r2_linear,r2_nonlinear\n0,hz1,c,0.5,0.9\n")
    return path


def test_only_the_records_are_copied(tmp_path, capsys):
    grid = tmp_path / "runs" / "table1"
    fake_run(grid, "p1.0_multi_s0", extra=("evaluation.json", "partial.csv", "evaluations.csv"))
    fake_run(grid, "p1.0_multi_s1")
    (grid / "report.md").write_text("not a run")
    assert records.main([str(grid), "--into", str(tmp_path / "results")]) == 0
    copied = tmp_path / "results" / "table1" / "p1.0_multi_s0"
    assert sorted(os.listdir(copied)) == ["args.json", "directions.csv", "evaluation.json", "evaluations.csv",
                                          "metrics.csv", "partial.csv", "provenance.json", "results.csv"]
    assert (copied / "metrics.csv").read_text() == "p1.0_multi_s0/metrics.csv"
    assert sorted(os.listdir(tmp_path / "results" / "table1")) == ["p1.0_multi_s0", "p1.0_multi_s1"]
    assert "table1: 2 runs" in capsys.readouterr().out


def test_a_record_is_replaced_whole(tmp_path):
    grid = tmp_path / "runs" / "table1"
    fake_run(grid, "p1.0_multi_s0")
    stale = tmp_path / "results" / "table1" / "p1.0_multi_s0"
    stale.mkdir(parents=True)
    (stale / "partial.csv").write_text("from an older run")
    records.main([str(grid), "--into", str(tmp_path / "results")])
    assert not (stale / "partial.csv").exists()


def test_unfinished_runs_are_refused_or_left_out(tmp_path, capsys):
    grid = tmp_path / "runs" / "table4"
    fake_run(grid, "p1.0_multi_nm0_s0")
    empty = fake_run(grid, "p1.0_multi_nm0_s1", finished=False)
    (empty / "results.csv").write_text("")  # a zero-byte results.csv is no result
    with pytest.raises(UserError, match="p1.0_multi_nm0_s1 has no results.csv: the grid is not finished"):
        records.main([str(grid), "--into", str(tmp_path / "results")])
    records.main([str(grid), "--into", str(tmp_path / "results"), "--unfinished"])
    assert os.listdir(tmp_path / "results" / "table4") == ["p1.0_multi_nm0_s0"]
    assert "left out: " in capsys.readouterr().out


def test_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="experiment folder not found"):
        records.main([str(tmp_path / "none"), "--into", str(tmp_path / "results")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no run folder"):
        records.main([str(tmp_path / "empty"), "--into", str(tmp_path / "results")])
    fake_run(tmp_path / "big", "r")
    monkeypatch.setattr(records, "MAX_FILE", 10)
    with pytest.raises(UserError, match="more than a record should be"):
        records.main([str(tmp_path / "big"), "--into", str(tmp_path / "results")])
