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
import hashlib
import os
import re

from cli import UserError
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
    recorded = record.get("stamp") if isinstance(record, dict) else None
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
