"""The experiment runner: grids, skip/resume, dry runs and parallel jobs, with a fake subprocess."""
import contextlib
import json
import os
import re
import subprocess
import sys
import threading

import pandas as pd
import pytest

import experiments
import facts
import files
import local
import plans
from cli import UserError
import signal
import time
from helpers import fails

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flag_dict(cmd):
    """Parse ['--a', '1', '--b'] into {'--a': '1', '--b': True}."""
    out, i = {}, 0
    while i < len(cmd):
        if cmd[i].startswith("--") and (i + 1 == len(cmd) or cmd[i + 1].startswith("--")):
            out[cmd[i]], i = True, i + 1
        elif cmd[i].startswith("--"):
            out[cmd[i]], i = cmd[i + 1], i + 2
        else:
            i += 1
    return out


class FakeEntryPoints:
    """Stands in for run_command: writes what the entry points would write, records each call."""

    def __init__(self, fail_training_of=()):
        self.calls = []
        self.lock = threading.Lock()
        self.fail_training_of = set(fail_training_of)

    def __call__(self, cmd, log_path, env=None):
        assert cmd[0] == sys.executable and os.path.dirname(log_path)
        script, flags = os.path.basename(cmd[1]), flag_dict(cmd[2:])
        with self.lock:
            self.calls.append((script, flags))
        with open(log_path, "a") as log:
            log.write("fake output\n")
        if script == "generate_m3di.py":
            os.makedirs(os.path.join(cmd[2], "train"))
            return 0
        folder = os.path.join(flags["--model-dir"], flags["--model-id"])
        if "--evaluate" in flags:
            assert os.path.isfile(os.path.join(folder, "args.json"))
            pd.DataFrame({"encoding": ["hz1"], "predicted_factors": ["c"], "r2_linear": [0.5],
                          "r2_nonlinear": [0.9]}).to_csv(os.path.join(folder, "results.csv"), index=False)
            return 0
        if "--resume" in flags:  # continues from the checkpoint, keeps args.json
            assert os.path.isfile(os.path.join(folder, facts.CHECKPOINT))
            for name in local.MODEL_FILES[script][1:]:
                open(os.path.join(folder, name), "w").close()
            return 0
        # training: like the entry points, refuse a folder that already holds a model
        assert not os.path.exists(os.path.join(folder, "args.json"))
        args = {k.lstrip("-").replace("-", "_"): v for k, v in flags.items()}
        with open(os.path.join(folder, "args.json"), "w") as f:
            json.dump(args, f)
        if flags["--model-id"] in self.fail_training_of:
            return 1
        for name in local.MODEL_FILES[script][1:]:
            open(os.path.join(folder, name), "w").close()
        return 0

    def resumed(self):
        return [f["--model-id"] for _, f in self.calls if "--resume" in f]

    def trainings(self):
        return [f["--model-id"] for s, f in self.calls if s != "generate_m3di.py" and "--evaluate" not in f]

    def evaluations(self):
        return [(f["--model-dir"], f["--model-id"]) for _, f in self.calls if "--evaluate" in f]


@pytest.fixture
def fake(monkeypatch):
    fake = FakeEntryPoints()
    monkeypatch.setattr(local, "run_command", fake)
    return fake


def run(tmp_path, *argv):
    return experiments.main([*argv, "--out", str(tmp_path / "runs")])


# ------------------------------------------------------------------ grids ---

def test_table1_grid_names_and_flags():
    runs, generate = plans.build_runs(["table1"], "runs", "quick", range(3))
    assert generate is None and len(runs) == 30
    assert len({r.name for r in runs}) == 30
    by_name = {r.name: r for r in runs}
    run = by_name["p0.75_stat_cau_multi_s2"]
    assert run.run_dir == os.path.join("runs", "table1", "p0.75_stat_cau_multi_s2") == run.train_dir
    cmd = plans.command(run.script, run.train_flags)
    assert cmd[0] == sys.executable and cmd[1].endswith("main_mlp.py")
    flags = flag_dict(cmd[2:])
    assert flags["--style-change-prob"] == "0.75" and flags["--seed"] == "2"
    assert flags["--statistical-dependence"] is True and flags["--content-dependent-style"] is True
    assert "--shared-mixing" not in flags and "--shared-encoder" not in flags
    assert flags["--model-dir"] == os.path.join("runs", "table1")
    assert flags["--model-id"] == "p0.75_stat_cau_multi_s2"
    uni = flag_dict(plans.command("main_mlp.py", by_name["p1.0_uni_s0"].train_flags)[2:])
    assert uni["--shared-mixing"] is uni["--shared-encoder"] is True
    assert uni["--style-change-prob"] == "1.0"
    assert "--statistical-dependence" not in uni and "--content-dependent-style" not in uni
    evaluate = flag_dict(plans.command("main_mlp.py", run.eval_flags)[2:])
    assert evaluate["--evaluate"] is evaluate["--load-args"] is True
    assert evaluate["--seed"] == str(2 + plans.EVAL_SEED_OFFSET)
    assert "--permuted-content" not in evaluate


