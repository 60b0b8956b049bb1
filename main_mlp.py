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

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import probes
import spaces
from encoders import simulation_encoder
from invertible_network_utils import construct_invertible_mlp, mlp_shell
from losses import LpSimCLRLoss, symmetric_lp_loss
from utils import (UserError, atomic_torch_save, atomic_write_csv, atomic_write_json, draw_seed,
                   get_device, load_into, new_model_id, read_json, run_cli, set_seed, should_log)

EVAL_BATCH = 4096
TARGETS = ("c", "s", "s~", "m1", "m2", "c'")
# Settings that --load-args restores from args.json, as the published script does,
# plus the covariance option that only this implementation has.
LOADED_ARGS = ("style_change_prob", "statistical_dependence", "content_dependent_style",
               "modality_n", "style_n", "content_n", "encoding_size", "shared_mixing",
               "n_mixing_layer", "shared_encoder", "c_param", "m_param", "independent_covariances")


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
        if not value > 0:
            raise UserError(f"{flag} must be positive, got {value}")


def build_latent_space(args, train_seed, device, saved_params=None):
    params = saved_params if saved_params is not None else spaces.draw_parameters(
        train_seed, args.content_n, args.style_n, args.modality_n, args.statistical_dependence,
        args.content_dependent_style, args.independent_covariances)
    return spaces.LatentSpace(args.content_n, args.style_n, args.modality_n, args.style_change_prob,
                              args.c_param, args.m_param, params, device)


def build_encoders(args, dim):
    g1 = simulation_encoder(dim, args.encoding_size)
    g2 = g1 if args.shared_encoder else simulation_encoder(dim, args.encoding_size)
    return g1, g2


def encode_views(f1, g1, f2, g2, z1, z2):
    """h1(z1), h2(z2); one pass through one network when both views share it."""
    if f1 is f2 and g1 is g2:
        return g1(f1(torch.cat((z1, z2)))).chunk(2)
    return g1(f1(z1)), g2(f2(z2))


def contrastive_loss(loss_fn, models, blocks, n):
    """Symmetric L2 InfoNCE of the first n pairs of `blocks` against the rest as negatives.

    Pairs and negatives go through each network in one pass."""
    h1, h2 = encode_views(*models, *spaces.LatentSpace.views(blocks))
    return symmetric_lp_loss(loss_fn, h1[:n], h2[:n], h1[n:], h2[n:])


def train_step(space, models, loss_fn, optimizer, params, batch_size, generator):
    """One optimisation step on a fresh batch; pairs and negatives are sampled together."""
    loss = contrastive_loss(loss_fn, models, space.sample(2 * batch_size, generator), batch_size)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm=2.0)
    optimizer.step()
    return loss.detach()


def quick_probe(space, models, loss_fn, generator, seed):
    """Loss on a fresh batch and linear R^2 of each latent block from h1 (75/25 split)."""
    with torch.no_grad():
        blocks = space.sample(2 * EVAL_BATCH, generator)
        loss = contrastive_loss(loss_fn, models, blocks, EVAL_BATCH).item()
        blocks = {k: v[:EVAL_BATCH] for k, v in blocks.items()}
        hz1 = models[1](models[0](space.views(blocks)[0])).cpu().numpy()
    hz1 = (hz1 - hz1.mean(0)) / np.where(hz1.std(0) > 0, hz1.std(0), 1.0)
    r2 = {}
    for k in ("c", "s", "s~", "m1", "m2"):
        y = blocks[k].cpu().numpy()
        if y.shape[1]:
            x_tr, x_te, y_tr, y_te = train_test_split(hz1, y, random_state=seed)
            r2[k] = probes.linear_r2(x_tr, y_tr, x_te, y_te)
    return loss, r2


def train(args, device):
    save_dir = os.path.join(args.model_dir, args.model_id)
    if os.path.exists(os.path.join(save_dir, "args.json")):
        raise UserError(f"model folder {save_dir} already holds a model; "
                        "choose another --model-id or add --evaluate")
    atomic_write_json(os.path.join(save_dir, "args.json"), vars(args))
    set_seed(args.seed)

    space = build_latent_space(args, args.seed, device)
    rng = np.random.default_rng(args.seed)
    dim = space.view_dim
    f1 = construct_invertible_mlp(dim, args.n_mixing_layer, rng=rng)
    f2 = f1 if args.shared_mixing else construct_invertible_mlp(dim, args.n_mixing_layer, rng=rng)
    g1, g2 = build_encoders(args, dim)
    f1, f2, g1, g2 = (m.to(device) for m in (f1, f2, g1, g2))
    spaces.save_parameters(space.params, os.path.join(save_dir, spaces.PARAMS_FILE), atomic_torch_save)
    for name, module in (("f1", f1), ("f2", f2)):
        atomic_torch_save(module.state_dict(), os.path.join(save_dir, f"{name}.pt"))

    models = (f1, g1, f2, g2)
    params = list({id(p): p for p in [*g1.parameters(), *g2.parameters()]}.values())
    optimizer = torch.optim.Adam(params, lr=args.lr)
    loss_fn = LpSimCLRLoss()
    gen = torch.Generator(device=device).manual_seed(args.seed)
    probe_gen = torch.Generator(device=device).manual_seed(args.seed + 1)

    bar = tqdm(range(1, args.train_steps + 1), desc="train", unit="step", dynamic_ncols=True)
    for step in bar:
        loss = train_step(space, models, loss_fn, optimizer, params, args.batch_size, gen)

        logging = should_log(step, args.log_steps, args.train_steps)
        if logging or step % 20 == 0:  # reading the loss synchronises CUDA: not every step
            value = loss.item()
            if not np.isfinite(value):
                raise UserError(f"training loss became non-finite by step {step}; "
                                f"the last good encoders in {save_dir} are kept")
            bar.set_postfix(loss=f"{value:.4f}")
        if logging:
            for name, module in (("g1", g1), ("g2", g2)):
                atomic_torch_save(module.state_dict(), os.path.join(save_dir, f"{name}.pt"))
            val_loss, r2 = quick_probe(space, models, loss_fn, probe_gen, args.seed)
            tqdm.write(f"step {step}: loss {val_loss:.4f} | linear R^2 from hz1: "
                       + " ".join(f"{k} {v:.3f}" for k, v in r2.items()))
    bar.close()
    print(f"saved model to {save_dir}")


