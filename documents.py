"""The documents' generated blocks: tables and provenance lines made from the records in results/.

A block in README.md, REPRODUCTION.md or docs/*.md reads

    <!-- records: KIND PATH -->
    ...generated lines...
    <!-- /records -->

with KIND one of
    table       report.py's table of the experiment records folder PATH (e.g. results/quick/table1)
    model       the R² table of the single model records folder PATH (e.g. results/demo/mlp)
    runs        one row per run whose records folder matches the glob PATH (e.g.
                results/quick/table1/p0.75_stat_*): the nonlinear R² of every factor from h1
    directions  one row per run whose records folder matches the glob PATH: the linear R² from h1
                of each canonical content direction (directions.py's directions.csv), best first,
                with its style gain |B u| where the style copies the content
    provenance  one line: the runs under PATH, their commit, machine, dates and wall times

    python documents.py            # rewrite every block, and report.py's figures in results/
    python documents.py --check    # list the blocks that differ from the records; exit 1 if any

tests/test_documents.py runs the check, so a document cannot quote a number that
today's records do not give.
"""
import glob
import json
import os
import re
import sys
import tempfile

import numpy as np
import pandas as pd

import grids
import report
from cli import OneLineParser, UserError, run_cli
from facts import ARGS_FILE, RESULTS_FILE
from files import atomic_write_text

ROOT = os.path.dirname(os.path.abspath(__file__))
DOCUMENTS = ("README.md", "REPRODUCTION.md", "docs/*.md")
BLOCK = re.compile(r"(<!-- records: (\w+) (\S+) -->\n)(.*?)(<!-- /records -->)", re.S)
KINDS = ("table", "model", "runs", "directions", "provenance")


def document_paths(root=ROOT):
    return [p for pattern in DOCUMENTS for p in sorted(glob.glob(os.path.join(root, pattern)))]


def read_json_or_none(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def model_folders(path):
    """The model records under path (itself, or its runs), those with a results.csv."""
    if os.path.isfile(os.path.join(path, RESULTS_FILE)):
        return [path]
    return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(path, "**", RESULTS_FILE), recursive=True))


def model_table(path):
    """A simulation model's results.csv as one row per encoding and probe, one column per factor;
    an image/text model's as one row per modality and factor."""
    results = report.read_results(os.path.join(path, RESULTS_FILE))
    if "modality" in results.columns:
        return imgtxt_model_table(path, results)
    results = results[results[["r2_linear", "r2_nonlinear"]].notna().any(axis=1)]  # c' without --permuted-content
    factors = list(dict.fromkeys(results["predicted_factors"]))
    table = []
    for encoding, rows in results.groupby("encoding", sort=False):
        for column, probe in (("r2_linear", "linear"), ("r2_nonlinear", "nonlinear")):
            values = dict(zip(rows["predicted_factors"], rows[column]))
            table.append([f"{encoding} ({probe} R²)", *(f"{values[f]:.3f}" for f in factors)])
    return report.markdown_table(["encoding", *factors], table)


def imgtxt_model_table(path, results):
    """Figure 3's probe per factor (MLP accuracy, kernel-ridge R²) with the paper's value at the
    model's encoding size, read off the paper's plot, where it shows one."""
    args = read_json_or_none(os.path.join(path, ARGS_FILE)) or {}
    size = args.get("encoding_size")
    column = report.ENCODING_SIZES.index(size) if size in report.ENCODING_SIZES else None
    table = []
    for _, r in results.iterrows():
        metric = report.FIG3_METRIC.get(r["factor_type"])
        if metric is None:
            continue
        by_size = grids.FIGURE3.get((r["modality"], r["factor_name"]))
        paper = report.paper_text(by_size[column]) if by_size and column is not None else ""
        table.append([r["modality"], r["factor_name"], "R²" if r["factor_type"] == "continuous" else "acc.",
                      report.number(r[metric]), paper or "-"])
    return report.markdown_table(["modality", "factor", "metric", "measured", f"paper, size {size}"], table)


def run_records(pattern, root, name=RESULTS_FILE):
    """The run records folders matching the glob `pattern` that hold the file `name`."""
    folders = sorted(f for f in glob.glob(os.path.join(root, pattern)) if os.path.isfile(os.path.join(f, name)))
    if not folders:
        raise UserError(f"no run records with {name} match {pattern}")
    return folders


def runs_table(pattern, root=ROOT):
    """Nonlinear R² of every factor from h1, one row per run matching the glob `pattern`, so that
    a document can name single seeds without typing their numbers."""
    folders = run_records(pattern, root)
    rows, factors = [], {}
    for folder in folders:
        results = report.read_results(os.path.join(folder, RESULTS_FILE))
        hz1 = results[(results["encoding"] == "hz1") & results["r2_nonlinear"].notna()]
        rows.append((os.path.basename(folder), dict(zip(hz1["predicted_factors"], hz1["r2_nonlinear"]))))
        factors.update(dict.fromkeys(hz1["predicted_factors"]))
    # evaluations.py's repeated evaluations, where a run has them: a verdict near a threshold rests on these
    spreads = [report.evaluation_spread(os.path.join(folder, "evaluations.csv"), "c") for folder in folders]
    extra = ["c over evaluation seeds"] if any(spreads) else []
    table = []
    for (name, values), spread in zip(rows, spreads):
        cells = [report.number(values[f]) if f in values else "-" for f in factors]
        if extra:
            cells.append("-" if spread is None else
                         f"{spread[0]:.3f} ± {spread[1]:.3f} (min {spread[2]:.3f}, {spread[4]} seeds)")
        table.append([name, *cells])
    return report.markdown_table(["run", *factors, *extra], table)


