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

The runner in layers, each importing only those above it:
    grids.py         what to run: the experiments' grids and the scales' flags
    plans.py         the runs of a command, what is on disk, the steps still to do
    local.py         the steps run here, n at a time    slurm.py / slurm_job.py  on SLURM
    experiments.py   this command line
"""
import argparse
import os
import sys

import grids
import local
import plans
import slurm
from cli import OneLineParser, UserError, run_cli
from facts import INITS
from grids import SCALES
from plans import EVAL_SEED_OFFSET, argv_of, build_runs, experiment_runs, has_results

EXPERIMENTS = {name: e.title for name, e in grids.EXPERIMENTS.items()}
# The entry points take seeds 0..2^32 - 1; a grid's evaluation seeds must stay below that.
MAX_SEED = 2**32 - 1 - EVAL_SEED_OFFSET
MAX_SEEDS = 1000  # seeds per command: each is a training of every setting


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
            print(f"    {run.name[:run.name.rindex('_s')]:<24} {' '.join(argv_of(run.row))}")
        record = grids.EXPERIMENTS[experiment]
        kind = "imgtxt" if record.needs_data else "sim"
        common = {k: v for k, v in runs[0].train_flags.items()
                  if k in SCALES[args.scale][kind + "_train"] and k not in runs[0].row}
        print(f"  {runs[0].script} --scale {args.scale}: train {' '.join(argv_of(common))}")
        evaluate = {**SCALES[args.scale][kind + "_eval"], **record.eval_flags}
        print(f"  evaluate --load-args --seed <seed+{EVAL_SEED_OFFSET}> {' '.join(argv_of(evaluate))}")
        if record.needs_data:
            data = SCALES[args.scale]["data"]
            print("  data: " + ("--datapath (required)" if data is None else
                                f"generate_m3di.py {' '.join(argv_of(data))} unless --datapath is given"))


def refuse_submitted(jobs):
    """The local launcher leaves models that a SLURM submission owns: training them here
    while their job is queued or running would run them twice."""
    for job in jobs:
        record = slurm.read_record(job.train_dir)
        if record:
            raise UserError(f"{job.train_dir} was submitted to SLURM (job {record['job_id']}, "
                            f"{slurm.RECORD}): rerun with --launcher slurm, or delete {slurm.RECORD} there "
                            "if that job will not run again")


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        return print_grids(args)
    runs, generate = build_runs(args.experiments, args.out, args.scale, args.seeds, args.datapath, args.rows,
                                args.train_steps, args.encoder_init)
    if args.launcher == "slurm":  # slurm.py: one SLURM job per Job, doing what run_job does here
        return slurm.launch(args, runs, plans.plan(runs), generate)
    if args.dry_run:
        return print_plan(runs, plans.plan(runs), generate)

    try:
        with local.session(args.out):  # plan under the lock: see plans.plan
            pending = [job for job in plans.plan(runs) if job.steps]
            refuse_submitted(pending)
            local.say(f"{plans.progress(runs)}, {args.jobs} at a time")
            if generate:
                local.generate_dataset(generate)
            failures = local.run_jobs(pending, args.jobs)
    except KeyboardInterrupt:
        sys.exit(130)
    n_done = sum(has_results(run.run_dir) for run in runs)
    local.print_spans()
    local.say(f"{n_done} of {len(runs)} runs have results; {len(failures)} jobs failed")
    for message in failures:
        print(f"  {message}", file=sys.stderr)
    return 1 if failures else 0


def print_plan(runs, jobs, generate):
    """--dry-run: the steps still to do, as shell commands."""
    print(f"# {plans.progress(runs)}")
    if generate:
        print(generate.describe())
    for job in jobs:
        for step in job.steps:
            print(step.describe())
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main) or 0)