def test_scales():
    quick = flag_dict(plans.argv_of(plans.experiment_runs("table1", "r", "quick", [0], None)[0].train_flags))
    assert {k: quick[k] for k in ("--content-n", "--style-n", "--modality-n", "--encoding-size",
                                  "--batch-size", "--train-steps", "--log-steps", "--lr", "--lr-schedule",
                                  "--warmup-steps", "--encoder-init", "--precision")} == {
        "--content-n": "3", "--style-n": "3", "--modality-n": "3", "--encoding-size": "3",
        "--batch-size": "256", "--train-steps": "15001", "--log-steps": "1000", "--lr": "0.001",
        "--lr-schedule": "cosine", "--warmup-steps": "100", "--encoder-init": "kaiming", "--precision": "bf16"}
    paper = flag_dict(plans.argv_of(plans.experiment_runs("table1", "r", "paper", [0], None)[0].train_flags))
    assert (paper["--batch-size"], paper["--train-steps"], paper["--lr"], paper["--content-n"]) == (
        "6144", "300001", "0.0001", "5")
    quick_eval = plans.experiment_runs("table1", "r", "quick", [0], None)[0].eval_flags
    assert quick_eval["--num-eval-batches"] == 1
    fig = plans.experiment_runs("figure3", "r", "paper", [0], "data")[0]
    assert (fig.train_flags["--batch-size"], fig.train_flags["--train-steps"], fig.train_flags["--lr"]) == (
        256, 100001, 1e-5)
    dims = flag_dict(plans.argv_of(plans.experiment_runs("table1", "r", "dims", [0], None)[0].train_flags))
    assert {k: dims[k] for k in ("--content-n", "--style-n", "--modality-n", "--encoding-size", "--train-steps")} \
        == {"--content-n": "5", "--style-n": "5", "--modality-n": "5", "--encoding-size": "5", "--train-steps": "100001"}
    assert {k: dims[k] for k in ("--batch-size", "--lr", "--encoder-init", "--precision")} == \
        {k: quick[k] for k in ("--batch-size", "--lr", "--encoder-init", "--precision")}
    assert plans.experiment_runs("table4", "r", "dims", [0], None)[0].eval_flags["--num-eval-batches"] == 1


def test_table4_figure8_figure3_grids(tmp_path):
    t4, _ = plans.build_runs(["table4"], "runs", "quick", range(2))
    assert len(t4) == 10 and all(r.name.endswith(("_s0", "_s1")) and "_multi_nm0_" in r.name for r in t4)
    cmd = plans.argv_of(t4[0].train_flags)
    assert cmd.count("--modality-n") == 1 and cmd[cmd.index("--modality-n") + 1] == "0"  # row beats scale
    f8, _ = plans.build_runs(["figure8"], "runs", "quick", range(3))
    assert len(f8) == 15
    for run in f8:
        assert run.train_dir == os.path.join("runs", "table1", run.name)
        assert run.run_dir == os.path.join("runs", "figure8", run.name)
        assert run.eval_flags["--permuted-content"] is True and "_multi_" in run.name
    f3, generate = plans.build_runs(["figure3"], str(tmp_path), "quick", range(3))
    assert [r.name for r in f3[:4]] == ["enc1_s0", "enc1_s1", "enc1_s2", "enc2_s0"]
    assert sorted({r.row["--encoding-size"] for r in f3}) == [1, 2, 3, 4, 6, 8, 10, 12]
    data = str(tmp_path / "data" / "m3di_quick")
    assert all(r.train_flags["--datapath"] == data == r.eval_flags["--datapath"] for r in f3)
    assert generate.cmd[1].endswith("generate_m3di.py") and generate.cmd[2] == data
    gen = flag_dict(generate.cmd[3:])
    assert gen["--image-size"] == "64" and gen["--position-dependent-color"] is True
    # the recipe that learns shape (make demo-imgtxt's)
    assert {k: f3[0].train_flags[k] for k in ("--lr-schedule", "--warmup-steps", "--precision", "--train-steps")} \
        == {"--lr-schedule": "cosine", "--warmup-steps": 200, "--precision": "bf16", "--train-steps": 4001}
    # a given --datapath is used as is, and nothing is generated
    f3, generate = plans.build_runs(["figure3"], "runs", "paper", [0], datapath=str(tmp_path))
    assert generate is None and f3[0].train_flags["--datapath"] == str(tmp_path)


