"""Run the paper's experiments: named grids of settings x seeds, each trained then evaluated.

    python experiments.py --list                        # the experiments and their grids
    python experiments.py table1 --jobs 2               # CPU-sized settings (--scale quick)
    python experiments.py table1 table4 figure8 --scale paper
    python experiments.py figure3 --dry-run             # print the commands, run nothing
    python report.py runs/table1                        # tables and figures of the results

Each run is a model folder <out>/<experiment>/<run-name>/ of main_mlp.py or
main_imgtxt.py (run-name encodes the settings and the seed, e.g.
p0.75_stat_cau_multi_s0), to which the runner adds
    train.log, evaluate.log   stdout and stderr of each step
    TRAINED                   written after training exited 0
A run whose results.csv holds the results of the weights in its folder (stamps.py)
is skipped, so rerunning a command resumes it. A folder without TRAINED (and
without results) is what an interrupted training left behind: it is continued with
the entry point's --resume where it holds a checkpoint.pt, otherwise deleted and
trained again from scratch. The runner decides this while it holds the output
folder's lock, so that it never acts on what another runner has changed since.
figure8 evaluates copies of table1's multimodal models, training them in
<out>/table1/ first where they are missing (table1 then reuses them).
"""
import argparse
import ctypes
import ctypes.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass

import grids
import slurm
import stamps
import viewspec
from cli import OneLineParser, UserError, flag_of, run_cli
from facts import ARGS_FILE, CHECKPOINT, INITS, MODEL_FILES, PARTIAL_FILE, RECIPE_DEFAULTS, RESULTS_FILE
from files import FolderLock, atomic_write_json, read_json

HERE = os.path.dirname(os.path.abspath(__file__))
EXPERIMENTS = {name: e.title for name, e in grids.EXPERIMENTS.items()}
# Evaluation seed = training seed + this: fresh samples (the entry points refuse
# the training seed), yet reproducible.
EVAL_SEED_OFFSET = 10_000
# The entry points take seeds 0..2^32 - 1; a grid's evaluation seeds must stay below that.
MAX_SEED = 2**32 - 1 - EVAL_SEED_OFFSET
MAX_SEEDS = 1000  # seeds per command: each is a training of every setting
TRAINED = "TRAINED"
LOCK = ".experiments.lock"
# Flags that do not change what a model learns, so a reused model may differ in them.
NOT_COMPARED = {"--model-dir", "--model-id", "--datapath", "--workers", "--log-steps",
                "--checkpoint-steps"}
# Hyperparameters per scale. "paper" spells out the paper's values (the entry
# points' defaults) so that every command documents itself.
SCALES = {
    "paper": {
        "sim_train": {"--content-n": 5, "--style-n": 5, "--modality-n": 5, "--encoding-size": 5,
                      "--batch-size": 6144, "--lr": 1e-4, "--train-steps": 300001, "--log-steps": 1000},
        "sim_eval": {"--num-eval-batches": 5},
        "imgtxt_train": {"--batch-size": 256, "--lr": 1e-5, "--tau": 1.0, "--train-steps": 100001,
                         "--log-steps": 1000, "--checkpoint-steps": 10000, "--workers": 4},
        "imgtxt_eval": {"--workers": 4},
        "data": None,  # the published Multimodal3DIdent: --datapath is required
    },
    # CPU-sized: simulation blocks of 3 with the kaiming/cosine/bf16 recipe, image/text
    # the make demo-imgtxt recipe at 64 px. Why each setting: REPRODUCTION.md,
    # "Quick-scale settings, and why".
    "quick": {
        "sim_train": {"--content-n": 3, "--style-n": 3, "--modality-n": 3, "--encoding-size": 3,
                      "--batch-size": 256, "--lr": 1e-3, "--lr-schedule": "cosine", "--warmup-steps": 100,
                      "--train-steps": 15001, "--precision": "bf16", "--encoder-init": "kaiming",
                      "--log-steps": 1000},
        "sim_eval": {"--num-eval-batches": 1},
        "imgtxt_train": {"--batch-size": 64, "--lr": 1e-3, "--tau": 0.1, "--train-steps": 4001,
                         "--lr-schedule": "cosine", "--warmup-steps": 200, "--precision": "bf16",
                         "--log-steps": 500, "--checkpoint-steps": 250, "--workers": 1},
        "imgtxt_eval": {"--workers": 1},
        "data": {"--n-train": 10000, "--n-val": 1000, "--n-test": 1000, "--seed": 0,
                 "--image-size": 64, "--position-dependent-color": True,
                 "--workers": os.cpu_count() or 1},
    },
}
# The paper's latent sizes (blocks of 5, encoding size 5) with the quick scale's CPU
# recipe over more steps: at blocks of 5 that recipe needs about 34,000 steps for a
# linear content R^2 of 0.9. 50,001 steps leave 2 of Table 1's 6 models without any
# dependence short of convergence, 100,001 converge all 6 (the Cau row converges in
# neither; REPRODUCTION.md, "Table 1 at the paper's latent sizes"). Image/text runs as
# at the quick scale.
SCALES["dims"] = {**SCALES["quick"], "sim_train": {
    **SCALES["quick"]["sim_train"], "--content-n": 5, "--style-n": 5, "--modality-n": 5,
    "--encoding-size": 5, "--train-steps": 100001}}

