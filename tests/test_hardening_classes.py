"""Bad input by class: values restored from args.json, ranges of seeds and sizes, folder
locks, checkpoint order, the runner's view of finished runs, and report.py's bad files.

Each class is fixed in one place; each test covers the class's cases with the exit code,
a one-line message naming the file or flag, and that nothing saved changed.
"""
import json
import os

import pandas as pd
import pytest
import torch

import directions
import experiments
import local
import plans
import generate_m3di
import main_imgtxt
import main_mlp
import report
import run
import cli
import files
import utils
from helpers import file_contents as digest
from m3di_fixture import write_m3di
from test_hardening import IMGTXT, TINY, data, fails, train_imgtxt, train_mlp  # noqa: F401

T = [*TINY, "--train-steps", "3", "--num-eval-batches", "1"]


def evaluate_args(tmp_path, model_id="m", load=True):
    return ["--model-dir", tmp_path, "--model-id", model_id, "--evaluate", *(["--load-args"] if load else []),
            "--seed", "9", "--num-eval-batches", "1", "--no-cuda"]


def edit_json(path, **changes):
    saved = json.loads(path.read_text())
    saved.update(changes)
    path.write_text(json.dumps(saved))


def edit_args(folder, **changes):
    edit_json(folder / "args.json", **changes)


# ------------------------------------- values restored from args.json ---

@pytest.mark.parametrize("key, value, needle", [
    ("n_views", None, "n_views = None"),
    ("content_n", None, "content_n = None"),
    ("n_views", 1, "(key n_views): --n-views must be at least 2"),
    ("style_change_prob", 1.5, "(key style_change_prob): --style-change-prob must be in [0, 1]"),
    ("encoding_size", 0, "(key encoding_size): --encoding-size must be at least 1"),
    ("m_param", -1.0, "(key m_param): --m-param must be a finite positive"),
    ("discrete_content", 1, "(key discrete_content): --discrete-content must be 0"),
])
def test_restored_values_are_checked_like_flags(tmp_path, capsys, key, value, needle):
    folder = train_mlp(tmp_path)
    edit_args(folder, **{key: value})
    before = digest(folder)
    line = fails(capsys, main_mlp.main, evaluate_args(tmp_path), needle)
    assert str(folder / "args.json") in line
    assert digest(folder) == before


@pytest.mark.parametrize("key, value, needle", [
    ("batch_size", 0, "(key batch_size): --batch-size must be at least 1"),
    ("warmup_steps", 10**9, "(key warmup_steps): --warmup-steps 1000000000 exceeds"),  # not "--lr"
    ("adam_beta1", 1.5, "(key adam_beta1): --adam-beta1 must be in [0, 1)"),
])
def test_resume_checks_the_restored_values(tmp_path, capsys, key, value, needle):
    folder = train_mlp(tmp_path)
    edit_args(folder, **{key: value})
    before = digest(folder)
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--resume", "--train-steps", "5"],
          needle)
    assert digest(folder) == before


def test_a_training_seed_out_of_range_in_args_json(tmp_path, capsys):
    folder = train_mlp(tmp_path)
    edit_args(folder, seed=-5)
    fails(capsys, main_mlp.main, evaluate_args(tmp_path), "args.json: seed must be in 0..4294967295")
    line = fails(capsys, directions.main, [folder, "--no-cuda"], "seed must be in 0..4294967295, got -5")
    assert str(folder / "args.json") in line


@pytest.mark.parametrize("key, value, needle", [
    ("sequence_length", 0, "sequence_length = 0 is not a sequence length"),
    ("sequence_length", "12", "sequence_length = '12'"),
    ("image_size", [8], "image_size = [8] is not [height, width]"),
    ("hidden_size", None, "hidden_size = None"),
    ("tau", -1.0, "(key tau): --tau must be a finite number >= 0.0001"),
])
def test_imgtxt_restored_values_are_checked(data, tmp_path, capsys, key, value, needle):
    folder = train_imgtxt(data, tmp_path)
    derived = key in main_imgtxt.METADATA_KEYS
    edit_args(folder, **{key: value}) if not derived else edit_json(folder / "metadata.json", **{key: value})
    before = digest(folder)
    line = fails(capsys, main_imgtxt.main, ["--datapath", data, "--model-dir", tmp_path, "--model-id", "r",
                                            "--evaluate", "--load-args", "--seed", "9", "--workers", "0",
                                            "--no-cuda"], needle)
    assert ("metadata.json" if derived else "args.json") in line
    assert digest(folder) == before
    if derived:  # a folder of an older version: the same values in args.json are checked too
        os.remove(folder / "metadata.json")
        edit_args(folder, **{key: value})
        assert "args.json" in fails(capsys, main_imgtxt.main, ["--datapath", data, "--model-dir", tmp_path,
                                                               "--model-id", "r", "--evaluate", "--load-args",
                                                               "--workers", "0", "--no-cuda"], needle)


