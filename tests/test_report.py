"""The report: known results.csv files give exact Markdown cells; figures are written."""
import json
import math
import os

import pandas as pd
import pytest

import report
from cli import UserError
import main_mlp
from helpers import fails

NAN = math.nan


def sim_run(folder, name, p=1.0, stat=False, cau=False, uni=False, r2=None, seed=0, discrete=None):
    """A fake simulation run folder: args.json and results.csv with r2_nonlinear of hz1 from `r2`."""
    path = folder / name
    path.mkdir(parents=True)
    args = {"style_change_prob": p, "statistical_dependence": stat, "content_dependent_style": cau,
            "shared_mixing": uni, "shared_encoder": uni, "seed": seed, "content_n": 2, "style_n": 2,
            "modality_n": 2, "encoding_size": 2, "batch_size": 512, "train_steps": 5001, "lr": 1e-4,
            **(discrete or {})}
    (path / "args.json").write_text(json.dumps(args))
    rows = [(enc, f, 0.0, (r2 or {}).get(f, 0.0) if enc == "hz1" else 0.5)
            for enc in ("hz1", "hz2") for f in ("c", "s", "s~", "m1", "m2", "c'")]
    pd.DataFrame(rows, columns=["encoding", "predicted_factors", "r2_linear", "r2_nonlinear"]).to_csv(
        path / "results.csv", index=False)
    return path


def assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 1000


def table_row(markdown, start):
    rows = [line for line in markdown.splitlines() if line.startswith(start)]
    assert len(rows) == 1, (start, markdown)
    return [c.strip() for c in rows[0].strip("|").split("|")]


def test_cell_marks_runs_that_did_not_converge():
    assert report.cell([0.52, 0.95, 0.97], 0.99, stalled=1) == "0.81 ± 0.25 †1 [0.99]"


def test_summarize_and_cells():
    assert report.summarize([0.9, 0.95, 1.0]) == pytest.approx((0.95, 0.05, 3))
    mean, std, n = report.summarize([NAN, 0.5])
    assert (mean, n) == (0.5, 1) and math.isnan(std)
    assert report.summarize([NAN, NAN])[2] == 0
    assert report.cell([0.9, 0.95, 1.0], 0.99) == "0.95 ± 0.05 [0.99]"
    assert report.cell([0.1, NAN, 0.3]) == "0.20 ± 0.14 (n=2)"
    assert report.cell([NAN], 0.0) == "n/a [0.00]"
    assert report.cell([-0.001]) == "0.00"                      # no "-0.00"
    assert report.cell([0.5], (0.49, 0.78)) == "0.50 [0.49–0.78]"
    assert report.cell([0.5], (None, 0.05)) == "0.50 [≤0.05]"


def test_table1_markdown_values_and_png(tmp_path):
    folder = tmp_path / "table1"
    for seed, (c, s) in enumerate([(0.9, 0.1), (0.95, NAN), (1.0, 0.3)]):
        sim_run(folder, f"p1.0_multi_s{seed}", r2={"c": c, "s": s, "m1": NAN}, seed=seed)
    sim_run(folder, "p1.0_uni_s0", uni=True, r2={"c": 0.8, "s": 0.02})
    sim_run(folder, "p0.75_stat_cau_multi_s0", p=0.75, stat=True, cau=True,
            r2={"c": 0.97, "s": 0.88, "m1": 0.01})
    (folder / "p0.75_uni_s0").mkdir()                          # a run still in progress
    paths = report.write_report(str(folder), "table1")
    assert paths == [str(folder / "report.md"), str(folder / "table1.png")]
    md = (folder / "report.md").read_text()
    assert table_row(md, "| 1.0 |") == ["1.0", "-", "-", "0.80 †1 [1.00]", "0.02 [0.00]",
                                         "0.95 ± 0.05 [0.99]", "0.20 ± 0.14 (n=2) [0.00]",
                                         "n/a [0.00]", "1/3"]
    assert table_row(md, "| 0.75 | yes | yes |")[3:] == ["n/a [0.99]", "n/a [0.81]", "0.97 [0.95]",
                                                        "0.88 [0.89]", "0.01 [0.00]", "0/1"]
    assert table_row(md, "| 0.75 | - | - |")[5] == "n/a [1.00]"   # paper rows stay, even without runs
    assert "p0.75_uni_s0: no results.csv yet" in md
    # the unimodal run's content R² 0.8 < 0.9: marked and listed as not converged
    listed = md.split("Verdicts within")[0]  # the not-converged list, before the near-threshold one
    assert "- p1.0_uni_s0: 0.80" in listed and "- p1.0_multi_s0" not in listed
    assert "batch_size 512" in md and "![table1](table1.png)" in md
    assert_png(folder / "table1.png")
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]


