"""metrics.csv and --tensorboard: rows per log step, crash-safe appends, --resume without
duplicates or gaps, TensorBoard scalars equal to the CSV, and report.py's training curves."""
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

import main_mlp
import metrics
import report
from m3di_fixture import write_m3di

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--content-n", "2", "--style-n", "2", "--modality-n", "2", "--encoding-size", "2",
        "--batch-size", "32", "--log-steps", "2", "--no-cuda", "--seed", "3"]


def train_mlp(folder, steps, *extra):
    main_mlp.main(["--model-dir", str(folder.parent), "--model-id", folder.name, *TINY,
                   "--train-steps", str(steps), *extra])


def test_mlp_writes_one_row_per_log_line(tmp_path, capsys):
    folder = tmp_path / "m"
    train_mlp(folder, 5)
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if line.startswith("step ")]
    rows = metrics.read_metrics(folder / metrics.FILE)
    assert list(rows.columns) == ["step", "lr", "train_loss", "fresh_batch_loss",
                                  "r2_c", "r2_s", "r2_s~", "r2_m1", "r2_m2"]
    assert list(rows["step"]) == [1, 3, 5] and len(lines) == 3
    assert (rows["lr"] == 1e-4).all()  # the published constant learning rate
    for line, (_, row) in zip(lines, rows.iterrows()):  # the log line's values, rounded as it prints them
        assert f"train loss {row.train_loss:.6f}" in line and f"fresh-batch loss {row.fresh_batch_loss:.4f}" in line
        assert f"c {row.r2_c:.3f} s {row['r2_s']:.3f}" in line and f"m2 {row.r2_m2:.3f}" in line
    assert (folder / metrics.FILE).read_text().endswith("\n")


def test_torn_and_late_rows_are_dropped_on_resume(tmp_path):
    """A run killed after its step-5 checkpoint, having logged step 7 and half of step 9
    (simulated): --resume drops them and logs 7 and 9 again from the trained steps."""
    folder = tmp_path / "m"
    train_mlp(folder, 5)
    before = (folder / metrics.FILE).read_text()
    with open(folder / metrics.FILE, "a") as f:
        f.write("7,0.0001,99,99,0.5,0.5,0.5,0.5,0.5\n9,0.0001,9")  # a late row and a torn one
    train_mlp(folder, 9, "--resume")
    text = (folder / metrics.FILE).read_text()
    assert text.startswith(before)  # rows up to the checkpoint kept byte for byte
    rows = metrics.read_metrics(folder / metrics.FILE)
    assert list(rows["step"]) == [1, 3, 5, 7, 9]
    assert rows.loc[rows.step == 7, "train_loss"].item() != 99  # re-logged, not the stale row
    # the same steps as an uninterrupted run of 9 steps, with the same values
    whole = tmp_path / "whole"
    train_mlp(whole, 9)
    assert (whole / metrics.FILE).read_text() == text


def test_new_training_starts_a_new_file(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / metrics.FILE).write_text("step,lr\n1,5\n")  # left by a training that died before its checkpoint
    (folder / "args.json").write_text("{}")
    train_mlp(folder, 3)
    assert list(metrics.read_metrics(folder / metrics.FILE)["step"]) == [1, 3]


def test_kept_lines(tmp_path):
    path = tmp_path / metrics.FILE
    path.write_text("step,lr,x\n1,0.1,2\n3,0.1\n2,0.1,3\n5,0.1,4\n5,0.1,4\n9,0.1,5\n11,0.")
    assert metrics.kept_lines(path, 9) == ("step,lr,x", ["1,0.1,2", "2,0.1,3", "5,0.1,4", "9,0.1,5"])
    assert metrics.kept_lines(path, 4) == ("step,lr,x", ["1,0.1,2", "2,0.1,3"])
    path.write_text("ste")  # torn header
    assert metrics.kept_lines(path, 9) == (None, [])
    assert metrics.kept_lines(tmp_path / "none.csv", 9) == (None, [])


