"""The local launcher: a plan's jobs run here, n at a time, each step a child process.

Each step's stdout and stderr go to <folder>/train.log or evaluate.log (appended). The
runner holds the output folder's lock while it plans and runs, so that it never removes
what another runner is training. Ctrl-C or SIGTERM stops every child with one SIGTERM
(an entry point then saves and ends with one line); rerunning the command resumes.
"""
import ctypes
import ctypes.util
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager

import stamps
from cli import UserError
from facts import CHECKPOINT, MODEL_FILES, PARTIAL_FILE, RESULTS_FILE
from files import FolderLock, atomic_write_json
from plans import TRAINED, has_results

LOCK = ".experiments.lock"
_PRINT_LOCK = threading.Lock()
_STOP = threading.Event()      # set on Ctrl-C / SIGTERM: start nothing new
_LIVE = set()                  # running child processes, to stop them on interruption
_LIVE_LOCK = threading.Lock()


class StepFailed(Exception):
    """A step of a job failed; the message says which and where its log is."""


def say(msg):
    with _PRINT_LOCK:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_command(cmd, log_path, env=None):
    """Run `cmd` with stdout and stderr appended to `log_path`; return its exit code."""
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        with _LIVE_LOCK:  # under the lock, so that stop_children() sees every child
            if _STOP.is_set():
                return -signal.SIGTERM
            # A session of its own: a Ctrl-C at the terminal reaches the runner alone, which
            # stops each child with one SIGTERM (a second signal mid-exit can abort torch).
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    preexec_fn=_die_with_parent, start_new_session=True)
            _LIVE.add(proc)
        try:
            return proc.wait()
        except BaseException:  # interrupted while waiting (Ctrl-C, SIGTERM): no orphans
            stop(proc)
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(proc)


def last_line(path):
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f.read().replace("\r", "\n").splitlines() if line.strip()]
        return lines[-1] if lines else ""
    except OSError:
        return ""


def run_logged(step, env):
    os.makedirs(step.folder, exist_ok=True)
    log = os.path.join(step.folder, f"{step.kind}.log")
    rc = run_command(step.cmd, log, env=env)
    if rc != 0:
        raise StepFailed(f"{step.kind} of {step.folder} exited with {rc}: {last_line(log)!r} "
                         f"(log: {log})")
    return log


def copy_model(source, dest):
    """Copy a trained model folder (not its results or logs of evaluation) atomically."""
    partial = dest + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, ignore=shutil.ignore_patterns(
        RESULTS_FILE, PARTIAL_FILE, "evaluate.log", stamps.EVALUATION_FILE, CHECKPOINT, "*.tmp", ".lock"))  # the checkpoint only serves --resume
    atomic_write_json(os.path.join(partial, TRAINED), {"copied_from": source, "time": time.ctime()})
    os.rename(partial, dest)


def remove_unfinished(folder, keep=None):
    """Delete what an interrupted run left, under the folder's lock: a folder that a live
    process holds (a training started by hand, another runner's child) is never removed.
    Entries whose names start with `keep` stay (a SLURM job's record and logs)."""
    try:
        with FolderLock(folder):
            for name in os.listdir(folder):
                path = os.path.join(folder, name)
                if name != ".lock" and not (keep and name.startswith(keep)):
                    shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    except UserError as err:
        raise StepFailed(f"cannot clear {folder}: {err}") from None
    try:
        os.rmdir(folder)  # empty now; gone, as a fresh run expects
    except OSError:
        pass


def execute(step, env):
    if step.kind == "remove":
        remove_unfinished(step.folder)
    elif step.kind == "copy":
        copy_model(step.source, step.folder)
    elif step.kind == "train":
        log = run_logged(step, env)
        script = os.path.basename(step.cmd[1])
        missing = [f for f in MODEL_FILES[script] if not os.path.isfile(os.path.join(step.folder, f))]
        if missing:
            raise StepFailed(f"training of {step.folder} exited 0 but wrote no {', '.join(missing)} "
                             f"(log: {log})")
        atomic_write_json(os.path.join(step.folder, TRAINED),
                          {"command": shlex.join(step.cmd), "time": time.ctime()})
    elif step.kind == "evaluate":
        log = run_logged(step, env)
        if not has_results(step.folder):
            raise StepFailed(f"evaluation of {step.folder} exited 0 but wrote no results.csv (log: {log})")


_SPANS = {}  # experiment -> [first start, last end, job seconds], for the closing summary