def test_figure5_grid():
    runs, _ = plans.build_runs(["figure5"], "runs", "quick", range(3))
    assert len(runs) == 12 and [r.name for r in runs[::3]] == [
        "p0.75_discc5_multi_s0", "p0.75_discs5_multi_s0", "p0.75_discm5_multi_s0", "p0.75_disccsm5_multi_s0"]
    flags = [flag_dict(plans.argv_of(r.train_flags)) for r in runs[::3]]
    discrete = ("--discrete-content", "--discrete-style", "--discrete-modality")
    assert [[f.get(d) for d in discrete] for f in flags] == [
        ["5", None, None], [None, "5", None], [None, None, "5"], ["5", "5", "5"]]
    assert all(f["--style-change-prob"] == "0.75" and "--shared-encoder" not in f for f in flags)
    assert all(r.train_dir == r.run_dir == os.path.join("runs", "figure5", r.name) for r in runs)


def test_cli_errors_are_one_line():
    with pytest.raises(UserError, match="unknown experiment 'tabel1'"):
        experiments.main(["tabel1"])
    with pytest.raises(UserError, match="needs --datapath"):
        experiments.main(["figure3", "--scale", "paper", "--dry-run"])
    with pytest.raises(UserError, match="at least 1"):
        experiments.main(["table1", "--jobs", "0"])
    proc = subprocess.run([sys.executable, "experiments.py", "table1", "--scale", "huge"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "invalid choice" in proc.stderr


def test_list(capsys):
    experiments.main(["--list"])
    out = capsys.readouterr().out
    for name in experiments.EXPERIMENTS:
        assert f"{name}:" in out
    assert "30 runs = 10 settings x 3 seeds (0, 1, 2)" in out and "p0.75_stat_cau_multi " in out


# ------------------------------------------------------- dry run, skip ---

def test_dry_run_prints_and_runs_nothing(tmp_path, fake, capsys):
    assert run(tmp_path, "table1", "figure8", "--seeds", "1", "--dry-run") == 0
    out = capsys.readouterr().out.splitlines()
    assert not os.path.exists(tmp_path / "runs") and fake.calls == []
    assert out[0] == "# 15 runs: 0 done, 15 to do"
    trains = [line for line in out if "main_mlp.py" in line and "--evaluate" not in line]
    evals = [line for line in out if "--evaluate" in line]
    assert len(trains) == 10 and len(evals) == 15
    assert sum("--permuted-content" in line for line in evals) == 5
    assert sum(line.startswith("cp -r ") for line in out) == 5
    assert all(line.endswith("train.log 2>&1") for line in trains)


def test_runs_everything_then_skips(tmp_path, fake):
    assert run(tmp_path, "table1", "--seeds", "2") == 0
    assert len(fake.trainings()) == 20 and len(fake.evaluations()) == 20
    folder = tmp_path / "runs" / "table1" / "p1.0_multi_s1"
    assert {"TRAINED", "train.log", "evaluate.log", "results.csv"} <= set(os.listdir(folder))
    assert not os.path.exists(tmp_path / "runs" / local.LOCK)
    fake.calls.clear()
    assert run(tmp_path, "table1", "--seeds", "2") == 0
    assert fake.calls == []


def test_existing_results_are_skipped(tmp_path, fake):
    folder = tmp_path / "runs" / "table1" / "p1.0_uni_s0"
    folder.mkdir(parents=True)
    (folder / "args.json").write_text("{}")
    (folder / "results.csv").write_text("encoding,predicted_factors,r2_linear,r2_nonlinear\nhz1,c,0.5,0.9\n")
    run(tmp_path, "table1", "--seeds", "1")
    assert "p1.0_uni_s0" not in fake.trainings() and len(fake.trainings()) == 9
    assert (str(tmp_path / "runs" / "table1"), "p1.0_uni_s0") not in fake.evaluations()


def test_unfinished_training_is_redone(tmp_path, fake):
    half = tmp_path / "runs" / "table1" / "p1.0_uni_s0"
    half.mkdir(parents=True)
    (half / "args.json").write_text("{}")           # training started, never finished
    (half / "g1.pt").write_text("stale")
    trained = tmp_path / "runs" / "table1" / "p1.0_multi_s0"
    trained.mkdir()
    (trained / "args.json").write_text("{}")
    (trained / plans.TRAINED).write_text("{}")  # trained, evaluation missing
    run(tmp_path, "table1", "--seeds", "1")
    assert "p1.0_uni_s0" in fake.trainings() and "p1.0_multi_s0" not in fake.trainings()
    assert (str(tmp_path / "runs" / "table1"), "p1.0_multi_s0") in fake.evaluations()
    assert (half / "g1.pt").read_text() == ""       # the fresh training's file


def test_interrupted_training_with_checkpoint_is_resumed(tmp_path, fake, capsys):
    folder = tmp_path / "runs" / "table4" / "p1.0_multi_nm0_s0"
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps({"content_n": 3, "batch_size": 256}))
    (folder / facts.CHECKPOINT).write_text("state at step 3000")
    run(tmp_path, "table4", "--seeds", "1", "--dry-run")
    assert "--resume" in capsys.readouterr().out
    run(tmp_path, "table4", "--seeds", "1")
    assert fake.resumed() == ["p1.0_multi_nm0_s0"] and len(fake.trainings()) == 5
    assert (folder / facts.CHECKPOINT).read_text() == "state at step 3000"  # not deleted
    assert (folder / "results.csv").exists() and (folder / plans.TRAINED).exists()
    # a checkpoint of other settings is not resumed
    folder = tmp_path / "runs" / "table1" / "p1.0_multi_s0"
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps({"batch_size": 6144}))
    (folder / facts.CHECKPOINT).write_text("")
    with pytest.raises(UserError, match="--batch-size 6144 \\(here 256\\)"):
        run(tmp_path, "table1", "--seeds", "1")


