"""Tables and figures of the runs of experiments.py, next to the paper's numbers.

    python report.py runs/table1        # writes runs/table1/report.md and runs/table1/table1.png
    python report.py --all runs/        # every experiment folder found under runs/

An experiment folder holds one folder per run with args.json and results.csv
(see experiments.py); the experiment is the folder's name unless --experiment
says otherwise. Settings are read from each run's args.json, so the report
does not depend on how the run folders are named. Values are means and sample
standard deviations (ddof = 1) over the seeds whose value is finite. Runs are seeds
of one model only where everything that defines the model is the same; a run of
another model, with stale results (stamps.py) or with malformed files is left out
and listed with its reason.
"""
import collections
import json
import math
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import curves  # noqa: E402
import dependencies  # noqa: E402
import grids  # noqa: E402
import metrics  # noqa: E402
import plans  # noqa: E402
import stamps  # noqa: E402
import viewspec  # noqa: E402
from cli import OneLineParser, UserError, first_line, run_cli  # noqa: E402
from facts import ARGS_FILE, CONTENT_COORDS, DISCRETE_KEYS, PARTIAL_COLUMNS as PARTIAL_FILE_COLUMNS, PARTIAL_FILE, RESULTS_FILE  # noqa: E402
from files import atomic_write, atomic_write_text, read_json  # noqa: E402

ENCODING_SIZES = grids.ENCODING_SIZES
SIM_ROWS = [dependencies.row_key(p, keys) for p, keys in grids.SIM_ROWS]  # Table 1's row names
# Figure 3 uses the nonlinear probes: MLP accuracy and kernel-ridge R^2.
FIG3_METRIC = {"discrete": "acc_mlp", "continuous": "r2_krreg"}
TITLES = {name: e.report_title for name, e in grids.EXPERIMENTS.items()}
# Settings shown in the report's header (from args.json), to tell quick runs from the paper's.
SHOWN_SETTINGS = {"sim": ("content_n", "style_n", "modality_n", "encoding_size", "batch_size",
                          "train_steps", "lr", "encoder_init"),
                  "imgtxt": ("batch_size", "train_steps", "lr", "tau", "datapath"),
                  "partial": ("view_latents", "content_coords", "encoding_size", "batch_size", "train_steps",
                              "lr")}


# ------------------------------------------------------------- loading ---

def read_results(path):
    """A results.csv with or without the unnamed index column that pandas' to_csv
    writes by default (the published scripts and ours write it; early versions did not)."""
    results = pd.read_csv(path)
    if len(results.columns) and str(results.columns[0]).startswith("Unnamed: 0"):
        results = results.drop(columns=results.columns[0])
    return results


# What a run of each kind must hold to be reported besides its results.csv's columns and
# numbers (facts.RESULT_COLUMNS, checked by stamps.results_problem as the runner does):
# the args.json settings the tables are keyed by.
RUN_CONTENTS = {
    "sim": {"settings": {"style_change_prob": (int, float),
                         **{d.key: (bool,) for d in dependencies.REGISTRY if d.published}},
            "optional": {"n_views": (int,), "shared_mixing": (bool,), "shared_encoder": (bool,),
                         **{key: (int,) for key in DISCRETE_KEYS.values()}}},
    "imgtxt": {"settings": {"encoding_size": (int,)}, "optional": {}},
}


def run_problem(kind, args, keyed=True):
    """Why a run cannot enter a report of this kind, or None: a malformed file is left out
    with its reason rather than breaking (or silently skewing) the tables."""
    if not isinstance(args, dict):
        return f"args.json holds a {type(args).__name__}, not a model's arguments"
    wanted = RUN_CONTENTS[kind]
    optional = {k: t for k, t in wanted["optional"].items() if args.get(k) is not None}
    for key, types in {**(wanted["settings"] if keyed else {}), **optional}.items():
        value = args.get(key)
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)) \
                or (isinstance(value, float) and not math.isfinite(value)):
            return f"args.json has no valid {key} ({value!r})"
    return None


def load_runs(folder, kind="sim", keyed=True, partial=False):
    """(runs, notes): runs = [(name, args, results)] of the sub-folders with a valid
    results.csv and args.json, computed from the weights in the folder (stamps.py); notes = one
    line per sub-folder left out and why. `keyed`: the report's rows are keyed by the settings
    of RUN_CONTENTS, which must then be present. `partial`: the runs are partial-observability
    runs (--view-latents), which no other simulation report takes."""
    runs, notes = [], []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isdir(path) or name.endswith(".partial"):
            continue
        if not os.path.isfile(os.path.join(path, RESULTS_FILE)):
            notes.append(f"{name}: no results.csv yet")
            continue
        if not os.path.isfile(os.path.join(path, ARGS_FILE)):
            notes.append(f"{name}: no args.json, settings unknown")
            continue
        problem = stamps.results_problem(path, kind)  # the runner's test of a finished evaluation
        if problem:
            notes.append(f"{name}: left out, {problem}")
            continue
        try:
            args = read_json(os.path.join(path, ARGS_FILE), ARGS_FILE)
        except (UserError, ValueError, OSError) as err:
            notes.append(f"{name}: left out, {first_line(err)}")  # "cannot read args.json <path>: ..."
            continue
        try:
            results = read_results(os.path.join(path, RESULTS_FILE))
        except (ValueError, OSError) as err:  # pandas' parser errors and UnicodeDecodeError are ValueErrors
            notes.append(f"{name}: left out, results.csv is unreadable ({first_line(err)})")
            continue
        # last, the runner's own test (plans.status: stale results): a run it would redo is absent here
        problem = run_problem(kind, args, keyed) or kind_problem(kind, args, partial) or plans.status(path)
        if partial and not problem:
            problem = read_partial(path, latent_count(args.get("view_latents")))[1]
        if problem:
            notes.append(f"{name}: left out, {problem}")
            continue
        runs.append((name, args, results))
    return runs, notes