def record_span(experiments, start, end):
    with _PRINT_LOCK:
        for name in experiments:
            span = _SPANS.setdefault(name, [start, end, 0.0])
            span[0], span[1], span[2] = min(span[0], start), max(span[1], end), span[2] + end - start


def run_job(job, environment):
    """Execute a job's steps, each in the environment that `environment()` returns when
    it starts; return None or the message of the step that failed."""
    job_start = time.time()
    try:
        for step in job.steps:
            if _STOP.is_set():
                return None
            if step.kind in ("train", "evaluate"):
                say(f"{step.kind} {step.folder}")
            start = time.time()
            try:
                execute(step, environment())
            except (StepFailed, OSError) as err:
                if _STOP.is_set():
                    return None
                say(f"FAILED {err}")
                return str(err)
            if step.kind in ("train", "evaluate"):
                say(f"done {step.kind} {step.folder} ({(time.time() - start) / 60:.1f} min)")
        return None
    finally:
        record_span({run.experiment for run in job.runs}, job_start, time.time())


def print_spans():
    """Wall time of each experiment (its first step to its last) and the job time it took."""
    for name, (start, end, seconds) in sorted(_SPANS.items(), key=lambda item: item[1][0]):
        say(f"{name}: {(end - start) / 60:.1f} min wall ({time.strftime('%H:%M', time.localtime(start))}-"
            f"{time.strftime('%H:%M', time.localtime(end))}), {seconds / 60:.1f} min of job time")


def child_env(n_jobs):
    """Environment of the children: share the CPU cores between concurrent jobs
    (torch would otherwise start one thread per core in every job), and keep
    progress bars in log files short."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n_jobs)))
    env.setdefault("TQDM_MININTERVAL", "10")
    return env


def stop(proc, grace=60):
    """SIGTERM (an entry point then ends with one line, its files complete), SIGKILL if it
    is still alive after `grace` seconds."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_children():
    with _LIVE_LOCK:
        _STOP.set()
        live = list(_LIVE)
    for proc in live:
        if proc.poll() is None:
            proc.terminate()


def run_jobs(jobs, n_jobs):
    """Run the jobs, n_jobs at a time; return the failure messages. A step gets the
    cores divided among the jobs not yet finished when it starts, so the grid's last
    job (a lone training when the number of jobs is odd) is not left on one core."""
    unfinished, lock = [len(jobs)], threading.Lock()

    def environment():
        with lock:
            return child_env(max(1, min(n_jobs, unfinished[0])))

    def run_and_count(job):
        try:
            return run_job(job, environment)
        finally:
            with lock:
                unfinished[0] -= 1

    failures = []
    pool = ThreadPoolExecutor(max_workers=n_jobs)
    try:
        futures = [pool.submit(run_and_count, job) for job in jobs]
        for future in as_completed(futures):
            if future.result():
                failures.append(future.result())
    except KeyboardInterrupt:
        say("interrupted: stopping the running jobs (rerun the same command to resume)")
        stop_children()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return failures


@contextmanager
def out_lock(out):
    """One runner per output folder: resuming deletes unfinished model folders,
    which must not be another runner's trainings in progress. (The entry points
    lock each model folder too, so even a runner killed with -9 whose child
    still trains cannot get a second writer into that folder.)"""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} exists and is not a folder")
    try:
        with FolderLock(out, what="output folder", name=LOCK):
            yield
    except UserError as err:
        if "in use by another" in str(err):
            raise UserError(f"another experiments.py is running on {out}") from None
        raise


def _die_with_parent():
    """In the child, before exec: get SIGTERM when the runner dies, even by kill -9 (Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the model-folder locks still prevent two writers


def generate_dataset(step):
    """Run the generator, which builds <folder>.partial beside the folder, continues
    an interrupted generation of the same settings, and renames it when complete:
    a folder that exists is a complete data set."""
    log = step.folder + ".log"
    os.makedirs(os.path.dirname(step.folder), exist_ok=True)
    say(f"generate {step.folder}")
    start = time.time()
    rc = run_command(step.cmd, log, env=child_env(1))
    record_span(["figure3 data"], start, time.time())
    if rc != 0:
        raise UserError(f"generating {step.folder} failed with exit code {rc}: {last_line(log)!r} "
                        f"(log: {log})")


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM: stop like Ctrl-C


@contextmanager
def session(out):
    """One launch: the output folder's lock held, SIGTERM stopping like Ctrl-C, a fresh
    stop flag and wall-time summary."""
    _STOP.clear()
    _SPANS.clear()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with out_lock(out):
            yield
    finally:
        signal.signal(signal.SIGTERM, previous)
