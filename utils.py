"""Small helpers shared by both entry points: errors, seeding, devices, safe file I/O."""
import errno
import fcntl
import json
import math
import os
import re
import sys
import tempfile
import uuid

import numpy as np
import torch
from torch.utils.data import DataLoader


class UserError(Exception):
    """Bad input from the user: reported as one line, exit code 2, no traceback."""


def first_line(err):
    """The first line of an exception's message, or its type where it has none (EOFError)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def describe_os_error(err):
    """'cannot write /x/y: No space left on device' from an OSError, without a traceback."""
    what = f" {err.filename}" if getattr(err, "filename", None) else ""
    return f"{err.strerror or first_line(err)}{':' if what else ''}{what}"


def _say_error(prog, message):
    # Under torchrun every rank would print the same message: rank 0 speaks for all.
    if os.environ.get("RANK", "0") == "0":
        print(f"{prog}: error: {message}", file=sys.stderr)


def run_cli(main, argv=None):
    """Run `main(argv)` as a command: bad input and file-system failures give one line
    on stderr and exit code 2, Ctrl-C gives one line and 130, and a closed pipe
    (`... | head`) ends quietly."""
    prog = os.path.basename(sys.argv[0]) or "main"
    try:
        result = main(argv)
        sys.stdout.flush()  # inside the try: a closed pipe shows up here, not at exit
        return result
    except UserError as err:
        _say_error(prog, err)
        sys.exit(2)
    except KeyboardInterrupt:
        _say_error(prog, "interrupted (files already written are complete; --resume continues "
                         "an interrupted training)")
        sys.exit(130)
    except BrokenPipeError:
        _quiet_broken_pipe()
    except OSError as err:  # read-only folder, full disk, a file where a folder should be
        if err.errno == errno.EPIPE:
            _quiet_broken_pipe()
        _say_error(prog, describe_os_error(err))
        sys.exit(2)


def _quiet_broken_pipe():
    """The reader of stdout went away: stop without Python's 'Exception ignored' message."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(0)


def flag_of(key):
    """The command-line flag of an argparse destination: n_views -> --n-views."""
    return "--" + key.replace("_", "-")


def check_finite(flag, value, positive=True):
    if not math.isfinite(value) or (positive and not value > 0):
        raise UserError(f"{flag} must be a finite{' positive' if positive else ''} number, got {value}")


def check_model_id(model_id):
    if model_id is not None and (model_id.strip() in ("", ".", "..") or os.sep in model_id):
        raise UserError(f"--model-id must name one folder, got {model_id!r}")


def new_model_id():
    return str(uuid.uuid4())


def draw_seed(exclude=None):
    """A fresh seed from the OS entropy pool, different from `exclude`."""
    while True:
        seed = int.from_bytes(os.urandom(4), "little") % (2**31 - 1)
        if seed != exclude:
            return seed


def evaluation_seed(seed, train_seed):
    """The seed of an evaluation: the given one unless it repeats the training seed
    (the samples would not be fresh), or a drawn one that differs from it."""
    if seed is None:
        return draw_seed(exclude=train_seed)
    if train_seed is not None and seed == train_seed:
        raise UserError(f"--seed {seed} equals the training seed; evaluate with another seed "
                        f"(or leave --seed out to draw one)")
    return seed


def refuse_existing_model(save_dir, checkpoint="checkpoint.pt"):
    """Training never overwrites a model: its args.json marks the folder as taken.

    A folder whose training died before its first checkpoint holds nothing to
    keep or resume (args.json alone, no encoders): it is started afresh. Call
    this while holding the folder's lock, so that no live run is mistaken for one."""
    if not os.path.exists(os.path.join(save_dir, "args.json")):
        return
    # f1.pt, ..., fK.pt and latent_space.pt are written before training starts.
    written_first = re.compile(r"f\d+\.pt|latent_space\.pt")
    if not os.path.exists(os.path.join(save_dir, checkpoint)) and not any(
            name.endswith(".pt") and not written_first.fullmatch(name) for name in os.listdir(save_dir)):
        return
    resume = ", add --resume to continue it," if os.path.exists(os.path.join(save_dir, checkpoint)) else ""
    raise UserError(f"model folder {save_dir} already holds a model; choose another "
                    f"--model-id{resume} or --evaluate it")


class FolderLock:
    """An exclusive lock on a folder for as long as a process writes into it.

    flock locks die with their process (kill -9 included), so a crashed run never
    leaves a stale lock, and a second writer is refused while the first lives.
    The lock file is removed on release; a lock taken on a file that was removed
    meanwhile is retaken on the new one."""

    def __init__(self, folder, what="model folder", name=".lock"):
        self.folder, self.what, self.fd = folder, what, None
        self.path = os.path.join(folder, name)

    def __enter__(self):
        self.created = not os.path.exists(self.folder)
        while True:
            try:
                os.makedirs(self.folder, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as err:
                raise UserError(f"cannot use {self.what} {self.folder}: {describe_os_error(err)}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UserError(f"{self.what} {self.folder} is in use by another running process "
                                "(two writers would corrupt it); wait for it or stop it first") from None
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    self.fd = fd
                    return self
            except FileNotFoundError:
                pass
            os.close(fd)  # its holder removed the file as we opened it: take the new one

    def __exit__(self, *exc):
        try:
            os.remove(self.path)
            if self.created and not os.listdir(self.folder):  # a run that failed at once
                os.rmdir(self.folder)
        except OSError:
            pass
        os.close(self.fd)


def set_seed(seed):
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_device(no_cuda=False, index=0):
    if not no_cuda and torch.cuda.is_available():
        return torch.device("cuda", index)
    return torch.device("cpu")


def infinite_iterator(loader, start_batch=0):
    """Batches of a DataLoader forever, reshuffling on every pass; `start_batch`
    batches are skipped without loading them (to resume a run where it stopped)."""
    epoch, skip = divmod(start_batch, len(loader))
    while True:
        if hasattr(loader.sampler, "set_epoch"):  # a DistributedSampler reshuffles only when told
            loader.sampler.set_epoch(epoch)
        if skip:
            rest = list(loader.sampler)[skip * loader.batch_size:]
            yield from DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=rest,
                                  drop_last=loader.drop_last, num_workers=loader.num_workers,
                                  pin_memory=loader.pin_memory)
            skip = 0
        else:
            yield from loader
        epoch += 1


