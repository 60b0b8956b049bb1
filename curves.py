"""Training curves of an experiment folder: one panel per setting, one line per seed,
drawn from each run's metrics.csv (report.py links the figure in report.md).

The top row shows what the training logs as its measure of progress: the linear R^2
of the content c from hz1 (simulation) or the mean training loss since the previous
log line (image/text, whose log line measures nothing else); the bottom row the
training loss. Runs still training are drawn too: the figure is a way to watch them.
"""
import os
import re

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from metrics import FILE, read_metrics  # noqa: E402
from cli import UserError  # noqa: E402
from facts import ARGS_FILE  # noqa: E402
from files import atomic_write, read_json  # noqa: E402

# (column, axis label) of the top and bottom rows, per kind of experiment.
ROWS = {"sim": (("r2_c", "linear R² of c (hz1)"), ("train_loss", "training loss")),
        "imgtxt": (("mean_loss", "mean training loss"), ("train_loss", "training loss")),
        "partial": (("r2_content", "linear R² of the sets' content (mean)"), ("train_loss", "training loss"))}


def setting_of(name):
    """A run's setting: its folder name without the seed (p1.0_multi_s2 -> p1.0_multi)."""
    return re.sub(r"_s\d+$", "", name)


def seed_of(folder, name):
    try:
        return int(read_json(os.path.join(folder, ARGS_FILE), ARGS_FILE)["seed"])
    except (UserError, KeyError, TypeError, ValueError):
        match = re.search(r"_s(\d+)$", name)
        return int(match.group(1)) if match else name


def collect(folder, kind, notes=None):
    """{setting: [(seed, metrics DataFrame)]} of the runs in `folder` with a non-empty metrics.csv;
    a run whose metrics.csv holds something else than rows of numbers is left out, its reason
    appended to `notes`."""
    panels = {}
    if not os.path.isdir(folder):
        return panels
    wanted = {column for column, _ in ROWS[kind]}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name, FILE)
        if name.endswith(".partial") or not os.path.isfile(path):
            continue
        try:
            rows = read_metrics(path)
        except (OSError, ValueError) as err:  # one text value would turn a panel's axis into text
            if notes is not None:
                notes.append(f"{name}: left out of the training curves, {str(err).splitlines()[0]}")
            continue
        if len(rows) and wanted & set(rows.columns):
            panels.setdefault(setting_of(name), []).append((seed_of(os.path.join(folder, name), name), rows))
    for runs in panels.values():
        runs.sort(key=lambda run: str(run[0]).zfill(9))
    return panels


def plot_curves(folder, kind, path, title, notes=None):
    """Write the curves of `folder` to `path`; False (nothing written) if no run has a metrics.csv."""
    panels = collect(folder, kind, notes)
    if not panels:
        return False
    fig, axes = plt.subplots(2, len(panels), figsize=(max(3.2 * len(panels), 6), 5.6), squeeze=False,
                             sharex="col")
    fig.suptitle(title, fontsize=10)
    for col, (setting, runs) in enumerate(panels.items()):
        for row, (column, label) in enumerate(ROWS[kind]):
            ax = axes[row][col]
            for seed, rows in runs:
                if column in rows:
                    ax.plot(rows["step"], rows[column], lw=1, label=f"seed {seed}")
            if row == 0:
                ax.set_title(setting, fontsize=8)
                if ax.lines:  # a run of another kind (no such column) draws nothing here
                    ax.legend(fontsize=6, loc="best")
            if col == 0:
                ax.set_ylabel(label, fontsize=8)
            if row == 1:
                ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))  # crash-safe, like every output
    plt.close(fig)
    return True
