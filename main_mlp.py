"""Numerical simulation: multimodal contrastive learning block-identifies the shared content.

Latents (c, s, m1, m2) are mixed by two random invertible MLPs into two views;
two MLP encoders are trained with the symmetric L2 InfoNCE loss; `--evaluate`
then measures with linear and kernel-ridge probes which latent blocks the
encodings recover.

    python main_mlp.py --model-id demo --train-steps 5001 --batch-size 512
    python main_mlp.py --model-id demo --evaluate --load-args
"""
from cli import OneLineParser, UserError, check_finite, first_line, flag_of, run_cli  # first: a Ctrl-C while torch loads then gives one line
import os
import sys
from contextlib import nullcontext

import numpy as np
import pandas as pd
import torch
from torch import nn
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import metrics
import partial
import probes
import recipe
import run
import size_estimates
import spaces
import viewspec
from distributed import DistInfo, local_slice, mean_over_ranks, wrap_ddp
from encoders import simulation_encoder, whiten_first_layer_
from invertible_network_utils import construct_invertible_mlp, mlp_shell
from losses import (LEARN_TAU_HELP, TEMPERATURE, LpSimCLRLoss, MultiViewLpLoss, check_learn_tau, check_tau,
                    learned_temperature, load_temperature)
from facts import ARGS_FILE, DISCRETE_KEYS, INITS, RECIPE_DEFAULTS
from files import atomic_write_json
from utils import atomic_torch_save, load_into, set_seed, should_log

EVAL_BATCH = 4096
MAX_N_VIEWS = 16
MAX_EVAL_BATCHES = 1000
MAX_MIXING_LAYERS = 100
MAX_BATCH = 2**18  # 275 GB per batch x batch matrix of the loss: no device holds it
ENCODER_FILES = r"g\d+\.pt"  # g1.pt, g2.pt, ...: the trained encoders, saved after checkpoint.pt


def targets(n_views=2):
    """What the probes predict: c, s, s~, (s~3, ...,) m1, m2, (m3, ...,) and c', the permuted content."""
    return (*spaces.block_names(n_views), "c'")

# Settings that --load-args restores from args.json, as the published script does,
# plus the covariance option that only this implementation has.
LOADED_ARGS = ("style_change_prob", "statistical_dependence", "content_dependent_style",
               "modality_n", "style_n", "content_n", "encoding_size", "shared_mixing",
               "n_mixing_layer", "shared_encoder", "c_param", "m_param", "independent_covariances",
               "discrete_content", "discrete_style", "discrete_modality", "n_views", "tau",
               "view_latents", "content_coords", "learn_tau")
# The ones that every args.json holds, the published scripts' included: --load-args refuses a
# folder without one rather than build the model from the flag's default.
PUBLISHED_ARGS = LOADED_ARGS[:LOADED_ARGS.index("independent_covariances")]


def build_parser():
    p = OneLineParser(description=__doc__.split("\n\n")[0])  # a bad flag: one line, as every other bad input
    run.add_arguments(p, batch_size=6144, lr=1e-4, train_steps=300001, log_steps=1000)
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
    p.add_argument("--n-views", type=int, default=2, metavar="K",
                   help="views of the shared content, each with its own mixing function, "
                        "modality-specific block and style change (default 2, the paper's)")
    p.add_argument("--tau", type=float, default=1.0,
                   help="temperature of the L2 InfoNCE loss (default 1.0, the published one); "
                        "the loss divides the squared distances by it")
    p.add_argument("--learn-tau", action="store_true", help=LEARN_TAU_HELP)
    p.add_argument("--encoder-init", choices=INITS, default=RECIPE_DEFAULTS["encoder_init"],
                   help="initialisation of the encoders g1, g2, ...: torch's default Linear init "
                        "(the published scripts'), kaiming (He et al. for leaky ReLU, zero biases), "
                        "which finds the content in far fewer steps, orthogonal (the same gain, "
                        "(semi-)orthogonal weights, zero biases), or whitened (kaiming, the first "
                        "layer composed with the ZCA whitening of 8,192 sample views)")
    partial.add_arguments(p)  # --view-latents, --content-coords
    p.add_argument("--num-eval-batches", type=int, default=5)
    p.add_argument("--permuted-content", action="store_true")
    p.add_argument("--mlp-eval", action="store_true")
    p.add_argument("--estimate-content-size", action="store_true",
                   help="evaluation: also estimate the content size from the test encodings alone "
                        "(size_estimates.py; writes content_size.csv)")
    p.add_argument("--cpu-generator", action="store_true",
                   help="evaluating a folder of the published scripts without CUDA: state that its "
                        "B and a were drawn on the CPU (it was trained without a GPU)")
    return p