# ------------------------------ settings that do not match the saved model ---

def test_load_args_refuses_an_args_json_without_a_block_size(tmp_path, capsys):
    folder = train_mlp(tmp_path, steps=2)
    args = json.loads((folder / "args.json").read_text())
    del args["content_n"]
    (folder / "args.json").write_text(json.dumps(args))
    before = digest(folder)
    fails(capsys, main_mlp.main, evaluate_args(tmp_path), f"{folder / 'args.json'} has no key content_n: "
          "--load-args cannot restore the model's --content-n")
    assert digest(folder) == before


def test_a_bad_flag_of_an_entry_point_is_one_line(data, tmp_path, capsys):
    fails(capsys, main_mlp.main, ["--encoder-init", "bogus"], "argument --encoder-init: invalid choice: 'bogus'")
    fails(capsys, main_imgtxt.main, ["--datapath", data, "--eval-protocol", "x"], "argument --eval-protocol")
    fails(capsys, directions.main, [str(tmp_path), "--batches", "x"], "argument --batches: invalid int value")


def test_evaluation_without_load_args_refuses_other_settings(tmp_path, capsys):
    folder = train_mlp(tmp_path, extra=["--n-views", "3"])
    before = digest(folder)
    fails(capsys, main_mlp.main, [*evaluate_args(tmp_path, load=False), *TINY],
          "was trained with --n-views 3, not --n-views 2; add --load-args")
    assert digest(folder) == before
    two = train_mlp(tmp_path, "two")
    for flags, needle in ((["--n-views", "3"], "--n-views 2, not --n-views 3"),
                          (["--content-n", "3"], "--content-n 2, not --content-n 3"),
                          (["--shared-mixing"], "no --shared-mixing, not --shared-mixing")):
        fails(capsys, main_mlp.main, [*evaluate_args(tmp_path, "two", load=False), *TINY, *flags], needle)
    assert not (two / "results.csv").exists()
    # The model's own settings, given as flags, evaluate as with --load-args.
    main_mlp.main([str(a) for a in [*evaluate_args(tmp_path, "two", load=False), *TINY]])
    assert (two / "results.csv").exists()


def test_imgtxt_evaluation_refuses_another_tau(data, tmp_path, capsys):
    train_imgtxt(data, tmp_path, extra=["--tau", "0.5"])
    fails(capsys, main_imgtxt.main, ["--datapath", data, "--model-dir", tmp_path, "--model-id", "r",
                                     "--evaluate", "--seed", "9", "--workers", "0", "--no-cuda",
                                     "--hidden-size", "16"], "--tau 0.5, not --tau 1.0; add --load-args")


# ----------------------------------------------------- seeds and sizes ---

@pytest.mark.parametrize("seed", ["-1", "99999999999999999999", "4294967296"])
def test_seeds_out_of_range_write_nothing(tmp_path, capsys, seed):
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--seed", seed, *T],
          "--seed must be in 0..4294967295")
    assert os.listdir(tmp_path) == []


def test_runner_seed_ranges_are_bounded(tmp_path, capsys):
    for seeds in ("0-100000000000", "100000000000", f"{2**32}"):
        fails(capsys, experiments.main, ["table1", "--seeds", seeds, "--dry-run", "--out", tmp_path], "--seeds")
    assert os.listdir(tmp_path) == []


def test_sizes_that_cannot_work_are_refused_at_once(tmp_path, capsys):
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", *T, "--n-views", "1000",
                                  "--shared-mixing", "--shared-encoder"], "--n-views must be at most 16")
    for flag, value in (("--num-eval-batches", 10**9), ("--batch-size", 10**10), ("--n-mixing-layer", 10**7)):
        fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", *T, flag, value],
              f"{flag} must be at most")
    assert os.listdir(tmp_path) == []
    out = tmp_path / "data"
    fails(capsys, generate_m3di.main, [out, "--n-train", "100000000000000"], "--n-train")
    assert os.listdir(tmp_path) == []
    folder = train_mlp(tmp_path)
    fails(capsys, directions.main, [folder, "--batches", 10**12, "--no-cuda"], "--batches must be in 1..1000")


def test_generator_refuses_the_current_folder_before_rendering(tmp_path, capsys, monkeypatch):
    (tmp_path / "keep").write_text("x")
    monkeypatch.chdir(tmp_path)
    for out in (".", str(tmp_path.parent)):
        fails(capsys, generate_m3di.main, [out, "--overwrite", "--n-train", "2", "--n-val", "2",
                                           "--n-test", "2"], "is the current folder or above it")
    assert os.listdir(tmp_path) == ["keep"]


@pytest.mark.parametrize("flags, needle", [
    (["--train-steps", "1", "--lr-schedule", "cosine"], "needs at least 2 steps after --warmup-steps"),
    (["--train-steps", "5", "--warmup-steps", "100"], "would never reach --lr"),
    (["--weight-decay", "1e6"], "times --lr 0.0001 is at least 1"),
])
def test_recipes_that_cannot_train_are_refused(tmp_path, capsys, flags, needle):
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", *TINY, *flags], needle)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------- locks ---

