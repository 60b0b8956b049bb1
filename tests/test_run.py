"""The life of a run (run.py, cli.py, files.py) under bad input and hostile conditions:
one-line errors, non-zero exits, nothing lost.

Each case runs a command (in-process through cli.run_cli, or as a real process where
signals and pipes are involved) and checks the exit code, that stderr holds one line and
no traceback naming the file or flag, and that no saved file changed. Cases of one class
of bad input (values restored from args.json, seeds and sizes, locks, checkpoint order)
are fixed in one place and tested together.
"""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch

import cli
import directions
import files
import generate_m3di
import main_imgtxt
import main_mlp
import run
import utils
from helpers import (IMGTXT_RUN, TINY_EVAL, TINY_RUN, edit_args, evaluate_args, fails, mlp_eval_args, train_imgtxt,
                     train_mlp)
from helpers import file_contents as digest
from m3di_fixture import write_m3di

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- resume ---


# ------------------------------------------------------ two writers, locks ---

def test_a_folder_in_use_is_refused(tmp_path, capsys):
    folder = train_mlp(tmp_path, steps=3)
    before = digest(folder)
    with files.FolderLock(str(folder)):
        fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--resume",
                                      "--train-steps", "5"], "in use by another running process")
    assert digest(folder) == before
    assert not (folder / ".lock").exists()


# ------------------------------------------------ divergence, bad numbers ---

@pytest.mark.parametrize("lr", ["inf", "nan", "-1"])
def test_non_finite_or_negative_lr_is_refused(tmp_path, capsys, lr):
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", *TINY_RUN, "--lr", lr], "--lr")
    assert not (tmp_path / "m").exists()


def test_diverged_step_is_not_checkpointed(tmp_path, capsys):
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--seed", "1",
                                  "--train-steps", "3", *TINY_RUN, "--lr", "1e30"], "diverged")
    folder = tmp_path / "m"
    assert not (folder / "g1.pt").exists() and not (folder / "checkpoint.pt").exists()
    # Nothing was trained: the same model id can simply be trained again.
    train_mlp(tmp_path, steps=2)
    assert (folder / "checkpoint.pt").exists()


def test_huge_encoding_size_is_a_clear_error(tmp_path, capsys):
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", *TINY_RUN,
                                  "--encoding-size", "1000000000000"], "do not fit in memory")
    assert not (tmp_path / "m" / "args.json").exists()


def test_empty_model_id_is_refused(tmp_path, capsys):
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "", *TINY_RUN], "--model-id")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------ broken files and folders ---

@pytest.mark.parametrize("name", ["g2.pt", "latent_space.pt", "f1.pt"])
def test_zero_byte_files_give_one_line(tmp_path, capsys, name):
    folder = train_mlp(tmp_path, extra=["--content-dependent-style"])
    (folder / name).write_bytes(b"")
    fails(capsys, main_mlp.main, mlp_eval_args(tmp_path), name)


def test_zero_byte_checkpoint_on_resume(tmp_path, capsys):
    folder = train_mlp(tmp_path)
    (folder / "checkpoint.pt").write_bytes(b"")
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--resume",
                                  "--train-steps", "5"], "cannot resume")


@pytest.mark.parametrize("content, needle", [
    ('[1, 2]', "a JSON object"),
    ('{"content_n": "2", "seed": 3}', "content_n = '2'"),
    ('{"seed": "3"}', "seed = '3'"),
    ('{"seed": 3, "lr_schedule": "zigzag"}', "lr_schedule = 'zigzag'"),
])
def test_malformed_args_json(tmp_path, capsys, content, needle):
    folder = train_mlp(tmp_path)
    (folder / "args.json").write_text(content)
    fails(capsys, main_mlp.main, mlp_eval_args(tmp_path), needle)
    assert not (folder / "results.csv").exists()


def test_state_dict_mismatch_names_the_keys(tmp_path, capsys):
    folder = train_mlp(tmp_path)
    state = torch.load(folder / "g1.pt")
    state["0.weight"] = state["0.weight"][:, :3]
    torch.save(state, folder / "g1.pt")
    message = fails(capsys, main_mlp.main, mlp_eval_args(tmp_path), "does not fit the model")
    assert "size mismatch for 0.weight" in message


def test_model_dir_that_is_a_file(tmp_path, capsys):
    afile = tmp_path / "models"
    afile.write_text("keep")
    fails(capsys, main_mlp.main, ["--model-dir", afile, "--model-id", "m", *TINY_RUN], str(afile))
    assert afile.read_text() == "keep"


