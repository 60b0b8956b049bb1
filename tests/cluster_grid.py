"""experiments.py on a tiny grid, for the cluster tests: `python tests/cluster_grid.py ARGS`
runs `experiments.py ARGS --scale tiny`, whose simulation runs train for a few seconds with
the real main_mlp.py and are evaluated by tests/cluster_entry/main_mlp.py (at once).
`python tests/cluster_grid.py --steps-per-second` prints how fast such a model trains here now."""
import contextlib
import dataclasses
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import experiments  # noqa: E402
import grids  # noqa: E402
import plans  # noqa: E402
from cli import run_cli  # noqa: E402

ENTRY = os.path.join(HERE, "cluster_entry", "main_mlp.py")
TRAIN = {"--content-n": 2, "--style-n": 2, "--modality-n": 2, "--encoding-size": 2, "--batch-size": 64,
         "--train-steps": 200, "--log-steps": 10**6, "--no-cuda": True}  # checkpoints: step 1 and the last
grids.SCALES["tiny"] = {**grids.SCALES["quick"], "sim_train": TRAIN, "sim_eval": {"--no-cuda": True}}
for name, record in grids.EXPERIMENTS.items():
    if record.script == "main_mlp.py":
        grids.EXPERIMENTS[name] = dataclasses.replace(record, script=ENTRY)  # an absolute path



def steps_per_second(n=500):
    """Training steps per second of the tiny grid's models, with this process's threads
    (the probes at the first and last step included: an underestimate)."""
    import main_mlp
    flags = {**TRAIN, "--train-steps": n, "--seed": 0}
    with tempfile.TemporaryDirectory() as folder, open(os.devnull, "w") as quiet, \
            contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        start = time.perf_counter()
        main_mlp.main([*plans.argv_of(flags), "--model-dir", folder, "--model-id", "speed"])
        return n / (time.perf_counter() - start)


if __name__ == "__main__":
    if sys.argv[1:] == ["--steps-per-second"]:
        print(f"{steps_per_second():.1f}")
    else:
        sys.exit(run_cli(experiments.main, [*sys.argv[1:], "--scale", "tiny"]) or 0)
