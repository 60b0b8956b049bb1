"""Partial observability (main_mlp.py --view-latents): the spec, the sets and their content,
the coordinates, the loss over sets, a tiny training, its evaluation and its report."""
import json

import pandas as pd
import pytest
import torch

import main_mlp
import partial
import report
from cli import UserError, run_cli
from helpers import file_contents
from losses import LpSimCLRLoss, MultiViewLpLoss
from helpers import fails

YAO = "0-4;0,1,2,4,5;0,1,2,3,5;0,1,3,4,5"
TINY = ["--batch-size", "32", "--train-steps", "3", "--log-steps", "2", "--no-cuda"]


def args_for(spec, mode=None, width=5):
    return main_mlp.build_parser().parse_args(
        ["--view-latents", spec, "--encoding-size", str(width), *(["--content-coords", mode] if mode else [])])


# ------------------------------------------------------------ the spec ---

def test_spec_parses_indices_and_ranges_in_the_given_order():
    assert partial.parse_spec(YAO) == ((0, 1, 2, 3, 4), (0, 1, 2, 4, 5), (0, 1, 2, 3, 5), (0, 1, 3, 4, 5))
    assert partial.parse_spec(" 2, 0-1 ; 1 - 2 ,3") == ((2, 0, 1), (1, 2, 3))


@pytest.mark.parametrize("spec, message", [
    ("", "is empty"),
    ("0-3", "names 1 view"),
    ("0,1;;1,2", "view 2 sees no latents"),
    ("0,1;1,x", "view 2: 'x' is not a latent index"),
    ("0,1;1,-2", "is not a latent index"),
    ("0,1;1,,2", "view 2: '' is not"),
    ("0,1;3-1", "runs backwards"),
    ("0,1;1,64", "latent 64 is out of range"),
    ("0,1;0-99999999999", "out of range"),
    ("0,1;1,1", "lists latent 1 twice"),
    ("0,1;1,3", "latent 2 is seen by no view"),
    (";".join(["0,1"] * 9), "at most 8"),
    ("0,1;1,2;3", "view 3 shares no latent"),
])
def test_bad_specs_give_one_line_naming_the_flag(spec, message):
    with pytest.raises(UserError, match=message) as err:
        partial.layout(args_for(spec))
    assert "--view-latents" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------- sets and coordinates ---

def test_yao_setting_has_eleven_sets_with_their_intersections():
    sets = dict(partial.content_sets(partial.parse_spec(YAO)))
    assert len(sets) == 11  # all 6 pairs, 4 triples and the 4 views together
    assert sets[(0, 1)] == (0, 1, 2, 4) and sets[(2, 3)] == (0, 1, 3, 5)
    assert sets[(0, 1, 2)] == (0, 1, 2) and sets[(1, 2, 3)] == (0, 1, 5)
    assert sets[(0, 1, 2, 3)] == (0, 1)
    assert list(sets)[:3] == [(0, 1), (0, 2), (0, 3)]  # by size, then as combinations gives them


def test_empty_intersections_are_skipped():
    sets = partial.content_sets(partial.parse_spec("0,1;2,3;1,2"))
    assert sets == [((0, 2), (1,)), ((1, 2), (2,))]  # 1+2 and 1+2+3 share nothing


def test_truth_coordinates_are_the_positions_of_the_content_in_each_view():
    plan = partial.layout(args_for("3,0,1;1,2,3", "truth"))
    assert plan.sizes == [3, 3]
    # content (1, 3): view 1 (3, 0, 1) has latent 1 at position 2 and 3 at 0; view 2 (1, 2, 3) at 0 and 2
    assert plan.coords == [{0: (2, 0), 1: (0, 2)}]


def test_split_gives_every_set_its_own_block_in_each_of_its_views():
    plan = partial.layout(args_for("0,1,2;0,1;1,2", "split", width=2))
    # sets 1+2 {0,1}, 1+3 {1,2}, 2+3 {1}, 1+2+3 {1}
    assert [s for s, _ in plan.sets] == [(0, 1), (0, 2), (1, 2), (0, 1, 2)]
    assert plan.coords[0] == {0: (0, 1), 1: (0, 1)}
    assert plan.coords[1] == {0: (2, 3), 2: (0, 1)}
    assert plan.coords[2] == {1: (2, 3), 2: (2, 3)}
    assert plan.coords[3] == {0: (4, 5), 1: (4, 5), 2: (4, 5)}
    assert plan.sizes == [6, 6, 6]