def latent_count(view_latents):
    """The latents of a view list (1 + the highest index), or None where it does not parse."""
    try:
        return 1 + max(max(view) for view in viewspec.parse_spec(view_latents))
    except (UserError, TypeError, AttributeError):
        return None


def kind_problem(kind, args, partial):
    """Why a simulation run belongs in another report (with or without a view list), or None."""
    if kind != "sim" or bool(args.get("view_latents")) == partial:
        return None
    return ("not a partial-observability run (no view_latents)" if partial else
            "a partial-observability run (view_latents), reported by --experiment partial")


# Settings that say where a model lives and how it was run or evaluated, not what it is.
NOT_MODEL = {"seed", "model_dir", "model_id", "no_cuda", "resume", "evaluate", "load_args", "log_steps",
             "tensorboard", "num_eval_batches", "permuted_content", "mlp_eval", "cpu_generator",
             "datapath", "workers", "checkpoint_steps", "save_all_checkpoints", "eval_protocol"}


def model_settings(args):
    """{setting: value} of everything that defines a run's model, its seed aside (the view
    list in its one spelling; no --content-coords is truth): runs are seeds of one model only
    where these are equal."""
    out = {k: v for k, v in args.items() if k not in NOT_MODEL}
    if out.get("view_latents"):
        try:
            out["view_latents"] = viewspec.canonical(out["view_latents"])
        except UserError:
            pass  # compared as written
    if "view_latents" in out:
        out["content_coords"] = out.get("content_coords") or CONTENT_COORDS[0]
    return out


def seeds_of_one_model(runs, notes, row_keys):
    """The runs whose model settings, besides their row's (`row_keys`) and their seed, are the
    folder's most common ones; every other run is left out, with the setting it differs in,
    rather than averaged as a seed of another model. Keys that a run's args.json lacks (an
    older version) are not compared."""
    def rest(args):
        return {k: v for k, v in model_settings(args).items() if k not in row_keys}
    signatures = collections.Counter(json.dumps(rest(args), sort_keys=True, default=str) for _, args, _ in runs)
    reference = json.loads(signatures.most_common(1)[0][0])
    kept = []
    for name, args, results in runs:
        differs = [(k, v) for k, v in rest(args).items() if k in reference and reference[k] != v]
        if differs:
            key, value = differs[0]
            notes.append(f"{name}: left out, trained with {key} {value} where the other runs have {reference[key]}")
        else:
            kept.append((name, args, results))
    return kept


def summarize(values):
    """(mean, std, n) over the finite values; std is NaN below two values."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan, len(x)


def number(x):
    text = f"{x:.2f}"
    return "0.00" if text == "-0.00" else text


def paper_text(paper):
    if paper is None:
        return ""
    if isinstance(paper, tuple):
        low, high = paper
        return f"≤{number(high)}" if low is None else f"{number(low)}–{number(high)}"
    return number(paper)


def cell(values, paper=None, stalled=0):
    """'mean ± std [paper]'; '(n=k)' when only k of the runs gave a finite value;
    '†k' when k of the runs did not converge."""
    mean, std, n = summarize(values)
    text = "n/a" if n == 0 else number(mean) + (f" ± {number(std)}" if n > 1 else "")
    if 0 < n < len(values):
        text += f" (n={n})"
    if stalled:
        text += f" †{stalled}"
    return text + (f" [{paper_text(paper)}]" if paper is not None else "")


def settings_line(runs, keys):
    """'key value; ...' over all runs, listing every distinct value (mixed scales show up), model
    settings as model_settings reads them (no --content-coords is truth)."""
    shown = [{**args, **model_settings(args)} for _, args, _ in runs]
    parts = []
    for key in keys:
        values = sorted({str(args.get(key)) for args in shown})
        parts.append(f"{key} {', '.join(values)}")
    return "; ".join(parts)


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------- simulation ---

def sim_key(args):
    """Table 1's row name of a run: p(chg) and the latent dependencies on, e.g. p0.75_stat_cau."""
    return dependencies.row_key(float(args["style_change_prob"]), [d.key for d in dependencies.enabled(args)])


def sim_order(key):
    p, on = dependencies.parse_row_key(key)
    return p, tuple(on.values())


def discrete_key(args):
    """((block, k), ...) of the discrete blocks of a run, e.g. (('c', 5),)."""
    return tuple((block, int(args.get(key) or 0)) for block, key in DISCRETE_KEYS.items() if args.get(key))


def row_cells(experiment, key):
    """The leading cells of a table row, and their headers."""
    if grids.EXPERIMENTS[experiment].layout == "discrete":
        blocks = ", ".join(b for b, _ in key) or "none"
        ks = sorted({k for _, k in key})
        return [blocks, "/".join(map(str, ks)) or "-"], ["discrete blocks", "k"]
    p, on = dependencies.parse_row_key(key)
    return ([p, *("yes" if on[d.key] else "-" for d in dependencies.REGISTRY)],
            ["p(chg)", *(d.label for d in dependencies.REGISTRY)])


def row_label(experiment, key):
    cells, _ = row_cells(experiment, key)
    if grids.EXPERIMENTS[experiment].layout == "discrete":
        return f"{cells[0]} (k={cells[1]})"
    return f"p={cells[0]}" + "".join(f" {d.label}" for d, on in zip(dependencies.REGISTRY, cells[1:]) if on == "yes")


