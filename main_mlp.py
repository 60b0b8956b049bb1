"""Numerical simulation: multimodal contrastive learning block-identifies the shared content.

Latents (c, s, m1, m2) are mixed by two random invertible MLPs into two views;
two MLP encoders are trained with the symmetric L2 InfoNCE loss; `--evaluate`
then measures with linear and kernel-ridge probes which latent blocks the
encodings recover.

    python main_mlp.py --model-id demo --train-steps 5001 --batch-size 512
    python main_mlp.py --model-id demo --evaluate --load-args
"""
import argparse
import os
import sys
from contextlib import nullcontext

import numpy as np
import pandas as pd
import torch
from torch import nn
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import probes
import recipe
import spaces
from distributed import (DistInfo, barrier, broadcast_object, cleanup, device_for,
                         gather_with_grad, init_distributed, local_slice, mean_over_ranks, wrap_ddp)
from encoders import simulation_encoder
from invertible_network_utils import construct_invertible_mlp, mlp_shell
from losses import LpSimCLRLoss, symmetric_lp_loss
from utils import (FolderLock, UserError, all_finite, atomic_torch_save, atomic_write_csv,
                   atomic_write_json, check_finite, check_model_id, check_writable, draw_seed,
                   evaluation_seed, first_line, given_flags, load_into, new_model_id, read_saved_args,
                   refuse_existing_model, resume_settings, run_cli, set_seed, should_log,
                   state_dict_mismatch)

EVAL_BATCH = 4096
CHECKPOINT = "checkpoint.pt"  # encoders, optimiser, step and random streams, for --resume
TARGETS = ("c", "s", "s~", "m1", "m2", "c'")
# Settings that --load-args restores from args.json, as the published script does,
# plus the covariance option that only this implementation has.
LOADED_ARGS = ("style_change_prob", "statistical_dependence", "content_dependent_style",
               "modality_n", "style_n", "content_n", "encoding_size", "shared_mixing",
               "n_mixing_layer", "shared_encoder", "c_param", "m_param", "independent_covariances",
               "discrete_content", "discrete_style", "discrete_modality")
DISCRETE_FLAGS = {"c": "discrete_content", "s": "discrete_style", "m": "discrete_modality"}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=str, default="models")
    p.add_argument("--model-id", type=str, default=None)
    p.add_argument("--encoding-size", type=int, default=5)
    p.add_argument("--content-n", type=int, default=5)
    p.add_argument("--style-n", type=int, default=5)
    p.add_argument("--modality-n", type=int, default=5)
    p.add_argument("--style-change-prob", type=float, default=1.0)
    p.add_argument("--statistical-dependence", action="store_true")
    p.add_argument("--content-dependent-style", action="store_true")
    p.add_argument("--independent-covariances", action="store_true",
                   help="with --statistical-dependence, draw each block's covariance independently "
                        "(the published scripts give equal-sized blocks one shared matrix)")
    for block, name in (("content", "c"), ("style", "s"), ("modality", "m1, m2")):
        p.add_argument(f"--discrete-{block}", type=int, default=0, metavar="K",
                       help=f"make {name} discrete: each dimension uniform on K evenly spaced "
                            "values (0: Gaussian, the default)")
    p.add_argument("--c-param", type=float, default=1.0)
    p.add_argument("--m-param", type=float, default=1.0)
    p.add_argument("--n-mixing-layer", type=int, default=3)
    p.add_argument("--shared-mixing", action="store_true")
    p.add_argument("--shared-encoder", action="store_true")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=6144)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--train-steps", type=int, default=300001)
    p.add_argument("--log-steps", type=int, default=1000)
    p.add_argument("--evaluate", action="store_true")
    p.add_argument("--num-eval-batches", type=int, default=5)
    p.add_argument("--permuted-content", action="store_true")
    p.add_argument("--mlp-eval", action="store_true")
    p.add_argument("--no-cuda", action="store_true")
    p.add_argument("--load-args", action="store_true")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted training run from its last checkpoint "
                        "(--train-steps may extend it; other settings are the run's own)")
    p.add_argument("--cpu-generator", action="store_true",
                   help="evaluating a folder of the published scripts without CUDA: state that its "
                        "B and a were drawn on the CPU (it was trained without a GPU)")
    recipe.add_arguments(p)
    return p