_PRINT_LOCK = threading.Lock()
_STOP = threading.Event()      # set on Ctrl-C / SIGTERM: start nothing new
_LIVE = set()                  # running child processes, to stop them on interruption
_LIVE_LOCK = threading.Lock()


class StepFailed(Exception):
    """A step of a job failed; the message says which and where its log is."""


def say(msg):
    with _PRINT_LOCK:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------- the grids ---

@dataclass
class Run:
    experiment: str
    name: str            # run-name: settings and seed
    row: dict            # the flags that define this run's row of the experiment
    run_dir: str         # <out>/<experiment>/<name>: where results.csv is written
    train_dir: str       # where the model is trained: run_dir, or the table1 folder it reuses
    train_flags: dict
    eval_flags: dict
    script: str


def render(flags):
    """{'--a': 1, '--b': True, '--c': False} -> ['--a', '1', '--b']."""
    out = []
    for flag, value in flags.items():
        if value is True:
            out.append(flag)
        elif value is not False and value is not None:
            out += [flag, str(value)]
    return out


def script_path(script):
    """The entry point, relative to the working directory where that is shorter."""
    path = os.path.join(HERE, script)
    rel = os.path.relpath(path)
    return path if rel.startswith(os.pardir) else rel


def command(script, flags, *positional):
    return [sys.executable, script_path(script), *positional, *render(flags)]


def location(model_dir):
    return {"--model-dir": os.path.dirname(model_dir), "--model-id": os.path.basename(model_dir)}


def merge(first, defaults):
    """`first`, then the entries of `defaults` it does not set (so rows override scales)."""
    return {**first, **{k: v for k, v in defaults.items() if k not in first}}


def experiment_runs(experiment, out, scale, seeds, datapath, rows=None, train_steps=None, encoder_init=None):
    """The runs of an experiment's grid (or its `rows`) x seeds: where each trains and is evaluated, and how
    (`train_steps`, if given, replaces every training's --train-steps; `encoder_init` every simulation
    training's --encoder-init)."""
    record = grids.EXPERIMENTS[experiment]
    kind = "imgtxt" if record.needs_data else "sim"
    data = {"--datapath": datapath} if record.needs_data else {}
    runs = []
    for row_name, row in record.grid:
        if rows and row_name not in rows:
            continue
        for seed in seeds:
            name = f"{row_name}_s{seed}"
            run_dir = os.path.join(out, experiment, name)
            train_dir = os.path.join(out, record.trained_in or experiment, name)
            train = merge({**location(train_dir), **data, "--seed": seed, **row}, SCALES[scale][f"{kind}_train"])
            if train_steps is not None:
                train["--train-steps"] = train_steps
            if encoder_init is not None and kind == "sim":
                train["--encoder-init"] = encoder_init
            evaluate = {**location(run_dir), **data, "--evaluate": True, "--load-args": True,
                        "--seed": seed + EVAL_SEED_OFFSET, **SCALES[scale][f"{kind}_eval"], **record.eval_flags}
            runs.append(Run(experiment, name, row, run_dir, train_dir, train, evaluate, record.script))
    return runs


