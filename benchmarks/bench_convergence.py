"""Time to identifiability: steps and wall time until the simulation's content is found.

    python benchmarks/bench_convergence.py [--blocks 2 5] [--budget-minutes 30] [--seeds 0 1 2]
                                           [--skip-published] [--recipe "FLAGS"]

Table 1 row 1 (multimodal, p(chg) = 1.0, no dependencies) is trained with
main_mlp.py, once with the published defaults (batch 6,144, lr 1e-4,
constant) and once with a recipe (--recipe; by default kaiming-initialised
encoders at batch 256, lr 1e-3 with a 100-step warm-up, constant after it,
in bfloat16 autocast, which runs the step 2-3x faster on a CPU with bf16),
for each training seed of --seeds, at latent blocks of 2 and of 5 (content,
style, modality-specific and encoding size all equal to the block). A recipe
with a schedule over a fixed number of steps, e.g. the 6-minute candidate
    --recipe "--encoder-init whitened --batch-size 256 --lr 3e-3 --warmup-steps 200
              --lr-schedule cosine --train-steps 10000 --precision bf16 --log-steps 100"
    --skip-published --blocks 5 --seeds 0 1 2 --budget-minutes 6
ends at its last step if it has not reached the threshold by then (that
candidate did not reach 0.9 by step 10,000 for seed 0). The training prints
the linear R^2 of the content from h1 every --log-steps steps; the run stops when it first
reaches 0.9, or when the budget is spent, and the script prints the step and
the wall time (start-up included) of that moment, or the best R^2 reached.
--skip-published leaves out the published defaults (which spend their
whole budget at blocks of 5). The runs take turns, one at a time, each with
all torch threads: do not run anything else meanwhile.
"""
import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLISHED = "--batch-size 6144 --lr 1e-4 --log-steps 25"
RECIPE = ("--encoder-init kaiming --batch-size 256 --lr 1e-3 --warmup-steps 100 --precision bf16 "
          "--log-steps 100")
LINE = re.compile(r"^step (\d+):.* c (-?[\d.]+)")


def run_until(flags, threshold, budget_s):
    """(step, seconds, best R^2, reached) of one training, stopped at the threshold or the budget."""
    with tempfile.TemporaryDirectory() as work:
        cmd = [sys.executable, "-u", "main_mlp.py", "--model-dir", work, "--model-id", "run", "--no-cuda",
               "--train-steps", "10000000", *flags]  # a later --train-steps (the recipe's) wins
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env={**os.environ, "TQDM_DISABLE": "1"})
        best, step = -1.0, 0
        try:
            for line in proc.stdout:
                match = LINE.match(line)
                if not match:
                    continue
                step, r2 = int(match.group(1)), float(match.group(2))
                best = max(best, r2)
                seconds = time.perf_counter() - start
                if r2 >= threshold:
                    return step, seconds, best, True
                if seconds > budget_s:
                    break
        finally:
            proc.kill()
            proc.wait()
        return step, time.perf_counter() - start, best, False


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blocks", type=int, nargs="+", default=[2, 5])
    p.add_argument("--budget-minutes", type=float, default=30.0, help="per training (30)")
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (0)")
    p.add_argument("--skip-published", action="store_true", help="train the recipe only")
    p.add_argument("--published", default=PUBLISHED, help=f"published defaults ({PUBLISHED})")
    p.add_argument("--recipe", default=RECIPE, help=f"flags of the recipe ({RECIPE})")
    args = p.parse_args()
    settings = [("recipe", args.recipe)]
    if not args.skip_published:
        settings.insert(0, ("published", args.published))
    print(f"Table 1 row 1, multimodal; content R^2 >= {args.threshold} (linear, logged), "
          f"budget {args.budget_minutes:g} min per training, seeds {' '.join(map(str, args.seeds))}")
    print(f"recipe: {args.recipe}")
    print(f"{'blocks':>6}  {'seed':>4}  {'setting':<10} {'steps':>7} {'wall':>9}  result")
    for n in args.blocks:
        for seed in args.seeds:
            block = ["--content-n", str(n), "--style-n", str(n), "--modality-n", str(n),
                     "--encoding-size", str(n), "--seed", str(seed)]
            times = {name: time_one(n, seed, name, [*block, *shlex.split(flags)], args)
                     for name, flags in settings}
            print_speedup(times, args)


def time_one(n, seed, name, flags, args):
    """Train one setting, print its row; its wall time if it reached the threshold, else None."""
    step, seconds, best, reached = run_until(flags, args.threshold, args.budget_minutes * 60)
    result = f"reached {best:.3f}" if reached else f"NOT reached: best {best:.3f} by step {step}"
    print(f"{n:>6}  {seed:>4}  {name:<10} {step:>7} {seconds / 60:>7.1f} m  {result}", flush=True)
    return seconds if reached else None


def print_speedup(times, args):
    if times["recipe"] and times.get("published"):
        print(f"{'':>14}recipe {times['published'] / times['recipe']:.1f}x sooner")
    elif times["recipe"] and "published" in times:
        print(f"{'':>14}recipe: more than {args.budget_minutes * 60 / times['recipe']:.1f}x sooner "
              f"(the published defaults did not reach {args.threshold} within the budget)")

if __name__ == "__main__":
    main()