def sim_mode(args):
    shared = (bool(args.get("shared_mixing")), bool(args.get("shared_encoder")))
    return {(True, True): "uni", (False, False): "multi"}.get(shared)


CONVERGED = 0.9  # content R² below this: the run has not (yet) found the content


def content_factor(experiment):
    """The factor a converged model predicts: c, or c' for views with permuted content (figure8)."""
    return grids.EXPERIMENTS[experiment].content


def hz1_r2(results, factor):
    """Nonlinear R² of predicting factor from hz1 (NaN where results.csv lacks it)."""
    if not {"encoding", "predicted_factors", "r2_nonlinear"} <= set(results):
        return math.nan
    hz1 = results[results["encoding"] == "hz1"].set_index("predicted_factors")["r2_nonlinear"]
    return float(hz1.get(factor, math.nan))


def content_r2(runs, experiment, folder):
    """{run name: content R² of hz1} that says whether each model converged.

    figure8 evaluates table1's models on permuted content, where content-dependent
    style legitimately spoils c'; a model is judged on its own (table1) evaluation,
    in the sibling folder, and on c' only where that is missing or stale."""
    source = grids.EXPERIMENTS[experiment].trained_in
    out = {}
    for name, args, results in runs:
        own = os.path.join(os.path.dirname(os.path.abspath(folder)), source or "", name, RESULTS_FILE)
        if source and plans.has_results(os.path.dirname(own)):
            try:
                out[name] = hz1_r2(read_results(own), "c")
                continue
            except (UserError, ValueError, OSError):
                pass
        out[name] = hz1_r2(results, content_factor(experiment))
    return out


def not_converged(runs, experiment, folder):
    """[(run name, content R²)] of the runs whose nonlinear content R² (hz1) is below 0.9."""
    return [(name, value) for name, value in content_r2(runs, experiment, folder).items()
            if not value >= CONVERGED]


NEAR = 0.02  # a verdict this close to CONVERGED may flip with the evaluation's own noise


def near_threshold(runs, experiment, folder):
    """Lines for the runs whose content R² lies within NEAR of CONVERGED: the spread over the
    evaluation seeds of evaluations.py where the run has one, else how to get it."""
    lines = []
    for name, value in content_r2(runs, experiment, folder).items():
        if not abs(value - CONVERGED) <= NEAR:
            continue
        path = os.path.join(folder, name, "evaluations.csv")
        spread = evaluation_spread(path, content_factor(experiment))
        if spread is None:
            lines.append(f"- {name}: {number(value)} from one evaluation; for its spread, run "
                         f"`python evaluations.py {os.path.join(folder, name)} --seeds 101-103 --num-eval-batches 5`")
        else:
            mean, std, low, high, n = spread
            verdict = "converged" if mean >= CONVERGED else "not converged"
            lines.append(f"- {name}: {number(mean)} ± {number(std)} (min {number(low)}, max {number(high)}) over "
                         f"{n} evaluation seeds: {verdict}")
    return lines


def evaluation_spread(path, factor):
    """(mean, std, min, max, seeds) of hz1's nonlinear R² of factor in an evaluations.csv, or None."""
    try:
        table = pd.read_csv(path)
        values = pd.to_numeric(table[(table.encoding == "hz1") & (table.predicted_factors == factor)].r2_nonlinear,
                               errors="coerce").dropna()
    except (OSError, ValueError, KeyError, AttributeError, pd.errors.ParserError):
        return None
    if len(values) < 2:
        return None
    return values.mean(), values.std(), values.min(), values.max(), len(values)


def sim_values(runs, notes, key_of=sim_key):
    """{(row key, mode): {factor: [nonlinear R² of hz1, one per run]}}."""
    table = {}
    for name, args, results in runs:
        mode = sim_mode(args)
        if mode is None:  # load_runs checked the files; this checks the setting
            notes.append(f"{name}: not a unimodal/multimodal simulation run, left out")
            continue
        hz1 = results[results["encoding"] == "hz1"].set_index("predicted_factors")["r2_nonlinear"]
        factors = table.setdefault((key_of(args), mode), {})
        for factor in ("c", "s", "s~", "m1", "m2", "c'"):
            factors.setdefault(factor, []).append(float(hz1.get(factor, math.nan)))
    return table


def sim_report(experiment, runs, notes, folder):
    """Markdown section and bar-chart panels of a simulation experiment."""
    record = grids.EXPERIMENTS[experiment]
    discrete = record.layout == "discrete"
    key_of = discrete_key if discrete else sim_key
    values = sim_values(runs, notes, key_of)
    columns = record.columns
    paper = record.paper
    found = {k for k, _ in values} - set(SIM_ROWS)
    if discrete:  # c, s, m alone, then combinations
        order = list(DISCRETE_KEYS)
        found = sorted(found, key=lambda key: (len(key), [order.index(b) for b, _ in key]))
    else:
        found = sorted(found, key=sim_order)
    keys = found if discrete else SIM_ROWS + found
    modes = list(dict.fromkeys(mode for mode, _, _ in columns))
    content = content_factor(experiment)
    stalled = {}
    for name, _ in not_converged(runs, experiment, folder):
        args = next(a for n, a, _ in runs if n == name)
        where = (key_of(args), sim_mode(args))
        stalled[where] = stalled.get(where, 0) + 1
    rows = []
    for key in keys:
        if not any((key, mode) in values for mode in modes) and key not in paper:
            continue
        row = row_cells(experiment, key)[0]
        for mode, factor, _ in columns:
            row.append(cell(values.get((key, mode), {}).get(factor, []),
                            paper.get(key, {}).get(mode, {}).get(factor),
                            stalled.get((key, mode), 0) if factor == content else 0))
        row.append("/".join(str(len(values.get((key, mode), {}).get("c", []))) for mode in modes))
        rows.append(row)
    header = [*row_cells(experiment, keys[0])[1], *(h for _, _, h in columns),
              "runs (" + "/".join(modes) + ")"]
    text = markdown_table(header, rows)
    labels = [row_label(experiment, key) for key in keys]
    panels = [sim_panel(mode, [(m, f, h) for m, f, h in columns if m == mode], keys, labels, values, paper,
                        content, stalled) for mode in modes]
    return text, panels


