"""The runner's plan: the runs of a grid x seeds, what is on disk, and the steps still to do.

A run is one evaluated model folder <out>/<experiment>/<run-name>/ (run-name encodes the
settings and the seed, e.g. p0.75_stat_cau_multi_s0). Runs that share a trained model form
a Job; a job's steps (remove, train, copy, evaluate) follow from what is on disk:
    TRAINED                   written after training exited 0
    results.csv               the evaluation, finished when it holds the results of the
                              weights now in the folder (stamps.py)
A folder without TRAINED and without results is what an interrupted training left: it is
continued with the entry point's --resume where it holds a checkpoint.pt, otherwise removed
and trained again. Both launchers (local.py, slurm.py) execute these plans.
"""
import os
import shlex
import sys
from dataclasses import dataclass

import grids
import stamps
import viewspec
from cli import UserError, flag_of
from facts import ARGS_FILE, CHECKPOINT, RECIPE_DEFAULTS, RESULTS_FILE
from files import read_json
from grids import SCALES

HERE = os.path.dirname(os.path.abspath(__file__))
# Evaluation seed = training seed + this: fresh samples (the entry points refuse
# the training seed), yet reproducible.
EVAL_SEED_OFFSET = 10_000
TRAINED = "TRAINED"
# Flags that do not change what a model learns, so a reused model may differ in them.
NOT_COMPARED = {"--model-dir", "--model-id", "--datapath", "--workers", "--log-steps",
                "--checkpoint-steps"}


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


def argv_of(flags):
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
    return [sys.executable, script_path(script), *positional, *argv_of(flags)]


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


def status(folder):
    """Why the run in `folder` is not finished, or None when it is: a results.csv with the
    columns, rows and numbers of results (stamps.results_problem), beside the args.json of the model it evaluated, computed from the
    weights now in the folder (stamps.py). An empty or truncated file (a full disk under
    another writer, a file made by hand), a stray one, or the results of weights trained
    further since, are no finished evaluation. Both launchers and report.py ask this."""
    problem = stamps.results_problem(folder)  # columns, rows and numbers, as report.py reads them
    if problem:
        return problem
    if not os.path.isfile(os.path.join(folder, ARGS_FILE)):
        return f"no {ARGS_FILE}, settings unknown"
    stale = stamps.stale(folder)
    return f"its results are stale: {stale}" if stale else None


def has_results(folder):
    return status(folder) is None


def progress(runs):
    """The line both launchers print: how many of `runs` have results."""
    n_done = sum(has_results(run.run_dir) for run in runs)
    return f"{len(runs)} runs: {n_done} done, {len(runs) - n_done} to do"


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


def plan(runs):
    """The jobs of `runs` with the steps still to do, from what is on disk now. The local
    launcher plans while it holds the output folder's lock: a plan made before it would
    remove, and train again, a model that another runner finished in between."""
    check_reuse(runs)
    jobs = group_jobs(runs)
    for job in jobs:
        job.steps = plan_steps(job)
    return jobs