def test_table4_and_figure8(tmp_path):
    t4 = tmp_path / "table4"
    sim_run(t4, "p0.75_stat_multi_nm0_s0", p=0.75, stat=True, r2={"c": 0.99, "s": 0.4, "m1": NAN})
    report.write_report(str(t4), "table4")
    md = (t4 / "report.md").read_text()
    assert table_row(md, "| 0.75 | yes | - |") == ["0.75", "yes", "-", "0.99 [0.99]", "0.40 [0.36]", "1"]
    assert "m_i" not in md
    f8 = tmp_path / "figure8"
    sim_run(f8, "p1.0_multi_s0", r2={"c": 0.01, "c'": 0.98})
    sim_run(f8, "p1.0_multi_s1", r2={"c": 0.03, "c'": 0.96}, seed=1)
    report.write_report(str(f8), "figure8")
    md = (f8 / "report.md").read_text()
    assert table_row(md, "| 1.0 |") == ["1.0", "-", "-", "0.02 ± 0.01", "0.97 ± 0.01", "2"]
    assert "Every run converged" in md  # judged on c', the content these runs were shown
    assert_png(f8 / "figure8.png")


def test_figure8_convergence_is_judged_on_the_models_own_evaluation(tmp_path):
    """Content-dependent style spoils c' in a converged model: table1's c decides, c' only without it."""
    t1, f8 = tmp_path / "table1", tmp_path / "figure8"
    sim_run(t1, "p0.75_cau_multi_s0", p=0.75, cau=True, r2={"c": 0.95})
    sim_run(t1, "p0.75_cau_multi_s1", p=0.75, cau=True, r2={"c": 0.70}, seed=1)
    sim_run(f8, "p0.75_cau_multi_s0", p=0.75, cau=True, r2={"c": 0.2, "c'": 0.66})
    sim_run(f8, "p0.75_cau_multi_s1", p=0.75, cau=True, r2={"c": 0.2, "c'": 0.95}, seed=1)
    sim_run(f8, "p0.75_cau_multi_s2", p=0.75, cau=True, r2={"c": 0.2, "c'": 0.50}, seed=2)  # no table1 run
    report.write_report(str(f8), "figure8")
    md = (f8 / "report.md").read_text()
    assert "- p0.75_cau_multi_s1: 0.70" in md and "- p0.75_cau_multi_s2: 0.50" in md
    assert "p0.75_cau_multi_s0:" not in md
    assert table_row(md, "| 0.75 | - | yes |")[4] == "0.70 ± 0.23 †2"


def test_figure5_rows_by_discrete_blocks(tmp_path):
    folder = tmp_path / "figure5"
    for seed, c in ((0, 0.9), (1, 0.96)):
        sim_run(folder, f"p0.75_discc5_multi_s{seed}", p=0.75, seed=seed, discrete={"discrete_content": 5},
                r2={"c": c, "s": 0.02, "m1": 0.01})
    sim_run(folder, "p0.75_disccsm5_multi_s0", p=0.75, r2={"c": 0.8, "s": 0.1, "m1": 0.0},
            discrete={"discrete_content": 5, "discrete_style": 5, "discrete_modality": 5})
    report.write_report(str(folder), "figure5")
    md = (folder / "report.md").read_text()
    assert "| discrete blocks | k | content c | style s | modality m_i |" in md
    assert table_row(md, "| c | 5 |") == ["c", "5", "0.93 ± 0.04", "0.02 ± 0.00", "0.01 ± 0.00", "2"]
    assert table_row(md, "| c, s, m | 5 |") == ["c, s, m", "5", "0.80 †1", "0.10", "0.00", "1"]
    assert "[" not in md.split("| discrete blocks")[1].split("![")[0]  # no paper values to show
    assert_png(folder / "figure5.png")