def data_plan(out, scale, datapath):
    """figure3's data folder, and the Step that generates it (None if given or complete)."""
    if datapath is not None:
        if not os.path.isdir(datapath):
            raise UserError(f"--datapath {datapath} is not a folder")
        return datapath, None
    if SCALES[scale]["data"] is None:
        raise UserError("figure3 at --scale paper needs --datapath: the published Multimodal3DIdent "
                        "folder (or one made with generate_m3di.py --image-size 224 "
                        "--position-dependent-color)")
    folder = os.path.join(out, "data", f"m3di_{scale}")
    if os.path.isdir(folder):  # the generator builds <folder>.partial and renames it when complete
        return folder, None
    return folder, Step("generate", folder, command("generate_m3di.py", SCALES[scale]["data"], folder))


def build_runs(experiments, out, scale, seeds, datapath=None, rows=None, train_steps=None, encoder_init=None):
    """All runs of the named experiments (their `rows` only, if given), and the data-generation Step (or None)."""
    runs, generate = [], None
    for experiment in experiments:
        record = grids.EXPERIMENTS[experiment]
        if rows and not any(name in rows for name, _ in record.grid):
            continue  # none of the rows asked for is in this grid
        if record.needs_data:
            datapath, generate = data_plan(out, scale, datapath)
        runs += experiment_runs(experiment, out, scale, seeds, datapath, rows, train_steps, encoder_init)
    return runs, generate


# ------------------------------------------------------- state on disk ---

def has_results(folder):
    """A results.csv with the columns and rows of results (stamps.results_problem, as the report
    reads it), beside the args.json of the model it evaluated, and computed from the weights now in the folder (stamps.py): an empty or
    truncated file (a full disk under another writer, a file made by hand), a stray one, or
    the results of weights trained further since, are no finished evaluation."""
    return (stamps.results_problem(folder) is None and os.path.isfile(os.path.join(folder, ARGS_FILE))
            and stamps.stale(folder) is None)


def is_trained(folder):
    # A folder with results was evaluated, so its training had finished, even
    # if it was made by hand or by the published scripts (no marker).
    return os.path.isfile(os.path.join(folder, TRAINED)) or has_results(folder)


def resumable(folder):
    return os.path.isfile(os.path.join(folder, CHECKPOINT))


def settings_conflicts(folder, train_flags):
    """[(flag, args.json's value, the wanted value)] where a trained model's settings differ
    from `train_flags`."""
    path = os.path.join(folder, ARGS_FILE)
    if not os.path.isfile(path):
        return []
    saved = read_json(path, ARGS_FILE)
    conflicts = []
    # A recipe flag left out of the command means its default (the published recipe).
    defaults = {flag_of(key): value for key, value in RECIPE_DEFAULTS.items() if flag_of(key) not in train_flags}
    for flag, wanted in {**train_flags, **defaults}.items():
        key = flag.lstrip("-").replace("-", "_")
        if flag in NOT_COMPARED or key not in saved or wanted is None:  # None: left out (grids.NO_BLOCKS)
            continue
        if not same_value(saved[key], wanted, key):
            conflicts.append((flag, saved[key], wanted))
    return conflicts


def same_value(have, wanted, key=None):
    """args.json's value against a flag's (1e-4 == 0.0001; True == present; view lists parsed)."""
    if key == "view_latents":
        return viewspec.same(have, wanted)
    if isinstance(wanted, bool):
        return bool(have) == wanted
    try:
        return float(have) == float(wanted)
    except (TypeError, ValueError):
        return str(have) == str(wanted)


# The runner's own flags that replace a scale's setting of every training.
RUNNER_FLAGS = ("--train-steps", "--encoder-init")


