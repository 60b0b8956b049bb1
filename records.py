"""Copy the records of finished runs into results/: every number a document quotes, without weights.

    python records.py runs/table1 runs/figure8 --into results/quick

copies each run folder of each experiment folder (a folder with args.json) to
<into>/<experiment>/<run>/, keeping only its small files: the settings, the
results, the training curve and the provenance. A run without a finished
evaluation is refused, unless --unfinished says to leave it out with a line.
report.py then regenerates every table and figure from the copies alone.
"""
import os
import shutil
import sys

import stamps
from cli import OneLineParser, UserError, run_cli
from facts import ARGS_FILE, RESULTS_FILE
from plans import has_results
from files import atomic_write

# What a document may cite: settings, results, curves, per-set and per-direction tables,
# and where they came from. Never weights (*.pt) or logs.
KEPT = (ARGS_FILE, RESULTS_FILE, "evaluation.json", "metrics.csv", "partial.csv", "provenance.json",
        "evaluations.csv", "content_size.csv")
KEPT_PATTERN = ("directions", ".csv")  # directions.py's tables: directions*.csv
MAX_FILE = 2 * 2**20  # a larger "small file" is a mistake (a training curve logged every step?)


def kept(name):
    return name in KEPT or (name.startswith(KEPT_PATTERN[0]) and name.endswith(KEPT_PATTERN[1]))


def run_folders(experiment_dir):
    """The run folders of an experiment folder: those with an args.json."""
    if not os.path.isdir(experiment_dir):
        raise UserError(f"experiment folder not found: {experiment_dir}")
    runs = sorted(name for name in os.listdir(experiment_dir)
                  if os.path.isfile(os.path.join(experiment_dir, name, ARGS_FILE)))
    if not runs:
        raise UserError(f"{experiment_dir} holds no run folder (a folder with args.json)")
    return runs


def copy_run(src, dst):
    """Copy a run's kept files; returns their total size in bytes."""
    size = 0
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if not (kept(name) and os.path.isfile(path)):
            continue
        if os.path.getsize(path) > MAX_FILE:
            raise UserError(f"{path} is {os.path.getsize(path) / 2**20:.1f} MB, more than a record should be")
        with open(path, "rb") as f:
            data = f.read()
        atomic_write(os.path.join(dst, name), lambda out: out.write(data))
        size += len(data)
    return size


def copy_experiment(experiment_dir, into, unfinished=False):
    """Copy every run of one experiment folder; returns (runs copied, bytes, runs left out)."""
    name = os.path.basename(os.path.normpath(experiment_dir))
    copied, size, left = 0, 0, []
    for run in run_folders(experiment_dir):
        src = os.path.join(experiment_dir, run)
        if not has_results(src):  # the runner's own "finished": a current, non-empty results.csv
            why = stamps.stale(src) if os.path.isfile(os.path.join(src, RESULTS_FILE)) else None
            what = f"stale results ({why})" if why else "no results.csv"
            if not unfinished:
                raise UserError(f"{src} has {what}: the grid is not finished (rerun its experiments.py "
                                "command, or pass --unfinished to leave such runs out)")
            left.append(f"{src} ({what})")
            continue
        dst = os.path.join(into, name, run)
        if os.path.isdir(dst):
            shutil.rmtree(dst)  # the record is replaced whole: no file of an older run survives
        size += copy_run(src, dst)
        copied += 1
    return copied, size, left


def main(argv=None):
    p = OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiments", nargs="+", help="experiment folders of experiments.py (e.g. runs/table1)")
    p.add_argument("--into", required=True, help="the records folder (e.g. results/quick)")
    p.add_argument("--unfinished", action="store_true", help="leave out runs without results.csv")
    args = p.parse_args(argv)
    for folder in args.experiments:
        copied, size, left = copy_experiment(folder, args.into, args.unfinished)
        print(f"{folder}: {copied} runs, {size / 1024:.0f} KB -> "
              f"{os.path.join(args.into, os.path.basename(os.path.normpath(folder)))}")
        for path in left:
            print(f"  left out: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main) or 0)