def imgtxt_run(folder, size, seed, shape_acc, color_r2):
    path = folder / f"enc{size}_s{seed}"
    path.mkdir(parents=True)
    (path / "args.json").write_text(json.dumps({"encoding_size": size, "seed": seed, "batch_size": 64,
                                                "train_steps": 2001, "lr": 1e-4, "datapath": "d"}))
    rows = [(0, "image", "object_shape", "discrete", NAN, NAN, 0.1, shape_acc),
            (8, "image", "object_color", "continuous", 0.5, color_r2, NAN, NAN),
            (0, "text", "object_shape", "discrete", NAN, NAN, 0.2, shape_acc / 2),
            (5, "text", "text_phrasing", "discrete", NAN, NAN, NAN, NAN)]
    pd.DataFrame(rows, columns=["ix", "modality", "factor_name", "factor_type", "r2_linreg", "r2_krreg",
                                "acc_logreg", "acc_mlp"]).to_csv(path / "results.csv", index=False)


def test_figure3_table_and_plot(tmp_path):
    folder = tmp_path / "figure3"
    imgtxt_run(folder, 1, 0, 0.2, 0.5)
    imgtxt_run(folder, 1, 1, 0.4, 0.7)
    imgtxt_run(folder, 4, 0, 0.9, 0.95)
    report.write_report(str(folder), "figure3")
    md = (folder / "report.md").read_text()
    image, text = md.split("### image")[1].split("### text")
    header = table_row(image, "| factor |")
    assert header == ["factor", "metric", "1", "2", "3", "4", "6", "8", "10", "12"]
    shape = table_row(image, "| object_shape |")
    assert shape[:3] == ["object_shape", "acc.", "0.30 ± 0.14 [0.21]"]
    assert shape[3] == "n/a [0.21]" and shape[5] == "0.90 [0.88]"
    color = table_row(image, "| object_color |")
    assert color[1:4] == ["R²", "0.60 ± 0.14", "n/a [0.92–0.99]"] and color[5] == "0.95 [0.92–0.99]"
    assert table_row(text, "| object_shape |")[2] == "0.15 ± 0.07 [0.18]"
    assert table_row(text, "| text_phrasing |")[2] == "n/a [0.49–0.78]"
    assert "content size" not in md  # no run was evaluated with --estimate-content-size
    assert_png(folder / "figure3.png")


def test_figure3_content_size_table(tmp_path):
    folder = tmp_path / "figure3"
    for size, seed, twonn, cca, estimate in ((1, 0, 1.2, 1, 1), (1, 1, 0.8, 1, 1), (4, 0, 3.9, 3, 3)):
        imgtxt_run(folder, size, seed, 0.5, 0.5)
        pd.DataFrame([("twonn", "image", twonn), ("twonn", "text", twonn + 1), ("mle", "image", 9.0),
                      ("cca", "image~text", cca)], columns=["estimator", "encoding", "value"]).assign(
            estimate=estimate, truth=3).to_csv(folder / f"enc{size}_s{seed}" / "content_size.csv", index=False)
    table = report.build_report(str(folder), "figure3")[0]
    sizes = table.split("### content size")[1]
    assert table_row(sizes, "| 1 |") == ["1", "1.00 ± 0.28", "2.00 ± 0.28", "1, 1", "1, 1", "3"]
    assert table_row(sizes, "| 4 |") == ["4", "3.90", "4.90", "3", "3", "3"]
    (folder / "enc4_s0" / "content_size.csv").write_text("estimator,value\nx,\n")  # no estimate column
    table = report.build_report(str(folder), "figure3")[0]
    assert "| 4 |" not in table.split("### content size")[1]
    assert "enc4_s0: no readable content_size.csv" in (folder / "report.md").read_text()


