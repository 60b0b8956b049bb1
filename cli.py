"""Errors and the command line, for every script: bad input gives one line, not a traceback.

    UserError       bad input or an unusable file: one line on stderr, exit code 2
    run_cli         run a script's main(argv) with that contract (Ctrl-C and SIGTERM
                    give one line and 130, as does SIGUSR2; a closed pipe ends quietly)
    OneLineParser   an argparse parser whose usage errors are UserErrors too

Importing this module first in a script also turns a Ctrl-C that arrives while
the heavy imports (torch) still load into one line instead of an import traceback.
"""
import argparse
import errno
import math
import os
import signal
import sys
import threading


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
    if threading.current_thread() is threading.main_thread():
        # A runner's or scheduler's stop (SLURM warns with SIGUSR2): as Ctrl-C
        for signum in (signal.SIGTERM, signal.SIGUSR2):
            signal.signal(signum, _terminate)
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


def _terminate(signum, frame):
    raise KeyboardInterrupt


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


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its usage errors reported like every other bad input."""

    def error(self, message):
        raise UserError(message)


def _interrupted_while_starting(kind, value, tb, previous=sys.excepthook):
    # An uncaught KeyboardInterrupt can only come from before run_cli took over: the imports.
    if issubclass(kind, KeyboardInterrupt):
        _say_error(os.path.basename(sys.argv[0]) or "main", "interrupted while starting")
        return
    previous(kind, value, tb)


sys.excepthook = _interrupted_while_starting