def test_evaluation_takes_the_folder_lock(tmp_path, capsys, data):
    folder = train_mlp(tmp_path)
    before = digest(folder)
    with files.FolderLock(str(folder)):  # a training still running, or another evaluation
        fails(capsys, main_mlp.main, evaluate_args(tmp_path), "in use by another running process")
        fails(capsys, directions.main, [folder, "--no-cuda"], "in use by another running process")
    assert digest(folder) == before
    imgtxt = train_imgtxt(data, tmp_path)
    with files.FolderLock(str(imgtxt)):
        fails(capsys, main_imgtxt.main, ["--datapath", data, "--model-dir", tmp_path, "--model-id", "r",
                                         "--evaluate", "--load-args", "--workers", "0", "--no-cuda"],
              "in use by another running process")
    assert not (imgtxt / "results.csv").exists()
    main_mlp.main([str(a) for a in evaluate_args(tmp_path)])  # released: it runs
    assert (folder / "results.csv").exists() and not (folder / ".lock").exists()


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


# ----------------------------------- checkpoint order, results that count ---

def test_a_full_disk_at_the_first_checkpoint_never_blocks_the_model_id(tmp_path, capsys, monkeypatch):
    real = utils.atomic_torch_save

    def full_disk_on(name):
        def save(obj, path):
            if os.path.basename(path) == name:
                raise cli.UserError(f"cannot write {path}: No space left on device")
            real(obj, path)
        return save

    # The checkpoint itself fails: nothing to resume, so the id trains afresh.
    monkeypatch.setattr(run, "atomic_torch_save", full_disk_on("checkpoint.pt"))
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--seed", "1", *T],
          "No space left")
    assert not any(name.startswith("g") for name in os.listdir(tmp_path / "m"))
    monkeypatch.setattr(run, "atomic_torch_save", real)
    # The encoders fail after the checkpoint: --resume continues, as the refusal says.
    monkeypatch.setattr(run, "atomic_torch_save", full_disk_on("g1.pt"))
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--seed", "1", *T],
          "No space left")
    monkeypatch.setattr(run, "atomic_torch_save", real)
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--seed", "1", *T],
          "add --resume to continue it")
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "m", "--resume", "--train-steps", "4"])
    assert torch.load(tmp_path / "m" / "checkpoint.pt")["step"] == 4 and (tmp_path / "m" / "g1.pt").exists()


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


def test_imgtxt_resume_on_data_of_another_image_size(data, tmp_path, capsys):
    folder = train_imgtxt(data, tmp_path)
    other = write_m3di(str(tmp_path / "other"), sizes={"train": 16, "val": 10, "test": 10}, image_size=24)
    before = digest(folder)
    fails(capsys, main_imgtxt.main, ["--datapath", other, "--model-dir", tmp_path, "--model-id", "r",
                                     "--resume", "--train-steps", "4", "--workers", "0", "--no-cuda"],
          "resume on data of the training size")
    assert digest(folder) == before


# ------------------------------------------------------------ report.py ---

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


def test_directions_on_an_imgtxt_folder(data, tmp_path, capsys):
    folder = train_imgtxt(data, tmp_path)
    fails(capsys, directions.main, [folder, "--no-cuda"], "is not a simulation model of main_mlp.py")


def test_divergence_names_the_cause_and_what_is_kept(tmp_path, capsys):
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--seed", "1", *T,
                                  "--lr", "1e30"], "no checkpoint was written to")
    line = fails(capsys, main_imgtxt.main, ["--datapath", write_m3di(str(tmp_path / "d"), sizes={
        "train": 16, "val": 10, "test": 10}), "--model-dir", tmp_path, "--model-id", "r", "--seed", "5",
        "--train-steps", "3", *IMGTXT, "--lr", "1e30"], "diverged")
    assert "a higher --tau" in line


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


def test_a_failed_allocation_is_one_line(tmp_path, capsys, monkeypatch):
    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 160000000000 bytes")
    monkeypatch.setattr(main_mlp, "train_step", no_memory)
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--seed", "1", *T],
          "out of memory: [enforce fail")


@pytest.mark.parametrize("script", ["main_mlp.py", "main_imgtxt.py"])
def test_ctrl_c_while_the_imports_load_is_one_line(script):
    import signal
    import subprocess
    import sys
    import time
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, script, "--help"], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.4)  # torch takes seconds to import: the signal lands inside an import
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    if proc.returncode == 0:  # the machine imported everything within 0.4 s: nothing to check
        pytest.skip("the imports finished before the signal")
    assert err.strip().splitlines() == [f"{script}: error: interrupted while starting"], err
    assert proc.returncode in (130, -signal.SIGINT)
