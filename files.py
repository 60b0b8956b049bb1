"""Files that survive a crash: atomic writes, JSON reading with one-line errors, folder locks.

A write goes to a temporary file in the same folder, is flushed to disk, then
renamed over the old file, so a kill at any moment leaves the previous version
intact. A FolderLock keeps a second process from writing into a folder in use.
"""
import contextlib
import fcntl
import json
import os
import signal
import tempfile
import threading

from cli import UserError, describe_os_error, first_line



def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _signals_deferred():
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver the first that came.

    Raised inside torch.save, a KeyboardInterrupt surfaces as a RuntimeError from its
    C++ writer, which would read as a full disk; held, it interrupts between files."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread runs Python's signal handlers
        return
    caught, previous = [], {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) not in (signal.SIG_IGN, None):
            previous[signum] = signal.signal(signum, lambda num, frame: caught.append(num))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            signal.raise_signal(caught[0])


def atomic_write(path, write):
    """Write `path` through `write(file)`; any failure (full disk, kill) leaves the old
    file intact, and an OSError or a writer's RuntimeError (torch.save) becomes a
    one-line UserError. A Ctrl-C or SIGTERM during the write takes effect once the file
    is complete."""
    with _signals_deferred():
        _write_and_rename(path, write)


def _write_and_rename(path, write):
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