def check_args(args):
    run.check_arguments(args)
    at_least = {"--content-n": (args.content_n, 1), "--style-n": (args.style_n, 0),
                "--modality-n": (args.modality_n, 0), "--encoding-size": (args.encoding_size, 1),
                "--n-mixing-layer": (args.n_mixing_layer, 1), "--n-views": (args.n_views, 2),
                "--num-eval-batches": (args.num_eval_batches, 1)}
    for flag, (value, low) in at_least.items():
        if value < low:
            raise UserError(f"{flag} must be at least {low}, got {value}")
    for flag, value, most, why in (
            ("--num-eval-batches", args.num_eval_batches, MAX_EVAL_BATCHES, "each of 4,096 pairs, held in memory"),
            ("--n-mixing-layer", args.n_mixing_layer, MAX_MIXING_LAYERS, "the published mixing has 3"),
            ("--batch-size", args.batch_size, MAX_BATCH, "the loss forms batch x batch matrices")):
        if value > most:
            raise UserError(f"{flag} must be at most {most}, got {value} ({why})")
    if args.n_views > MAX_N_VIEWS:
        raise UserError(f"--n-views must be at most {MAX_N_VIEWS}, got {args.n_views} (the loss sums "
                        "K (K - 1) / 2 pairwise terms and each view writes its own networks)")
    if not 0.0 <= args.style_change_prob <= 1.0:
        raise UserError(f"--style-change-prob must be in [0, 1], got {args.style_change_prob}")
    for flag, value in (("--c-param", args.c_param), ("--m-param", args.m_param)):
        check_finite(flag, value)
    check_tau(args.tau)
    check_learn_tau(args)
    check_discrete(args)
    if getattr(args, "estimate_content_size", False) and getattr(args, "view_latents", None):
        raise UserError("--estimate-content-size assumes one content shared by all views; with "
                        "--view-latents each set of views has its own")
    partial.check_args(args, build_parser())


def check_discrete(args):
    discrete = [key for key in DISCRETE_KEYS.values() if getattr(args, key)]
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
        args.content_dependent_style, args.independent_covariances, n_views=args.n_views)
    discrete = {block: getattr(args, key) for block, key in DISCRETE_KEYS.items()}
    return spaces.LatentSpace(args.content_n, args.style_n, args.modality_n, args.style_change_prob,
                              args.c_param, args.m_param, params, device, discrete, args.n_views)


def build_encoders(args, dim):
    """g1, ..., gK (one shared network with --shared-encoder)."""
    def new():
        return simulation_encoder(dim, args.encoding_size, args.encoder_init)
    encoders = [new()]
    for _ in range(1, args.n_views):
        encoders.append(encoders[0] if args.shared_encoder else new())
    return encoders


class ViewEncoder(nn.Module):
    """h_k = g_k o f_k for every view k as one module, so that DDP wraps all encoders once.

    Keyed f1, g1, f2, g2, ... (shared networks appear under several keys);
    forward takes the K views and returns {"hz1": h1(z1), ..., "hzK": hK(zK)}, float32.
    `autocast` (a context factory: --precision while training) covers the encoders only:
    the mixing functions make the observations in float32."""

    def __init__(self, mixings, encoders):
        super().__init__()
        self.nets = nn.ModuleDict()
        for k, (f, g) in enumerate(zip(mixings, encoders), 1):
            self.nets[f"f{k}"], self.nets[f"g{k}"] = f, g
        self.n_views = len(encoders)

    def encoders(self):
        """{"g1": g1, ...}: the trained networks, under their checkpoint names."""
        return {f"g{k}": self.nets[f"g{k}"] for k in range(1, self.n_views + 1)}

    def mixings(self):
        return {f"f{k}": self.nets[f"f{k}"] for k in range(1, self.n_views + 1)}

    def encode(self, view, z, autocast=nullcontext):
        x = self.nets[f"f{view}"](z)
        with autocast():
            return self.nets[f"g{view}"](x).float()

    def forward(self, *views, autocast=nullcontext):
        names = [f"hz{k}" for k in range(1, self.n_views + 1)]
        if len(set(map(id, self.mixings().values()))) == 1 and len(set(map(id, self.encoders().values()))) == 1:
            return dict(zip(names, self.encode(1, torch.cat(views), autocast).chunk(self.n_views)))  # one pass
        return {name: self.encode(k, z, autocast) for k, (name, z) in enumerate(zip(names, views), 1)}


