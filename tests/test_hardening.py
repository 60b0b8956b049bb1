"""Bad input and hostile conditions: one-line errors, non-zero exits, nothing lost.

Each case runs a command (in-process through cli.run_cli, or as a real
process where signals and pipes are involved) and checks the exit code, that
stderr holds one line and no traceback, and that no saved file changed.
"""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

import experiments
import local
import generate_m3di
import main_imgtxt
import main_mlp
import report
import cli
import files
from helpers import file_contents as digest
from m3di_fixture import write_m3di

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--content-n", "2", "--style-n", "2", "--modality-n", "2", "--encoding-size", "2",
        "--batch-size", "32", "--log-steps", "2", "--no-cuda"]
IMGTXT = ["--batch-size", "8", "--log-steps", "1", "--checkpoint-steps", "2", "--workers", "0",
          "--hidden-size", "16", "--lr", "1e-3", "--no-cuda"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_m3di(str(tmp_path_factory.mktemp("m3di")), sizes={"train": 16, "val": 10, "test": 10})


def fails(capsys, main, argv, needle, code=2):
    """Run a command that must fail; return its one-line message."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.run_cli(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines()
             if line.strip() and "it/s" not in line and "step/s" not in line and "%|" not in line]
    assert exit_info.value.code == code, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert needle in lines[0], lines[0]
    return lines[0]


def train_mlp(tmp_path, model_id="m", steps=3, extra=()):
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", model_id, "--seed", "3",
                   "--train-steps", str(steps), *TINY, *extra])
    return tmp_path / model_id


def mlp_eval_args(tmp_path, model_id="m"):
    return ["--model-dir", tmp_path, "--model-id", model_id, "--evaluate", "--load-args",
            "--seed", "4", "--num-eval-batches", "1", "--no-cuda"]


def train_imgtxt(data, model_dir, model_id="r", steps=2, extra=()):
    main_imgtxt.main(["--datapath", data, "--model-dir", str(model_dir), "--model-id", model_id,
                      "--seed", "5", "--train-steps", str(steps), *IMGTXT, *extra])
    return model_dir / model_id


# ---------------------------------------------------------------- resume ---

def test_imgtxt_resume_trains_the_folder_it_is_given(data, tmp_path):
    original = train_imgtxt(data, tmp_path / "a", steps=2)
    before = digest(original)
    copy = tmp_path / "b" / "r"
    os.makedirs(copy.parent)
    os.rename(original, copy)  # moved: the path in args.json no longer exists
    main_imgtxt.main(["--datapath", data, "--model-dir", str(copy.parent), "--model-id", "r",
                      "--resume", "--train-steps", "4", "--workers", "0", "--no-cuda"])
    assert torch.load(copy / "checkpoint.pt")["step"] == 4
    assert json.loads((copy / "args.json").read_text())["train_steps"] == 4
    assert not original.exists()
    # A copy: resuming it leaves the original untouched.
    shutil.copytree(copy, tmp_path / "c" / "r")
    saved = digest(copy)
    main_imgtxt.main(["--datapath", data, "--model-dir", str(tmp_path / "c"), "--model-id", "r",
                      "--resume", "--train-steps", "5", "--workers", "0", "--no-cuda"])
    assert digest(copy) == saved and before != saved
    assert torch.load(tmp_path / "c" / "r" / "checkpoint.pt")["step"] == 5


def test_resume_extends_train_steps_and_refuses_other_changes(tmp_path, capsys):
    folder = train_mlp(tmp_path, steps=3)
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "m", "--resume", "--train-steps", "6"])
    assert torch.load(folder / "checkpoint.pt")["step"] == 6
    assert json.loads((folder / "args.json").read_text())["train_steps"] == 6
    before = digest(folder)
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--resume", "--lr", "0.5"],
          "--lr 0.0001, not 0.5")
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--resume"],
          "already trained to step 6")
    # refused before anything is rewritten: args.json keeps the 6 steps the weights have
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--resume", "--train-steps", "4"],
          "already trained to step 6")
    assert digest(folder) == before


def test_cosine_schedule_cannot_be_stretched_on_resume(tmp_path, capsys):
    train_mlp(tmp_path, steps=3, extra=["--lr-schedule", "cosine"])
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--resume",
                                  "--train-steps", "6"], "--lr-schedule cosine")


# ------------------------------------------------------ two writers, locks ---

def test_a_folder_in_use_is_refused(tmp_path, capsys):
    folder = train_mlp(tmp_path, steps=3)
    before = digest(folder)
    with files.FolderLock(str(folder)):
        fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--resume",
                                      "--train-steps", "5"], "in use by another running process")
    assert digest(folder) == before
    assert not (folder / ".lock").exists()


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


# ------------------------------------------------ divergence, bad numbers ---

@pytest.mark.parametrize("lr", ["inf", "nan", "-1"])
def test_non_finite_or_negative_lr_is_refused(tmp_path, capsys, lr):
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", *TINY, "--lr", lr], "--lr")
    assert not (tmp_path / "m").exists()


def test_diverged_step_is_not_checkpointed(tmp_path, capsys):
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", "--seed", "1",
                                  "--train-steps", "3", *TINY, "--lr", "1e30"], "diverged")
    folder = tmp_path / "m"
    assert not (folder / "g1.pt").exists() and not (folder / "checkpoint.pt").exists()
    # Nothing was trained: the same model id can simply be trained again.
    train_mlp(tmp_path, steps=2)
    assert (folder / "checkpoint.pt").exists()


def test_huge_encoding_size_is_a_clear_error(tmp_path, capsys):
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "m", *TINY,
                                  "--encoding-size", "1000000000000"], "do not fit in memory")
    assert not (tmp_path / "m" / "args.json").exists()


def test_empty_model_id_is_refused(tmp_path, capsys):
    fails(capsys, main_mlp.main, ["--model-dir", tmp_path, "--model-id", "", *TINY], "--model-id")
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


def test_zero_byte_text_encoder(data, tmp_path, capsys):
    folder = train_imgtxt(data, tmp_path)
    (folder / "encoder_txt.pt").write_bytes(b"")
    fails(capsys, main_imgtxt.main, ["--datapath", data, "--model-dir", tmp_path, "--model-id", "r",
                                     "--evaluate", "--load-args", "--workers", "0", "--no-cuda"],
          "encoder_txt.pt")


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
    fails(capsys, main_mlp.main, ["--model-dir", afile, "--model-id", "m", *TINY], str(afile))
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
                                  "--train-steps", "3", *TINY], "is the disk full?")
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


def test_report_on_unwritable_folder(tmp_path, capsys):
    run = tmp_path / "table1" / "p1.0_multi_s0"
    run.mkdir(parents=True)
    (run / "args.json").write_text(json.dumps({**vars(main_mlp.build_parser().parse_args([])), "seed": 0}))
    pd.DataFrame({"encoding": ["hz1"], "predicted_factors": ["c"], "r2_linear": [0.9],
                  "r2_nonlinear": [0.95]}).to_csv(run / "results.csv")
    (tmp_path / "table1" / "report.md").mkdir()  # cannot be written as a file
    fails(capsys, report.main, [tmp_path / "table1"], "cannot write")


# ---------------------------------------------------------- image/text ---

def test_runaway_caption_is_cut(tmp_path, capsys):
    data = write_m3di(str(tmp_path / "d"), sizes={"train": 16, "val": 10, "test": 10})
    path = os.path.join(data, "train", "text", "text_raw.txt")
    lines = open(path).read().splitlines()
    lines[3] = " ".join(["word"] * 50_000)
    open(path, "w").write("\n".join(lines) + "\n")
    folder = train_imgtxt(data, tmp_path, steps=1)
    out = capsys.readouterr().out
    assert "1 training captions are longer than --max-sequence-length 128 and were cut" in out
    assert json.loads((folder / "metadata.json").read_text())["sequence_length"] == 128


def test_half_written_data_folder_is_refused(data, tmp_path, capsys):
    half = tmp_path / "half"
    shutil.copytree(os.path.join(data, "train"), half / "train")
    fails(capsys, main_imgtxt.main, ["--datapath", half, "--model-dir", tmp_path / "models",
                                     "--model-id", "x", *IMGTXT], "has no val/, test/")
    assert not (tmp_path / "models" / "x").exists()


def test_model_evaluated_on_data_of_another_image_size(data, tmp_path, capsys):
    train_imgtxt(data, tmp_path)
    bigger = write_m3di(str(tmp_path / "big"), sizes={"train": 16, "val": 10, "test": 10}, image_size=48)
    fails(capsys, main_imgtxt.main, ["--datapath", bigger, "--model-dir", tmp_path, "--model-id", "r",
                                     "--evaluate", "--load-args", "--workers", "0", "--no-cuda"],
          "evaluate on data of the training size")


# ------------------------------------------------------------- generator ---

GEN = ["--n-train", "5", "--n-val", "3", "--n-test", "3", "--image-size", "16", "--workers", "1",
       "--quiet"]


def test_interrupted_overwrite_keeps_the_old_data_and_continues(tmp_path, monkeypatch):
    out = tmp_path / "m3di"
    generate_m3di.main([str(out), *GEN, "--seed", "1"])
    (out / "notes.txt").write_text("mine")
    old = digest(out)
    monkeypatch.setattr(generate_m3di, "TASK_SIZE", 2)
    real = generate_m3di._render_task
    calls = []

    def interrupted(task):
        calls.append(task[1])
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(task)
    monkeypatch.setattr(generate_m3di, "_render_task", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_m3di.main([str(out), *GEN, "--seed", "2", "--overwrite"])
    assert digest(out) == old  # Ctrl-C: the old data set is whole
    monkeypatch.setattr(generate_m3di, "_render_task", real)
    calls.clear()
    generate_m3di.main([str(out), *GEN, "--seed", "2", "--overwrite"])
    fresh = tmp_path / "fresh"
    generate_m3di.main([str(fresh), *GEN, "--seed", "2"])
    new = digest(out)
    assert new.pop("notes.txt") == old["notes.txt"]
    assert new == digest(fresh)
    assert not os.path.exists(str(out) + ".partial")


def test_generator_output_under_a_file(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    fails(capsys, generate_m3di.main, [afile / "sub", *GEN], str(afile))


# ------------------------------------------------- processes: Ctrl-C, pipes ---

def test_ctrl_c_during_training_is_one_line(tmp_path):
    # A shell's background jobs inherit SIGINT ignored: give the child Ctrl-C back.
    proc = subprocess.Popen([sys.executable, "main_mlp.py", "--model-dir", str(tmp_path), "--model-id", "m",
                             "--seed", "1", *TINY, "--train-steps", "100000", "--log-steps", "5"],
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