def should_log(step, every, last_step):
    """The published schedule: steps 1, 1 + every, 1 + 2 every, ... and the last step;
    every step when every == 1 (where the published `step % 1 == 1` never fires)."""
    return every == 1 or step % every == 1 or step == last_step


# ---------------------------------------------------------------------------
# Crash-safe file output: write to a temporary file in the same folder, then
# rename, so a kill at any moment leaves the previous version intact.

def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Write `path` through `write(file)`; any failure (full disk, kill) leaves the old
    file intact, and an OSError or torch's write error becomes a one-line UserError."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    except OSError as err:
        raise UserError(f"cannot write {path}: {describe_os_error(err)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide shared models from others
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError):
            raise UserError(f"cannot write {path}: {err.strerror or first_line(err)}") from None
        if isinstance(err, RuntimeError):  # torch.save on a full disk: "[enforce fail at ...]"
            raise UserError(f"cannot write {path}: {first_line(err)} (is the disk full?)") from None
        raise


def atomic_torch_save(obj, path):
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_csv(df, path, index=False):
    """index=True writes pandas' unnamed index column first, as the published scripts do."""
    atomic_write_text(path, df.to_csv(index=index))


def check_writable(folder, what):
    """Fail before long work whose output could not be saved (read-only folder)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        os.close(fd)
        os.remove(tmp)
    except OSError as err:
        raise UserError(f"cannot write {what} into {folder}: {describe_os_error(err)}") from None


def read_json(path, what="file"):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {what} {path}: {first_line(err)}") from None


def read_saved_args(path, parser):
    """A model's args.json, checked against the parser that wrote it: a dict whose
    known settings have the types of their flags (a hand-edited "seed": "1" would
    otherwise slip through as a different seed)."""
    saved = read_json(path, "args.json")
    if not isinstance(saved, dict):
        raise UserError(f"{path} does not hold a model's arguments (a JSON object), "
                        f"but a {type(saved).__name__}")
    for action in parser._actions:
        key = action.dest
        if key not in saved or (saved[key] is None and action.default is None):
            continue
        value = saved[key]
        if action.const is True:  # store_true
            ok = isinstance(value, bool)
        elif action.type is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif action.type is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        if ok and action.choices is not None:
            ok = value in action.choices
        if not ok:
            raise UserError(f"{path}: {key} = {value!r} is not a valid value of --"
                            f"{key.replace('_', '-')}")
    return saved


def load_state_dict(path):
    """Load a saved state dict onto the CPU, accepting DataParallel's `module.` prefix."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files
        raise UserError(f"cannot read checkpoint {path}: {first_line(err)}") from None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} does not hold a state dict")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def state_dict_mismatch(err, limit=300):
    """torch's multi-line load_state_dict error as one line: which keys, which shapes."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    detail = "; ".join(lines[1:] if len(lines) > 1 else lines)
    return detail if len(detail) <= limit else detail[:limit - 3] + "..."


def load_into(module, path):
    """Load a checkpoint into `module`, with a clear error when the layouts differ."""
    try:
        module.load_state_dict(load_state_dict(path))
    except RuntimeError as err:
        raise UserError(f"checkpoint {path} does not fit the model: {state_dict_mismatch(err)}") from None
    return module


def all_finite(modules):
    """True when every parameter is finite: a diverged step must not be saved."""
    return all(bool(torch.isfinite(p).all()) for m in modules for p in m.parameters())


# ---------------------------------------------------------------------------
# --resume: the run continues as it was started.

def given_flags(parser, argv):
    """The destinations of the flags present on the command line (not defaulted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    given = set()
    for action in parser._actions:
        if any(arg == opt or arg.startswith(opt + "=") for opt in action.option_strings for arg in argv):
            given.add(action.dest)
    return given


def resume_settings(args, saved, given, own, honoured, path):
    """Take the interrupted run's settings from `saved` (its args.json).

    `own` flags keep the command line's value (where the folder is, the device);
    `honoured` flags given on the command line replace the saved value (a longer
    run); any other flag given with a value that differs from the run's is
    refused, rather than silently ignored."""
    for key, value in saved.items():
        if key in own or not hasattr(args, key):
            continue
        if key in given and key in honoured:
            continue
        if key in given and getattr(args, key) != value:
            raise UserError(f"--resume continues the run as {path} records it, with "
                            f"--{key.replace('_', '-')} {value}, not {getattr(args, key)}; "
                            f"train a new --model-id to change it")
        setattr(args, key, value)
    if "train_steps" in given and getattr(args, "lr_schedule", "constant") != "constant" \
            and args.train_steps != saved.get("train_steps"):
        raise UserError(f"--train-steps cannot change on --resume with --lr-schedule "
                        f"{args.lr_schedule}: the schedule is laid over the run's "
                        f"{saved.get('train_steps')} steps")