def test_cli_all_and_errors(tmp_path, capsys):
    sim_run(tmp_path / "table4", "p1.0_multi_nm0_s0", r2={"c": 1.0})
    (tmp_path / "figure8" / "p1.0_multi_s0").mkdir(parents=True)   # nothing finished yet
    (tmp_path / "data").mkdir()                                      # not an experiment
    assert report.main(["--all", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "wrote " + str(tmp_path / "table4" / "report.md") in captured.out
    assert "skipped" in captured.err and "figure8" in captured.err
    assert not (tmp_path / "figure8" / "report.md").exists()
    with pytest.raises(UserError, match="cannot tell which experiment"):
        report.main([str(tmp_path)])
    with pytest.raises(UserError, match="folder not found"):
        report.main([str(tmp_path / "missing")])
    with pytest.raises(UserError, match="no run with a valid results.csv"):
        report.main([str(tmp_path / "figure8")])
    os.rename(tmp_path / "table4", tmp_path / "mine")
    report.main([str(tmp_path / "mine"), "--experiment", "table4"])
    assert (tmp_path / "mine" / "table4.png").exists()


def test_views_report(tmp_path):
    folder = tmp_path / "views"
    for k in (2, 3):
        for seed in (0, 1):
            path = folder / f"p1.0_k{k}_multi_s{seed}"
            path.mkdir(parents=True)
            (path / "args.json").write_text(json.dumps({"n_views": k, "seed": seed, "content_n": 2,
                                                        "style_n": 2, "modality_n": 2, "encoding_size": 2,
                                                        "batch_size": 256, "train_steps": 2001, "lr": 3e-4}))
            names = ["c", "s", "s~", *(f"s~{v}" for v in range(3, k + 1)), *(f"m{v}" for v in range(1, k + 1))]
            rows = [(f"hz{v}", f, 0.0, (0.9 + 0.02 * v if f == "c" else 0.05 if f == f"m{v}" else 0.01))
                    for v in range(1, k + 1) for f in names]
            pd.DataFrame(rows, columns=["encoding", "predicted_factors", "r2_linear", "r2_nonlinear"]).to_csv(
                path / "results.csv")
    report.write_report(str(folder), "views")
    md = (folder / "report.md").read_text()
    assert table_row(md, "| 2 |") == ["2", "0.93 ± 0.00", "0.92 ± 0.00", "0.01 ± 0.00", "0.05 ± 0.00",
                                      "0.05 ± 0.00", "2"]
    assert table_row(md, "| 3 |")[1:3] == ["0.94 ± 0.00", "0.92 ± 0.00"]
    assert_png(folder / "views.png")


def test_bar_series_without_results_leave_the_legend(monkeypatch, tmp_path):
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.append(fig))
    nan = float("nan")
    bars = [("c", [nan, nan], [nan, nan], [1.0, 1.0]), ("s", [nan, nan], [nan, nan], [0.0, 0.0]),
            ("m_i", [0.5, 0.4], [0.1, 0.1], [None, None])]
    report.plot_bars([("unimodal", ["a", "b"], bars)], str(tmp_path / "x.png"), "title")
    legend = figures[0].axes[0].get_legend()
    colours = {text.get_text(): tuple(handle.get_facecolor())
               for text, handle in zip(legend.get_texts(), legend.legend_handles)}
    report.plt.close(figures[0])
    assert set(colours) == {"m_i", "paper"}
    assert colours["m_i"][:3] == pytest.approx((0.173, 0.627, 0.173), abs=1e-3)  # C2, its colour beside c and s


def test_verdicts_near_the_threshold_show_their_evaluation_spread(tmp_path):
    folder = tmp_path / "table1"
    sim_run(folder, "p1.0_multi_s0", r2={"c": 0.91})                      # near, one evaluation
    near = sim_run(folder, "p1.0_multi_s1", r2={"c": 0.895}, seed=1)      # near, three evaluations
    sim_run(folder, "p1.0_multi_s2", r2={"c": 0.99}, seed=2)              # far from the threshold
    pd.DataFrame({"encoding": ["hz1"] * 3 + ["hz2"], "predicted_factors": ["c"] * 4,
                  "r2_nonlinear": [0.90, 0.91, 0.92, 0.1], "eval_seed": [1, 2, 3, 1]}).to_csv(
        near / "evaluations.csv", index=False)
    report.write_report(str(folder), "table1")
    md = (folder / "report.md").read_text()
    section = md.split("Verdicts within 0.02 of 0.9, which the evaluation's noise may flip:")[1]
    lines = section.strip().split("\n\n")[0].splitlines()
    assert lines[0].startswith("- p1.0_multi_s0: 0.91 from one evaluation; for its spread, run `python evaluations.py")
    assert lines[1] == "- p1.0_multi_s1: 0.91 ± 0.01 (min 0.90, max 0.92) over 3 evaluation seeds: converged"
    assert len(lines) == 2


def test_content_size_report(tmp_path):
    folder = tmp_path / "content_size"
    for name, size, learn, estimates in (("p1.0_multi_enc3", 3, False, (3, 3)), ("p1.0_multi_enc6_lt", 6, True, (3, 4))):
        for seed, estimate in enumerate(estimates):
            path = sim_run(folder, f"{name}_s{seed}", r2={"c": 0.95, "s": 0.01}, seed=seed)
            args = json.loads((path / "args.json").read_text())
            (path / "args.json").write_text(json.dumps({**args, "encoding_size": size, "learn_tau": learn}))
            if learn:  # the learned temperature at each logged step
                pd.DataFrame({"step": [1, 11], "tau": [1.0, 1.2 + 0.1 * seed]}).to_csv(path / "metrics.csv", index=False)
            pd.DataFrame({"estimator": ["twonn", "twonn", "mle"], "encoding": ["hz1", "hz2", "hz1"],
                          "value": [estimate + 0.2, estimate - 0.1, 9.0], "estimate": estimate, "truth": 3}).to_csv(
                path / "content_size.csv", index=False)
    sim_run(folder, "p0.75_multi_enc9_s0", r2={"c": 0.9})                 # evaluated without the estimate
    report.write_report(str(folder), "content_size")
    md = (folder / "report.md").read_text()
    assert table_row(md, "| p1.0_multi_enc3 |") == ["p1.0_multi_enc3", "3", "fixed", "3, 3", "3", "3.05 ± 0.00",
                                                    "0.95 ± 0.00", "0.01 ± 0.00", "0.00 ± 0.00"]
    assert table_row(md, "| p1.0_multi_enc6_lt |")[:5] == ["p1.0_multi_enc6_lt", "6", "learned, ends 1.25 ± 0.07",
                                                              "3, 4", "3"]
    assert "p0.75_multi_enc9_s0: no readable content_size.csv" in md
    assert_png(folder / "content_size.png")


# ------------------------------------------------ partial-observability runs ---

@pytest.fixture(scope="module")
def partial_models(tmp_path_factory):
    """Two evaluated partial-observability models of other view lists: {view list: folder}."""
    import main_mlp
    base = tmp_path_factory.mktemp("partial_models")
    out = {}
    for name, spec in (("a", "0-2;1,2"), ("b", "0-2;1;1,2")):
        common = ["--model-dir", str(base), "--model-id", name, "--no-cuda"]
        main_mlp.main([*common, "--seed", "3", "--view-latents", spec, "--batch-size", "32", "--train-steps", "3"])
        main_mlp.main([*common, "--evaluate", "--load-args", "--seed", "4", "--num-eval-batches", "1"])
        out[spec] = base / name
    return out


def copy_run(source, folder, name):
    import shutil
    shutil.copytree(source, folder / name)
    return folder / name


def test_runs_of_other_view_lists_are_not_seeds_of_one_row(tmp_path, partial_models):
    folder = tmp_path / "partial"
    for spec, source in partial_models.items():
        copy_run(source, folder, "run_" + spec.replace(";", "_").replace(",", ""))
    report.write_report(str(folder), "partial")
    md = (folder / "report.md").read_text()
    assert "Model `view_latents 0-2;1,2`:" in md and "Model `view_latents 0-2;1;1,2`:" in md
    assert "; content_coords truth;" in md  # null in args.json: the default the model was built with
    sections = md.split("Model `")
    two = next(s for s in sections if s.startswith("view_latents 0-2;1,2`"))
    three = next(s for s in sections if s.startswith("view_latents 0-2;1;1,2`"))
    assert table_row(two, "| 1+2 |")[1] == "1 2" and "| 1+3 |" not in two
    assert table_row(three, "| 1+2 |")[1] == "1" and table_row(three, "| 1+3 |")[1] == "1 2"


@pytest.mark.parametrize("damage, reason", [
    (lambda rows: rows[rows["target"] != "content"], "partial.csv has no content row for the set of views 1+2"),
    (lambda rows: rows.assign(latents=rows["latents"].where(rows["target"] != "latent", "zero")),
     "partial.csv column latents holds 'zero', not latent indices"),
    (lambda rows: rows.assign(r2_nonlinear="abc"), "partial.csv column r2_nonlinear holds text, not numbers"),
    (lambda rows: rows.drop(columns=["r2_linear", "r2_nonlinear", "mcc", "mcc_spearman"]),
     "partial.csv has no column r2_linear"),
    (lambda rows: rows.assign(latents=rows["latents"].where(rows["target"] != "latent", "99")),
     "partial.csv names latent 99, but the run's view list has latents 0..2"),
])
def test_a_malformed_partial_csv_is_left_out_with_its_reason(tmp_path, partial_models, damage, reason):
    folder = tmp_path / "partial"
    copy_run(partial_models["0-2;1,2"], folder, "good_s3")
    bad = copy_run(partial_models["0-2;1,2"], folder, "bad_s4")
    rows = pd.read_csv(bad / "partial.csv", dtype=str)
    damage(rows).to_csv(bad / "partial.csv", index=False)
    (bad / "evaluation.json").unlink()  # a folder of an older version: nothing stamps partial.csv
    report.write_report(str(folder), "partial")
    md = (folder / "report.md").read_text()
    assert f"- bad_s4: left out, {reason}" in md
    assert "| 1+2 | 1 2 |" in md and "1 runs with results" in md


def test_an_edited_partial_csv_of_a_stamped_evaluation_is_stale(tmp_path, partial_models):
    folder = tmp_path / "partial"
    copy_run(partial_models["0-2;1,2"], folder, "good_s3")
    bad = copy_run(partial_models["0-2;1,2"], folder, "bad_s4")
    (bad / "partial.csv").write_text((bad / "partial.csv").read_text().replace("content", "other"))
    report.write_report(str(folder), "partial")
    assert ("- bad_s4: left out, its results are stale: partial.csv is not the file that evaluation.json "
            "records") in (folder / "report.md").read_text()


def test_table1_leaves_out_partial_runs_and_partial_leaves_out_the_rest(tmp_path, partial_models):
    folder = tmp_path / "mixed"
    copy_run(partial_models["0-2;1,2"], folder, "yao_s3")
    sim_run(folder, "p1.0_multi_s0", r2={"c": 0.99})
    report.write_report(str(folder), "table1")
    md = (folder / "report.md").read_text()
    assert "1 runs with results" in md
    assert "- yao_s3: left out, a partial-observability run (view_latents), reported by --experiment partial" in md
    report.write_report(str(folder), "partial")
    md = (folder / "report.md").read_text()
    assert "- p1.0_multi_s0: left out, not a partial-observability run (no view_latents)" in md


def test_a_run_of_another_model_is_not_averaged_as_a_seed(tmp_path):
    folder = tmp_path / "table1"
    for seed in (0, 1):
        sim_run(folder, f"p1.0_multi_s{seed}", r2={"c": 0.9}, seed=seed)
    odd = sim_run(folder, "p1.0_multi_s2", r2={"c": 0.1}, seed=2)
    args = json.loads((odd / "args.json").read_text())
    (odd / "args.json").write_text(json.dumps({**args, "encoding_size": 5}))
    sim_run(folder, "p0.75_multi_s0", p=0.75, r2={"c": 0.8})  # another row: differs in the row's settings only
    report.write_report(str(folder), "table1")
    md = (folder / "report.md").read_text()
    assert "- p1.0_multi_s2: left out, trained with encoding_size 5 where the other runs have 2" in md
    assert "0.90 ± 0.00 [0.99]" in table_row(md, "| 1.0 |") and "3 runs with results" in md


# ------------------------------------------- bad input and hostile conditions ---

def test_report_on_unwritable_folder(tmp_path, capsys):
    run = tmp_path / "table1" / "p1.0_multi_s0"
    run.mkdir(parents=True)
    (run / "args.json").write_text(json.dumps({**vars(main_mlp.build_parser().parse_args([])), "seed": 0}))
    pd.DataFrame({"encoding": ["hz1"], "predicted_factors": ["c"], "r2_linear": [0.9],
                  "r2_nonlinear": [0.95]}).to_csv(run / "results.csv")
    (tmp_path / "table1" / "report.md").mkdir()  # cannot be written as a file
    fails(capsys, report.main, [tmp_path / "table1"], "cannot write")


def write_run(folder, args, results):
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps(args))
    results.to_csv(folder / "results.csv")