def test_one_set_of_two_views_gives_the_k_view_loss_on_its_coordinates():
    torch.manual_seed(0)
    plan = partial.layout(args_for("0,1,2;0,1,3", "truth"))
    h = [torch.randn(40, 3), torch.randn(40, 3)]
    base = LpSimCLRLoss()
    ours = partial.SetLoss(plan, base=base)(h, 20)
    expected = MultiViewLpLoss(base=base)([h[0][:, :2], h[1][:, :2]], 20)
    torch.testing.assert_close(ours, expected)


def test_loss_over_sets_is_the_sum_of_each_sets_mean_over_pairs():
    torch.manual_seed(1)
    plan = partial.layout(args_for("0,1;0,1;1", "split", width=1))
    h = [torch.randn(30, e) for e in plan.sizes]
    base = LpSimCLRLoss()
    pairwise = MultiViewLpLoss(base=base)
    expected = sum(pairwise([h[k][:, list(coords[k])] for k in subset], 15)
                   for (subset, _), coords in zip(plan.sets, plan.coords))
    torch.testing.assert_close(partial.SetLoss(plan, base=base)(h, 15), expected)


# ----------------------------------------------------------------- flags ---

@pytest.mark.parametrize("extra, message", [
    (["--n-views", "3"], "--n-views cannot be combined with --view-latents"),
    (["--shared-mixing"], "--shared-mixing cannot be combined"),
    (["--statistical-dependence"], "--statistical-dependence cannot be combined"),
    (["--discrete-content", "3"], "--discrete-content cannot be combined"),
    (["--content-n", "3"], "--content-n has no meaning with --view-latents"),
    (["--style-change-prob", "0.5"], "--style-change-prob has no meaning"),
])
def test_incompatible_flags_are_refused(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        run_cli(main_mlp.main, ["--model-dir", str(tmp_path), "--view-latents", "0,1;1,2", *TINY, *extra])
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_content_coords_needs_the_spec(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_cli(main_mlp.main, ["--model-dir", str(tmp_path), "--content-coords", "split", *TINY])
    assert "--content-coords needs --view-latents" in capsys.readouterr().err


def test_a_view_of_one_latent_trains(tmp_path):
    """A one-latent view's 1 x 1 mixing (condition number 1, the threshold itself) is built."""
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "one", "--seed", "3", "--view-latents", "0-2;0",
                   *TINY])
    weights = torch.load(tmp_path / "one" / "f2.pt")
    assert all(w.shape == (1, 1) and abs(w.item()) == 1.0 for w in weights.values())


# ----------------------------------------------- training and evaluation ---

def train(tmp_path, spec="0-2;0,1,3;1-3", extra=()):
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "m", "--seed", "3", "--view-latents", spec,
                   *TINY, *extra])
    return tmp_path / "m"


def evaluate(tmp_path, extra=("--load-args",)):
    return main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "m", "--evaluate", "--seed", "4",
                          "--num-eval-batches", "2", "--no-cuda", *extra])


@pytest.mark.parametrize("mode", ["truth", "split"])
def test_tiny_training_evaluates_every_set_and_writes_partial_csv(tmp_path, mode):
    folder = train(tmp_path, extra=["--content-coords", mode, "--encoding-size", "2"])
    saved = json.loads((folder / "args.json").read_text())
    assert saved["view_latents"] == "0-2;0,1,3;1-3" and saved["content_coords"] == mode
    metrics = pd.read_csv(folder / "metrics.csv")
    assert {"r2_content", "r2_1+2", "r2_1+2+3"} <= set(metrics.columns)
    results = evaluate(tmp_path)
    assert list(results.columns) == ["encoding", "predicted_factors", "r2_linear", "r2_nonlinear"]
    assert len(results) == 3 * 4 and results[["r2_linear", "r2_nonlinear"]].notna().all().all()
    table = pd.read_csv(folder / "partial.csv", dtype=str)
    assert tuple(table.columns) == partial.COLUMNS
    assert list(dict.fromkeys(table["views"])) == ["1+2", "1+3", "2+3", "1+2+3"]
    content = table[table.target == "content"].set_index(["views", "view"])["latents"]
    assert content[("1+2", "1")] == "0 1" and content[("2+3", "3")] == "1 3" and content[("1+2+3", "2")] == "1"
    other = table[table.target == "other"].set_index(["views", "view"])["latents"]
    assert other[("1+2", "2")] == "3" and other[("1+2+3", "3")] == "2 3"
    coords = table[table.target == "content"].set_index(["views", "view"])["coordinates"]
    if mode == "truth":
        assert coords[("2+3", "3")] == "0 2"  # latents 1 and 3 sit at positions 0 and 2 of view 3
    else:
        assert coords[("1+3", "1")] == "2 3" and coords[("1+2+3", "3")] == "4 5"
    numbers = table[["r2_linear", "r2_nonlinear", "mcc", "mcc_spearman"]].astype(float)
    assert numbers.notna().all().all()
    record = json.loads((folder / "evaluation.json").read_text())
    assert record["encoding_sizes"] == ([3, 3, 3] if mode == "truth" else [6, 6, 6])