@pytest.mark.slow
def test_imgtxt_killed_between_log_steps_resumes_without_duplicates(tmp_path):
    """A real kill: log every step, checkpoint every 4 (steps 1, 5, 9, ...); killed once step 7
    is logged, --resume re-logs the steps after the checkpoint, each step once."""
    data = write_m3di(tmp_path / "data", sizes={"train": 40, "val": 10, "test": 10}, image_size=32)
    flags = ["--datapath", str(data), "--model-dir", str(tmp_path), "--model-id", "m", "--batch-size", "8",
             "--train-steps", "30", "--checkpoint-steps", "4", "--log-steps", "1", "--seed", "5",
             "--workers", "0", "--no-cuda", "--lr", "1e-3", "--hidden-size", "16"]
    script = os.path.join(ROOT, "main_imgtxt.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, script, *flags], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = tmp_path / "m" / metrics.FILE
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and len(metrics.kept_lines(path, 10**9)[1]) >= 7:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    logged = [metrics.parse_step(r) for r in metrics.kept_lines(path, 10**9)[1]]
    assert logged[:7] == list(range(1, 8)) and logged[-1] < 30
    subprocess.run([sys.executable, script, *flags, "--resume"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    rows = metrics.read_metrics(path)
    assert list(rows["step"]) == list(range(1, 31))
    assert list(rows.columns) == ["step", "lr", "train_loss", "mean_loss"]
    assert (rows["train_loss"] > 0).all() and (rows["train_loss"] == rows["mean_loss"]).all()  # window of 1


def test_tensorboard_scalars_match_metrics_csv(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    folder = tmp_path / "m"
    train_mlp(folder, 5, "--tensorboard")
    train_mlp(folder, 9, "--tensorboard", "--resume")
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(folder))
    acc = EventAccumulator(str(folder))
    acc.Reload()
    rows = metrics.read_metrics(folder / metrics.FILE)
    assert set(acc.Tags()["scalars"]) == set(rows.columns) - {"step"}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        assert [e.step for e in events] == list(rows["step"]) == [1, 3, 5, 7, 9]
        assert [e.value for e in events] == pytest.approx(list(rows[tag]), rel=1e-6)
    assert json.loads((folder / "args.json").read_text())["tensorboard"] is True


def test_tensorboard_missing_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(metrics.UserError, match="needs the tensorboard package"):
        metrics.MetricsLog(str(tmp_path), tensorboard=True)


def fake_run(folder, name, seed, steps, r2, loss):
    run = folder / name
    run.mkdir(parents=True)
    (run / "args.json").write_text(json.dumps({"seed": seed}))
    pd.DataFrame({"step": steps, "lr": 1e-3, "train_loss": loss, "fresh_batch_loss": loss,
                  "r2_c": r2}).to_csv(run / metrics.FILE, index=False)


def test_curves_figure_per_setting_and_seed(tmp_path):
    import curves
    folder = tmp_path / "table1"
    for seed in (0, 1):
        fake_run(folder, f"p1.0_multi_s{seed}", seed, [1, 3, 5], [0.1, 0.5, 0.9 + seed / 20], [5, 4, 3])
    fake_run(folder, "p0.75_multi_s0", 0, [1, 3], [0.2, 0.4], [5, 4.5])
    panels = curves.collect(str(folder), "sim")
    assert sorted(panels) == ["p0.75_multi", "p1.0_multi"]
    assert [seed for seed, _ in panels["p1.0_multi"]] == [0, 1]
    assert list(panels["p1.0_multi"][1][1]["r2_c"]) == pytest.approx([0.1, 0.5, 0.95])
    png = tmp_path / "c.png"
    assert curves.plot_curves(str(folder), "sim", str(png), "t")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert not curves.plot_curves(str(tmp_path / "empty"), "sim", str(tmp_path / "e.png"), "t")


def test_report_links_training_curves(tmp_path):
    folder = tmp_path / "table1"
    for seed in (0, 1):
        fake_run(folder, f"p1.0_multi_s{seed}", seed, [1, 3], [0.3, 0.95], [5, 3])
        args = {"seed": seed, "style_change_prob": 1.0, "statistical_dependence": False,
                "content_dependent_style": False, "shared_mixing": False, "shared_encoder": False}
        (folder / f"p1.0_multi_s{seed}" / "args.json").write_text(json.dumps(args))
        pd.DataFrame({"encoding": ["hz1"] * 2, "predicted_factors": ["c", "s"], "r2_linear": [0.9, 0.1],
                      "r2_nonlinear": [0.99, 0.1]}).to_csv(folder / f"p1.0_multi_s{seed}" / "results.csv")
    written = report.write_report(str(folder), "table1")
    assert str(folder / "table1_curves.png") in written
    text = (folder / "report.md").read_text()
    assert "![table1 training curves](table1_curves.png)" in text
    assert (folder / "table1_curves.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------- a file that is not rows ---

@pytest.mark.parametrize("damage, needle", [
    (lambda text: text.replace("step,lr,", "step,extra,lr,", 1), "line 2: 9 fields where the header has 10"),
    (lambda text: text.replace("\n3,", "\nabc,", 1), "line 3: step 'abc' does not follow step 1"),
    (lambda text: "\x00\x9f\x13garbage\n" + text, "line 1 ('\\x00"),
    (lambda text: text + "\x8f\xe2zq\x13", "after the last newline) is not the start of a row"),
])
def test_resume_refuses_a_damaged_metrics_csv_and_keeps_it(tmp_path, capsys, damage, needle):
    from helpers import file_contents
    from helpers import fails
    folder = tmp_path / "m"
    train_mlp(folder, 5)
    path = folder / metrics.FILE
    path.write_text(damage(path.read_text()))
    before = file_contents(folder)
    line = fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--resume",
                                         "--train-steps", "9", "--no-cuda"], needle)
    assert f"--resume: {path}," in line and "move the file away" in line
    assert file_contents(folder) == before  # args.json too: still the run's 5 steps


def test_a_row_cut_by_a_kill_is_no_damage(tmp_path):
    path = tmp_path / metrics.FILE
    path.write_text("step,lr,train_loss\n1,0.1,2.5\n2,0.1,2.")
    assert metrics.scan(str(path)) == ("step,lr,train_loss", ["1,0.1,2.5"], None)
    path.write_text("step,lr,train_loss\n1,0.1,2.5\n2,x")
    assert "line 3 ('2,x', after the last newline)" in metrics.scan(str(path))[2]


def test_a_text_value_leaves_the_run_out_of_the_curves_with_its_reason(tmp_path):
    import curves
    folder = tmp_path / "table1"
    fake_run(folder, "p1.0_multi_s0", 0, [1, 3], [0.2, 0.9], [5, 3])
    fake_run(folder, "p1.0_multi_s1", 1, [1, 3], [0.2, 0.9], [5, 3])
    path = folder / "p1.0_multi_s1" / metrics.FILE
    path.write_text(path.read_text().replace("\n3,0.001,3,", "\n3,0.001,abc,"))
    notes = []
    panels = curves.collect(str(folder), "sim", notes)
    assert [seed for seed, _ in panels["p1.0_multi"]] == [0]
    assert notes == ["p1.0_multi_s1: left out of the training curves, metrics.csv line 3: 'abc' in "
                     "train_loss is not a number"]
    assert panels["p1.0_multi"][0][1]["train_loss"].dtype.kind in "if"  # numbers, not text categories