def sim_panel(mode, columns, keys, labels, values, paper, content="c", stalled=None):
    bars = []
    for _, factor, header in columns:
        stats = [summarize(values.get((key, mode), {}).get(factor, [])) for key in keys]
        ref = [paper.get(key, {}).get(mode, {}).get(factor) for key in keys]
        marks = [(stalled or {}).get((key, mode), 0) if factor == content else 0 for key in keys]
        bars.append((header, [s[0] for s in stats], [s[1] for s in stats], ref, marks))
    title = {"uni": "unimodal", "multi": "multimodal"}[mode]
    return title, labels, bars


def plot_bars(panels, path, title, ylabel="nonlinear R²"):
    """Grouped bars (ours, mean ± std) with the paper's values as black ticks."""
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6 * len(panels), 8), 4.3), squeeze=False)
    fig.suptitle(title, fontsize=10)
    for ax, (title, labels, bars) in zip(axes[0], panels):
        width = 0.8 / len(bars)
        x = np.arange(len(labels))
        for i, (label, means, stds, paper, *marks) in enumerate(bars):
            pos = x - 0.4 + width * (i + 0.5)
            means, stds = np.array(means, dtype=float), np.array(stds, dtype=float)
            have = np.isfinite(means)  # no bar at all where there is no result (not a zero bar)
            # a series keeps its colour when others have no bars; one without bars has no legend entry
            ax.bar(pos[have], means[have], width, yerr=np.nan_to_num(stds[have]), capsize=2,
                   color=f"C{i}", label=label if have.any() else None)
            for p, k in zip(pos, marks[0] if marks else []):
                if k:  # runs that did not converge (content R² < 0.9)
                    ax.annotate(f"†{k}", (p, 1.0), ha="center", fontsize=7, color="red")
            ref = np.array([np.nan if v is None else v for v in paper], dtype=float)
            if np.isfinite(ref).any():
                ax.scatter(pos, ref, marker="_", s=200, color="black", zorder=3,
                           label="paper" if i == 0 else None)
        ax.set_xticks(x, labels, rotation=20, fontsize=8)
        ax.set_ylim(min(-0.05, ax.get_ylim()[0]), 1.05)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # never over a † mark
    save_figure(fig, path)


# ---------------------------------------------------------- image/text ---

def fig3_values(runs, notes):
    """{(modality, factor): {encoding size: [metric, one per run]}}, factors in file order."""
    table = {}
    for name, args, results in runs:  # load_runs checked their columns and encoding_size
        for _, r in results.sort_values(["modality", "ix"] if "ix" in results else ["modality"]).iterrows():
            metric = FIG3_METRIC.get(r["factor_type"])
            if metric is None:
                continue
            by_size = table.setdefault((r["modality"], r["factor_name"]), {})
            by_size.setdefault(int(args["encoding_size"]), []).append(float(r[metric]))
    return table


def fig3_report(runs, notes):
    values = fig3_values(runs, notes)
    sizes = sorted(set(ENCODING_SIZES) | {s for v in values.values() for s in v})
    sections = []
    for modality in ("image", "text"):
        rows = []
        for (m, factor), by_size in values.items():
            if m != modality:
                continue
            paper = dict(zip(ENCODING_SIZES, grids.FIGURE3.get((m, factor), [])))
            metric = "R²" if factor_is_continuous(runs, m, factor) else "acc."
            rows.append([factor, metric, *(cell(by_size.get(s, []), paper.get(s)) for s in sizes)])
        if rows:
            header = ["factor", "metric", *map(str, sizes)]
            sections.append(f"### {modality}\n\n" + markdown_table(header, rows))
    return "\n\n".join(sections), values


def factor_is_continuous(runs, modality, factor):
    for _, _, results in runs:
        match = results[(results["modality"] == modality) & (results["factor_name"] == factor)]
        if len(match):
            return match["factor_type"].iloc[0] == "continuous"
    return False


def fig3_sizes(folder, runs, notes):
    """A table of content_size.py's estimates by encoding size, per modality, where the runs
    were evaluated with --estimate-content-size; '' where none was."""
    by_size = {}
    for name, args, _ in runs:
        sizes = read_sizes(folder, name, notes, missing_ok=True)
        if sizes is None:
            continue
        value = sizes.set_index(["estimator", "encoding"])["value"].to_dict()
        row = by_size.setdefault(int(args["encoding_size"]), {})
        for key, got in (("image", value.get(("twonn", "image"), math.nan)),
                         ("text", value.get(("twonn", "text"), math.nan)),
                         ("cca", value.get(("cca", "image~text"), math.nan)),
                         ("estimate", int(sizes.estimate.iloc[0])), ("truth", int(sizes.truth.iloc[0]))):
            row.setdefault(key, []).append(got)
    if not by_size:
        return ""
    rows = [[size, cell(v["image"]), cell(v["text"]), ", ".join(f"{c:g}" for c in v["cca"]),
             ", ".join(map(str, v["estimate"])), ", ".join(sorted(set(map(str, v["truth"]))))]
            for size, v in sorted(by_size.items())]
    return "### content size (content_size.py)\n\n" + markdown_table(
        ["encoding size", "TwoNN image", "TwoNN text", "canonical correlations >= 0.9 (per seed)",
         "estimate (per seed)", "content factors"], rows)