def test_evaluation_without_load_args_refuses_other_settings(tmp_path):
    train(tmp_path)
    with pytest.raises(UserError, match="--view-latents"):
        evaluate(tmp_path, extra=())


def test_resume_keeps_the_spec(tmp_path):
    folder = train(tmp_path, spec="0,1;1,2")
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "m", "--resume", "--train-steps", "5",
                   "--no-cuda"])
    assert json.loads((folder / "args.json").read_text())["view_latents"] == "0,1;1,2"
    with pytest.raises(UserError, match="--view-latents"):
        main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "m", "--resume", "--train-steps", "7",
                       "--view-latents", "0,1;0,1", "--no-cuda"])


def test_report_of_a_partial_run_has_a_table_and_a_heatmap(tmp_path):
    folder = tmp_path / "partial"
    train(folder)
    evaluate(folder)
    (folder / "m").rename(folder / "yao_truth_s3")
    written = report.write_report(str(folder), "partial")
    text = (folder / "report.md").read_text()
    assert "| 1+2 | 0 1 |" in text and "| 1+2+3 | 1 |" in text and "content MCC" in text
    assert (folder / "partial.png").is_file() and str(folder / "partial.png") in written


def test_two_view_evaluation_records_the_mcc_of_c(tmp_path):
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "m", "--seed", "3", "--content-n", "2",
                   "--style-n", "1", "--modality-n", "1", "--encoding-size", "2", *TINY])
    evaluate(tmp_path)
    mcc = json.loads((tmp_path / "m" / "evaluation.json").read_text())["mcc"]
    assert set(mcc) == {"hz1", "hz2"} and all(0 <= v[m] <= 1 for v in mcc.values() for m in ("pearson", "spearman"))


# ------------------------------------------------------------ the runner ---

def test_partial_grid_is_yao_et_al_at_the_quick_scale(tmp_path):
    import grids
    import plans
    runs, generate = plans.build_runs(["partial"], str(tmp_path), "quick", range(3))
    assert generate is None and len(runs) == 6
    assert [r.name for r in runs[::3]] == ["yao_truth_s0", "yao_split_s0"]
    train = plans.argv_of(runs[3].train_flags)
    assert train[train.index("--view-latents") + 1] == YAO == grids.YAO_VIEWS
    assert "--content-n" not in train and train[train.index("--encoding-size") + 1] == "4"
    assert train[train.index("--train-steps") + 1] == "15001" and "--encoder-init" in train
    assert "--encoding-size" not in plans.argv_of(runs[0].train_flags)
    # a model trained by such a command is not mistaken for one with other settings
    folder = tmp_path / "done"
    folder.mkdir()
    saved = {"view_latents": YAO, "content_coords": "split", "content_n": 5, "encoding_size": 4}
    (folder / "args.json").write_text(json.dumps(saved))
    assert plans.settings_conflicts(str(folder), runs[3].train_flags) == []


# ------------------------------------------- what identifies the model ---

def test_view_lists_are_spelled_one_way():
    assert partial.canonical(" 0 - 2 ; 1 , 2 ") == "0-2;1,2" == partial.canonical("0,1,2;1-2")
    assert partial.canonical("0,2,1;1,2") == "0,2,1;1,2"  # the order is what the model is
    assert partial.canonical(YAO) == "0-4;0-2,4,5;0-3,5;0,1,3-5"
    assert args_for(" 0 - 2 ; 1 , 2 ").view_latents == "0-2;1,2"


@pytest.mark.parametrize("spec", ["٣;1", "0,1;1,²", "0,1;１"])
def test_digits_of_other_scripts_are_no_latents(spec):
    with pytest.raises(UserError, match="ASCII digits"):
        args_for(spec)


def test_the_saved_model_records_its_view_list(tmp_path):
    folder = train(tmp_path, spec="0-2;1,2")
    assert torch.load(folder / "latent_space.pt")["view_latents"] == "0-2;1,2"