def test_unwritable_results_are_printed_first_and_reported(tmp_path, capsys):
    folder = train_mlp(tmp_path)
    (folder / "results.csv").mkdir()  # results.csv cannot be replaced by a file
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.run_cli(main_mlp.main, [str(a) for a in mlp_eval_args(tmp_path)])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and "Traceback" not in captured.err
    assert "Regression results:" in captured.out and "hz2" in captured.out
    assert "cannot write" in captured.err and "results.csv" in captured.err


def test_read_only_folder_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    train_mlp(tmp_path)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", kwargs.get("dir"))
    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    fails(capsys, main_mlp.main, mlp_eval_args(tmp_path), "Permission denied")
    assert "<Val Loss>" not in capsys.readouterr().out


def test_full_disk_while_saving(tmp_path, capsys, monkeypatch):
    def full(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")
    monkeypatch.setattr(torch, "save", full)
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--seed", "3",
                                  "--train-steps", "3", *TINY_RUN], "is the disk full?")
    monkeypatch.undo()
    assert not [n for n in os.listdir(tmp_path / "m") if n.endswith(".tmp")]
    train_mlp(tmp_path)  # the model id is not blocked by the failed start
    assert (tmp_path / "m" / "checkpoint.pt").exists()


def test_make_refuses_a_venv_that_cannot_fit_on_the_disk(tmp_path):
    """pip fills a small disk halfway through torch and ends in an OSError; make says why first."""
    for name in ("Makefile", "requirements.txt"):
        shutil.copy(os.path.join(ROOT, name), tmp_path)
    done = subprocess.run(["make", "venv", "VENV_FREE_GB=1e9"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0
    assert "make: .venv needs about 1e9 GB free (torch 2.14.1 is a CUDA build); " in done.stderr
    assert f"GB is free in {tmp_path}" in done.stderr
    assert not (tmp_path / ".venv").exists()


def test_ctrl_c_while_saving_waits_for_the_file(tmp_path):
    """Raised inside torch.save, Ctrl-C came out as a RuntimeError read as a full disk."""
    def write(f):
        torch.save({"w": torch.zeros(3)}, f)
        signal.raise_signal(signal.SIGINT)  # arrives mid-write
        f.write(b"tail")
    # A shell's background jobs (make test &) inherit SIGINT ignored: install Python's own handler.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            files.atomic_write(tmp_path / "m.pt", write)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (tmp_path / "m.pt").read_bytes().endswith(b"tail")  # written in full, then interrupted


def test_sigterm_while_saving_reaches_its_handler_after_the_file(tmp_path):
    seen = []  # (signal, the file's text when the handler ran)
    previous = signal.signal(signal.SIGTERM, lambda num, frame: seen.append((num, (tmp_path / "x").read_text())))
    try:
        files.atomic_write_text(tmp_path / "x", "old")
        files.atomic_write(tmp_path / "x", lambda f: (os.kill(os.getpid(), signal.SIGTERM), f.write(b"new")))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [(signal.SIGTERM, "new")]


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        folder = train_mlp(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(folder / "g1.pt").st_mode) == 0o644


# ---------------------------------------------------------- image/text ---


# ------------------------------------------------------------- generator ---


# ------------------------------------------------- processes: Ctrl-C, pipes ---

def test_ctrl_c_during_training_is_one_line(tmp_path):
    # A shell's background jobs inherit SIGINT ignored: give the child Ctrl-C back.
    proc = subprocess.Popen([sys.executable, "main_mlp.py", "--model-dir", str(tmp_path), "--model-id", "m",
                             "--seed", "1", *TINY_RUN, "--train-steps", "100000", "--log-steps", "5"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for _ in range(600):
            if (tmp_path / "m" / "checkpoint.pt").exists():
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in err and "interrupted" in err.strip().splitlines()[-1]
    torch.load(tmp_path / "m" / "checkpoint.pt")  # intact


def test_piping_into_head_ends_quietly():
    proc = subprocess.run(f"{sys.executable} experiments.py all --dry-run --seeds 3 | head -n 1",
                          shell=True, cwd=ROOT, capture_output=True, text=True)
    assert proc.stdout.startswith("#") and proc.stderr == ""


def test_only_rank_zero_reports_errors(capsys, monkeypatch):
    def bad(argv):
        raise cli.UserError("--batch-size 7 must be divisible by the 2 processes")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit):
        cli.run_cli(bad, [])
    assert capsys.readouterr().err == ""


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
    fails(capsys, main_mlp.main, [*evaluate_args(tmp_path, load=False), *TINY_RUN],
          "was trained with --n-views 3, not --n-views 2; add --load-args")
    assert digest(folder) == before
    two = train_mlp(tmp_path, "two")
    for flags, needle in ((["--n-views", "3"], "--n-views 2, not --n-views 3"),
                          (["--content-n", "3"], "--content-n 2, not --content-n 3"),
                          (["--shared-mixing"], "no --shared-mixing, not --shared-mixing")):
        fails(capsys, main_mlp.main, [*evaluate_args(tmp_path, "two", load=False), *TINY_RUN, *flags], needle)
    assert not (two / "results.csv").exists()
    # The model's own settings, given as flags, evaluate as with --load-args.
    main_mlp.main([str(a) for a in [*evaluate_args(tmp_path, "two", load=False), *TINY_RUN]])
    assert (two / "results.csv").exists()


# ----------------------------------------------------- seeds and sizes ---

@pytest.mark.parametrize("seed", ["-1", "99999999999999999999", "4294967296"])
def test_seeds_out_of_range_write_nothing(tmp_path, capsys, seed):
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--seed", seed, *TINY_EVAL],
          "--seed must be in 0..4294967295")
    assert os.listdir(tmp_path) == []


def test_sizes_that_cannot_work_are_refused_at_once(tmp_path, capsys):
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", *TINY_EVAL, "--n-views", "1000",
                                  "--shared-mixing", "--shared-encoder"], "--n-views must be at most 16")
    for flag, value in (("--num-eval-batches", 10**9), ("--batch-size", 10**10), ("--n-mixing-layer", 10**7)):
        fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", *TINY_EVAL, flag, value],
              f"{flag} must be at most")
    assert os.listdir(tmp_path) == []
    out = tmp_path / "data"
    fails(capsys, generate_m3di.main, [out, "--n-train", "100000000000000"], "--n-train")
    assert os.listdir(tmp_path) == []
    folder = train_mlp(tmp_path)
    fails(capsys, directions.main, [folder, "--batches", 10**12, "--no-cuda"], "--batches must be in 1..1000")


