"""experiments.py on a tiny grid, for the cluster tests: `python tests/cluster_grid.py ARGS`
runs `experiments.py ARGS --scale tiny`, whose simulation runs train for a few seconds with
the real main_mlp.py and are evaluated by tests/cluster_entry/main_mlp.py (at once)."""
import dataclasses
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import experiments  # noqa: E402
import grids  # noqa: E402
from cli import run_cli  # noqa: E402

ENTRY = os.path.join(HERE, "cluster_entry", "main_mlp.py")
TRAIN = {"--content-n": 2, "--style-n": 2, "--modality-n": 2, "--encoding-size": 2, "--batch-size": 64,
         "--train-steps": 200, "--log-steps": 10**6, "--no-cuda": True}  # checkpoints: step 1 and the last
experiments.SCALES["tiny"] = {**experiments.SCALES["quick"], "sim_train": TRAIN, "sim_eval": {"--no-cuda": True}}
for name, record in grids.EXPERIMENTS.items():
    if record.script == "main_mlp.py":
        grids.EXPERIMENTS[name] = dataclasses.replace(record, script=ENTRY)  # an absolute path

if __name__ == "__main__":
    sys.exit(run_cli(experiments.main, [*sys.argv[1:], "--scale", "tiny"]) or 0)