def contrastive_loss(loss_fn, net, blocks, n, autocast=nullcontext, views=spaces.LatentSpace.views):
    """The loss (a losses.MultiViewLpLoss, or partial.SetLoss) of the first n tuples of `blocks`
    against the rest as negatives; tuples and negatives go through each network in one pass.
    `views`: the space's cut of blocks into views."""
    return loss_fn(list(net(*views(blocks), autocast=autocast).values()), n)


def local_rows(blocks, batch_size, info):
    """This rank's pairs and negatives out of a global batch of 2 x batch_size rows."""
    if not info.enabled:
        return blocks
    sl = local_slice(batch_size, info)
    return {k: torch.cat((v[:batch_size][sl], v[batch_size:][sl])) for k, v in blocks.items()}


def simulation_loss(args, info=DistInfo(), tau=None):
    """The training and evaluation loss: L2 InfoNCE at temperature --tau (1.0 as published),
    or `tau`, a LearnedTemperature (--learn-tau); with --view-latents summed over the sets of
    views (partial.SetLoss)."""
    tau = getattr(args, "tau", 1.0) if tau is None else tau
    if getattr(args, "view_latents", None):
        return partial.SetLoss(partial.layout(args), info, base=LpSimCLRLoss(tau=tau))
    return MultiViewLpLoss(info, base=LpSimCLRLoss(tau=tau))


def train_step(space, net, loss_fn, optimizer, params, args, generator, info=DistInfo()):
    """One optimisation step on a fresh global batch of pairs and negatives, sampled together:
    forward (the encoders under --precision's autocast), loss, backward, clipping, Adam.

    Every rank draws the same global batch and keeps its slice, so a seed gives
    the same samples whatever the number of processes."""
    blocks = local_rows(space.sample(2 * args.batch_size, generator), args.batch_size, info)
    loss = contrastive_loss(loss_fn, net, blocks, args.batch_size // info.world_size,
                            lambda: recipe.autocast(args, space.device), views=space.views)
    recipe.descend(loss, optimizer, params, args)
    return mean_over_ranks(loss.detach(), info)


def quick_probe(space, net, loss_fn, generator, args, save_dir="", step=0):
    """Loss on a fresh batch and linear R^2 of each latent block from h1 (75/25 split);
    with --view-latents, of each set's content (partial.quick_probe)."""
    if getattr(args, "view_latents", None):
        loss, r2 = partial.quick_probe(space, net, loss_fn, generator, partial.layout(args), EVAL_BATCH, args.seed)
        if r2 is None or not np.isfinite(loss):
            raise run.diverged(step, save_dir, args)
        return loss, r2
    with torch.no_grad():
        blocks = space.sample(2 * EVAL_BATCH, generator)
        loss = contrastive_loss(loss_fn, net, blocks, EVAL_BATCH).item()
        blocks = {k: v[:EVAL_BATCH] for k, v in blocks.items()}
        hz1 = net.encode(1, space.views(blocks)[0]).cpu().numpy()
    if not (np.isfinite(loss) and np.isfinite(hz1).all()):
        raise run.diverged(step, save_dir, args)
    hz1 = (hz1 - hz1.mean(0)) / np.where(hz1.std(0) > 0, hz1.std(0), 1.0)
    r2 = {}
    for k in spaces.block_names(space.n_views):
        y = blocks[k].cpu().numpy()
        if y.shape[1]:
            x_tr, x_te, y_tr, y_te = train_test_split(hz1, y, random_state=args.seed)
            r2[k] = probes.linear_r2(x_tr, y_tr, x_te, y_te)
    return loss, r2


def build_training(args, device):
    space, net = build_networks(args, device)
    if args.encoder_init == "whitened":
        whiten_encoders_(space, net, args.seed)
    return space, net