def load_for_evaluation(args):
    save_dir = os.path.join(args.model_dir, args.model_id)
    if not os.path.isdir(save_dir):
        raise UserError(f"model folder not found: {save_dir}")
    saved = read_json(os.path.join(save_dir, "args.json"), "args.json")
    if args.load_args:
        for key in LOADED_ARGS:
            if key in saved:
                setattr(args, key, saved[key])
    train_seed = saved.get("seed")
    if train_seed is None:
        raise UserError(f"{save_dir}/args.json records no training seed")
    if args.seed is None:
        args.seed = draw_seed(exclude=train_seed)
    elif args.seed == train_seed:
        raise UserError(f"--seed {args.seed} equals the training seed; evaluation needs fresh samples")
    return save_dir, train_seed


def saved_latent_params(save_dir, args):
    """Parameters stored at training time, or None for folders of the published scripts."""
    path = os.path.join(save_dir, spaces.PARAMS_FILE)
    if not os.path.exists(path):
        return None
    try:
        params = spaces.load_parameters(path)
    except Exception as err:
        raise UserError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
    wanted = {k: v for k, v in params.items()
              if (k.startswith("Sigma_") and args.statistical_dependence)
              or (k in ("B", "a") and args.content_dependent_style)}
    needed = args.statistical_dependence + args.content_dependent_style
    found = any(k.startswith("Sigma_") for k in wanted) + ("B" in wanted)
    if found != needed:
        raise UserError(f"{path} was saved for other settings than the ones given; "
                        "add --load-args to evaluate with the training settings")
    return wanted


def generate_data(space, models, loss_fn, n_batches, generator, permuted_content):
    """Encodings, latent targets and mean loss of n_batches x 4096 fresh pairs."""
    f1, g1, f2, g2 = models
    out = {k: [] for k in (*TARGETS, "hz1", "hz2")}
    losses = []
    with torch.no_grad():
        for _ in range(n_batches):
            blocks = space.sample(2 * EVAL_BATCH, generator)
            losses.append(contrastive_loss(loss_fn, models, blocks, EVAL_BATCH).item())
            blocks = {k: v[:EVAL_BATCH] for k, v in blocks.items()}
            content = None
            if permuted_content:
                perm = torch.randperm(EVAL_BATCH, device=space.device, generator=generator)
                content = blocks["c"][perm]
                out["c'"].append(content.cpu().numpy())
            z1, z2 = space.views(blocks, content)
            hz1, hz2 = encode_views(f1, g1, f2, g2, z1, z2)
            out["hz1"].append(hz1.cpu().numpy())
            out["hz2"].append(hz2.cpu().numpy())
            for k in ("c", "s", "s~", "m1", "m2"):
                out[k].append(blocks[k].cpu().numpy())
    data = {k: np.concatenate(v) if v else np.zeros((n_batches * EVAL_BATCH, 0)) for k, v in out.items()}
    return data, float(np.mean(losses))


def evaluate(args, device):
    save_dir, train_seed = load_for_evaluation(args)
    set_seed(args.seed)
    space = build_latent_space(args, train_seed, device, saved_latent_params(save_dir, args))
    dim = space.view_dim
    f1 = load_into(mlp_shell(dim, args.n_mixing_layer), os.path.join(save_dir, "f1.pt"))
    f2 = f1 if args.shared_mixing else load_into(mlp_shell(dim, args.n_mixing_layer),
                                                 os.path.join(save_dir, "f2.pt"))
    g1, g2 = build_encoders(args, dim)
    load_into(g1, os.path.join(save_dir, "g1.pt"))
    if not args.shared_encoder:
        load_into(g2, os.path.join(save_dir, "g2.pt"))
    models = tuple(m.to(device).eval() for m in (f1, g1, f2, g2))

    loss_fn = LpSimCLRLoss()
    gen = torch.Generator(device=device).manual_seed(args.seed)
    val, val_loss = generate_data(space, models, loss_fn, args.num_eval_batches, gen, args.permuted_content)
    test, test_loss = generate_data(space, models, loss_fn, args.num_eval_batches, gen, args.permuted_content)
    print(f"<Val Loss>: {val_loss:.4f}\n<Test Loss>: {test_loss:.4f}")

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
    results = pd.DataFrame(rows, columns=["encoding", "predicted_factors", "r2_linear", "r2_nonlinear"])
    atomic_write_csv(results, os.path.join(save_dir, "results.csv"))
    print("Regression results:")
    print(results.to_string(index=False))
    return results


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.model_id is None:
        if args.evaluate:
            raise UserError("--evaluate needs --model-id of a trained model")
        args.model_id = new_model_id()
    check_args(args)
    device = get_device(args.no_cuda)
    if args.evaluate:
        return evaluate(args, device)
    if args.seed is None:
        args.seed = draw_seed()
    return train(args, device)


if __name__ == "__main__":
    run_cli(main)