def plot_fig3(values, path):
    """One panel per modality: performance against encoding size, a line per factor."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    fig.suptitle(TITLES["figure3"], fontsize=10)
    for ax, modality in zip(axes, ("image", "text")):
        factors = [(m, f) for m, f in values if m == modality]
        colors = plt.get_cmap("tab10" if len(factors) <= 10 else "tab20")
        for i, key in enumerate(factors):
            color = colors(i)
            sizes = sorted(values[key])
            stats = [summarize(values[key][s]) for s in sizes]
            ax.errorbar(sizes, [s[0] for s in stats], yerr=np.nan_to_num([s[1] for s in stats]),
                        marker="o", ms=3, capsize=2, color=color, label=key[1])
            plot_paper_cells(ax, grids.FIGURE3.get(key, []), color)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ENCODING_SIZES, [str(s) for s in ENCODING_SIZES])
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("encoding size")
        ax.set_ylabel("accuracy (discrete) / R² (continuous)")
        ax.set_title(f"{modality} (ours: lines; paper: x and bars)")
        ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)


def plot_paper_cells(ax, cells, color):
    for size, value in zip(ENCODING_SIZES, cells):
        if isinstance(value, tuple):
            low, high = value
            ax.vlines(size * 1.04, 0.0 if low is None else low, high, color=color, alpha=0.5, lw=3)
        elif value is not None:
            ax.scatter([size * 1.04], [value], marker="x", color=color, s=25)


# -------------------------------------------------------------- output ---

def save_figure(fig, path):
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))  # crash-safe, like every output
    plt.close(fig)


def experiment_of(folder, override=None):
    name = override or os.path.basename(os.path.normpath(folder))
    if name not in TITLES:
        raise UserError(f"cannot tell which experiment {folder} holds: name it with --experiment "
                        f"({', '.join(TITLES)})")
    return name


def views_values(runs):
    """{K: {column: [value per run]}}: content from each view's own encoding (mean over views),
    style s from view 1's, each view's modality-specific block from its own encoding (mean), and
    the largest R² of any modality-specific block from any view's encoding."""
    table = {}
    for name, args, results in runs:
        k = int(args.get("n_views") or 2)  # load_runs checked the columns and n_views
        r2 = results.set_index(["encoding", "predicted_factors"])["r2_nonlinear"]
        views = range(1, k + 1)
        row = table.setdefault(k, {})
        row.setdefault("c", []).append(float(np.mean([r2.get((f"hz{v}", "c"), math.nan) for v in views])))
        row.setdefault("c_min", []).append(float(np.min([r2.get((f"hz{v}", "c"), math.nan) for v in views])))
        row.setdefault("s", []).append(float(r2.get(("hz1", "s"), math.nan)))
        row.setdefault("m_own", []).append(float(np.mean([r2.get((f"hz{v}", f"m{v}"), math.nan) for v in views])))
        row.setdefault("m_max", []).append(float(np.max([r2.get((f"hz{v}", f"m{w}"), math.nan)
                                                         for v in views for w in views])))
    return table


VIEWS_COLUMNS = [("c", "content c (mean over views)"), ("c_min", "content c (worst view)"),
                 ("s", "style s (view 1)"), ("m_own", "own m_k (mean over views)"),
                 ("m_max", "any m_j from any view (max)")]


def views_report(runs, notes, png):
    values = views_values(runs)
    rows = [[k, *(cell(values[k][col]) for col, _ in VIEWS_COLUMNS), len(values[k]["c"])] for k in sorted(values)]
    table = markdown_table(["views K", *(h for _, h in VIEWS_COLUMNS), "runs"], rows)
    bars = [(header, [summarize(values[k][col])[0] for k in sorted(values)],
             [summarize(values[k][col])[1] for k in sorted(values)], [None] * len(values))
            for col, header in VIEWS_COLUMNS]
    plot_bars([("multimodal, p(chg) = 1.0", [f"K = {k}" for k in sorted(values)], bars)], png, TITLES["views"])
    return table


def row_name(run_name):
    """The grid's row of a run: its name without the seed (p1.0_multi_enc6_lt_s2 -> p1.0_multi_enc6_lt)."""
    return run_name.rsplit("_s", 1)[0]


def size_values(folder, runs, notes):
    """{row name: {"estimate": [...], "truth": [...], "twonn": [...], "c"/"s"/"m1": [...]}} of the
    content_size runs (content_size.csv and results.csv of each)."""
    table = {}
    for name, args, results in runs:
        sizes = read_sizes(folder, name, notes)
        if sizes is None:
            continue
        estimate, truth = int(sizes.estimate.iloc[0]), int(sizes.truth.iloc[0])
        twonn = float(sizes[sizes.estimator == "twonn"].value.mean())
        hz1 = results[results["encoding"] == "hz1"].set_index("predicted_factors")["r2_nonlinear"]
        row = table.setdefault(row_name(name), {"encoding_size": args.get("encoding_size"),
                                                "learn_tau": bool(args.get("learn_tau"))})
        for key, value in (("estimate", estimate), ("truth", truth), ("twonn", twonn),
                           *((f, float(hz1.get(f, math.nan))) for f in ("c", "s", "m1"))):
            row.setdefault(key, []).append(value)
        if row["learn_tau"]:
            row.setdefault("tau_end", []).append(final_tau(os.path.join(folder, name)))
    return table