def build_networks(args, device):
    """The latent space and the networks of a new training, drawn from --seed."""
    if args.view_latents:
        plan = partial.layout(args)
        space = partial.PartialSpace(plan.views, device)
        mixings, encoders = partial.build_networks(args, plan, np.random.default_rng(args.seed))
        return space, ViewEncoder(mixings, encoders).to(device)
    space = build_latent_space(args, args.seed, device)
    rng = np.random.default_rng(args.seed)
    dim = space.view_dim
    try:
        mixings = [construct_invertible_mlp(dim, args.n_mixing_layer, rng=rng)]
        for _ in range(1, args.n_views):
            mixings.append(mixings[0] if args.shared_mixing
                           else construct_invertible_mlp(dim, args.n_mixing_layer, rng=rng))
        return space, ViewEncoder(mixings, build_encoders(args, dim)).to(device)
    except (MemoryError, RuntimeError) as err:  # e.g. --encoding-size 1000000000
        raise UserError(f"the networks for these sizes do not fit in memory (latent dimension {dim}, "
                        f"--encoding-size {args.encoding_size}): {first_line(err)}") from None


def whiten_encoders_(space, net, seed, n=8192):
    """--encoder-init whitened: whiten each encoder's first layer for the views it reads,
    from n samples of their own random stream (the training's streams stay as they were)."""
    gen = torch.Generator(device=space.device).manual_seed(seed + 2)
    with torch.no_grad():
        views = space.views(space.sample(n, gen))
        inputs = {}
        for k, z in enumerate(views, 1):
            g = net.nets[f"g{k}"]
            inputs.setdefault(id(g), (g, []))[1].append(net.nets[f"f{k}"](z))
    for g, xs in inputs.values():  # a shared encoder: whitened for all views together
        whiten_first_layer_(g, torch.cat(xs))


def save_checkpoint(save_dir, trained, optimizer, step, gen, probe_gen):
    run.save_checkpoint(save_dir, step, trained, optimizer,
                        generator=gen.get_state(), probe_generator=probe_gen.get_state())


# --resume may change these: they steer --evaluate alone, which a training ignores, resumed or not.
RESUME_HONOURED = (*run.RESUME_HONOURED, "num_eval_batches", "permuted_content", "mlp_eval", "cpu_generator")


def train(args, device, info=DistInfo(), given=()):
    with run.training_folder(args, build_parser(), info, given, ENCODER_FILES, check_model_args,
                             honoured=RESUME_HONOURED) as save_dir:
        if not args.resume and info.is_main and args.view_latents and partial.undersized(partial.layout(args)):
            name, width, size = partial.undersized(partial.layout(args))
            print(f"warning: --encoding-size {width} gives the set of views {name} fewer coordinates than "
                  f"its content has latents ({size}): that content cannot be recovered in full", file=sys.stderr)
        set_seed(args.seed)
        space, net = build_training(args, device)
        if info.is_main:
            atomic_write_json(os.path.join(save_dir, ARGS_FILE), vars(args))
        if info.is_main and not args.resume:
            spaces.save_parameters({**space.params, **identity(args)},
                                   os.path.join(save_dir, spaces.PARAMS_FILE), atomic_torch_save)
            for name, f in net.mixings().items():
                atomic_torch_save(f.state_dict(), os.path.join(save_dir, f"{name}.pt"))
        run_training(args, device, info, save_dir, space, net)


def run_training(args, device, info, save_dir, space, net):
    tau = learned_temperature(args, device, info)
    trained = {**net.encoders(), **({TEMPERATURE: tau} if tau is not None else {})}
    params = list({id(p): p for m in trained.values() for p in m.parameters()}.values())
    optimizer = recipe.build_optimizer(recipe.undecayed_last(params, tau is not None), args)
    loss_fn = simulation_loss(args, info, tau)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    probe_gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    first = 1
    if args.resume:
        def restore(state):
            gen.set_state(state["generator"])
            probe_gen.set_state(state["probe_generator"])
        first = run.load_checkpoint(save_dir, trained, optimizer, restore, args.train_steps)
    ddp_net = wrap_ddp(net, info, device)
    curve = metrics.open_log(save_dir, first, args, info.is_main)  # metrics.csv

    bar = tqdm(range(first, args.train_steps + 1), desc="train", unit="step", dynamic_ncols=True,
               initial=first - 1, total=args.train_steps, disable=not info.is_main)
    with run.stop_signals() as stop:  # a scheduler's stop: checkpoint, then end
        for step in bar:
            recipe.set_lr(optimizer, step, args)
            loss = train_step(space, ddp_net, loss_fn, optimizer, params, args, gen, info)
            logging = should_log(step, args.log_steps, args.train_steps)
            if logging or step % run.READ_LOSS_EVERY == 0:
                value = loss.item()
                run.check_finite_training(step, save_dir, args, value, net.encoders().values() if logging else ())
                bar.set_postfix(loss=f"{value:.4f}")
            if logging and info.is_main:
                # Probe first: a step whose encodings are no longer finite is not saved.
                # rank 0 alone: a loss that gathers nothing
                val_loss, r2 = quick_probe(space, net, simulation_loss(args, tau=tau), probe_gen, args, save_dir, step)
                learned = {"tau": float(tau().detach())} if tau is not None else {}
                curve.write(step, lr=optimizer.param_groups[0]["lr"], train_loss=value, fresh_batch_loss=val_loss,
                            **learned, **{f"r2_{k}": v for k, v in r2.items()})  # before the checkpoint: see metrics.py
                save_checkpoint(save_dir, trained, optimizer, step, gen, probe_gen)
                tqdm.write(f"step {step}: train loss {value:.6f} | fresh-batch loss {val_loss:.4f} | "
                           "linear R^2 from hz1: "
                           + " ".join(f"{k} {v:.3f}" for k, v in r2.items()))
            if stop:
                run.stop_training(step, lambda: save_checkpoint(save_dir, trained, optimizer, step, gen, probe_gen), info)
    bar.close()
    curve.close()
    if info.is_main:
        print(f"saved model to {save_dir}")


