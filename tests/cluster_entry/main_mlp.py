"""main_mlp.py for the cluster tests: trains for real (the real entry point, its checkpoints
and signals); --evaluate writes results.csv at once, from the trained encoders' weights.
The real evaluation's kernel-ridge probes take most of a minute of CPU per run, which the
cluster tests, about the launcher, cannot spend on every run."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path = [ROOT] + [p for p in sys.path if os.path.abspath(p or ".") != HERE]  # the real main_mlp

import pandas as pd  # noqa: E402
import torch  # noqa: E402

import main_mlp  # noqa: E402
from cli import run_cli  # noqa: E402
from files import atomic_write_csv  # noqa: E402


def evaluate(argv):
    args = main_mlp.build_parser().parse_args(argv)
    folder = os.path.join(args.model_dir, args.model_id)
    rows = []
    for name in ("hz1", "hz2"):
        weights = torch.load(os.path.join(folder, f"g{name[-1]}.pt"), weights_only=True)
        total = float(sum(w.double().abs().sum() for w in weights.values()))
        rows += [{"encoding": name, "predicted_factors": f, "r2_linear": total % 1, "r2_nonlinear": total % 1}
                 for f in ("c", "s")]
    atomic_write_csv(pd.DataFrame(rows), os.path.join(folder, "results.csv"), index=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    return evaluate(argv) if "--evaluate" in argv else main_mlp.main(argv)


if __name__ == "__main__":
    sys.exit(run_cli(main) or 0)
