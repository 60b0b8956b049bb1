"""metrics.csv: a training's curve, one row per log step, appended crash-safely (and, with
--tensorboard, mirrored as TensorBoard scalars in the same model folder).

Columns: step, lr, then what the entry point's log line measures
    main_mlp.py     train_loss, fresh_batch_loss, r2_c, r2_s, r2_s~, r2_m1, r2_m2 (linear
                    R^2 of each latent block from hz1, the blocks the run has)
    main_imgtxt.py  train_loss, mean_loss (mean training loss since the previous log line)
Each row is written, flushed and fsynced before the step's checkpoint, so a kill leaves
at most a torn last line, which is dropped when the file is opened again. --resume
keeps the rows up to the checkpoint's step: the steps after it are trained, and
logged, again, so every logged step appears once, in order. Any other line that is
not a row (a hand edit, a damaged disk) is refused by --resume and by the readers,
naming the line, rather than dropped or drawn. No torch at import:
report.py reads these files.
"""
import os
import re

from cli import UserError
from files import atomic_write_text

FILE = "metrics.csv"


def add_arguments(p):
    p.add_argument("--tensorboard", action="store_true",
                   help="training: also write metrics.csv's scalars as TensorBoard event files "
                        "into the model folder (needs the tensorboard package)")


def parse_step(line):
    """The step of a row, or None for a line that is not a row (header, garbage)."""
    text = line.split(",", 1)[0]
    return int(text) if text.isascii() and text.isdigit() else None


def scan(path):
    """(header, rows, problem) of a metrics.csv: its complete lines only (the part after the
    last newline is torn by a kill, or empty), the rows that are valid (a field per column, a
    step above the previous row's, numbers or empty), and the first line that is not, as text
    (None where every line is). Only a hand edit or a damaged disk leaves such a line."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return None, [], None
    *lines, tail = text.split("\n")
    if not lines:
        torn = "step,".startswith(tail) or tail.startswith("step,")  # a header cut by a kill
        return None, [], None if torn else f"line 1 ({tail[:40]!r}) is not a header step,<columns>"
    names = lines[0].split(",")
    if names[0] != "step" or len(names) < 2 or "" in names or len(set(names)) < len(names):
        return None, [], f"line 1 ({lines[0][:40]!r}) is not a header step,<columns>"
    if tail and not torn_row(tail, names):
        return lines[0], [], (f"line {len(lines) + 1} ({tail[:20]!r}, after the last newline) is not the start "
                              "of a row, which is all that a kill leaves")
    rows, previous, problem = [], 0, None
    for number, line in enumerate(lines[1:], 2):
        why = row_problem(line.split(","), names, previous)
        if why is None:
            rows.append(line)
            previous = parse_step(line)
        elif problem is None:
            problem = f"line {number}: {why}"
    return lines[0], rows, problem


def torn_row(tail, names):
    """Whether the text after the last newline can be the start of a row cut short by a kill."""
    fields = tail.split(",")
    return (len(fields) <= len(names) and fields[0].isascii() and fields[0].isdigit()
            and all(re.fullmatch(r"[0-9.eE+\-naifNAIF]*", field) for field in fields[1:]))


def row_problem(fields, names, previous):
    if len(fields) != len(names):
        return f"{len(fields)} fields where the header has {len(names)}"
    step = parse_step(fields[0])
    if step is None or step <= previous:
        return f"step {fields[0][:20]!r} does not follow step {previous}"
    for name, value in zip(names[1:], fields[1:]):
        try:
            float(value or 0)
        except ValueError:
            return f"{value[:20]!r} in {name} is not a number"
    return None


def check_resumable(folder):
    """(header, rows) of the metrics.csv that --resume continues; a UserError naming the line
    where it holds something else, which rewriting the file would drop without a word."""
    path = os.path.join(folder, FILE)
    header, rows, problem = scan(path)
    if problem is not None:
        raise UserError(f"--resume: {path}, {problem}; mend the line or move the file away "
                        "(it holds the run's curve so far)")
    return header, rows


def kept_lines(path, last_step):
    """(header, rows) of an existing metrics.csv: its valid rows with step <= last_step."""
    header, rows, _ = scan(path)
    return header, [row for row in rows if parse_step(row) <= last_step]


class MetricsLog:
    """Appends rows to <folder>/metrics.csv; `resume_step`: the checkpoint's step on
    --resume (rows after it are dropped), None for a new training (a new file)."""

    def __init__(self, folder, resume_step=None, tensorboard=False):
        self.path = os.path.join(folder, FILE)
        self.columns = None
        text = ""
        if resume_step is not None:
            header, rows = check_resumable(folder)
            rows = [row for row in rows if parse_step(row) <= resume_step]
            if header is not None:
                self.columns = header.split(",")[1:]
                text = "\n".join([header, *rows]) + "\n"
        atomic_write_text(self.path, text)  # a clean file: never a torn line to append to
        self.file = open(self.path, "a", encoding="utf-8")
        self.writer = summary_writer(folder, resume_step) if tensorboard else None

    def write(self, step, **values):
        """One row: step, then `values` (lr, losses, measures) in the file's column order."""
        if self.columns is None:
            self.columns = list(values)
            self._append("step," + ",".join(self.columns))
        self._append(",".join([str(int(step)), *(number(values.get(c)) for c in self.columns)]))
        if self.writer is not None:
            for name, value in values.items():
                if value is not None:
                    self.writer.add_scalar(name, float(value), int(step))
            self.writer.flush()

    def _append(self, line):
        self.file.write(line + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())  # on disk before the step's checkpoint is

    def close(self):
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def number(value):
    return "" if value is None else format(float(value), ".9g")


def summary_writer(folder, resume_step):
    """TensorBoard's writer; on --resume its purge step makes readers drop the events
    logged after the checkpoint by the interrupted run."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None
    return SummaryWriter(log_dir=folder, purge_step=None if resume_step is None else resume_step + 1)


def open_log(folder, first_step, args, is_main):
    """The training's MetricsLog (a NullLog on ranks other than 0, which log nothing).
    `first_step`: the first step still to train (1, or the checkpoint's step + 1)."""
    if not is_main:
        return NullLog()
    resume_step = first_step - 1 if args.resume else None
    return MetricsLog(folder, resume_step, getattr(args, "tensorboard", False))


class NullLog:
    """The log of ranks other than 0: writes nothing."""

    def write(self, step, **values):
        pass

    def close(self):
        pass


def read_metrics(path):
    """metrics.csv as a pandas DataFrame of numbers (complete rows only); a ValueError that names
    the line where the file holds something else than rows of numbers."""
    import io

    import pandas as pd
    header, rows, problem = scan(path)
    if problem is not None:
        raise ValueError(f"{FILE} {problem}")
    if header is None:
        return pd.DataFrame()
    return pd.read_csv(io.StringIO("\n".join([header, *rows]) + "\n"))