def load_for_evaluation(args):
    save_dir, saved = run.evaluation_folder(args, build_parser(), LOADED_ARGS, need_seed=True,
                                            check=check_model_args, required=PUBLISHED_ARGS)
    if not args.load_args:  # with it, check_model_args has compared args.json's view list
        check_identity(save_dir, args, "the command line")
    return save_dir, saved


def check_model_args(args):
    """check_args for settings restored from a model folder's args.json (--resume, --load-args):
    the model's own view list first, then the flags that depend on it, so that an edited view
    list is blamed on itself and not on a flag it makes meaningless."""
    save_dir = os.path.join(args.model_dir, args.model_id)
    check_identity(save_dir, args, os.path.join(save_dir, ARGS_FILE))
    check_args(args)


def identity(args):
    """What a model's networks were built for beyond their shapes, saved in latent_space.pt: the
    view list (its order gives each encoding coordinate its latent; "" for none), the encoding
    coordinates of each set of views (--content-coords; "truth" where not given), and which
    networks the views share (one file loaded for all views). Same shapes, another model."""
    return {"view_latents": args.view_latents or "",
            "content_coords": (args.content_coords or "truth") if args.view_latents else "",
            "shared_encoder": bool(args.shared_encoder), "shared_mixing": bool(args.shared_mixing)}


def check_identity(save_dir, args, source):
    """Refuse to resume or evaluate a model as another one: a setting of identity() that differs
    from the one latent_space.pt records (a reordered view list fits the same weights). Folders
    saved before a setting was recorded, and the published scripts', have nothing to compare."""
    params = read_latent_file(save_dir)
    if params is None:
        return
    given = identity(args)
    for key, recorded in params.items():
        if key not in given or same_identity(key, recorded, given[key]):
            continue
        raise UserError(f"{save_dir} holds a model trained with {describe_identity(key, recorded)} "
                        f"({spaces.PARAMS_FILE}), but {source} gives {describe_identity(key, given[key])}")


def same_identity(key, recorded, given):
    if key == "view_latents":
        return viewspec.same(recorded or None, given or None)
    return recorded == given


def describe_identity(key, value):
    flag = flag_of(key)
    if isinstance(value, bool) or not value:
        return flag if value else f"no {flag}"
    return f"{flag} {value}"


def read_latent_file(save_dir):
    """latent_space.pt of a model folder, or None where there is none (the published scripts')."""
    path = os.path.join(save_dir, spaces.PARAMS_FILE)
    if not os.path.exists(path):
        return None
    try:
        params = spaces.load_parameters(path)
    except Exception as err:
        raise UserError(f"cannot read {path}: {first_line(err)}") from None
    if not isinstance(params, dict):
        raise UserError(f"{path} does not hold a model's latent parameters (a dict)")
    return params


def saved_latent_params(save_dir, args):
    """Parameters stored at training time, or None for folders of the published scripts."""
    params = read_latent_file(save_dir)
    if params is None:
        return None
    path = os.path.join(save_dir, spaces.PARAMS_FILE)
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
                                  generator_device=device, n_views=args.n_views)


