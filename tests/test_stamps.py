"""Results name the weights they were computed from (stamps.py): once the weights change, or a
result file is not the one evaluation.json names, the runner and report.py treat the results as
absent; folders without a stamp (the published scripts', older ones) still count."""
import json

import local
import main_mlp
import plans
import report
import stamps
from helpers import mlp_eval_args, train_mlp


def evaluated(tmp_path, name="m"):
    folder = train_mlp(tmp_path, name, steps=3)
    main_mlp.main([str(a) for a in mlp_eval_args(tmp_path, name)])
    return folder


def test_an_evaluation_stamps_the_weights_and_each_result_file(tmp_path):
    folder = evaluated(tmp_path)
    record = json.loads((folder / "evaluation.json").read_text())
    assert record["stamp"]["weights"] == stamps.weights_digest(str(folder))
    assert set(record["stamp"]["files"]) == {"results.csv"}
    assert stamps.stale(str(folder)) is None and plans.has_results(str(folder))


def test_an_evaluation_json_that_is_no_record_makes_the_results_stale(tmp_path):
    folder = evaluated(tmp_path)
    (folder / "evaluation.json").write_text("[]")
    assert stamps.stale(str(folder)) == f"{folder / 'evaluation.json'} holds a list, not an evaluation's record"
    assert not plans.has_results(str(folder))


def test_resumed_training_makes_the_results_stale_until_evaluated_again(tmp_path):
    folder = evaluated(tmp_path, "p1.0_multi_s3")
    results = (folder / "results.csv").read_bytes()
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", folder.name, "--resume", "--train-steps", "5",
                   "--no-cuda"])
    assert (folder / "results.csv").read_bytes() == results  # kept, but no longer current
    assert "the weights changed" in stamps.stale(str(folder))
    assert not plans.has_results(str(folder))
    runs, notes = report.load_runs(str(tmp_path), "sim")
    assert runs == [] and notes == [f"{folder.name}: left out, its results are stale: the weights changed "
                                    "after the evaluation (retrained?); evaluate again"]
    main_mlp.main([str(a) for a in mlp_eval_args(tmp_path, folder.name)])
    assert stamps.stale(str(folder)) is None and plans.has_results(str(folder))


def test_a_result_file_that_is_not_the_stamped_one_is_stale(tmp_path):
    """An evaluation killed between evaluation.json and results.csv leaves the old results.csv."""
    folder = evaluated(tmp_path)
    (folder / "results.csv").write_text((folder / "results.csv").read_text().replace("hz1", "hz2", 1))
    assert "results.csv is not the file that evaluation.json records" in stamps.stale(str(folder))
    assert not plans.has_results(str(folder))


def test_a_copied_over_encoder_makes_the_results_stale(tmp_path):
    folder = evaluated(tmp_path)
    other = train_mlp(tmp_path, "other", steps=5)
    (folder / "g1.pt").write_bytes((other / "g1.pt").read_bytes())
    assert "the weights changed" in stamps.stale(str(folder))


def test_results_without_a_stamp_cannot_be_checked_and_count(tmp_path):
    folder = evaluated(tmp_path)
    record = json.loads((folder / "evaluation.json").read_text())
    del record["stamp"]  # an evaluation of an older version
    (folder / "evaluation.json").write_text(json.dumps(record))
    (folder / "g1.pt").write_bytes(b"")
    assert stamps.stale(str(folder)) is None
    (folder / "evaluation.json").unlink()  # the published scripts write none
    assert stamps.stale(str(folder)) is None and plans.has_results(str(folder))
    (folder / "evaluation.json").write_text("{")
    assert "cannot read evaluation.json" in stamps.stale(str(folder))


def test_copies_for_other_evaluations_leave_the_results_behind(tmp_path):
    folder = evaluated(tmp_path)
    (folder / "partial.csv").write_text("views\n")
    local.copy_model(str(folder), str(tmp_path / "copy"))
    copied = {p.name for p in (tmp_path / "copy").iterdir()}
    assert not copied & {"results.csv", "partial.csv", "evaluation.json"} and "g1.pt" in copied


def test_a_records_copy_without_weights_checks_its_result_files_only(tmp_path):
    """results/ keeps no weights (records.py): a record stays current, a changed result file does not."""
    import records
    evaluated(tmp_path / "grid", "p1.0_multi_s0")
    records.main([str(tmp_path / "grid"), "--into", str(tmp_path / "results")])
    copy = tmp_path / "results" / "grid" / "p1.0_multi_s0"
    assert stamps.stale(str(copy)) is None
    (copy / "results.csv").write_text((copy / "results.csv").read_text().replace("hz1", "hz2", 1))
    assert "results.csv is not the file that evaluation.json records" in stamps.stale(str(copy))
