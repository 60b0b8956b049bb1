"""Milliseconds per simulation training step: ours, a straightforward reference, and the matmul floor.

    python benchmarks/bench_mlp.py [--batch-sizes 6144 1024] [--steps 5] [--published DIR]

All three are timed in the same run on the same device, so their ratios are
meaningful on a noisy machine:
  ours       main_mlp.train_step (latents sampled in torch on the device, one
             encoder pass per view, pairwise distances as |a|^2 + |b|^2 - 2ab)
  ours bf16  the same under --precision bf16 (the networks in bfloat16 autocast)
  reference  the obvious way: numpy multivariate-normal sampling copied to the
             device, four encoder passes, broadcast pairwise differences
  matmul     the step's matrix products alone (same shapes, forward and
             backward), timed, and their FLOPs at torch's measured throughput
  published  with --published DIR (a checkout of the published scripts): their
             main_mlp.py itself, run twice in fresh processes with --train-steps
             2 and 2 + steps; the difference of the wall times over `steps` is
             its time per step (start-up, mixing functions and logging cancel)
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import main_mlp  # noqa: E402
import shared_content  # noqa: E402
from encoders import ViewEncoder  # noqa: E402
from invertible_network_utils import construct_invertible_mlp  # noqa: E402
from losses import MultiViewLpLoss  # noqa: E402
from utils import get_device  # noqa: E402

NC = NS = NM = 5
DIM = NC + NS + NM


def setup(device, seed=0):
    torch.manual_seed(seed)
    args = main_mlp.build_parser().parse_args([])
    args.seed = seed
    space = shared_content.build_latent_space(args, seed, device)
    rng = np.random.default_rng(seed)
    f1, f2 = (construct_invertible_mlp(DIM, 3, rng=rng, n_iter_cond_thresh=2000).to(device) for _ in range(2))
    g1, g2 = shared_content.build_encoders(args, DIM)
    net = ViewEncoder([f1, f2], [g1, g2]).to(device)
    params = list(g1.parameters()) + list(g2.parameters())
    return space, net, params, torch.optim.Adam(params, lr=1e-4)


def reference_sample(batch, device):
    """Published-style sampling: numpy draws for every block, copied to the device."""
    def mvn(n):
        return torch.as_tensor(np.random.multivariate_normal(np.zeros(n), np.eye(n), batch),
                               dtype=torch.float32, device=device)
    c, s, m1, m2 = mvn(NC), mvn(NS), mvn(NM), mvn(NM)
    mask = torch.as_tensor(np.random.binomial(1, 1.0, (batch, NS)), dtype=torch.float32, device=device)
    s_tilde = s + mask * mvn(NS)
    return torch.cat((c, s, m1), 1), torch.cat((c, s_tilde, m2), 1)


def reference_loss(a, b, n):
    neg = (a.unsqueeze(1) - n.unsqueeze(0)).pow(2).abs().sum(-1)
    pos = (a - b).pow(2).abs().sum(-1)
    logits = torch.cat((-neg, -pos.unsqueeze(1)), 1)
    lme = torch.logsumexp(logits, 1) - np.log(logits.shape[1])
    return (2 * (0.5 * pos + 0.5 * lme)).mean()


def reference_step(net, params, optimizer, batch, device):
    f1, g1, f2, g2 = (net.nets[k] for k in ("f1", "g1", "f2", "g2"))
    z1, z2 = reference_sample(batch, device)
    z1n, z2n = reference_sample(batch, device)
    h1, h2, h1n, h2n = g1(f1(z1)), g2(f2(z2)), g1(f1(z1n)), g2(f2(z2n))
    loss = 0.5 * (reference_loss(h1, h2, h1n) + reference_loss(h2, h1, h2n))
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 2.0)
    optimizer.step()
    return loss.detach()


def matmul_shapes(batch, encoding_size=5):
    """(m, k, n) of every matrix product in one step, forward and backward."""
    rows = 2 * batch  # pairs and negatives, per view
    widths = [DIM, 10 * DIM, 50 * DIM, 50 * DIM, 50 * DIM, 50 * DIM, 10 * DIM, encoding_size]
    shapes = []
    for _ in range(2):  # two views
        shapes += [(rows, DIM, DIM)] * 3  # frozen mixing, forward only
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            shapes.append((rows, w_in, w_out))        # forward
            shapes.append((w_out, rows, w_in))        # weight gradient
            if i > 0:
                shapes.append((rows, w_out, w_in))    # input gradient
    for _ in range(2):  # loss, each direction: a @ n^T and its two gradients
        shapes += [(batch, encoding_size, batch), (batch, batch, encoding_size), (batch, batch, encoding_size)]
    return shapes


def time_fn(fn, steps, device):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps * 1000


def matmul_only_ms(shapes, steps, device):
    mats = [(torch.randn(m, k, device=device), torch.randn(k, n, device=device)) for m, k, n in shapes]
    return time_fn(lambda: [a @ b for a, b in mats], steps, device)


def throughput_gflops(device, n=2048):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    ms = time_fn(lambda: a @ b, 5, device)
    return 2 * n ** 3 / (ms / 1000) / 1e9


def published_ms(published, batch, steps, no_cuda):
    """The published script's milliseconds per step, from two runs that differ by `steps` steps."""
    walls = []
    with tempfile.TemporaryDirectory() as work:
        for i, n in enumerate((2, 2 + steps)):
            cmd = [sys.executable, "main_mlp.py", "--model-dir", work, "--model-id", f"r{i}", "--seed", "0",
                   "--batch-size", str(batch), "--train-steps", str(n), "--log-steps", "100000"]
            t = time.perf_counter()
            subprocess.run(cmd + (["--no-cuda"] if no_cuda else []), cwd=published, check=True,
                           capture_output=True)
            walls.append(time.perf_counter() - t)
    return (walls[1] - walls[0]) / steps * 1000


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[6144, 1024])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--no-cuda", action="store_true")
    p.add_argument("--published", metavar="DIR", help="checkout of the published scripts: time them too")
    args = p.parse_args()
    device = get_device(args.no_cuda)
    gflops = throughput_gflops(device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, "
          f"float32 matmul {gflops:.0f} GFLOP/s")
    print(f"{'batch':>6} {'ours ms':>9} {'bf16 ms':>8} {'reference ms':>13} {'matmul ms':>10} "
          f"{'FLOP-floor ms':>14} {'ours/bf16':>10} {'ref/ours':>9} {'ours/matmul':>12}"
          + (f" {'published ms':>13} {'pub/ours':>9}" if args.published else ""))
    for batch in args.batch_sizes:
        space, net, params, opt = setup(device)
        gen = torch.Generator(device=device).manual_seed(0)
        loss_fn = MultiViewLpLoss()
        fp32 = argparse.Namespace(batch_size=batch, grad_clip=2.0, precision="fp32")
        bf16 = argparse.Namespace(batch_size=batch, grad_clip=2.0, precision="bf16")
        ours = time_fn(lambda: main_mlp.train_step(space, net, loss_fn, opt, params, fp32, gen),
                       args.steps, device)
        half = time_fn(lambda: main_mlp.train_step(space, net, loss_fn, opt, params, bf16, gen),
                       args.steps, device)
        _, net, params, opt = setup(device)
        ref = time_fn(lambda: reference_step(net, params, opt, batch, device), args.steps, device)
        shapes = matmul_shapes(batch)
        mm = matmul_only_ms(shapes, args.steps, device)
        floor = sum(2 * m * k * n for m, k, n in shapes) / (gflops * 1e9) * 1000
        line = (f"{batch:>6} {ours:>9.0f} {half:>8.0f} {ref:>13.0f} {mm:>10.0f} {floor:>14.0f}"
                f" {ours / half:>10.2f} {ref / ours:>9.2f} {ours / mm:>12.2f}")
        if args.published:
            pub = published_ms(args.published, batch, args.steps, args.no_cuda)
            line += f" {pub:>13.0f} {pub / ours:>9.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