def encode_batches(space, net, loss_fn, n_batches, generator, permuted_content):
    """Encodings, latent targets and mean loss of n_batches x 4096 fresh pairs (or K-tuples)."""
    out = {k: [] for k in (*targets(space.n_views), *(f"hz{k}" for k in range(1, space.n_views + 1)))}
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
            for name, h in net(*space.views(blocks, content)).items():
                out[name].append(h.cpu().numpy())
            for k in spaces.block_names(space.n_views):
                out[k].append(blocks[k].cpu().numpy())
    data = {k: np.concatenate(v) if v else np.zeros((n_batches * EVAL_BATCH, 0)) for k, v in out.items()}
    return data, float(np.mean(losses))


def evaluate(args, device):
    save_dir, saved = load_for_evaluation(args)
    print(f"Evaluation seed {args.seed} (training seed {saved['seed']}); device {device}")
    set_seed(args.seed)
    if args.view_latents:
        return evaluate_partial(args, device, save_dir, saved)
    space, net = load_trained(args, save_dir, saved, device)

    loss_fn = simulation_loss(args, tau=load_temperature(args, save_dir, device))  # --tau: give it, or --load-args
    gen = torch.Generator(device=device).manual_seed(args.seed)
    val, val_loss = encode_batches(space, net, loss_fn, args.num_eval_batches, gen, args.permuted_content)
    test, test_loss = encode_batches(space, net, loss_fn, args.num_eval_batches, gen, args.permuted_content)
    print(f"<Val Loss>: {val_loss:.4f}\n<Test Loss>: {test_loss:.4f}")
    for split, data in (("validation", val), ("test", test)):
        if not all(np.isfinite(data[f"hz{k}"]).all() for k in range(1, args.n_views + 1)):
            raise UserError(f"the encoders of {save_dir} give non-finite encodings on the {split} set "
                            "(a diverged training?)")

    if args.estimate_content_size:  # before results.csv, which marks a finished evaluation
        size_estimates.write(save_dir, {f"hz{k}": test[f"hz{k}"] for k in range(1, args.n_views + 1)}, args.content_n)
    results = probe_results(args, val, test, device)
    print("Regression results:")
    print(results.to_string(index=False))
    if not args.permuted_content:
        print(verdict(results, independent=not (args.statistical_dependence or args.content_dependent_style)))
    # Evaluation samples batches of EVAL_BATCH pairs, whatever --batch-size says.
    run.save_results(save_dir, results, args, saved, unused=("batch_size", "encoder_init"),
                     val_loss=val_loss, test_loss=test_loss, eval_batch=EVAL_BATCH,
                     mcc=content_mcc(test, args.n_views))
    return results


# The claim, stated so that it holds on any CPU: content found, nothing else (nonlinear R²).
CONTENT_FOUND, NOTHING_ELSE = 0.9, 0.05


def verdict(results, independent=True):
    """One line: does every encoding recover the content and, where the blocks are independent
    (no --statistical-dependence, no --content-dependent-style), nothing else?
    Dependent blocks are partly predictable from the content itself, so they are not judged."""
    r2 = results.dropna(subset=["r2_nonlinear"])
    content = r2[r2.predicted_factors == "c"].r2_nonlinear.min()
    others = r2[~r2.predicted_factors.isin(("c", "c'"))].r2_nonlinear.max() if independent else float("nan")
    found = content >= CONTENT_FOUND and not others > NOTHING_ELSE
    rule = f"content >= {CONTENT_FOUND}" + (f", every other block <= {NOTHING_ELSE}" if independent else "")
    seen = f"content at least {content:.3f}" + (f", other blocks at most {others:.3f}" if others == others else "")
    return f"Verdict: {'as the theory predicts' if found else 'NOT as the theory predicts'} ({rule}; nonlinear R²: {seen})"


def content_mcc(test, n_views):
    """{"hz1": {"pearson": MCC, "spearman": MCC}, ...}: the content c against each view's whole
    encoding on the test set (probes.mcc; see docs/partial.md for what it can and cannot show)."""
    return {f"hz{k}": {method: probes.mcc(test["c"], test[f"hz{k}"], method)
                       for method in ("pearson", "spearman")} for k in range(1, n_views + 1)}


