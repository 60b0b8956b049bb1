"""A latent dependency is one entry of dependencies.REGISTRY: its flag, its draw, where it enters
the samples, its refusals and its column in the report all follow from the entry."""
import json
import os
from argparse import Namespace

import pytest
import torch

import dependencies
import grids
import main_mlp
import report
import shared_content
import spaces
from cli import UserError

TINY = ["--content-n", "2", "--style-n", "2", "--modality-n", "2", "--encoding-size", "2", "--no-cuda"]


def nonlinear_style():
    """Style that depends nonlinearly on the content: s = s0 + tanh(N c), N fixed by the seed."""
    def draw(ctx):
        g = torch.Generator().manual_seed(dependencies.stream(ctx.seed, 7))
        return {"N": torch.randn(ctx.sizes["s"], ctx.sizes["c"], generator=g)}
    return dependencies.Dependency(
        "nonlinear_style", "nl", "NL", "shift the style by tanh(N c)", draw, lambda name: name == "N",
        shift=lambda blocks, p: {**blocks, "s": blocks["s"] + torch.tanh(blocks["c"] @ p["N"].T)},
        gaussian=("s",), why="tanh(N c) would make the style continuous")


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(dependencies, "REGISTRY", (*dependencies.REGISTRY, nonlinear_style()))


def test_a_new_dependency_trains_evaluates_and_reports(registered, tmp_path):
    out = tmp_path / "table1"
    common = ["--model-dir", str(out), "--model-id", "p0.75_nl_multi_s0"]
    main_mlp.main(common + TINY + ["--seed", "0", "--style-change-prob", "0.75", "--nonlinear-style",
                                   "--batch-size", "32", "--train-steps", "3", "--log-steps", "3"])
    main_mlp.main(common + ["--seed", "1", "--evaluate", "--load-args", "--num-eval-batches", "1"])
    folder = out / "p0.75_nl_multi_s0"
    saved = json.loads((folder / "args.json").read_text())
    assert saved["nonlinear_style"] is True and not saved["content_dependent_style"]
    params = spaces.read_parameters(str(folder))
    assert set(params) >= {"N"} and "B" not in params and params["N"].shape == (2, 2)

    # The samples: the same draws as without it, the style shifted by tanh(N c) before the views see it.
    args = Namespace(**saved)
    plain = shared_content.build_latent_space(Namespace(**{**saved, "nonlinear_style": False}), 0, "cpu", {})
    space = shared_content.build_latent_space(args, 0, "cpu", {"N": params["N"]})
    a, b = (s.sample(64, torch.Generator().manual_seed(5)) for s in (plain, space))
    shift = torch.tanh(a["c"] @ params["N"].T)
    torch.testing.assert_close(b["c"], a["c"])
    torch.testing.assert_close(b["s"], a["s"] + shift)
    torch.testing.assert_close(b["s~"] - b["s"], a["s~"] - a["s"])  # the same style change on top

    # The report: a row of its own, with a column for it.
    report.main([str(out)])
    text = (out / "report.md").read_text()
    assert "| p(chg) | Stat | Cau | NL |" in text and "| 0.75 | - | - | yes |" in text
    assert report.sim_key(saved) == "p0.75_nl" and report.row_label("table1", "p0.75_nl") == "p=0.75 NL"


def test_a_new_dependency_in_grids_refusals_and_saved_settings(registered, tmp_path):
    row = dict(grids.table_grid(("multi",)))["p0.75_stat_multi"]
    assert row["--nonlinear-style"] is False  # every grid row states every dependency
    assert "nonlinear_style" in main_mlp.loaded_args() and "nonlinear_style" not in main_mlp.PUBLISHED_ARGS
    with pytest.raises(UserError, match="--discrete-style cannot be combined with --nonlinear-style: tanh"):
        main_mlp.main(["--model-dir", str(tmp_path), *TINY, "--nonlinear-style", "--discrete-style", "3"])
    with pytest.raises(UserError, match="--nonlinear-style cannot be combined with --view-latents"):
        main_mlp.main(["--model-dir", str(tmp_path), "--view-latents", "0-2;1,2", "--nonlinear-style"])
    assert not os.listdir(tmp_path)


def test_a_model_evaluated_without_its_dependency_is_refused(registered, tmp_path):
    common = ["--model-dir", str(tmp_path), "--model-id", "m"]
    main_mlp.main(common + TINY + ["--seed", "0", "--nonlinear-style", "--batch-size", "32",
                                   "--train-steps", "2", "--log-steps", "2"])
    with pytest.raises(UserError, match="was trained with --nonlinear-style.*add --load-args"):
        main_mlp.main(common + TINY + ["--seed", "1", "--evaluate", "--num-eval-batches", "1"])


def test_the_papers_dependencies_keep_their_row_names_and_columns():
    assert report.SIM_ROWS == ["p1.0", "p0.75", "p0.75_stat", "p0.75_cau", "p0.75_stat_cau"]
    assert set(grids.TABLE1) == set(report.SIM_ROWS)
    assert report.row_cells("table1", "p0.75_stat") == ([0.75, "yes", "-"], ["p(chg)", "Stat", "Cau"])
    assert dependencies.parse_row_key("p1.0_cau") == (1.0, {"statistical_dependence": False,
                                                             "content_dependent_style": True})
