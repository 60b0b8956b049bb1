"""Numerical simulation: multimodal contrastive learning block-identifies the shared content.

Latents (c, s, m1, m2) are mixed by two random invertible MLPs into two views;
two MLP encoders are trained with the symmetric L2 InfoNCE loss; `--evaluate`
then measures with linear and kernel-ridge probes which latent blocks the
encodings recover. The training loop and the evaluation below are the same for
every setting; what differs between the paper's shared content and partial
observability (--view-latents) lives behind settings.py's interface.

    python main_mlp.py --model-id demo --train-steps 5001 --batch-size 512
    python main_mlp.py --model-id demo --evaluate --load-args
"""
from cli import OneLineParser, UserError, check_finite, flag_of, run_cli  # first: a Ctrl-C while torch loads then gives one line
import os
import sys

import numpy as np
import torch
from tqdm import tqdm

import dependencies
import metrics
import partial
import recipe
import run
import settings
import size_estimates
import spaces
import viewspec
from distributed import DistInfo, local_slice, mean_over_ranks, wrap_ddp
from encoders import contrastive_loss, whiten_first_layer_
from losses import LEARN_TAU_HELP, TEMPERATURE, check_learn_tau, check_tau, learned_temperature, load_temperature
from facts import ARGS_FILE, CONTENT_COORDS, DISCRETE_KEYS, INITS, RECIPE_DEFAULTS
from files import atomic_write_json
from utils import atomic_torch_save, set_seed, should_log

EVAL_BATCH = 4096
MAX_N_VIEWS = 16
MAX_EVAL_BATCHES = 1000
MAX_MIXING_LAYERS = 100
MAX_BATCH = 2**18  # 275 GB per batch x batch matrix of the loss: no device holds it
ENCODER_FILES = r"g\d+\.pt"  # g1.pt, g2.pt, ...: the trained encoders, saved after checkpoint.pt

# Settings that --load-args restores from args.json, as the published script does. Every
# args.json holds them, the published scripts' included: --load-args refuses a folder without
# one rather than build the model from the flag's default.
PUBLISHED_ARGS = ("style_change_prob", *(d.key for d in dependencies.REGISTRY if d.published),
                  "modality_n", "style_n", "content_n", "encoding_size", "shared_mixing",
                  "n_mixing_layer", "shared_encoder", "c_param", "m_param")
# The ones that only this implementation has.
OWN_ARGS = ("independent_covariances", "discrete_content", "discrete_style", "discrete_modality", "n_views",
            "tau", "view_latents", "content_coords", "learn_tau")


def loaded_args():
    """Every setting that --load-args restores: the above and the table's other latent dependencies."""
    return (*PUBLISHED_ARGS, *OWN_ARGS, *(d.key for d in dependencies.REGISTRY if not d.published))


def build_parser():
    p = OneLineParser(description=__doc__.split("\n\n")[0])  # a bad flag: one line, as every other bad input
    run.add_arguments(p, batch_size=6144, lr=1e-4, train_steps=300001, log_steps=1000)
    p.add_argument("--encoding-size", type=int, default=5)
    p.add_argument("--content-n", type=int, default=5)
    p.add_argument("--style-n", type=int, default=5)
    p.add_argument("--modality-n", type=int, default=5)
    p.add_argument("--style-change-prob", type=float, default=1.0)
    for dep in dependencies.REGISTRY:  # --statistical-dependence, --content-dependent-style, ...
        p.add_argument(dep.flag, action="store_true", help=dep.help)
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
    size_estimates.add_argument(p)  # --estimate-content-size
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
    for dep in dependencies.enabled(args):
        clash = [key for block, key in DISCRETE_KEYS.items() if block in dep.gaussian and getattr(args, key)]
        if clash:
            raise UserError(f"{flag_of(clash[0])} cannot be combined with {dep.flag}: {dep.why}")