def evaluate_partial(args, device, save_dir, saved):
    """--view-latents: results.csv (every latent from every view's encoding) and partial.csv
    (every set's content and the rest from each of its views' coordinates for the set)."""
    plan = partial.layout(args)
    space = partial.PartialSpace(plan.views, device)
    mixings, encoders = partial.network_shells(args, plan)
    for k, (f, g) in enumerate(zip(mixings, encoders), 1):
        load_into(f, os.path.join(save_dir, f"f{k}.pt"))
        load_into(g, os.path.join(save_dir, f"g{k}.pt"))
    net = ViewEncoder(mixings, encoders).to(device).eval()
    loss_fn = simulation_loss(args, tau=load_temperature(args, save_dir, device))
    gen = torch.Generator(device=device).manual_seed(args.seed)
    val, val_loss = partial.encode(space, net, loss_fn, args.num_eval_batches, EVAL_BATCH, gen)
    test, test_loss = partial.encode(space, net, loss_fn, args.num_eval_batches, EVAL_BATCH, gen)
    print(f"<Val Loss>: {val_loss:.4f}\n<Test Loss>: {test_loss:.4f}")
    if not all(np.isfinite(data[f"hz{k}"]).all() for data in (val, test) for k in range(1, space.n_views + 1)):
        raise UserError(f"the encoders of {save_dir} give non-finite encodings (a diverged training?)")
    columns = {**RESULT_PROBES, **({"r2_nonlinear": "mlp"} if args.mlp_eval else {})}
    results = partial.latent_rows(plan, val, test, columns, device)
    sets = partial.set_rows(plan, val, test, columns["r2_nonlinear"], device)
    print("Regression results:\n" + results.to_string(index=False))
    print("Content of each set of views:\n" + sets.to_string(index=False))
    run.save_results(save_dir, results, args, saved, unused=("batch_size", "encoder_init"),
                     tables={partial.FILE: sets}, val_loss=val_loss, test_loss=test_loss,
                     eval_batch=EVAL_BATCH, encoding_sizes=plan.sizes)
    return results


def load_trained(args, save_dir, saved, device):
    """(latent space, networks) of a trained model folder, ours or the published scripts'."""
    params = saved_latent_params(save_dir, args)
    if params is None:
        params = published_latent_params(args, saved, save_dir)
    space = build_latent_space(args, saved["seed"], device, params)
    return space, load_networks(args, save_dir, space.view_dim, device)


def load_networks(args, save_dir, dim, device):
    """The saved f1.pt, ..., g1.pt, ... (a shared network is loaded from its first file)."""
    views = range(1, args.n_views + 1)
    mixings = [load_into(mlp_shell(dim, args.n_mixing_layer), os.path.join(save_dir, "f1.pt"))]
    mixings += [mixings[0] if args.shared_mixing else load_into(
        mlp_shell(dim, args.n_mixing_layer), os.path.join(save_dir, f"f{k}.pt")) for k in views[1:]]
    encoders = build_encoders(args, dim)
    for k in views[:1] if args.shared_encoder else views:
        load_into(encoders[k - 1], os.path.join(save_dir, f"g{k}.pt"))
    return ViewEncoder(mixings, encoders).to(device).eval()


# results.csv columns (the published names) and the probe behind each.
RESULT_PROBES = {"r2_linear": "linear", "r2_nonlinear": "kernel_ridge"}


def probe_results(args, val, test, device):
    """Every latent block predicted from every view's encoding: rows hz1 x targets, ..., hzK x targets."""
    columns = {**RESULT_PROBES, **({"r2_nonlinear": "mlp"} if args.mlp_eval else {})}
    rows = []
    names = targets(args.n_views)
    n_real = sum(val[k].shape[1] > 0 for k in names)
    per_encoding = n_real if args.mlp_eval else probes.krr_work_units(n_real)
    encodings = [f"hz{k}" for k in range(1, args.n_views + 1)]
    with tqdm(total=len(encodings) * per_encoding, desc="probes", unit="fit", dynamic_ncols=True) as bar:
        for enc in encodings:
            x_val, x_test = probes.standardize(val[enc], test[enc])
            scores = probes.evaluate_probes(list(columns.values()), x_val, x_test,
                                            {k: (val[k], test[k]) for k in names}, device=device,
                                            progress=bar.update)
            rows += [(enc, k, *(scores[k][probe] for probe in columns.values())) for k in names]
    return pd.DataFrame(rows, columns=["encoding", "predicted_factors", *columns])


main = run.entry_point(build_parser, check_args, train, evaluate)


if __name__ == "__main__":
    run_cli(main)