def test_failed_training_is_reported_and_retried(tmp_path, monkeypatch, capsys):
    fake = FakeEntryPoints(fail_training_of={"p1.0_uni_s0"})
    monkeypatch.setattr(local, "run_command", fake)
    assert run(tmp_path, "table1", "--seeds", "1") == 1
    assert "p1.0_uni_s0" in capsys.readouterr().err
    folder = tmp_path / "runs" / "table1" / "p1.0_uni_s0"
    assert not (folder / plans.TRAINED).exists() and not (folder / "results.csv").exists()
    fake.fail_training_of.clear()
    fake.calls.clear()
    assert run(tmp_path, "table1", "--seeds", "1") == 0
    assert fake.trainings() == ["p1.0_uni_s0"]


def test_figure8_reuses_table1_models(tmp_path, fake):
    run(tmp_path, "figure8", "--seeds", "1")       # trains into table1/, evaluates copies
    expected = [r.name for r in plans.experiment_runs("figure8", "x", "quick", [0], None)]
    assert sorted(fake.trainings()) == sorted(expected)
    assert all(d.endswith("figure8") for d, _ in fake.evaluations())
    f8 = tmp_path / "runs" / "figure8" / "p0.75_cau_multi_s0"
    assert {"args.json", "g1.pt", "TRAINED", "results.csv"} <= set(os.listdir(f8))
    assert "evaluate.log" in os.listdir(f8) and "train.log" in os.listdir(f8)
    fake.calls.clear()
    run(tmp_path, "table1", "--seeds", "1")        # multimodal models reused, only unimodal trained
    assert all(name.endswith("_uni_s0") for name in fake.trainings()) and len(fake.trainings()) == 5
    assert len(fake.evaluations()) == 10


def test_copy_model_leaves_out_results_and_checkpoint(tmp_path):
    source = tmp_path / "table1" / "m"
    source.mkdir(parents=True)
    for name in ("args.json", "g1.pt", "train.log", "TRAINED", "results.csv", "evaluate.log",
                 facts.CHECKPOINT):
        (source / name).write_text(name)
    dest = tmp_path / "figure8" / "m"
    dest.parent.mkdir()
    local.copy_model(str(source), str(dest))
    assert sorted(os.listdir(dest)) == ["TRAINED", "args.json", "g1.pt", "train.log"]
    assert json.loads((dest / "TRAINED").read_text())["copied_from"] == str(source)
    assert not (tmp_path / "figure8" / "m.partial").exists()