@pytest.mark.parametrize("flags, needle", [
    (["--train-steps", "1", "--lr-schedule", "cosine"], "needs at least 2 steps after --warmup-steps"),
    (["--train-steps", "5", "--warmup-steps", "100"], "would never reach --lr"),
    (["--weight-decay", "1e6"], "times --lr 0.0001 is at least 1"),
])
def test_recipes_that_cannot_train_are_refused(tmp_path, capsys, flags, needle):
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", *TINY_RUN, *flags], needle)
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
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--seed", "1", *TINY_EVAL],
          "No space left")
    assert not any(name.startswith("g") for name in os.listdir(tmp_path / "m"))
    monkeypatch.setattr(run, "atomic_torch_save", real)
    # The encoders fail after the checkpoint: --resume continues, as the refusal says.
    monkeypatch.setattr(run, "atomic_torch_save", full_disk_on("g1.pt"))
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--seed", "1", *TINY_EVAL],
          "No space left")
    monkeypatch.setattr(run, "atomic_torch_save", real)
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--seed", "1", *TINY_EVAL],
          "add --resume to continue it")
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "m", "--resume", "--train-steps", "4"])
    assert torch.load(tmp_path / "m" / "checkpoint.pt")["step"] == 4 and (tmp_path / "m" / "g1.pt").exists()


# ------------------------------------------------------------ report.py ---


def test_divergence_names_the_cause_and_what_is_kept(tmp_path, capsys):
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--seed", "1", *TINY_EVAL,
                                  "--lr", "1e30"], "no checkpoint was written to")
    line = fails(capsys, main_imgtxt.main, ["--datapath", write_m3di(str(tmp_path / "d"), sizes={
        "train": 16, "val": 10, "test": 10}), "--model-dir", tmp_path, "--model-id", "r", "--seed", "5",
        "--train-steps", "3", *IMGTXT_RUN, "--lr", "1e30"], "diverged")
    assert "a higher --tau" in line


def test_a_failed_allocation_is_one_line(tmp_path, capsys, monkeypatch):
    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 160000000000 bytes")
    monkeypatch.setattr(main_mlp, "train_step", no_memory)
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--seed", "1", *TINY_EVAL],
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