def check_reuse(runs):
    """Refuse to skip, reuse or resume models trained with other settings (e.g. quick vs paper
    scale, or another --train-steps: a cosine schedule is laid over the run's steps, so a longer
    run is another model, and extending a finished one would make its results stale)."""
    bad = {}
    for run in runs:
        for folder in {run.train_dir, run.run_dir}:
            if os.path.isfile(os.path.join(folder, RESULTS_FILE)) and not os.path.isfile(os.path.join(folder, ARGS_FILE)):
                raise UserError(f"{folder} holds a {RESULTS_FILE} but no {ARGS_FILE}, so no model of known "
                                "settings: move it out of the way (the runner would train the run there)")
            if folder not in bad and (is_trained(folder) or resumable(folder)):
                conflicts = settings_conflicts(folder, run.train_flags)
                if conflicts:
                    bad[folder] = conflicts
    if bad:
        folder, conflicts = next(iter(bad.items()))
        more = f"; and {len(bad) - 1} more folders" if len(bad) > 1 else ""
        own = [(flag, have) for flag, have, _ in conflicts if flag in RUNNER_FLAGS]
        hint = (f"rerun with {' '.join(f'{flag} {have}' for flag, have in own)} as it was run, or use another --out"
                if len(own) == len(conflicts) else "use another --out, or the --scale it was run with")
        raise UserError(f"{folder} was trained with other settings: "
                        f"{', '.join(f'{flag} {have} (here {wanted})' for flag, have, wanted in conflicts)}{more}; "
                        f"{hint}")


# ------------------------------------------------------------ the plan ---

@dataclass
class Step:
    kind: str            # "remove", "train", "copy", "evaluate" or "generate" (data)
    folder: str          # the model folder the step works on
    cmd: list = None     # train / evaluate
    source: str = None   # copy: the trained folder

    def describe(self):
        if self.kind == "remove":
            return f"rm -rf {shlex.quote(self.folder)}   # incomplete training"
        if self.kind == "copy":
            return f"cp -r {shlex.quote(self.source)} {shlex.quote(self.folder)}   # reuse the trained model"
        if self.kind == "generate":
            return (f"{shlex.join(self.cmd)} > {shlex.quote(self.folder)}.log 2>&1 && "
                    f"mv {shlex.quote(self.folder)}.partial {shlex.quote(self.folder)}")
        log = os.path.join(self.folder, f"{self.kind}.log")
        return f"{shlex.join(self.cmd)} > {shlex.quote(log)} 2>&1"


@dataclass
class Job:
    """One trained model and the evaluations that need it: runs in one worker, in order."""
    train_dir: str
    script: str
    runs: list
    steps: list = None


def group_jobs(runs):
    jobs = {}
    for run in runs:
        jobs.setdefault(run.train_dir, Job(run.train_dir, run.script, [])).runs.append(run)
    return list(jobs.values())


def plan_steps(job):
    """The steps still to do for `job`, given what is on disk."""
    todo = [run for run in job.runs if not has_results(run.run_dir)]
    steps = []
    if any(not is_trained(run.run_dir) for run in todo) and not is_trained(job.train_dir):
        train = command(job.script, job.runs[0].train_flags)
        if resumable(job.train_dir):  # an interrupted training: continue it
            train.append("--resume")
        elif os.path.exists(job.train_dir):  # interrupted before its first checkpoint
            steps.append(Step("remove", job.train_dir))
        steps.append(Step("train", job.train_dir, train))
    for run in todo:
        if run.run_dir != job.train_dir and not is_trained(run.run_dir):
            if os.path.exists(run.run_dir):
                steps.append(Step("remove", run.run_dir))
            steps.append(Step("copy", run.run_dir, source=job.train_dir))
        steps.append(Step("evaluate", run.run_dir, command(run.script, run.eval_flags)))
    return steps


# ------------------------------------------------------------ execution ---

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


def generate_data(step):
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


# ------------------------------------------------------------------- CLI ---