def check_args(args):
    at_least = {"--content-n": (args.content_n, 1), "--style-n": (args.style_n, 0),
                "--modality-n": (args.modality_n, 0), "--encoding-size": (args.encoding_size, 1),
                "--n-mixing-layer": (args.n_mixing_layer, 1), "--batch-size": (args.batch_size, 1),
                "--train-steps": (args.train_steps, 1), "--log-steps": (args.log_steps, 1),
                "--num-eval-batches": (args.num_eval_batches, 1)}
    for flag, (value, low) in at_least.items():
        if value < low:
            raise UserError(f"{flag} must be at least {low}, got {value}")
    if not 0.0 <= args.style_change_prob <= 1.0:
        raise UserError(f"--style-change-prob must be in [0, 1], got {args.style_change_prob}")
    for flag, value in (("--c-param", args.c_param), ("--m-param", args.m_param), ("--lr", args.lr)):
        check_finite(flag, value)
    check_model_id(args.model_id)
    check_discrete(args)
    recipe.check_arguments(args)


def flag_of(key):
    return "--" + key.replace("_", "-")


def check_discrete(args):
    discrete = [key for key in DISCRETE_FLAGS.values() if getattr(args, key)]
    for key in discrete:
        if getattr(args, key) < 2:
            raise UserError(f"{flag_of(key)} must be 0 (Gaussian) or a number of values >= 2, "
                            f"got {getattr(args, key)}")
    if discrete and args.statistical_dependence:
        raise UserError(f"{flag_of(discrete[0])} cannot be combined with --statistical-dependence, "
                        "whose Wishart covariances are defined for Gaussian blocks only")
    if args.discrete_style and args.content_dependent_style:
        raise UserError("--discrete-style cannot be combined with --content-dependent-style: "
                        "the shift B c + a would make the style continuous")


def build_latent_space(args, train_seed, device, saved_params=None):
    params = saved_params if saved_params is not None else spaces.draw_parameters(
        train_seed, args.content_n, args.style_n, args.modality_n, args.statistical_dependence,
        args.content_dependent_style, args.independent_covariances)
    discrete = {block: getattr(args, key) for block, key in DISCRETE_FLAGS.items()}
    return spaces.LatentSpace(args.content_n, args.style_n, args.modality_n, args.style_change_prob,
                              args.c_param, args.m_param, params, device, discrete)


def build_encoders(args, dim):
    g1 = simulation_encoder(dim, args.encoding_size)
    g2 = g1 if args.shared_encoder else simulation_encoder(dim, args.encoding_size)
    return g1, g2


class PairEncoder(nn.Module):
    """h1 = g1 o f1 and h2 = g2 o f2 as one module (so DDP can wrap both encoders)."""

    def __init__(self, f1, g1, f2, g2):
        super().__init__()
        self.f1, self.g1, self.f2, self.g2 = f1, g1, f2, g2

    def forward(self, z1, z2):
        if self.f1 is self.f2 and self.g1 is self.g2:  # one pass through the one network
            return self.g1(self.f1(torch.cat((z1, z2)))).chunk(2)
        return self.g1(self.f1(z1)), self.g2(self.f2(z2))


def contrastive_loss(loss_fn, net, blocks, n, info=DistInfo(), autocast=nullcontext):
    """Symmetric L2 InfoNCE of the first n pairs of `blocks` against the rest as negatives.

    Pairs and negatives go through each network in one pass. Under DDP, `blocks`
    are this rank's rows and the negatives of every rank are gathered, so each
    anchor sees all negatives of the global batch."""
    with autocast():  # --precision bf16: the networks only; the loss stays float32
        h1, h2 = net(*spaces.LatentSpace.views(blocks))
    h1, h2 = h1.float(), h2.float()
    h1_neg, h2_neg = gather_with_grad(h1[n:], info), gather_with_grad(h2[n:], info)
    return symmetric_lp_loss(loss_fn, h1[:n], h2[:n], h1_neg, h2_neg)


