"""Where a run's numbers came from: provenance.json in its model folder.

    {"training":   [one entry per segment: a first training, then each --resume; a segment
                    ended by a stop signal or Ctrl-C says "stopped": true],
     "evaluation": the entry of the evaluation behind results.csv}

Each entry names the code (commit, and whether tracked files differed from it),
the software (python, torch, numpy), the machine (device name, threads,
processes), the command line, the start time (UTC) and the wall time in seconds.
A document that quotes a run can then say which commit and machine made it.
"""
import datetime
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

from files import atomic_write_json, read_json

FILE = "provenance.json"
REPO = os.path.dirname(os.path.abspath(__file__))
_started = {}  # "training" / "evaluation": (ISO time, monotonic clock) of this process's start


def git(*argv):
    """A git command's output in this checkout, or None without git or outside a repository."""
    try:
        out = subprocess.run(["git", "-C", REPO, *argv], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version():
    """{"commit": hash or None, "modified": whether tracked files differ from it}."""
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "modified": bool(status) if status is not None else None}


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device):
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"{device.type}: {cpu_name()}"


def describe(device, world_size=1):
    """The code, software and machine of this process."""
    return {**code_version(), "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "device": device_name(device), "threads": torch.get_num_threads(),
            "processes": world_size}


def start(kind, argv=None):
    """Mark the start of this process's training or evaluation, with its arguments."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    _started[kind] = (now, time.monotonic(), [os.path.basename(sys.argv[0]), *argv])


def entry(kind, device, world_size=1, **extra):
    """This process's entry for `kind`, timed from start(kind)."""
    began, clock, command = _started.get(kind, (None, None, None))
    wall = round(time.monotonic() - clock, 1) if clock is not None else None
    return {**describe(device, world_size), "command": command, "started": began, "wall_s": wall, **extra}


def load(save_dir):
    """The folder's provenance, {} where it has none or an unreadable one (a record only)."""
    path = os.path.join(save_dir, FILE)
    if not os.path.isfile(path):
        return {}
    try:
        record = read_json(path, FILE)
    except Exception:  # a damaged record must never stop a training or an evaluation
        return {}
    return record if isinstance(record, dict) else {}


def record_training(save_dir, device, world_size=1, **extra):
    """Append this process's training segment (a --resume adds one per segment)."""
    record = load(save_dir)
    segments = record.get("training") if isinstance(record.get("training"), list) else []
    record["training"] = [*segments, entry("training", device, world_size, **extra)]
    atomic_write_json(os.path.join(save_dir, FILE), record)


def record_evaluation(save_dir, device, **extra):
    """The entry of the evaluation whose results.csv follows (it replaces an earlier one)."""
    record = load(save_dir)
    record["evaluation"] = entry("evaluation", device, **extra)
    atomic_write_json(os.path.join(save_dir, FILE), record)