def build_parser():
    p = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog="experiments: " + ", ".join(EXPERIMENTS) + " (or all)")
    p.add_argument("experiments", nargs="*", metavar="EXPERIMENT")
    p.add_argument("--seeds", type=seed_list, default=[0, 1, 2], metavar="N|A-B|A,B,...",
                   help="training seeds: N for 0..N-1, A-B for A..B, or a comma list (3)")
    p.add_argument("--rows", nargs="+", metavar="ROW",
                   help="only these settings of the grids, by run name without _s<seed> "
                        "(e.g. p1.0_multi; --list shows them)")
    p.add_argument("--scale", choices=sorted(SCALES), default="quick",
                   help="quick: CPU-sized settings; dims: the paper's latent sizes with the CPU "
                        "recipe; paper: the paper's hyperparameters (quick)")
    p.add_argument("--train-steps", type=int, default=None, metavar="N",
                   help="train every model N steps instead of the scale's (e.g. 50001 with --scale dims)")
    p.add_argument("--encoder-init", choices=INITS, default=None,
                   help="initialise every simulation encoder this way instead of the scale's "
                        "(e.g. whitened with --scale dims)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (1)")
    p.add_argument("--out", type=out_folder, default="runs", help="output folder (runs/)")
    p.add_argument("--datapath", default=None,
                   help="figure3: Multimodal3DIdent folder (required with --scale paper; "
                        "otherwise generated into OUT/data/ if not given)")
    p.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    p.add_argument("--list", action="store_true", help="print the experiments and their grids")
    slurm.add_arguments(p)  # --launcher and its resources
    return p