@pytest.mark.parametrize("edited, needle", [
    ("0,2,1;1,2", "but {args} gives --view-latents 0,2,1;1,2"),   # the same sizes, latents swapped
    ("0-2;1,2;0", "but {args} gives --view-latents 0-2;1,2;0"),   # a third view: not "f3.pt not found"
    (None, "but {args} gives no --view-latents"),                 # not "f1.pt does not fit"
])
def test_another_view_list_in_args_json_is_refused(tmp_path, capsys, edited, needle):
    folder = train(tmp_path, spec="0-2;1,2")
    saved = json.loads((folder / "args.json").read_text())
    (folder / "args.json").write_text(json.dumps({**saved, "view_latents": edited}))
    before = file_contents(folder)
    message = needle.format(args=folder / "args.json")
    for argv in (["--evaluate", "--load-args", "--seed", "4"], ["--resume", "--train-steps", "5"]):
        line = fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", *argv, "--no-cuda"],
                     message)
        assert "trained with --view-latents 0-2;1,2 (latent_space.pt)" in line
    assert file_contents(folder) == before


@pytest.mark.parametrize("key, value, recorded, given", [
    ("content_coords", "split", "--content-coords truth", "--content-coords split"),  # other coordinates per set
    ("shared_encoder", True, "no --shared-encoder", "--shared-encoder"),  # g1.pt read for every view
])
def test_another_model_identity_in_args_json_is_refused(tmp_path, capsys, key, value, recorded, given):
    """The saved model records all that identifies it beyond its shapes (main_mlp.identity)."""
    folder = train(tmp_path, spec="0-2;1,2", extra=["--encoding-size", "3"])
    saved = json.loads((folder / "args.json").read_text())
    (folder / "args.json").write_text(json.dumps({**saved, key: value}))
    before = file_contents(folder)
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--evaluate", "--load-args",
                                  "--seed", "4", "--no-cuda"],
          f"holds a model trained with {recorded} (latent_space.pt), but {folder / 'args.json'} gives {given}")
    assert file_contents(folder) == before


def test_a_view_list_spelled_otherwise_is_the_same_model(tmp_path):
    folder = train(tmp_path, spec="0-2;1,2")
    saved = json.loads((folder / "args.json").read_text())
    (folder / "args.json").write_text(json.dumps({**saved, "view_latents": " 0 - 2 ; 1 , 2 "}))
    evaluate(tmp_path, extra=("--view-latents", "0,1,2;1,2"))
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "m", "--resume", "--train-steps", "5",
                   "--view-latents", "0-2;1-2", "--no-cuda"])
    assert json.loads((folder / "args.json").read_text())["view_latents"] == "0-2;1,2"


def test_a_flag_given_against_a_restored_view_list_is_blamed_on_the_flag(tmp_path, capsys):
    train(tmp_path, spec="0-2;1,2")
    line = fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--evaluate", "--load-args",
                                         "--permuted-content", "--seed", "4", "--no-cuda"],
                 "--permuted-content cannot be combined with --view-latents")
    assert line.split("error: ")[1].startswith("--permuted-content") and "gives the model's --view-latents" in line


def test_content_coords_on_resume_is_checked_against_the_runs_view_list(tmp_path, capsys):
    folder = train(tmp_path, spec="0-2;1,2", extra=["--content-coords", "split", "--encoding-size", "3"])
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "m", "--resume", "--train-steps", "5",
                   "--content-coords", "split", "--no-cuda"])
    assert json.loads((folder / "args.json").read_text())["train_steps"] == 5


# ------------------------------------------------ one latent, huge sizes ---

def test_whitening_a_view_of_one_latent(tmp_path):
    """The covariance of a one-latent view is a 1 x 1 matrix, not a scalar that eigh refuses."""
    folder = train(tmp_path, spec="0-2;1,2;0;2", extra=["--encoder-init", "whitened"])
    assert torch.load(folder / "g3.pt")["0.weight"].shape == (10, 1)


def test_split_sizes_beyond_memory_are_one_line(tmp_path, capsys):
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--view-latents", "0,1;1", "--content-coords", "split",
                                  "--encoding-size", "1000000000000", *TINY], "at most 65536")


def test_split_with_fewer_coordinates_than_a_content_says_so(tmp_path, capsys):
    train(tmp_path, spec="0-2;0-2", extra=["--content-coords", "split", "--encoding-size", "2"])
    assert "gives the set of views 1+2 fewer coordinates than its content has latents (3)" in capsys.readouterr().err
