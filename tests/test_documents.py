"""The documents' generated blocks equal what documents.py makes of the records in results/."""
import json
import os

import pytest

import documents
import main_mlp
from cli import UserError

TINY = ["--content-n", "2", "--style-n", "2", "--modality-n", "2", "--encoding-size", "2",
        "--batch-size", "32", "--num-eval-batches", "1", "--no-cuda"]


def test_every_block_in_the_documents_matches_the_records(capsys):
    assert documents.main(["--check"]) == 0, capsys.readouterr().out


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """A records root with one evaluated tiny model at results/demo/mlp."""
    root = tmp_path_factory.mktemp("root")
    common = ["--model-dir", str(root / "results" / "demo"), "--model-id", "mlp", *TINY]
    main_mlp.main(common + ["--seed", "0", "--train-steps", "3"])
    main_mlp.main(common + ["--seed", "1", "--evaluate"])
    return root


def test_a_stale_block_is_found_and_rewritten(records):
    text = ("# Demo\n\n<!-- records: model results/demo/mlp -->\n| typed | by hand |\n<!-- /records -->\n"
            "<!-- records: provenance results/demo/mlp -->\n<!-- /records -->\nafter\n")
    new, changed = documents.render(text, root=str(records))
    assert changed == ["model results/demo/mlp", "provenance results/demo/mlp"]
    assert new.startswith("# Demo\n\n<!-- records: model results/demo/mlp -->\n| encoding | c | s | s~ | m1 | m2 |\n")
    assert new.endswith("<!-- /records -->\nafter\n")
    assert documents.render(new, root=str(records)) == (new, [])  # generated once, stable


def test_model_table_holds_results_csv_values(records):
    folder = records / "results" / "demo" / "mlp"
    lines = documents.model_table(str(folder)).splitlines()
    results = documents.report.read_results(str(folder / "results.csv"))
    row = results[(results.encoding == "hz2") & (results.predicted_factors == "c")].iloc[0]
    cells = [line for line in lines if line.startswith("| hz2 (nonlinear R²)")][0].split(" | ")
    assert cells[1] == f"{row.r2_nonlinear:.3f}" and len(lines) == 2 + 4


def test_provenance_line_names_commit_machine_and_times(records):
    folder = records / "results" / "demo" / "mlp"
    with open(folder / "provenance.json") as f:
        record = json.load(f)
    line = documents.provenance_line(str(folder))
    assert record["training"][0]["commit"][:7] in line and record["evaluation"]["device"] in line
    assert record["evaluation"]["started"][:10] in line and "training " in line and line.endswith(" min in all.")


def test_provenance_line_counts_evaluations_over_seeds(records, tmp_path):
    import shutil
    folder = tmp_path / "m"
    shutil.copytree(records / "results" / "demo" / "mlp", folder)
    record = json.loads((folder / "provenance.json").read_text())
    seeded = {**record["evaluation"], "commit": "abcdef1" + "0" * 33, "modified": False}
    record["evaluations"] = [{**seeded, "eval_seed": 101, "wall_s": 60.0}, {**seeded, "eval_seed": 102, "wall_s": 120.0}]
    (folder / "provenance.json").write_text(json.dumps(record))
    line = documents.provenance_line(str(folder))
    assert "abcdef1" in line and line.endswith(", 2 more evaluations over evaluation seeds (evaluations.py) 3.0 min in all.")


def test_errors_are_one_line(records, tmp_path):
    with pytest.raises(UserError, match="records folder not found: results/none"):
        documents.render("<!-- records: model results/none -->\n<!-- /records -->", root=str(records))
    with pytest.raises(UserError, match="unknown block kind 'tabel'"):
        documents.render("<!-- records: tabel results/demo -->\n<!-- /records -->", root=str(records))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(UserError, match="no provenance.json with an evaluation"):
        documents.provenance_line(str(tmp_path / "empty"))


def test_a_runs_block_lists_each_run_with_its_results(records):
    lines = documents.runs_table("results/demo/*", root=str(records)).splitlines()
    results = documents.report.read_results(str(records / "results" / "demo" / "mlp" / "results.csv"))
    hz1 = results[(results.encoding == "hz1") & results.r2_nonlinear.notna()]
    assert lines[0] == "| run | " + " | ".join(hz1.predicted_factors) + " |" and len(lines) == 3
    assert lines[2] == "| mlp | " + " | ".join(f"{v:.2f}".replace("-0.00", "0.00") for v in hz1.r2_nonlinear) + " |"
    with pytest.raises(UserError, match="no run records with results.csv match results/none_\\*"):
        documents.runs_table("results/none_*", root=str(records))


