"""Which weights a folder's results come from: evaluation.json's stamp, and whether it still holds.

An evaluation writes evaluation.json first, with a stamp
    {"weights": digest of the weight files it evaluated, "files": {result file: its digest}}
and then the result files it names (partial.csv, results.csv). Results are current while
both digests still match: retrained weights (--resume with more steps, a copied-over
g1.pt) or a result file that is not the one the stamp names (an evaluation interrupted
between its files) make them stale, and every reader (the runner, report.py) treats
stale results as absent. Folders evaluated before stamps existed, and the published
scripts' (no evaluation.json, or one without a stamp), cannot be checked and count as
current. No torch: the runner and the report use this.
"""
import csv
import hashlib
import os
import re

from cli import UserError
from facts import RESULT_COLUMNS, RESULTS_FILE
from files import read_json

EVALUATION_FILE = "evaluation.json"
# What an evaluation loads: mixing and encoder networks, latent parameters (main_mlp.py:
# f1.pt, g1.pt, ..., latent_space.pt; main_imgtxt.py: encoder_img.pt, encoder_txt.pt).
# --learn-tau's temperature.pt too: the evaluation's losses use it.
WEIGHT_FILES = re.compile(r"([fg]\d+|encoder_(img|txt)|latent_space|temperature)\.pt")


def digest(data):
    return hashlib.sha256(data).hexdigest()


def weights_digest(folder):
    """One digest over the names and bytes of the folder's weight files."""
    h = hashlib.sha256()
    for name in sorted(n for n in os.listdir(folder) if WEIGHT_FILES.fullmatch(n)):
        h.update(name.encode() + b"\0")
        with open(os.path.join(folder, name), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def stamp(folder, texts):
    """evaluation.json's stamp for result files {name: text} about to be written into `folder`."""
    return {"weights": weights_digest(folder),
            "files": {name: digest(text.encode("utf-8")) for name, text in texts.items()}}


def stale(folder):
    """Why the results in `folder` cannot be trusted as those of its weights, or None."""
    path = os.path.join(folder, EVALUATION_FILE)
    if not os.path.exists(path):
        return None  # the published scripts' folders, results made by hand: nothing to check
    try:
        record = read_json(path, EVALUATION_FILE)
    except UserError as err:
        return str(err)
    if not isinstance(record, dict):
        return f"{path} holds a {type(record).__name__}, not an evaluation's record"
    recorded = record.get("stamp")
    if recorded is None:
        return None  # evaluated before stamps were written
    if not (isinstance(recorded, dict) and isinstance(recorded.get("files"), dict)):
        return f"{path} holds no valid stamp"
    try:
        # A records folder (results/) keeps no weights: only its result files can be checked.
        weighed = any(WEIGHT_FILES.fullmatch(n) for n in os.listdir(folder))
        if weighed and recorded.get("weights") != weights_digest(folder):
            return "the weights changed after the evaluation (retrained?); evaluate again"
        for name, want in recorded["files"].items():
            with open(os.path.join(folder, name), "rb") as f:
                if digest(f.read()) != want:
                    return f"{name} is not the file that {EVALUATION_FILE} records (an interrupted evaluation?)"
    except OSError as err:
        return f"cannot read {getattr(err, 'filename', None) or folder}: {err.strerror}"
    return None


def results_problem(folder, kind=None):
    """Why the folder's results.csv is no table of results of `kind` ("sim", "imgtxt"; None:
    either), or None: its columns (an unnamed index column aside), a row at least, numbers (or
    nothing) where numbers are due. The runner and the report ask the same question, so a run
    that the report leaves out is never counted as done."""
    try:
        with open(os.path.join(folder, RESULTS_FILE), encoding="utf-8", newline="") as f:
            lines = [row for row in csv.reader(f) if row]
    except FileNotFoundError:
        return f"no {RESULTS_FILE}"
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        return f"{RESULTS_FILE} is unreadable ({type(err).__name__})"
    if not lines:
        return f"{RESULTS_FILE} is empty"
    header, rows = lines[0], lines[1:]
    if header[0] == "" or header[0].startswith("Unnamed: 0"):  # pandas' index column
        header, rows = header[1:], [row[1:] for row in rows]
    kinds = [kind] if kind else [k for k, (text, numeric) in RESULT_COLUMNS.items() if text[0] in header]
    text, numeric = RESULT_COLUMNS[kinds[0] if kinds else "sim"]
    missing = [c for c in (*text, *numeric) if c not in header]
    if missing:
        run = {"sim": "simulation", "imgtxt": "image/text"}[kinds[0]] if kinds else "simulation or image/text"
        return f"{RESULTS_FILE} has no column {missing[0]} (not a {run} run?)"
    if not rows:
        return f"{RESULTS_FILE} has no rows"
    for number, row in enumerate(rows, 2):
        if len(row) != len(header):
            return f"{RESULTS_FILE} line {number} has {len(row)} fields where the header has {len(header)}"
    for column in numeric:
        at = header.index(column)
        for row in rows:
            try:
                float(row[at] or 0)
            except ValueError:
                return f"{RESULTS_FILE} column {column} holds text, not numbers"
    return None