# How content_size.py estimates, as both content-size tables' legends state it.
ESTIMATE_RULE = ("content_size.py: the smaller of the rounded mean TwoNN intrinsic dimension and the "
                 "count of canonical correlations >= 0.9 between the views' test encodings")


def read_sizes(folder, name, notes, missing_ok=False):
    """A run's content_size.csv (estimator, encoding, value, estimate, truth), or None with a note."""
    path = os.path.join(folder, name, "content_size.csv")
    if missing_ok and not os.path.exists(path):
        return None
    try:
        sizes = pd.read_csv(path)
        sizes["value"] = pd.to_numeric(sizes["value"])
        int(sizes.estimate.iloc[0]), int(sizes.truth.iloc[0])
        return sizes
    except (OSError, ValueError, KeyError, AttributeError, IndexError, pd.errors.ParserError) as err:
        notes.append(f"{name}: no readable content_size.csv ({str(err).splitlines()[0][:80]}), left out")
        return None


def final_tau(run_folder):
    """The learned temperature at the last logged step (metrics.csv's tau), or nan."""
    try:
        return float(metrics.read_metrics(os.path.join(run_folder, metrics.FILE))["tau"].iloc[-1])
    except (OSError, ValueError, KeyError, IndexError):
        return math.nan


def size_report(folder, runs, notes, png):
    values = size_values(folder, runs, notes)
    if not values:
        raise UserError(f"no run in {folder} has a content_size.csv (evaluated with --estimate-content-size?)")
    rows = [[name, v["encoding_size"], f"learned, ends {cell(v['tau_end'])}" if v["learn_tau"] else "fixed",
             ", ".join(map(str, v["estimate"])), ", ".join(sorted(set(map(str, v["truth"])))),
             cell(v["twonn"]), cell(v["c"]), cell(v["s"]), cell(v["m1"])] for name, v in values.items()]
    table = markdown_table(["row", "encoding size", "tau", "estimate (per seed)", "truth", "TwoNN",
                            "content c", "style s", "m_1"], rows)
    plot_sizes(values, png)
    return table


def plot_sizes(values, png):
    """Mean estimate against the encoding size, one line per row and temperature; the truth dotted."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines = {}
    for name, v in values.items():
        base = name.rsplit("_enc", 1)[0]
        lines.setdefault((base, v["learn_tau"]), []).append((v["encoding_size"], np.mean(v["estimate"])))
    for (base, learned), points in sorted(lines.items()):
        x, y = zip(*sorted(points))
        ax.plot(x, y, "--" if learned else "-", marker="o", label=f"{base}{', learned tau' if learned else ''}")
    truths = sorted({t for v in values.values() for t in v["truth"]})
    for t in truths:
        ax.axhline(t, color="black", linestyle=":", linewidth=1)
    ax.set_xlabel("encoding size")
    ax.set_ylabel("estimated content size (mean over seeds)")
    ax.legend(fontsize=6, ncol=2)
    save_figure(fig, png)


def model_groups(runs):
    """[(label, runs)]: the runs grouped by model_settings; the label names the settings in which
    the groups differ (the --content-coords alone where they do not)."""
    groups = {}
    for run in runs:
        settings = model_settings(run[1])
        groups.setdefault(json.dumps(settings, sort_keys=True, default=str), (settings, []))[1].append(run)
    varying = sorted({k for settings, _ in groups.values() for other, _ in groups.values()
                      for k in settings.keys() | other.keys() if settings.get(k) != other.get(k)})
    shown = varying or ["content_coords"]
    return [("; ".join(f"{k} {settings.get(k)}" for k in shown), members)
            for settings, members in groups.values()]


def partial_problem(rows, n_latents=None):
    """Why a partial.csv cannot enter the report, or None (as run_problem for results.csv);
    `n_latents`: the latents of the run's view list, which its indices must stay below."""
    missing = [c for c in PARTIAL_FILE_COLUMNS if c not in rows]
    if missing:
        return f"{PARTIAL_FILE} has no column {missing[0]}"
    if rows.empty:
        return f"{PARTIAL_FILE} has no rows"
    for column in PARTIAL_FILE_COLUMNS[5:]:
        if not (pd.api.types.is_numeric_dtype(rows[column]) or rows[column].isna().all()):
            return f"{PARTIAL_FILE} column {column} holds text, not numbers"
    for column in ("latents", "coordinates"):
        bad = [v for v in rows[column] if not (isinstance(v, str) and re.fullmatch(r"[0-9]+( [0-9]+)*", v))]
        if bad:
            return f"{PARTIAL_FILE} column {column} holds {bad[0]!r}, not latent indices"
    highest = max(int(i) for v in rows["latents"] for i in v.split())
    if n_latents is not None and highest >= n_latents:
        return f"{PARTIAL_FILE} names latent {highest}, but the run's view list has latents 0..{n_latents - 1}"
    targets = set(rows["target"])
    if not targets <= {"content", "other", "latent"}:
        return f"{PARTIAL_FILE} has a target {sorted(map(str, targets - {'content', 'other', 'latent'}))[0]!r}"
    if any(" " in v for v in rows.loc[rows["target"] == "latent", "latents"]):
        return f"{PARTIAL_FILE} has a 'latent' row of several latents"
    lacking = [v for v in dict.fromkeys(rows["views"]) if not (rows.loc[rows["views"] == v, "target"] == "content").any()]
    if lacking:
        return f"{PARTIAL_FILE} has no content row for the set of views {lacking[0]}"
    return None