def local_rows(blocks, batch_size, info):
    """This rank's pairs and negatives out of a global batch of 2 x batch_size rows."""
    if not info.enabled:
        return blocks
    sl = local_slice(batch_size, info)
    return {k: torch.cat((v[:batch_size][sl], v[batch_size:][sl])) for k, v in blocks.items()}


def train_step(space, net, loss_fn, optimizer, params, args, generator, info=DistInfo()):
    """One optimisation step on a fresh global batch of pairs and negatives, sampled together:
    forward (the encoders under --precision's autocast), loss, backward, clipping, Adam.

    Every rank draws the same global batch and keeps its slice, so a seed gives
    the same samples whatever the number of processes."""
    blocks = local_rows(space.sample(2 * args.batch_size, generator), args.batch_size, info)
    loss = contrastive_loss(loss_fn, net, blocks, args.batch_size // info.world_size, space.views,
                            lambda: recipe.autocast(args, space.device))
    recipe.descend(loss, optimizer, params, args)
    return mean_over_ranks(loss.detach(), info)


def build_training(args, device):
    """The latent space and the networks of a new training, drawn from --seed."""
    space, net = settings.of(args).build(device)
    if args.encoder_init == "whitened":
        whiten_encoders_(space, net, args.seed)
    return space, net


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
        warning = settings.of(args).warning()
        if not args.resume and info.is_main and warning:
            print(f"warning: {warning}", file=sys.stderr)
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
    setting = settings.of(args)
    loss_fn = setting.loss(info, tau)
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
                val_loss, r2 = setting.quick_probe(space, net, setting.loss(tau=tau), probe_gen, EVAL_BATCH)
                if r2 is None or not np.isfinite(val_loss):
                    raise run.diverged(step, save_dir, args)
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
    save_dir, saved = run.evaluation_folder(args, build_parser(), loaded_args(), need_seed=True,
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
            "content_coords": (args.content_coords or CONTENT_COORDS[0]) if args.view_latents else "",
            "shared_encoder": bool(args.shared_encoder), "shared_mixing": bool(args.shared_mixing)}


def check_identity(save_dir, args, source):
    """Refuse to resume or evaluate a model as another one: a setting of identity() that differs
    from the one latent_space.pt records (a reordered view list fits the same weights). Folders
    saved before a setting was recorded, and the published scripts', have nothing to compare."""
    params = spaces.read_parameters(save_dir)
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


def evaluate(args, device):
    save_dir, saved = load_for_evaluation(args)
    print(f"Evaluation seed {args.seed} (training seed {saved['seed']}); device {device}")
    set_seed(args.seed)
    setting = settings.of(args)
    space, net = setting.load(save_dir, saved, device)
    loss_fn = setting.loss(tau=load_temperature(args, save_dir, device))  # --tau: give it, or --load-args
    gen = torch.Generator(device=device).manual_seed(args.seed)
    val, val_loss = setting.encode(space, net, loss_fn, args.num_eval_batches, gen, EVAL_BATCH)
    test, test_loss = setting.encode(space, net, loss_fn, args.num_eval_batches, gen, EVAL_BATCH)
    print(f"<Val Loss>: {val_loss:.4f}\n<Test Loss>: {test_loss:.4f}")
    for split, data in (("validation", val), ("test", test)):
        if not all(np.isfinite(data[f"hz{k}"]).all() for k in range(1, space.n_views + 1)):
            raise UserError(f"the encoders of {save_dir} give non-finite encodings on the {split} set "
                            "(a diverged training?)")
    results, tables, fields = setting.evaluation(save_dir, val, test, device)
    # Evaluation samples batches of EVAL_BATCH pairs, whatever --batch-size says.
    run.save_results(save_dir, results, args, saved, unused=("batch_size", "encoder_init"), tables=tables,
                     val_loss=val_loss, test_loss=test_loss, eval_batch=EVAL_BATCH, **fields)
    return results


main = run.entry_point(build_parser, check_args, train, evaluate)


if __name__ == "__main__":
    run_cli(main)