def out_folder(text):
    """--out: a folder's path; an empty one would put the runs in the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give the output folder (runs/ by default)")
    return text


def seed_list(text):
    """--seeds: "3" is 0, 1, 2; "3-9" is 3..9; "0,4,7" is those."""
    try:
        if "-" in text:
            first, last = (int(x) for x in text.split("-"))
            if last < first:
                raise argparse.ArgumentTypeError(f"{text!r} runs backwards; write the range A-B with A <= B")
            if last - first >= MAX_SEEDS:  # before building the list: 0-100000000000 would exhaust memory
                raise argparse.ArgumentTypeError(f"{text!r} names {last - first + 1} seeds; at most "
                                                 f"{MAX_SEEDS} per command")
            seeds = list(range(first, last + 1))
        elif "," in text:
            seeds = [int(x) for x in text.split(",")]
        else:
            if int(text) > MAX_SEEDS:
                raise argparse.ArgumentTypeError(f"{text!r} names {int(text)} seeds; at most {MAX_SEEDS} "
                                                 "per command")
            if int(text) == 0:  # a count of none: the user almost surely meant seed 0
                raise argparse.ArgumentTypeError(f"{text!r} is a count of seeds (N means seeds 0..N-1), so "
                                                 "none; for seed 0 alone write 0-0")
            seeds = list(range(int(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N, A-B or A,B,...") from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} gives no seeds (seeds are integers >= 0)")
    if len(seeds) > MAX_SEEDS or max(seeds) > MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text!r}: at most {MAX_SEEDS} seeds, each at most {MAX_SEED} "
                                         f"(the evaluation seed is the training seed + {EVAL_SEED_OFFSET})")
    return list(dict.fromkeys(seeds))


def parse_args(argv):
    args = build_parser().parse_args(argv)
    names = list(EXPERIMENTS) if args.experiments == ["all"] else args.experiments
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise UserError(f"unknown experiment {unknown[0]!r} (choose from {', '.join(EXPERIMENTS)}, all)")
    if not names and not args.list:
        raise UserError(f"name at least one experiment ({', '.join(EXPERIMENTS)}, all) or use --list")
    if args.jobs < 1:
        raise UserError("--jobs must be at least 1")
    if args.train_steps is not None and args.train_steps < 1:
        raise UserError("--train-steps must be at least 1")
    args.experiments = list(dict.fromkeys(names)) or list(EXPERIMENTS)
    if args.encoder_init is not None and all(grids.EXPERIMENTS[e].needs_data for e in args.experiments):
        raise UserError(f"--encoder-init sets the simulation's encoders; {', '.join(args.experiments)} "
                        "trains none (its image encoder is torchvision's ResNet-18)")
    if args.datapath is not None and not any(grids.EXPERIMENTS[e].needs_data for e in args.experiments):
        raise UserError(f"--datapath is image/text data (figure3); {', '.join(args.experiments)} "
                        "reads none (the simulation draws its own samples)")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f"--out {args.out} exists and is not a folder")
    if args.rows:
        known = {name for e in args.experiments for name, _ in grids.EXPERIMENTS[e].grid}
        missing = [row for row in args.rows if row not in known]
        if missing:
            raise UserError(f"--rows: no setting {missing[0]!r} in {', '.join(args.experiments)} "
                            f"(they have: {', '.join(sorted(known))})")
    return args


def print_grids(args):
    for experiment in args.experiments:
        runs = experiment_runs(experiment, args.out, args.scale, args.seeds,
                               args.datapath or "DATAPATH", args.rows, args.train_steps, args.encoder_init)
        if not runs:
            continue
        n_seeds = len(args.seeds)
        print(f"{experiment}: {EXPERIMENTS[experiment]}")
        print(f"  {len(runs)} runs = {len(runs) // n_seeds} settings x {n_seeds} seeds "
              f"({', '.join(map(str, args.seeds))}), in {os.path.join(args.out, experiment)}/<setting>_s<seed>")
        for run in runs[::n_seeds]:
            print(f"    {run.name[:run.name.rindex('_s')]:<24} {' '.join(render(run.row))}")
        record = grids.EXPERIMENTS[experiment]
        kind = "imgtxt" if record.needs_data else "sim"
        common = {k: v for k, v in runs[0].train_flags.items()
                  if k in SCALES[args.scale][kind + "_train"] and k not in runs[0].row}
        print(f"  {runs[0].script} --scale {args.scale}: train {' '.join(render(common))}")
        evaluate = {**SCALES[args.scale][kind + "_eval"], **record.eval_flags}
        print(f"  evaluate --load-args --seed <seed+{EVAL_SEED_OFFSET}> {' '.join(render(evaluate))}")
        if record.needs_data:
            data = SCALES[args.scale]["data"]
            print("  data: " + ("--datapath (required)" if data is None else
                                f"generate_m3di.py {' '.join(render(data))} unless --datapath is given"))


def refuse_submitted(jobs):
    """The local launcher leaves models that a SLURM submission owns: training them here
    while their job is queued or running would run them twice."""
    for job in jobs:
        record = slurm.read_record(job.train_dir)
        if record:
            raise UserError(f"{job.train_dir} was submitted to SLURM (job {record['job_id']}, "
                            f"{slurm.RECORD}): rerun with --launcher slurm, or delete {slurm.RECORD} there "
                            "if that job will not run again")


def plan(runs):
    """The jobs of `runs` with the steps still to do, from what is on disk now. The local
    launcher plans while it holds the output folder's lock: a plan made before it would
    remove, and train again, a model that another runner finished in between."""
    check_reuse(runs)
    jobs = group_jobs(runs)
    for job in jobs:
        job.steps = plan_steps(job)
    return jobs


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        return print_grids(args)
    runs, generate = build_runs(args.experiments, args.out, args.scale, args.seeds, args.datapath, args.rows,
                                args.train_steps, args.encoder_init)
    if args.launcher == "slurm":  # slurm.py: one SLURM job per Job, doing what run_job does here
        return slurm.launch(args, runs, plan(runs), generate, out_lock, has_results)
    if args.dry_run:
        return print_plan(runs, plan(runs), generate)

    _STOP.clear()
    _SPANS.clear()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with out_lock(args.out):
            pending = [job for job in plan(runs) if job.steps]
            refuse_submitted(pending)
            n_done = sum(has_results(run.run_dir) for run in runs)
            say(f"{len(runs)} runs: {n_done} done, {len(runs) - n_done} to do, {args.jobs} at a time")
            if generate:
                generate_data(generate)
            failures = run_jobs(pending, args.jobs)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    n_done = sum(has_results(run.run_dir) for run in runs)
    print_spans()
    say(f"{n_done} of {len(runs)} runs have results; {len(failures)} jobs failed")
    for message in failures:
        print(f"  {message}", file=sys.stderr)
    return 1 if failures else 0


def print_plan(runs, jobs, generate):
    """--dry-run: the steps still to do, as shell commands."""
    n_done = sum(has_results(run.run_dir) for run in runs)
    print(f"# {len(runs)} runs: {n_done} done, {len(runs) - n_done} to do")
    if generate:
        print(generate.describe())
    for job in jobs:
        for step in job.steps:
            print(step.describe())
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main) or 0)