def test_a_runs_block_gives_the_spread_over_evaluation_seeds_where_a_run_has_it(records, tmp_path):
    import shutil
    import pandas as pd
    root = tmp_path / "root"
    for name in ("a_s0", "a_s1"):
        shutil.copytree(records / "results" / "demo" / "mlp", root / "results" / name)
    rows = [{"encoding": "hz1", "predicted_factors": "c", "r2_nonlinear": v, "eval_seed": s}
            for s, v in ((101, 0.5), (102, 0.6), (103, 0.7))]
    pd.DataFrame(rows).to_csv(root / "results" / "a_s1" / "evaluations.csv", index=False)
    lines = documents.runs_table("results/a_*", root=str(root)).splitlines()
    assert lines[0].endswith("| c over evaluation seeds |") and lines[1].count("|---") == lines[0].count(" | ") + 1
    assert lines[2].endswith("| - |") and lines[3].endswith("| 0.600 ± 0.100 (min 0.500, 3 seeds) |")


def test_a_directions_block_lists_h1s_canonical_content_directions_with_style_gains(records, tmp_path):
    import shutil
    import pandas as pd
    import directions
    root = tmp_path / "root"
    shutil.copytree(records / "results" / "demo" / "mlp", root / "results" / "b_s0")
    directions.main([str(root / "results" / "b_s0")])  # a model without B: no style gains
    made = pd.read_csv(root / "results" / "b_s0" / "directions.csv")
    made = made[(made.encoding == "hz1") & (made.block == "c") & (made.basis == "canonical")]
    os.makedirs(root / "results" / "b_s1")
    rows = [{"encoding": e, "block": b, "basis": basis, "direction": k, "variance_share": 0.5,
             "r2_linear": r2 + (e == "hz2") + (basis == "principal"), "style_gain": gain}
            for e in ("hz1", "hz2") for b in ("c", "s") for basis in ("principal", "canonical")
            for k, r2, gain in ((2, 0.8123, 0.061), (1, 0.9871, 1.625))]
    pd.DataFrame(rows).to_csv(root / "results" / "b_s1" / "directions.csv", index=False)
    lines = documents.directions_table("results/b_*", root=str(root)).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| run | canonical content directions")
    assert lines[2] == "| b_s0 | " + ", ".join(f"{v:.3f}" for v in made.r2_linear) + " |"
    assert lines[3] == "| b_s1 | 0.987 (1.62), 0.812 (0.06) |"
    with pytest.raises(UserError, match="no run records with directions.csv match results/demo/\\*"):
        documents.directions_table("results/demo/*", root=str(records))


def test_image_text_model_table_gives_figure3_probe_and_paper_value(tmp_path):
    rows = [("image", "object_shape", "discrete", 0.1, 0.2, 0.5, 0.91),
            ("image", "object_color", "continuous", 0.7, 0.83, None, None),
            ("image", "background_color", "continuous", -0.001, -0.004, None, None),
            ("text", "text_phrasing", "discrete", 0.1, 0.2, 0.3, 0.33)]
    header = "ix,modality,factor_name,factor_type,r2_linreg,r2_krreg,acc_logreg,acc_mlp\n"
    lines = [",".join("" if v is None else str(v) for v in (i, *row)) for i, row in enumerate(rows)]
    (tmp_path / "results.csv").write_text(header + "\n".join(lines) + "\n")
    (tmp_path / "args.json").write_text(json.dumps({"encoding_size": 4, "datapath": "data"}))
    table = documents.model_table(str(tmp_path)).splitlines()
    assert table[0] == "| modality | factor | metric | measured | paper, size 4 |"
    assert table[2:] == ["| image | object_shape | acc. | 0.91 | 0.88 |",
                         "| image | object_color | R² | 0.83 | 0.92–0.99 |",
                         "| image | background_color | R² | 0.00 | ≤0.05 |",
                         "| text | text_phrasing | acc. | 0.33 | 0.49–0.78 |"]