def local_rows(blocks, batch_size, info):
    """This rank's pairs and negatives out of a global batch of 2 x batch_size rows."""
    if not info.enabled:
        return blocks
    sl = local_slice(batch_size, info)
    return {k: torch.cat((v[:batch_size][sl], v[batch_size:][sl])) for k, v in blocks.items()}


def train_step(space, net, loss_fn, optimizer, params, batch_size, generator, info=DistInfo(),
               autocast=nullcontext):
    """One optimisation step on a fresh global batch; pairs and negatives are sampled together.

    Every rank draws the same global batch and keeps its slice, so a seed gives
    the same samples whatever the number of processes."""
    blocks = local_rows(space.sample(2 * batch_size, generator), batch_size, info)
    loss = contrastive_loss(loss_fn, net, blocks, batch_size // info.world_size, info, autocast)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # DDP averages the gradients over ranks here
    torch.nn.utils.clip_grad_norm_(params, max_norm=2.0)
    optimizer.step()
    return mean_over_ranks(loss.detach(), info)


def quick_probe(space, net, loss_fn, generator, seed, save_dir="", step=0):
    """Loss on a fresh batch and linear R^2 of each latent block from h1 (75/25 split)."""
    with torch.no_grad():
        blocks = space.sample(2 * EVAL_BATCH, generator)
        loss = contrastive_loss(loss_fn, net, blocks, EVAL_BATCH).item()
        blocks = {k: v[:EVAL_BATCH] for k, v in blocks.items()}
        hz1 = net.g1(net.f1(space.views(blocks)[0])).cpu().numpy()
    if not (np.isfinite(loss) and np.isfinite(hz1).all()):
        raise UserError(f"training diverged by step {step} (non-finite encodings; try a lower --lr); "
                        f"the last good checkpoint in {save_dir} is kept")
    hz1 = (hz1 - hz1.mean(0)) / np.where(hz1.std(0) > 0, hz1.std(0), 1.0)
    r2 = {}
    for k in ("c", "s", "s~", "m1", "m2"):
        y = blocks[k].cpu().numpy()
        if y.shape[1]:
            x_tr, x_te, y_tr, y_te = train_test_split(hz1, y, random_state=seed)
            r2[k] = probes.linear_r2(x_tr, y_tr, x_te, y_te)
    return loss, r2


# Flags that --resume takes from the command line rather than from args.json.
RESUME_OWN = ("resume", "model_dir", "model_id", "no_cuda")
RESUME_HONOURED = ("train_steps", "log_steps")


def start_model_folder(args, save_dir, info, given):
    """Write args.json, or with --resume take the run's settings from it."""
    args_path = os.path.join(save_dir, "args.json")
    if args.resume:
        if not os.path.exists(os.path.join(save_dir, CHECKPOINT)):
            raise UserError(f"--resume: no {CHECKPOINT} in {save_dir}")
        saved = read_saved_args(args_path, build_parser())
        resume_settings(args, saved, given, RESUME_OWN, RESUME_HONOURED, args_path)
        check_args(args)
        return
    refuse_existing_model(save_dir, CHECKPOINT)
    if args.batch_size % info.world_size:
        raise UserError(f"--batch-size {args.batch_size} must be divisible by the "
                        f"{info.world_size} processes")


def build_training(args, device):
    space = build_latent_space(args, args.seed, device)
    rng = np.random.default_rng(args.seed)
    dim = space.view_dim
    try:
        f1 = construct_invertible_mlp(dim, args.n_mixing_layer, rng=rng)
        f2 = f1 if args.shared_mixing else construct_invertible_mlp(dim, args.n_mixing_layer, rng=rng)
        g1, g2 = build_encoders(args, dim)
        return space, PairEncoder(f1, g1, f2, g2).to(device)
    except (MemoryError, RuntimeError) as err:  # e.g. --encoding-size 1000000000
        raise UserError(f"the networks for these sizes do not fit in memory (latent dimension {dim}, "
                        f"--encoding-size {args.encoding_size}): {first_line(err)}") from None


def save_checkpoint(save_dir, net, optimizer, step, gen, probe_gen):
    for name in ("g1", "g2"):
        atomic_torch_save(getattr(net, name).state_dict(), os.path.join(save_dir, f"{name}.pt"))
    atomic_torch_save({"step": step, "g1": net.g1.state_dict(), "g2": net.g2.state_dict(),
                       "optimizer": optimizer.state_dict(), "generator": gen.get_state(),
                       "probe_generator": probe_gen.get_state()},
                      os.path.join(save_dir, CHECKPOINT))


def load_checkpoint(save_dir, net, optimizer, gen, probe_gen):
    path = os.path.join(save_dir, CHECKPOINT)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.g1.load_state_dict(state["g1"])
        net.g2.load_state_dict(state["g2"])
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        probe_gen.set_state(state["probe_generator"])
    except Exception as err:
        raise UserError(f"cannot resume from {path}: {state_dict_mismatch(err)}") from None
    return state["step"]


def train(args, device, info=DistInfo(), given=()):
    save_dir = os.path.join(args.model_dir, args.model_id)
    with FolderLock(save_dir) if info.is_main else nullcontext():
        start_model_folder(args, save_dir, info, given)
        barrier(info)  # every rank has checked the folder before rank 0 fills it
        set_seed(args.seed)
        space, net = build_training(args, device)
        if info.is_main:
            atomic_write_json(os.path.join(save_dir, "args.json"), vars(args))
        if info.is_main and not args.resume:
            spaces.save_parameters(space.params, os.path.join(save_dir, spaces.PARAMS_FILE),
                                   atomic_torch_save)
            for name in ("f1", "f2"):
                atomic_torch_save(getattr(net, name).state_dict(), os.path.join(save_dir, f"{name}.pt"))
        run_training(args, device, info, save_dir, space, net)


def run_training(args, device, info, save_dir, space, net):
    params = list({id(p): p for p in [*net.g1.parameters(), *net.g2.parameters()]}.values())
    optimizer = recipe.build_optimizer(params, args)
    loss_fn = LpSimCLRLoss()
    gen = torch.Generator(device=device).manual_seed(args.seed)
    probe_gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    first = 1
    if args.resume:
        first = load_checkpoint(save_dir, net, optimizer, gen, probe_gen) + 1
        if first > args.train_steps:
            raise UserError(f"{save_dir} is already trained to step {first - 1}; pass a larger "
                            f"--train-steps with --resume to train it further")
    ddp_net = wrap_ddp(net, info, device)

    bar = tqdm(range(first, args.train_steps + 1), desc="train", unit="step", dynamic_ncols=True,
               initial=first - 1, total=args.train_steps, disable=not info.is_main)
    for step in bar:
        recipe.set_lr(optimizer, step, args)
        loss = train_step(space, ddp_net, loss_fn, optimizer, params, args.batch_size, gen, info,
                          lambda: recipe.autocast(args, device))
        logging = should_log(step, args.log_steps, args.train_steps)
        if logging or step % 20 == 0:  # reading the loss synchronises CUDA: not every step
            value = loss.item()
            if not np.isfinite(value) or (logging and not all_finite((net.g1, net.g2))):
                raise UserError(f"training diverged by step {step} (non-finite loss or weights; "
                                f"try a lower --lr); the last good checkpoint in {save_dir} is kept")
            bar.set_postfix(loss=f"{value:.4f}")
        if logging and info.is_main:
            # Probe first: a step whose encodings are no longer finite is not saved.
            val_loss, r2 = quick_probe(space, net, loss_fn, probe_gen, args.seed, save_dir, step)
            save_checkpoint(save_dir, net, optimizer, step, gen, probe_gen)
            tqdm.write(f"step {step}: train loss {value:.6f} | fresh-batch loss {val_loss:.4f} | "
                       "linear R^2 from hz1: "
                       + " ".join(f"{k} {v:.3f}" for k, v in r2.items()))
    bar.close()
    if info.is_main:
        print(f"saved model to {save_dir}")


def load_for_evaluation(args):
    save_dir = os.path.join(args.model_dir, args.model_id)
    if not os.path.isdir(save_dir):
        raise UserError(f"model folder not found: {save_dir}")
    saved = read_saved_args(os.path.join(save_dir, "args.json"), build_parser())
    if args.load_args:
        for key in LOADED_ARGS:
            if key in saved:
                setattr(args, key, saved[key])
    for key in DISCRETE_FLAGS.values():
        if saved.get(key, 0) != getattr(args, key):
            raise UserError(f"{save_dir} was trained with {flag_of(key)} {saved.get(key, 0)}, "
                            f"not {getattr(args, key)}; add --load-args")
    train_seed = saved.get("seed")
    if train_seed is None:
        raise UserError(f"{save_dir}/args.json records no training seed")
    args.seed = evaluation_seed(args.seed, train_seed)
    return save_dir, saved


def saved_latent_params(save_dir, args):
    """Parameters stored at training time, or None for folders of the published scripts."""
    path = os.path.join(save_dir, spaces.PARAMS_FILE)
    if not os.path.exists(path):
        return None
    try:
        params = spaces.load_parameters(path)
    except Exception as err:
        raise UserError(f"cannot read {path}: {first_line(err)}") from None
    wanted = {k: v for k, v in params.items()
              if (k.startswith("Sigma_") and args.statistical_dependence)
              or (k in ("B", "a") and args.content_dependent_style)}
    needed = args.statistical_dependence + args.content_dependent_style
    found = any(k.startswith("Sigma_") for k in wanted) + ("B" in wanted)
    if found != needed:
        raise UserError(f"{path} was saved for other settings than the ones given; "
                        "add --load-args to evaluate with the training settings")
    return wanted


def published_latent_params(args, saved, save_dir):
    """Rebuild a published folder's latent parameters with the published recipe.

    The published scripts drew B and a on the training device, and a CUDA
    generator gives other numbers than the CPU one, so a folder trained with
    CUDA (args.json: no_cuda false) is rebuilt on CUDA, or refused without it."""
    device = "cpu"
    if args.content_dependent_style and not saved.get("no_cuda", False) and not args.cpu_generator:
        if not torch.cuda.is_available():
            raise UserError(f"{save_dir} comes from the published scripts, trained with CUDA: its B "
                            "and a were drawn by a CUDA generator, which this machine lacks. Evaluate "
                            "it on a GPU, or add --cpu-generator if it was in fact trained on a CPU")
        device = "cuda"
    return spaces.draw_parameters(saved["seed"], args.content_n, args.style_n, args.modality_n,
                                  args.statistical_dependence, args.content_dependent_style,
                                  args.independent_covariances, published=True,
                                  generator_device=device)


def generate_data(space, net, loss_fn, n_batches, generator, permuted_content):
    """Encodings, latent targets and mean loss of n_batches x 4096 fresh pairs."""
    out = {k: [] for k in (*TARGETS, "hz1", "hz2")}
    losses = []
    with torch.no_grad():
        for _ in range(n_batches):
            blocks = space.sample(2 * EVAL_BATCH, generator)
            losses.append(contrastive_loss(loss_fn, net, blocks, EVAL_BATCH).item())
            blocks = {k: v[:EVAL_BATCH] for k, v in blocks.items()}
            content = None
            if permuted_content:
                perm = torch.randperm(EVAL_BATCH, device=space.device, generator=generator)
                content = blocks["c"][perm]
                out["c'"].append(content.cpu().numpy())
            z1, z2 = space.views(blocks, content)
            hz1, hz2 = net(z1, z2)
            out["hz1"].append(hz1.cpu().numpy())
            out["hz2"].append(hz2.cpu().numpy())
            for k in ("c", "s", "s~", "m1", "m2"):
                out[k].append(blocks[k].cpu().numpy())
    data = {k: np.concatenate(v) if v else np.zeros((n_batches * EVAL_BATCH, 0)) for k, v in out.items()}
    return data, float(np.mean(losses))


def evaluate(args, device):
    save_dir, saved = load_for_evaluation(args)
    check_writable(save_dir, "results.csv")
    print(f"Evaluation seed {args.seed} (training seed {saved['seed']}); device {device}")
    set_seed(args.seed)
    params = saved_latent_params(save_dir, args)
    if params is None:
        params = published_latent_params(args, saved, save_dir)
    space = build_latent_space(args, saved["seed"], device, params)
    net = load_networks(args, save_dir, space.view_dim, device)

    loss_fn = LpSimCLRLoss()
    gen = torch.Generator(device=device).manual_seed(args.seed)
    val, val_loss = generate_data(space, net, loss_fn, args.num_eval_batches, gen, args.permuted_content)
    test, test_loss = generate_data(space, net, loss_fn, args.num_eval_batches, gen, args.permuted_content)
    print(f"<Val Loss>: {val_loss:.4f}\n<Test Loss>: {test_loss:.4f}")
    for split, data in (("validation", val), ("test", test)):
        if not (np.isfinite(data["hz1"]).all() and np.isfinite(data["hz2"]).all()):
            raise UserError(f"the encoders of {save_dir} give non-finite encodings on the {split} set "
                            "(a diverged training?)")

    results = probe_results(args, val, test, device)
    print("Regression results:")
    print(results.to_string(index=False))
    # Written after printing, so that a failed write (a full disk) loses nothing.
    atomic_write_json(os.path.join(save_dir, "evaluation.json"),
                      {**{k: v for k, v in vars(args).items()
                          if k not in ("model_dir", "model_id", "evaluate")},
                       "training_seed": saved["seed"], "val_loss": val_loss, "test_loss": test_loss,
                       "eval_batch": EVAL_BATCH, "command": " ".join(sys.argv)})
    atomic_write_csv(results, os.path.join(save_dir, "results.csv"), index=True)
    return results


def load_networks(args, save_dir, dim, device):
    f1 = load_into(mlp_shell(dim, args.n_mixing_layer), os.path.join(save_dir, "f1.pt"))
    f2 = f1 if args.shared_mixing else load_into(mlp_shell(dim, args.n_mixing_layer),
                                                 os.path.join(save_dir, "f2.pt"))
    g1, g2 = build_encoders(args, dim)
    load_into(g1, os.path.join(save_dir, "g1.pt"))
    if not args.shared_encoder:
        load_into(g2, os.path.join(save_dir, "g2.pt"))
    return PairEncoder(f1, g1, f2, g2).to(device).eval()


def probe_results(args, val, test, device):
    rows = []
    n_real = sum(val[k].shape[1] > 0 for k in TARGETS)
    per_encoding = n_real if args.mlp_eval else probes.krr_work_units(n_real)
    with tqdm(total=2 * per_encoding, desc="probes", unit="fit", dynamic_ncols=True) as bar:
        for enc in ("hz1", "hz2"):
            x_val, x_test = probes.standardize(val[enc], test[enc])
            scores = probes.regression_scores(
                x_val, x_test, {k: (val[k], test[k]) for k in TARGETS},
                nonlinear="mlp" if args.mlp_eval else "krr", device=device, progress=bar.update)
            rows += [(enc, k, *scores[k]) for k in TARGETS]
    return pd.DataFrame(rows, columns=["encoding", "predicted_factors", "r2_linear", "r2_nonlinear"])


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model_id is None and (args.evaluate or args.resume):
        raise UserError("--evaluate and --resume need the --model-id of a trained model")
    check_args(args)
    info = init_distributed(args.no_cuda)
    try:
        device = device_for(info, args.no_cuda)
        if args.evaluate:  # evaluation is cheap next to training: rank 0 alone does it
            return evaluate(args, device) if info.is_main else None
        if args.model_id is None:
            args.model_id = broadcast_object(new_model_id(), info)
        if args.seed is None:
            args.seed = broadcast_object(draw_seed(), info)
        return train(args, device, info, given_flags(parser, argv))
    finally:
        cleanup(info)


if __name__ == "__main__":
    run_cli(main)
