"""Simulation training step of this checkout against another one (e.g. an earlier commit).

    git worktree add /tmp/before 6780e78
    python benchmarks/bench_step_vs_checkout.py /tmp/before [--batch-sizes 6144 1024] [--rounds 2]

Runs each checkout's own benchmarks/bench_mlp.py (its main_mlp.train_step, at
the paper's sizes) in fresh processes, alternating between the two checkouts
for --rounds rounds, and prints the best milliseconds per step of each and
their ratio. Nothing else should run meanwhile.
"""
import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ours_ms(checkout, batch_sizes, steps):
    """{batch: ms per step} from the 'ours ms' column of a checkout's bench_mlp.py."""
    out = subprocess.run([sys.executable, "benchmarks/bench_mlp.py", "--no-cuda", "--steps", str(steps),
                          "--batch-sizes", *map(str, batch_sizes)], cwd=checkout, check=True,
                         capture_output=True, text=True).stdout
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0].isdigit()]
    return {int(r[0]): float(r[1]) for r in rows}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("other", help="the other checkout's folder")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[6144, 1024])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    best = {"this": {}, "other": {}}
    for r in range(args.rounds):
        for name, folder in (("other", args.other), ("this", ROOT)):
            for batch, ms in ours_ms(folder, args.batch_sizes, args.steps).items():
                best[name][batch] = min(ms, best[name].get(batch, ms))
                print(f"round {r + 1} {name:<5} batch {batch}: {ms:.0f} ms", flush=True)
    for batch in args.batch_sizes:
        this, other = best["this"][batch], best["other"][batch]
        print(f"batch {batch}: this checkout {this:.0f} ms, the other {other:.0f} ms per step "
              f"(best of {args.rounds}): this / other = {this / other:.3f}")


if __name__ == "__main__":
    main()
