"""metrics.csv: a training's curve, one row per log step, appended crash-safely (and, with
--tensorboard, mirrored as TensorBoard scalars in the same model folder).

Columns: step, lr, then what the entry point's log line measures
    main_mlp.py     train_loss, fresh_batch_loss, r2_c, r2_s, r2_s~, r2_m1, r2_m2 (linear
                    R^2 of each latent block from hz1, the blocks the run has)
    main_imgtxt.py  train_loss, mean_loss (mean training loss since the previous log line)
Each row is written, flushed and fsynced before the step's checkpoint, so a kill leaves
at most a torn last line, which is dropped when the file is opened again. --resume
keeps the rows up to the checkpoint's step: the steps after it are trained, and
logged, again, so every logged step appears once, in order. No torch at import:
report.py reads these files.
"""
import os

from cli import UserError
from files import atomic_write_text

FILE = "metrics.csv"


def add_arguments(p):
    p.add_argument("--tensorboard", action="store_true",
                   help="training: also write metrics.csv's scalars as TensorBoard event files "
                        "into the model folder (needs the tensorboard package)")


def parse_step(line):
    """The step of a row, or None for a line that is not a row (header, garbage)."""
    try:
        return int(line.split(",", 1)[0])
    except ValueError:
        return None


def kept_lines(path, last_step):
    """(header, rows) of an existing metrics.csv: complete lines only, rows with
    step <= last_step, strictly increasing (a torn or repeated line is dropped)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return None, []
    lines = text.split("\n")[:-1]  # the part after the last newline is torn (or empty)
    if not lines or not lines[0].startswith("step,"):
        return None, []
    header, rows, previous = lines[0], [], 0
    width = header.count(",")
    for line in lines[1:]:
        step = parse_step(line)
        if step is not None and previous < step <= last_step and line.count(",") == width:
            rows.append(line)
            previous = step
    return header, rows


class MetricsLog:
    """Appends rows to <folder>/metrics.csv; `resume_step`: the checkpoint's step on
    --resume (rows after it are dropped), None for a new training (a new file)."""

    def __init__(self, folder, resume_step=None, tensorboard=False):
        self.path = os.path.join(folder, FILE)
        self.columns = None
        text = ""
        if resume_step is not None:
            header, rows = kept_lines(self.path, resume_step)
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
    """metrics.csv as a pandas DataFrame (complete rows only)."""
    import io

    import pandas as pd
    header, rows = kept_lines(path, float("inf"))
    if header is None:
        return pd.DataFrame()
    return pd.read_csv(io.StringIO("\n".join([header, *rows]) + "\n"))