def read_partial(run_folder, n_latents=None):
    """(rows, None) of a run's partial.csv, or (None, why it cannot enter the report)."""
    try:
        rows = pd.read_csv(os.path.join(run_folder, PARTIAL_FILE),
                           dtype={"latents": str, "coordinates": str, "views": str})
    except (OSError, ValueError) as err:
        return None, f"no readable {PARTIAL_FILE} ({str(err).splitlines()[0]})"
    problem = partial_problem(rows, n_latents)
    return (None, problem) if problem else (rows, None)


def partial_tables(folder, runs):
    """[(label, DataFrame)]: per model (model_groups), the partial.csv rows of its runs (which
    load_runs checked), with a run column."""
    return [(label, pd.concat([read_partial(os.path.join(folder, name))[0].assign(run=name)
                               for name, _, _ in members], ignore_index=True))
            for label, members in model_groups(runs)]


PARTIAL_COLUMNS = [("content", "r2_nonlinear", "content R²"), ("other", "r2_nonlinear", "other latents R²"),
                   ("content", "mcc", "content MCC")]


def grid_columns(rows):
    """The latents of the heatmap's columns: every latent some view sees, in order."""
    return sorted({int(i) for i in rows.loc[rows["target"] == "latent", "latents"]})


def frame_content(ax, row, content, columns):
    for latent in str(content).split():
        if int(latent) in columns:
            ax.add_patch(matplotlib.patches.Rectangle((columns.index(int(latent)) - 0.5, row - 0.5), 1, 1,
                                                      fill=False, edgecolor="white", lw=1.5))


def partial_report(folder, runs, png):
    """Per model (model_groups: runs that differ in their seed alone): a table (one row per set
    of views: its content; R² of the content and of the views' other latents from the set's
    coordinates, averaged over the set's views, then mean ± std over seeds) and a heatmap (set x latent: nonlinear R² of
    each latent from the set's coordinates, mean over the views that see it and the seeds)."""
    tables = partial_tables(folder, runs)
    text = []
    fig, axes = plt.subplots(1, len(tables), figsize=(max(5.0 * len(tables), 6.5), 5.5), squeeze=False)
    for ax, (setting, rows) in zip(axes[0], sorted(tables)):
        order = list(dict.fromkeys(rows["views"]))
        body = []
        for views in order:
            here = rows[rows["views"] == views]
            content = here.loc[here["target"] == "content", "latents"].iloc[0]
            cells = []
            for target, column, _ in PARTIAL_COLUMNS:
                per_seed = here[here["target"] == target].groupby("run")[column].mean()
                cells.append(cell(list(per_seed)) if len(per_seed) else "–")
            body.append([views, content, *cells])
            frame_content(ax, order.index(views), content, grid_columns(rows))
        text += [f"Model `{setting}`:", "",
                 markdown_table(["views", "content", *(h for _, _, h in PARTIAL_COLUMNS)], body), ""]
        latent = rows[rows["target"] == "latent"].astype({"latents": int})
        grid = latent.pivot_table(index="views", columns="latents", values="r2_nonlinear", aggfunc="mean")
        grid = grid.reindex(index=order, columns=grid_columns(rows))
        image = ax.imshow(grid.to_numpy(float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(grid.shape[1]), [f"z{i}" for i in grid.columns], fontsize=7)
        ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=7)
        ax.set_title(setting, fontsize=9)
        for (i, j), value in np.ndenumerate(grid.to_numpy(float)):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if value > 0.5 else "white")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="nonlinear R²")
    fig.suptitle("Nonlinear R² of each latent from each set's coordinates (framed: the set's content)",
                 fontsize=9)
    atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=120))  # colorbar: no tight_layout
    plt.close(fig)
    return "\n".join(text)


def write_report(folder, experiment):
    """Write <folder>/report.md and the PNG figures; return the paths written."""
    return build_report(folder, experiment)[1]


def report_table(folder, experiment, into):
    """The report's table of an experiment folder, its report and figures written into `into`."""
    return build_report(folder, experiment, into)[0]