def test_same_value():
    assert plans.same_value(0.0001, 1e-4) and plans.same_value(5, "5")
    assert plans.same_value(False, False) and not plans.same_value(None, True)
    assert not plans.same_value(512, 6144) and plans.same_value("a/b", "a/b")


def test_reuse_with_other_settings_is_refused(tmp_path, fake):
    run(tmp_path, "table1", "--seeds", "1")
    with pytest.raises(UserError, match=r"trained with other settings: --content-n 3 \(here 5\).*"
                                        r"--batch-size 256 \(here 6144\).*and 9 more folders"):
        run(tmp_path, "table1", "--seeds", "1", "--scale", "paper")


def test_train_steps_overrides_the_scale(tmp_path, fake, capsys):
    runs, _ = plans.build_runs(["table1", "figure3"], str(tmp_path), "dims", [0], train_steps=50001)
    assert {r.train_flags["--train-steps"] for r in runs} == {50001}
    assert {r.train_flags["--content-n"] for r in runs if r.script == "main_mlp.py"} == {5}
    experiments.main(["table1", "--scale", "dims", "--train-steps", "50001", "--list"])
    assert "--train-steps 50001" in capsys.readouterr().out
    with pytest.raises(UserError, match="--train-steps must be at least 1"):
        experiments.main(["table1", "--train-steps", "0", "--dry-run"])
    run(tmp_path, "table1", "--seeds", "1", "--rows", "p1.0_multi")  # quick: 15001 steps
    with pytest.raises(UserError, match=r"--train-steps 15001 \(here 30001\)"):
        run(tmp_path, "table1", "--seeds", "1", "--rows", "p1.0_multi", "--train-steps", "30001")


def test_encoder_init_overrides_the_scale_for_simulation_runs_only(tmp_path, fake, capsys):
    runs, _ = plans.build_runs(["table1", "figure3"], str(tmp_path), "dims", [0], encoder_init="whitened")
    sim = [r for r in runs if r.script == "main_mlp.py"]
    assert sim and {r.train_flags["--encoder-init"] for r in sim} == {"whitened"}
    assert all("--encoder-init" not in r.train_flags for r in runs if r.script == "main_imgtxt.py")
    experiments.main(["table1", "--scale", "dims", "--encoder-init", "whitened", "--list"])
    assert "--encoder-init whitened" in capsys.readouterr().out
    with pytest.raises(UserError, match="--encoder-init sets the simulation's encoders; figure3 trains none"):
        experiments.main(["figure3", "--encoder-init", "whitened", "--dry-run"])
    run(tmp_path, "table1", "--seeds", "1", "--rows", "p1.0_multi")  # quick: kaiming
    with pytest.raises(UserError, match=r"--encoder-init kaiming \(here whitened\)"):
        run(tmp_path, "table1", "--seeds", "1", "--rows", "p1.0_multi", "--encoder-init", "whitened")


def test_jobs_run_everything_once(tmp_path, fake):
    assert run(tmp_path, "table1", "table4", "figure8", "--seeds", "2", "--jobs", "2") == 0
    trainings = fake.trainings()  # table1: 20, table4: 10, figure8: none of its own
    assert len(trainings) == len(set(trainings)) == 30
    evaluations = fake.evaluations()
    assert len(evaluations) == len(set(evaluations)) == 20 + 10 + 10


@pytest.fixture
def threads_seen(fake, monkeypatch):
    """OMP_NUM_THREADS of each step the fake entry points run, in order."""
    seen = []
    monkeypatch.setattr(local, "run_command",
                        lambda cmd, log, env=None: seen.append(env["OMP_NUM_THREADS"]) or fake(cmd, log, env))
    return seen


