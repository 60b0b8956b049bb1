"""Seconds per simulation training step of whole main_mlp.py runs: this checkout, another commit, the published script.

    git worktree add /tmp/a94c471 a94c471
    python benchmarks/bench_step_scripts.py --checkout /tmp/a94c471 --published DIR [--rounds 3]

Each script is run as a fresh process for a short and a long training (fp32:
1 and 7 steps at the paper's sizes, batch 6,144, seed 3); its time per step
is (wall of the long run - wall of the short run) / the steps between, so
start-up, the mixing networks and saving cancel. The three scripts take turns
for --rounds rounds and each wall is the best of its rounds. The quick scale's
step (blocks of 3, batch 256, bf16; not in the published script) is timed the
same way over 2,000 steps, with logging off and at the quick scale's
--log-steps 1000 (metrics.csv rows, quick probe and checkpoint). Nothing else
may run meanwhile: run it alone on the machine.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = ["--batch-size", "6144", "--seed", "3", "--log-steps", "100000", "--no-cuda"]
QUICK = ["--content-n", "3", "--style-n", "3", "--modality-n", "3", "--encoding-size", "3",
         "--batch-size", "256", "--lr", "1e-3", "--lr-schedule", "cosine", "--warmup-steps", "100",
         "--precision", "bf16", "--encoder-init", "kaiming", "--seed", "3", "--no-cuda"]
# (name, flags, short steps, long steps, scripts that have the flags)
CASES = [
    ("fp32 paper step", PAPER, 1, 7, ("published", "other", "this")),
    ("bf16 quick step, no logging", QUICK + ["--log-steps", "100000"], 201, 2201, ("other", "this")),
    ("bf16 quick step, --log-steps 1000", QUICK + ["--log-steps", "1000"], 201, 2201, ("other", "this")),
]


def wall(folder, flags, steps):
    """Seconds of one fresh main_mlp.py training of `steps` steps in a scratch model folder."""
    with tempfile.TemporaryDirectory() as work:
        cmd = [sys.executable, "main_mlp.py", "--model-dir", work, "--model-id", "bench",
               "--train-steps", str(steps), *flags]
        t = time.perf_counter()
        subprocess.run(cmd, cwd=folder, check=True, capture_output=True)
        return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkout", required=True, help="another commit's checkout (e.g. a94c471)")
    p.add_argument("--published", help="a checkout of the published scripts (fp32 case only)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cases", nargs="+", type=int, default=list(range(len(CASES))),
                   help="which cases to time, by index (default all)")
    args = p.parse_args()
    folders = {"published": args.published, "other": args.checkout, "this": ROOT}
    for index in args.cases:
        name, flags, short, long_, scripts = CASES[index]
        scripts = [s for s in scripts if folders[s]]
        best = {}
        for r in range(args.rounds):
            for script in scripts:
                for steps in (short, long_):
                    w = wall(folders[script], flags, steps)
                    best[script, steps] = min(w, best.get((script, steps), w))
                    print(f"  {name} round {r + 1} {script:<9} {steps:>5} steps: {w:.2f} s", flush=True)
        per_step = {s: (best[s, long_] - best[s, short]) / (long_ - short) for s in scripts}
        line = ", ".join(f"{s} {per_step[s] * 1000:.1f} ms" for s in scripts)
        ratios = ", ".join(f"{s} / this = {per_step[s] / per_step['this']:.2f}" for s in scripts if s != "this")
        print(f"{name}: {line} per step (best of {args.rounds}); {ratios}", flush=True)


if __name__ == "__main__":
    main()