def directions_table(pattern, root=ROOT):
    """Per run, h1's canonical content directions (best recovered first): linear R², and in
    brackets the style gain |B u| of the direction u where the style copies the content."""
    table = []
    for folder in run_records(pattern, root, "directions.csv"):
        d = pd.read_csv(os.path.join(folder, "directions.csv"))
        d = d[(d["encoding"] == "hz1") & (d["block"] == "c") & (d["basis"] == "canonical")].sort_values("direction")
        cells = [f"{r:.3f}" if np.isnan(g) else f"{r:.3f} ({g:.2f})" for r, g in zip(d["r2_linear"], d["style_gain"])]
        table.append([os.path.basename(folder), ", ".join(cells)])
    return report.markdown_table(["run", "canonical content directions: linear R² from h1 (style gain)"], table)


def minutes(seconds):
    return f"{seconds / 60:.1f}"


def provenance_line(path):
    """Commit(s), machine, dates and wall times of every model under path, from provenance.json."""
    folders = model_folders(path)
    records = [read_json_or_none(os.path.join(f, "provenance.json")) or {} for f in folders]
    trainings = [seg for r in records for seg in r.get("training", [])]
    evaluations = [r["evaluation"] for r in records if "evaluation" in r]
    if not evaluations:
        raise UserError(f"{path}: no provenance.json with an evaluation: not a records folder of this project")
    seeded = [e for r in records for e in r.get("evaluations", [])]  # evaluations.py's seeds
    entries = trainings + evaluations + seeded
    commits = sorted({e["commit"][:7] + ("+modified" if e.get("modified") else "") for e in entries if e.get("commit")})
    machines = sorted({f"{e['device']}, {e['threads']} thread{'s' * (e['threads'] != 1)}" for e in entries})
    dates = sorted(e["started"][:10] for e in entries if e.get("started"))
    span = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    parts = [f"Provenance: {len(folders)} model{'s' * (len(folders) != 1)} (`{os.path.relpath(path, ROOT)}`)",
             f"commit {', '.join(commits)}", "; ".join(machines), span]
    if trainings:
        per_model = [sum(seg["wall_s"] for seg in r.get("training", [])) for r in records if r.get("training")]
        parts.append(f"training {minutes(min(per_model))}-{minutes(max(per_model))} min per model "
                     f"({sum(per_model) / 3600:.2f} h in all)" if len(per_model) > 1
                     else f"training {minutes(per_model[0])} min")
    parts.append(f"evaluation {minutes(sum(e['wall_s'] for e in evaluations))} min in all")
    if seeded:
        parts.append(f"{len(seeded)} more evaluation{'s' * (len(seeded) != 1)} over evaluation seeds "
                     f"(evaluations.py) {minutes(sum(e['wall_s'] for e in seeded))} min in all")
    return ", ".join(parts) + "."


def generate(kind, path, root=ROOT, figures=None):
    """The lines of one block. figures: where report.py writes its report and figures
    (the records folder itself when rewriting, a scratch folder when checking)."""
    if kind == "runs":
        return runs_table(path, root)
    if kind == "directions":
        return directions_table(path, root)
    full = os.path.join(root, path)
    if not os.path.isdir(full):
        raise UserError(f"records folder not found: {path}")
    if kind == "table":
        into = full if figures is None else figures
        return report.report_table(full, report.experiment_of(full), into)
    if kind == "model":
        return model_table(full)
    return provenance_line(full)


def render(text, root=ROOT, figures=None):
    """The document with every block regenerated; (new text, paths of the blocks that changed)."""
    changed = []

    def block(match):
        start, kind, path, old, end = match.groups()
        if kind not in KINDS:
            raise UserError(f"unknown block kind {kind!r} (one of {', '.join(KINDS)})")
        new = generate(kind, path, root, figures).rstrip("\n") + "\n"
        if new != old:
            changed.append(f"{kind} {path}")
        return start + new + end
    return BLOCK.sub(block, text), changed


def main(argv=None):
    p = OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    args = p.parse_args(argv)
    stale = []
    with tempfile.TemporaryDirectory() as scratch:
        for path in document_paths():
            with open(path) as f:
                text = f.read()
            new, changed = render(text, figures=scratch if args.check else None)
            stale += [f"{os.path.relpath(path, ROOT)}: {c}" for c in changed]
            if changed and not args.check:
                atomic_write_text(path, new)
    for line in stale:
        print(("stale " if args.check else "rewrote ") + line)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(run_cli(main) or 0)