@pytest.mark.parametrize("seeds, threads", [("1", {"4"}), ("2", {"2", "4"})])
def test_cores_are_shared_among_unfinished_jobs(tmp_path, threads_seen, monkeypatch, seeds, threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    run(tmp_path, "table1", "--rows", "p1.0_multi", "--seeds", seeds, "--jobs", "2")
    # two jobs start on 2 cores each (a later step of one may get all 4 once the
    # other has finished); a lone job gets all 4 from its first step
    assert threads_seen[0] == ("4" if seeds == "1" else "2") and set(threads_seen) <= threads
    assert len(threads_seen) == 2 * int(seeds)


def test_threads_set_by_the_user_are_kept(tmp_path, threads_seen, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    run(tmp_path, "table1", "--rows", "p1.0_multi", "--seeds", "2", "--jobs", "2")
    assert threads_seen == ["3"] * 4


def test_figure3_generates_data_once(tmp_path, fake):
    run(tmp_path, "figure3", "--seeds", "1", "--jobs", "2")
    scripts = [s for s, _ in fake.calls]
    assert scripts[0] == "generate_m3di.py" and scripts.count("generate_m3di.py") == 1
    assert os.path.isdir(tmp_path / "runs" / "data" / "m3di_quick")
    assert not os.path.exists(tmp_path / "runs" / "data" / "m3di_quick.partial")
    assert len(fake.trainings()) == 8 and len(fake.evaluations()) == 8
    fake.calls.clear()
    run(tmp_path, "figure3", "--seeds", "1")
    assert fake.calls == []


def test_busy_output_folder_is_refused(tmp_path, fake):
    out = tmp_path / "runs"
    out.mkdir()
    with files.FolderLock(str(out), name=local.LOCK):  # another runner holds the folder
        with pytest.raises(UserError, match="is running on"):
            run(tmp_path, "table4", "--seeds", "1")
    (out / local.LOCK).write_text("999999999")  # left by a killed runner: no lock held
    assert run(tmp_path, "table4", "--seeds", "1") == 0


def test_run_command_logs_and_returns_exit_code(tmp_path):
    log = tmp_path / "x.log"
    rc = local.run_command([sys.executable, "-c", "import sys; print('hello'); sys.exit(3)"], str(log))
    assert rc == 3 and log.read_text().splitlines()[1] == "hello"
    assert log.read_text().startswith("$ ")
    local._STOP.set()   # after an interruption nothing new starts
    try:
        assert local.run_command([sys.executable, "-c", "print('no')"], str(log)) != 0
    finally:
        local._STOP.clear()
    assert "no\n" not in log.read_text()


def test_views_grid():
    runs, generate = plans.build_runs(["views"], "runs", "quick", range(3))
    assert generate is None and len(runs) == 9
    assert [r.row["--n-views"] for r in runs[::3]] == [2, 3, 4]
    assert all(r.script == "main_mlp.py" and r.train_dir == r.run_dir for r in runs)


def test_recipe_flags_left_out_mean_their_defaults(tmp_path):
    """A model trained with a recipe is not reused for a command without the recipe's flags."""
    (tmp_path / "args.json").write_text(json.dumps({"lr": 1e-3, "encoder_init": "kaiming",
                                                    "lr_schedule": "cosine", "warmup_steps": 100}))
    assert plans.settings_conflicts(str(tmp_path), {"--lr": 1e-3}) == [
        ("--lr-schedule", "cosine", "constant"), ("--warmup-steps", 100, 0), ("--encoder-init", "kaiming", "torch")]
    same = {"--lr": 1e-3, "--encoder-init": "kaiming", "--lr-schedule": "cosine", "--warmup-steps": 100}
    assert plans.settings_conflicts(str(tmp_path), same) == []


def test_tooling_imports_no_torch():
    """The runner, the report and the grids start in a fraction of a second and run where
    torch is not installed (a login node): they import none of it, nor what needs it."""
    code = ("import sys, experiments, report, grids, generate_m3di; "
            "heavy = sorted({'torch', 'torchvision', 'sklearn'} & set(sys.modules)); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("text, seeds", [("3", [0, 1, 2]), ("3-5", [3, 4, 5]), ("0,4,7", [0, 4, 7]),
                                         ("2,2", [2])])
def test_seed_list(text, seeds):
    assert experiments.seed_list(text) == seeds


@pytest.mark.parametrize("flag", ["0", "5-3", "x", "-1", "1-"])
def test_bad_seeds_are_one_line_errors(flag):
    with pytest.raises(UserError, match="--seeds"):
        experiments.parse_args(["table1", "--seeds", flag])


def test_seeds_zero_points_to_the_range_form():
    """--seeds 0 is a count of none; the error says how to ask for seed 0 alone."""
    with pytest.raises(UserError, match=r"--seeds: '0' is a count of seeds .*for seed 0 alone write 0-0"):
        experiments.parse_args(["table1", "--seeds", "0"])
    assert experiments.parse_args(["table1", "--seeds", "0-0"]).seeds == [0]


def test_rows_and_seed_range_select_runs(tmp_path, capsys):
    assert run(tmp_path, "table1", "figure5", "--rows", "p1.0_multi", "p0.75_discs5_multi",
               "--seeds", "3-4", "--dry-run") == 0
    out = capsys.readouterr().out
    trained = sorted({flag_dict(line.split())["--model-id"] for line in out.splitlines()
                      if "main_mlp.py" in line and "--evaluate" not in line})
    assert trained == ["p0.75_discs5_multi_s3", "p0.75_discs5_multi_s4", "p1.0_multi_s3", "p1.0_multi_s4"]
    with pytest.raises(UserError, match="--rows: no setting 'p2_multi' in table1"):
        experiments.parse_args(["table1", "--rows", "p2_multi"])


# ------------------------------------------------- planning under the lock ---

def test_a_model_finished_while_waiting_for_the_lock_is_not_redone(tmp_path, fake, monkeypatch):
    """Runner A finishes a model between runner B's start and B taking the out lock: B plans
    under the lock, so it neither deletes A's folder nor trains it again."""
    folder = tmp_path / "runs" / "table1" / "p1.0_multi_s0"
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps({"seed": 0}))  # A's training, still running
    real_lock = local.out_lock

    @contextlib.contextmanager
    def lock_after_a_finishes(out):
        (folder / "g1.pt").write_text("A's weights")
        (folder / plans.TRAINED).write_text("{}")
        (folder / "results.csv").write_text("encoding,predicted_factors,r2_linear,r2_nonlinear\nhz1,c,0.5,0.9\n")
        with real_lock(out):
            yield

    monkeypatch.setattr(local, "out_lock", lock_after_a_finishes)
    run(tmp_path, "table1", "--seeds", "0-0", "--rows", "p1.0_multi")
    assert fake.calls == [] and (folder / "g1.pt").read_text() == "A's weights"


