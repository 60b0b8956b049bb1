"""Evaluate one trained model with several evaluation seeds: a verdict that survives evaluation noise.

    python evaluations.py runs/table1/p0.75_cau_multi_s0 --seeds 101-103 --num-eval-batches 5

Each seed runs the entry point's own --evaluate --load-args. In the simulation a
seed draws fresh evaluation pairs; image/text's exact protocol encodes the fixed
test split with fixed probe seeds, so there every seed gives the same numbers.
The model folder then holds evaluations.csv: every results.csv row with its
eval_seed, and provenance.json an "evaluations" list with each evaluation's
entry. Both are rewritten after each seed, so a rerun of the same command after
a kill keeps the seeds already evaluated at the same --num-eval-batches and
evaluates only the rest. The printed table gives, per row, the mean, sample
standard deviation, minimum and maximum over the seeds. The model's own results.csv is not changed.

Each evaluation runs in a scratch folder that links the model's files, so the
model folder is only read until evaluations.csv is written.
"""
import json
import os
import sys
import tempfile

import pandas as pd

import provenance
from cli import OneLineParser, UserError, run_cli
from facts import ARGS_FILE, RESULTS_FILE
from files import FolderLock, atomic_write_csv, atomic_write_json, read_json

FILE = "evaluations.csv"
# Files an evaluation writes: never linked into the scratch folder, so it cannot touch the model's.
WRITTEN = (RESULTS_FILE, "evaluation.json", "partial.csv", "provenance.json", FILE)
MAX_SEEDS = 100


def parse_seeds(text):
    """'101-103' or '1,5,9': distinct evaluation seeds."""
    try:
        if "-" in text:
            low, high = (int(x) for x in text.split("-"))
            seeds = list(range(low, high + 1))
        else:
            seeds = [int(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"--seeds {text!r} is not A-B or a comma list of integers") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0 or len(seeds) > MAX_SEEDS:
        raise UserError(f"--seeds {text!r} must give 1 to {MAX_SEEDS} distinct seeds >= 0")
    return seeds


def entry_point(saved):
    """main() of the entry point that trained the model (image/text models record a datapath)."""
    if "datapath" in saved:
        import main_imgtxt
        return main_imgtxt.main
    import main_mlp
    return main_mlp.main


def scratch_copy(model_dir, scratch):
    """A folder of links to the model's files, without the files an evaluation writes."""
    os.makedirs(scratch)
    for name in os.listdir(model_dir):
        if name not in WRITTEN and not name.startswith("."):
            os.symlink(os.path.abspath(os.path.join(model_dir, name)), os.path.join(scratch, name))


def evaluate_once(main, model_dir, seed, extra, scratch_root):
    """results.csv (with eval_seed) and provenance entry of one evaluation."""
    scratch = os.path.join(scratch_root, f"seed{seed}")
    scratch_copy(model_dir, scratch)
    main(["--model-dir", scratch_root, "--model-id", f"seed{seed}", "--evaluate", "--load-args",
          "--seed", str(seed), *extra])
    results = pd.read_csv(os.path.join(scratch, RESULTS_FILE), index_col=0)
    with open(os.path.join(scratch, "provenance.json")) as f:
        entry = json.load(f)["evaluation"]
    return results.assign(eval_seed=seed), {**entry, "eval_seed": seed}


def summary(table):
    """Mean, std, min and max over the seeds of each numeric column, per row of results.csv."""
    keys = [c for c in table.columns if c == "ix" or not pd.api.types.is_numeric_dtype(table[c])]
    numeric = [c for c in table.columns if c not in keys and c != "eval_seed"]
    stats = table.groupby(keys, sort=False)[numeric].agg(["mean", "std", "min", "max"])
    stats.columns = [f"{col}_{stat}" for col, stat in stats.columns]
    return stats.reset_index()


def main(argv=None):
    p = OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a trained model folder of main_mlp.py or main_imgtxt.py")
    p.add_argument("--seeds", required=True, help="evaluation seeds: A-B or a comma list")
    p.add_argument("--num-eval-batches", type=int, default=None,
                   help="simulation: batches of 4,096 pairs per set (5, the published size)")
    p.add_argument("--datapath", help="image/text: the data folder, if not where args.json says")
    args = p.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    saved = read_json(os.path.join(args.model, ARGS_FILE), ARGS_FILE)
    if not isinstance(saved, dict):
        raise UserError(f"{args.model}/args.json does not hold a model's arguments")
    if saved.get("seed") in seeds:
        raise UserError(f"--seeds includes the training seed {saved['seed']}: its samples would not be fresh")
    extra = [*(["--num-eval-batches", str(args.num_eval_batches)] if args.num_eval_batches else []),
             *(["--datapath", args.datapath or saved["datapath"]] if "datapath" in saved else [])]
    main = entry_point(saved)
    tables, entries = finished(args.model, seeds, args.num_eval_batches)
    if len(tables) == len(seeds):  # nothing to evaluate: the file keeps the asked seeds only
        write(args.model, [tables[s] for s in seeds], [entries[s] for s in seeds])
    with tempfile.TemporaryDirectory(prefix="evaluations.") as scratch_root:
        for seed in seeds:
            if seed in tables:
                print(f"evaluation seed {seed}: kept from {os.path.join(args.model, FILE)}")
                continue
            tables[seed], entries[seed] = evaluate_once(main, args.model, seed, extra, scratch_root)
            done = [s for s in seeds if s in tables]  # the asked seeds only, in their order
            write(args.model, [tables[s] for s in done], [entries[s] for s in done])
    table = pd.concat([tables[s] for s in seeds], ignore_index=True)
    print(f"Over evaluation seeds {', '.join(map(str, seeds))} (mean, std, min, max):")
    print(summary(table).to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(f"wrote {os.path.join(args.model, FILE)}")
    return 0


def batches_of(entry):
    """The --num-eval-batches in an evaluation's recorded command (None: the model's own)."""
    command = entry.get("command", [])
    return int(command[command.index("--num-eval-batches") + 1]) if "--num-eval-batches" in command else None


def finished(model_dir, seeds, batches):
    """Rows and entries, by seed, of the requested seeds an earlier run evaluated at the same size."""
    path = os.path.join(model_dir, FILE)
    if not os.path.exists(path):
        return {}, {}
    table = pd.read_csv(path, float_precision="round_trip")
    if "eval_seed" not in table.columns:
        raise UserError(f"{path} has no eval_seed column: it was not written by evaluations.py")
    entries = {e["eval_seed"]: e for e in provenance.load(model_dir).get("evaluations", [])
               if e.get("eval_seed") in seeds and batches_of(e) == batches}
    rows = {s: table[table.eval_seed == s].reset_index(drop=True) for s in entries}
    return {s: r for s, r in rows.items() if len(r)}, {s: entries[s] for s, r in rows.items() if len(r)}


def write(model_dir, tables, entries):
    """evaluations.csv and provenance's list as they stand: a kill keeps every finished seed."""
    with FolderLock(model_dir):  # refused while a training or evaluation writes into the folder
        atomic_write_csv(pd.concat(tables, ignore_index=True), os.path.join(model_dir, FILE))
        record_entries(model_dir, entries)


def record_entries(model_dir, entries):
    record = provenance.load(model_dir)
    record["evaluations"] = entries
    atomic_write_json(os.path.join(model_dir, provenance.FILE), record)


if __name__ == "__main__":
    sys.exit(run_cli(main) or 0)