SIM_ARGS = {"style_change_prob": 1.0, "statistical_dependence": False, "content_dependent_style": False,
            "shared_mixing": False, "shared_encoder": False, "content_n": 3}


def sim_results(r2=0.95):
    return pd.DataFrame({"encoding": ["hz1"] * 5, "predicted_factors": ["c", "s", "s~", "m1", "m2"],
                         "r2_linear": [r2, 0, 0, 0, 0], "r2_nonlinear": [r2, 0, 0, 0, 0]})


def test_report_leaves_out_malformed_runs_with_their_reason(tmp_path, data):
    table1 = tmp_path / "table1"
    write_run(table1 / "good_s0", SIM_ARGS, sim_results())
    text = sim_results()
    text["r2_nonlinear"] = ["high", "0", "0", "0", "0"]
    write_run(table1 / "text_s0", SIM_ARGS, text)
    write_run(table1 / "list_s0", [1, 2], sim_results())
    write_run(table1 / "string_p_s0", {**SIM_ARGS, "style_change_prob": "1.0"}, sim_results())
    write_run(table1 / "views_s0", {**SIM_ARGS, "n_views": "three"}, sim_results())
    write_run(table1 / "nan_s0", {**SIM_ARGS, "style_change_prob": float("nan")}, sim_results())
    write_run(table1 / "header_s0", SIM_ARGS, sim_results().iloc[:0])
    write_run(table1 / "bytes_s0", SIM_ARGS, sim_results())
    (table1 / "bytes_s0" / "results.csv").write_bytes(b"\x8f\xe2\x00zq")
    write_run(table1 / "json_s0", SIM_ARGS, sim_results())
    (table1 / "json_s0" / "args.json").write_text("{garbled")
    imgtxt = pd.DataFrame({"ix": [0], "modality": ["image"], "factor_name": ["object_shape"],
                           "factor_type": ["discrete"], "r2_linreg": [None], "r2_krreg": [None],
                           "acc_logreg": [0.9], "acc_mlp": [0.9]})
    write_run(table1 / "imgtxt_s0", {"encoding_size": 4, "datapath": data}, imgtxt)
    report.main([str(table1)])
    text = (table1 / "report.md").read_text()
    assert "1 runs with results" in text
    for line in ("text_s0: left out, results.csv column r2_nonlinear holds text",
                 "list_s0: left out, args.json holds a list",
                 "string_p_s0: left out, args.json has no valid style_change_prob ('1.0')",
                 "views_s0: left out, args.json has no valid n_views ('three')",
                 "nan_s0: left out, args.json has no valid style_change_prob (nan)",
                 "header_s0: left out, results.csv has no rows",
                 "bytes_s0: left out, results.csv is unreadable (UnicodeDecodeError)",
                 "json_s0: left out, cannot read args.json",
                 "imgtxt_s0: left out, results.csv has no column encoding"):
        assert line in text, text


def test_report_of_only_bad_runs_is_one_line(tmp_path, capsys):
    write_run(tmp_path / "table1" / "list_s0", [1], sim_results())
    fails(capsys, report.main, [tmp_path / "table1"], "no run with a valid results.csv and args.json")
