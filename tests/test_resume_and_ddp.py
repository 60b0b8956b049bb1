"""Fault tolerance and multi-process training of the simulation (CPU, gloo)."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import json
import main_imgtxt
import main_mlp
import shutil
from helpers import fails, train_imgtxt, train_mlp
from helpers import file_contents as digest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--content-n", "2", "--style-n", "2", "--modality-n", "2", "--encoding-size", "2",
        "--no-cuda", "--seed", "3"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def mlp(*args, **kw):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "main_mlp.py"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT, **kw)


def finish(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    return out + err


def encoders(folder, names=("g1", "g2")):
    return {name: torch.load(folder / f"{name}.pt") for name in names}


def assert_same(a, b, atol=0.0):
    for name in a:
        for key in a[name]:
            torch.testing.assert_close(a[name][key], b[name][key], rtol=0, atol=atol)


@pytest.mark.slow
def test_resume_after_sigkill_ends_where_an_uninterrupted_run_ends(tmp_path):
    steps = ["--batch-size", "16", "--train-steps", "160", "--log-steps", "40"]
    finish(mlp("--model-dir", str(tmp_path), "--model-id", "whole", *TINY, *steps))

    proc = mlp("--model-dir", str(tmp_path), "--model-id", "cut", *TINY, *steps)
    checkpoint = tmp_path / "cut" / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be interrupted"
    step = torch.load(checkpoint)["step"]
    assert step < 160

    out = finish(mlp("--model-dir", str(tmp_path), "--model-id", "cut", "--resume", "--no-cuda"))
    assert "step 160:" in out
    assert_same(encoders(tmp_path / "whole"), encoders(tmp_path / "cut"))


def test_resume_needs_a_checkpoint(tmp_path):
    (tmp_path / "m").mkdir()
    proc = mlp("--model-dir", str(tmp_path), "--model-id", "m", "--resume")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "checkpoint.pt" in err


SETTINGS = {
    "two views": TINY,
    "shared networks": [*TINY, "--shared-mixing", "--shared-encoder"],
    # three views of different sizes: the loss sums over the sets {1,2}, {1,3}, {2,3}, {1,2,3}
    "partial observability": ["--view-latents", "0-2;0,1,3;0,2,3", "--encoding-size", "1",
                              "--no-cuda", "--seed", "3"],
}


@pytest.mark.slow
@pytest.mark.parametrize("setting", SETTINGS)
def test_two_process_ddp_equals_one_process(tmp_path, setting):
    steps = ["--batch-size", "64", "--train-steps", "4", "--log-steps", "1"]
    flags = [*SETTINGS[setting], *steps]
    single = finish(mlp("--model-dir", str(tmp_path), "--model-id", "one", *flags))
    torchrun = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         os.path.join(ROOT, "main_mlp.py"), "--model-dir", str(tmp_path), "--model-id", "two", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    double = finish(torchrun)
    # Adam divides each gradient by its own magnitude, so a weight whose gradient is
    # at rounding level (summed in another order by two processes) can move by a
    # different fraction of lr (1e-4); everything else agrees far more closely.
    names = sorted(p.stem for p in (tmp_path / "one").glob("g*.pt"))
    assert len(names) == (3 if "--view-latents" in flags else 2)
    assert_same(encoders(tmp_path / "one", names), encoders(tmp_path / "two", names), atol=1e-4)

    def losses(text):
        return [float(line.split("train loss ")[1].split()[0])
                for line in text.splitlines() if "train loss" in line]
    one, two = losses(single), losses(double)
    assert len(one) == len(two) == 4
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-5


def test_atomic_save_survives_sigkill(tmp_path):
    target = tmp_path / "state.pt"
    script = (
        "import sys, torch; sys.path.insert(0, %r)\n"
        "from utils import atomic_torch_save\n"
        "i = 0\n"
        "while True:\n"
        "    atomic_torch_save({'version': i, 'data': torch.full((2_000_000,), float(i))}, %r)\n"
        "    i += 1\n" % (ROOT, str(target)))
    for delay in (0.5, 0.8, 1.1, 1.4):
        proc = subprocess.Popen([sys.executable, "-c", script], env=ENV)
        time.sleep(delay)
        while not target.exists():
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = torch.load(target)  # never truncated: always a complete earlier version
        assert torch.all(state["data"] == float(state["version"]))


def test_global_batchnorm_matches_batchnorm_in_one_process():
    from distributed import GlobalBatchNorm2d
    torch.manual_seed(0)
    bn, gbn = torch.nn.BatchNorm2d(3), GlobalBatchNorm2d(3)
    gbn.load_state_dict(bn.state_dict())
    x = torch.randn(6, 3, 4, 4)
    torch.testing.assert_close(bn(x), gbn(x))  # no process group: plain BatchNorm2d


@pytest.mark.slow
def test_two_process_ddp_image_text_equals_one_process(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from m3di_fixture import write_m3di
    data = write_m3di(tmp_path / "data", sizes={"train": 40, "val": 10, "test": 10}, image_size=32)
    flags = ["--datapath", str(data), "--model-dir", str(tmp_path), "--batch-size", "8",
             "--train-steps", "3", "--log-steps", "1", "--seed", "5", "--workers", "0", "--no-cuda",
             "--encoding-size", "3", "--hidden-size", "16"]  # the paper's lr, 1e-5
    script = os.path.join(ROOT, "main_imgtxt.py")

    def run(cmd):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return [float(line.split("Loss: ")[1].split()[0])
                for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Step:")]

    one = run([sys.executable, script, "--model-id", "one", *flags])
    two = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               script, "--model-id", "two", *flags])
    assert len(one) == len(two) == 3
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-5, (one, two)
    for name in ("encoder_img.pt", "encoder_txt.pt"):
        a, b = torch.load(tmp_path / "one" / name), torch.load(tmp_path / "two" / name)
        assert a.keys() == b.keys()
        for key in a:
            # atol as in the simulation test: Adam and rounding-level gradients
            torch.testing.assert_close(a[key].float(), b[key].float(), rtol=0, atol=1e-4)


@pytest.mark.slow
def test_image_text_resume_after_sigkill(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from m3di_fixture import write_m3di
    data = write_m3di(tmp_path / "data", sizes={"train": 40, "val": 10, "test": 10}, image_size=32)
    script = os.path.join(ROOT, "main_imgtxt.py")
    flags = ["--datapath", str(data), "--model-dir", str(tmp_path), "--batch-size", "8",
             "--train-steps", "48", "--checkpoint-steps", "7", "--log-steps", "50", "--seed", "5",
             "--workers", "0", "--no-cuda", "--lr", "1e-3", "--hidden-size", "16"]

    def start(*args):
        return subprocess.Popen([sys.executable, script, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)

    finish(start("--model-id", "whole", *flags))
    proc = start("--model-id", "cut", *flags)
    checkpoint = tmp_path / "cut" / "checkpoint.pt"
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if checkpoint.exists() and torch.load(checkpoint)["step"] >= 14:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be interrupted"
    assert torch.load(checkpoint)["step"] < 48
    finish(start("--model-id", "cut", "--resume", "--datapath", str(data), "--model-dir", str(tmp_path),
                 "--workers", "0", "--no-cuda"))
    for name in ("encoder_img.pt", "encoder_txt.pt"):
        a, b = torch.load(tmp_path / "whole" / name), torch.load(tmp_path / "cut" / name)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


# The quick recipe (bf16, cosine schedule with warm-up, kaiming init) with content-dependent style:
# the settings of the runner's long grids, which are stopped and resumed across sessions.
RECIPE = ["--precision", "bf16", "--lr", "0.001", "--lr-schedule", "cosine", "--warmup-steps", "100",
          "--encoder-init", "kaiming", "--style-change-prob", "0.75", "--content-dependent-style"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [[], RECIPE], ids=["defaults", "quick_recipe"])
def test_stop_signal_checkpoints_the_current_step(tmp_path, recipe):
    """SLURM's warning (SIGUSR2; SIGTERM takes the same path) between two checkpoints loses no
    steps: the training saves where it is, and --resume ends where an uninterrupted run ends."""
    steps = ["--batch-size", "16", "--train-steps", "2000", "--log-steps", "2000", *recipe]  # one checkpoint: the last
    finish(mlp("--model-dir", str(tmp_path), "--model-id", "whole", *TINY, *steps))
    proc = mlp("--model-dir", str(tmp_path), "--model-id", "cut", *TINY, *steps)
    deadline = time.time() + 120
    # step 1 logs and checkpoints: from then on the loop runs, however slow the machine's start-up
    while not (tmp_path / "cut" / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGUSR2)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    step = torch.load(tmp_path / "cut" / "checkpoint.pt")["step"]
    assert 0 < step < 2000 and f"checkpoint saved at step {step}" in out
    out = finish(mlp("--model-dir", str(tmp_path), "--model-id", "cut", "--resume", "--no-cuda"))
    assert f"at step {step}" in out
    assert_same(encoders(tmp_path / "whole"), encoders(tmp_path / "cut"))


# ------------------------------------------- bad input and hostile conditions ---

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