@pytest.mark.parametrize("argv, needle", [
    (["--seeds", "2-1"], "'2-1' runs backwards"),
    (["--datapath", "x"], "--datapath is image/text data (figure3); table1 reads none"),
    (["--out", "FILE", "--dry-run"], "--out {tmp}/FILE exists and is not a folder"),
    (["--out", "", "--dry-run"], "argument --out: is empty"),
])
def test_runner_inputs_that_would_be_ignored_or_misread(tmp_path, fake, argv, needle):
    (tmp_path / "FILE").write_text("")
    argv = [a.replace("FILE", str(tmp_path / "FILE")) for a in argv]
    with pytest.raises(UserError, match=re.escape(needle.format(tmp=tmp_path))):
        experiments.main(["table1", *argv, *([] if "--out" in argv else ["--out", str(tmp_path / "runs")])])
    assert fake.calls == []


def test_a_stray_results_csv_is_neither_done_nor_deleted(tmp_path, fake):
    folder = tmp_path / "runs" / "table1" / "p1.0_multi_s0"
    folder.mkdir(parents=True)
    (folder / "results.csv").write_text("encoding,predicted_factors,r2_linear,r2_nonlinear\nhz1,c,0.5,0.9\n")
    assert not plans.has_results(str(folder))
    with pytest.raises(UserError, match="holds a results.csv but no args.json"):
        run(tmp_path, "table1", "--seeds", "0-0")
    assert (folder / "results.csv").exists() and fake.calls == []


def test_another_train_steps_names_the_runner_flag_to_rerun_with(tmp_path, fake):
    run(tmp_path, "table1", "--seeds", "1", "--rows", "p1.0_multi", "--train-steps", "40")
    with pytest.raises(UserError, match=r"--train-steps 40 \(here 15001\); rerun with --train-steps 40 as "
                                        r"it was run, or use another --out"):
        run(tmp_path, "table1", "--seeds", "1", "--rows", "p1.0_multi")


@pytest.mark.parametrize("scale", sorted(plans.SCALES))
def test_every_grid_parses_with_its_entry_points_parser(scale, tmp_path):
    """A record's rows and the scale's flags are flags of the script that runs them (a new
    experiment whose grid names a flag the script lacks fails here, not on the cluster)."""
    import main_imgtxt
    import main_mlp
    parsers = {"main_mlp.py": main_mlp.build_parser(), "main_imgtxt.py": main_imgtxt.build_parser()}
    for name in experiments.EXPERIMENTS:
        for run in plans.experiment_runs(name, str(tmp_path), scale, [0], str(tmp_path)):
            for flags in (run.train_flags, run.eval_flags):
                args = parsers[run.script].parse_args(plans.argv_of(flags))
                assert args.seed == flags["--seed"], (name, run.name)


# ------------------------------------------- bad input and hostile conditions ---