def build_report(folder, experiment, into=None):
    """(table, paths written): report.md and the PNG figures of `folder`, written into `into`
    (default: the folder itself)."""
    into = folder if into is None else into
    record = grids.EXPERIMENTS[experiment]
    kind = "imgtxt" if record.layout == "imgtxt" else "sim"
    runs, notes = load_runs(folder, kind, keyed=record.layout not in ("views", "partial", "content_size"),
                            partial=record.layout == "partial")
    if runs and record.layout != "partial":  # partial: one table per model (model_groups)
        runs = seeds_of_one_model(runs, notes, {flag[2:].replace("-", "_") for _, row in record.grid for flag in row})
    if not runs:
        reasons = f" ({'; '.join(notes[:3])}{'; ...' if len(notes) > 3 else ''})" if notes else ""
        raise UserError(f"no run with a valid results.csv and args.json in {folder}{reasons}")
    png = os.path.join(into, f"{experiment}.png")
    if record.layout == "partial":
        table = partial_report(folder, runs, png)
        legend = ("Cells: ours, mean ± std over seeds of the mean over the set's views. Each row is a "
                  "set of views (numbered from 1) and its content, the latents all of them see; R² "
                  "and MCC (Pearson, probes.mcc) are of the content, or of the view's other latents, "
                  "from the view's coordinates for the set (docs/partial.md). The claim: content R² "
                  "near 1, other latents near 0. The figure shows each latent (z0, z1, ...) from each "
                  "set's coordinates. Yao et al.'s own values for this setting are not in the "
                  "project, so there is no paper column.")
    elif record.layout == "content_size":
        table = size_report(folder, runs, notes, png)
        legend = ("Each row: one setting, encoding size and temperature (fixed --tau, or learned with "
                  "--learn-tau from --tau; 'ends' gives its value at the last logged step, mean ± std "
                  f"over seeds). The estimate ({ESTIMATE_RULE}) of each seed, the true content size, the "
                  "mean TwoNN value, and the nonlinear R² of content, style and m_1 from hz1 (mean ± "
                  "std over seeds). Not in the paper, so there is no paper column.")
    elif record.layout == "views":
        table = views_report(runs, notes, png)
        legend = ("Cells: ours, mean ± std over seeds. Every view k has its own mixing function f_k, "
                  "modality-specific block m_k and style change; content is shared by all views. "
                  "The claim: content is recovered from every view's encoding, no modality-specific "
                  "block from any. Not in the paper, so there is no paper column.")
    elif kind == "sim":
        table, panels = sim_report(experiment, runs, notes, folder)
        plot_bars(panels, png, TITLES[experiment])
        legend = ("Cells: ours, mean ± std over seeds (sample std; '(n=k)': only k finite values); "
                  "[paper value] from the paper's Tables 1 and 4.")
        if record.layout == "discrete":
            legend = ("Cells: ours, mean ± std over seeds. Discrete blocks: each dimension uniform on "
                      "k evenly spaced values (main_mlp.py --discrete-content/-style/-modality K). "
                      "The paper shows this setting in a plot only, without numbers.")
        if record.trained_in:  # figure8: table1's models, evaluated on permuted content
            legend += (" The views are encoded with permuted content c', so a model that recovers "
                       "the content it sees predicts c' and not c. The paper gives no numbers here. "
                       f"Whether a model converged is judged on its {record.trained_in} evaluation "
                       "(content c without permutation), where present.")
        legend += (f" '†k': k of the runs did not converge (content R² of hz1 below {CONVERGED}); "
                   "they are listed below the figure.")
    else:
        table, values = fig3_report(runs, notes)
        plot_fig3(values, png)
        legend = ("Cells: ours, mean ± std over seeds; [paper value or range, read off the paper's "
                  "plot]. Discrete factors: MLP accuracy; continuous: kernel-ridge R².")
        sizes = fig3_sizes(folder, runs, notes)
        if sizes:
            table += "\n\n" + sizes
            legend += (f" Content size: the estimate ({ESTIMATE_RULE}, here the image and text "
                       "encodings) against m3di's 3 content factors: "
                       "object shape, x and y position, all discrete, which the caption states of its "
                       "image unchanged (the colour is style: the caption names it from a palette "
                       "drawn anew per sample).")
    shown = SHOWN_SETTINGS.get(record.layout, SHOWN_SETTINGS[kind])
    lines = [f"# {TITLES[experiment]}", "",
             f"{len(runs)} runs with results in `{folder}`. Settings: "
             f"{settings_line(runs, shown)}.", "", legend, "", table, "",
             f"![{experiment}]({os.path.basename(png)})", ""]
    judged = kind == "sim" and record.layout not in ("partial", "content_size")  # no single verdict
    stalled = not_converged(runs, experiment, folder) if judged else []  # judged on hz1's content
    if stalled:
        lines += [f"Not converged (content R² of hz1 below {CONVERGED}; averaged in above, marked †):", "",
                  *(f"- {name}: {number(value)}" for name, value in stalled), ""]
    elif judged:
        lines += [f"Every run converged (content R² of hz1 at least {CONVERGED}).", ""]
    near = near_threshold(runs, experiment, folder) if judged else []
    if near:
        lines += [f"Verdicts within {NEAR} of {CONVERGED}, which the evaluation's noise may flip:", "", *near, ""]
    curve_png = os.path.join(into, f"{experiment}_curves.png")  # from each run's metrics.csv
    drawn = curves.plot_curves(folder, "partial" if record.layout == "partial" else kind, curve_png,
                               f"{experiment}: training curves (metrics.csv of each run)", notes)
    if drawn:
        lines += ["Training curves (metrics.csv of each run; one line per seed):", "",
                  f"![{experiment} training curves]({os.path.basename(curve_png)})", ""]
    if notes:
        lines += ["Left out:", "", *(f"- {n}" for n in notes), ""]
    path = os.path.join(into, "report.md")
    atomic_write_text(path, "\n".join(lines))
    return table, [path, png, *([curve_png] if drawn else [])]


def main(argv=None):
    p = OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="an experiment folder (e.g. runs/table1), or with --all the folder above")
    p.add_argument("--all", action="store_true", help="report every experiment folder under FOLDER")
    p.add_argument("--experiment", choices=list(TITLES), help="experiment of FOLDER (default: its name)")
    args = p.parse_args(argv)
    if not os.path.isdir(args.folder):
        raise UserError(f"folder not found: {args.folder}")
    if args.all:
        folders = [os.path.join(args.folder, n) for n in TITLES
                   if os.path.isdir(os.path.join(args.folder, n))]
        if not folders:
            raise UserError(f"no experiment folder ({', '.join(TITLES)}) in {args.folder}")
    else:
        folders = [args.folder]
    written = []
    for folder in folders:
        experiment = experiment_of(folder, None if args.all else args.experiment)
        try:
            written += write_report(folder, experiment)
        except UserError as err:
            if not args.all:
                raise
            print(f"skipped {folder}: {err}", file=sys.stderr)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main) or 0)