def test_children_die_with_a_killed_runner(tmp_path):
    """kill -9 of the runner: its child gets SIGTERM (PR_SET_PDEATHSIG), no orphan keeps training."""
    pidfile = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time, local\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
        f"preexec_fn=local._die_with_parent)\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n")], cwd=ROOT)
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text():
            break
        time.sleep(0.1)
    child = int(pidfile.read_text())
    parent.kill()
    parent.wait()
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the child outlived its killed parent")


def test_runner_lock_ignores_garbage_and_refuses_out_as_file(tmp_path, capsys):
    out = tmp_path / "runs"
    out.mkdir()
    (out / local.LOCK).write_text("not a pid")  # a garbage lock file is no lock
    with local.out_lock(str(out)):
        pass
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    fails(capsys, experiments.main, ["table1", "--out", afile, "--seeds", "1"], "is not a folder")
    assert afile.read_text() == "keep me"


def test_runner_seed_ranges_are_bounded(tmp_path, capsys):
    for seeds in ("0-100000000000", "100000000000", f"{2**32}"):
        fails(capsys, experiments.main, ["table1", "--seeds", seeds, "--dry-run", "--out", tmp_path], "--seeds")
    assert os.listdir(tmp_path) == []


def test_runner_never_clears_a_locked_folder(tmp_path, capsys, monkeypatch):
    started = []
    monkeypatch.setattr(local, "run_command", lambda cmd, log, env=None: started.append(cmd) or 1)
    folder = tmp_path / "runs" / "table1" / "p1.0_multi_s0"
    folder.mkdir(parents=True)
    (folder / "args.json").write_text("{}")  # a training by hand, before its first checkpoint
    with files.FolderLock(str(folder)):
        assert experiments.main(["table1", "--rows", "p1.0_multi", "--seeds", "1",
                                 "--out", str(tmp_path / "runs")]) == 1
        assert (folder / "args.json").exists() and (folder / ".lock").exists()
    assert started == []
    assert "in use by another running process" in capsys.readouterr().err


@pytest.mark.parametrize("text, counts", [
    ("", False), ("\n\n", False), ("encoding,predicted_factors,r2_linear,r2_nonlinear\n", False),
    ("garbage", False), ("encoding,predicted_factors,r2_linear,r2_nonlinear\nhz1,c,0.5,0.9\n", True),
    (",encoding,predicted_factors,r2_linear,r2_nonlinear\n0,hz1,c,0.5,\n", True),  # pandas' index column
    ("encoding,predicted_factors,r2_linear\nhz1,c,0.5\n", False),  # the report would leave it out
    ("encoding,predicted_factors,r2_linear,r2_nonlinear\nhz1,c,high,0.9\n", False),
    ("encoding,predicted_factors,r2_linear,r2_nonlinear\nhz1,c,0.5\n", False),
    ("modality,factor_name,factor_type,r2_linreg,r2_krreg,acc_logreg,acc_mlp\nimage,shape,discrete,,,0.9,0.8\n", True),
])
def test_only_a_results_csv_with_rows_counts_as_finished(tmp_path, text, counts):
    (tmp_path / "args.json").write_text("{}")  # the model it evaluated (a stray results.csv is no result)
    (tmp_path / "results.csv").write_text(text)
    assert plans.has_results(str(tmp_path)) is counts


def test_ctrl_c_of_the_runner_ends_its_child_with_one_line(tmp_path):
    """The child runs in a session of its own: the runner alone gets the terminal's Ctrl-C and
    stops it with one SIGTERM, which the entry point reports as an interruption, no abort."""
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / "runs"
    runner = subprocess.Popen([sys.executable, "experiments.py", "table1", "--rows", "p1.0_multi", "--seeds", "1",
                               "--out", str(out)], cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    folder = out / "table1" / "p1.0_multi_s0"
    try:
        for _ in range(600):  # the child has started training once its args.json is written
            if (folder / "args.json").exists():
                break
            time.sleep(0.1)
        time.sleep(1.0)
        runner.send_signal(signal.SIGINT)
        runner.communicate(timeout=120)
    finally:
        runner.kill()
    assert runner.returncode == 130
    log = (folder / "train.log").read_text()
    lines = [line for line in log.replace("\r", "\n").splitlines() if line.strip()]
    assert "interrupted" in lines[-1], lines[-3:]
    assert "Traceback" not in log and "terminate called" not in log and "Abort" not in log
    assert not (folder / ".lock").exists()
