"""The life of a run, the same for both entry points: flags, model folder, checkpoints, evaluation.

An entry point keeps only its science (data, networks, loss, probes) and
hands the rest to this module:
    add_arguments       the flags every entry point has (model folder, seed,
                        optimisation, train / --resume / --evaluate)
    training_folder     the locked model folder of a training: a new one, or
                        with --resume the interrupted run's, its settings
                        restored from args.json; the model id and seed rules
    save_checkpoint / load_checkpoint
                        checkpoint.pt: a dict of modules, the optimiser, the
                        step and whatever else a run needs to resume
    evaluation_folder   a trained model's folder and settings for --evaluate
    save_results        evaluation.json and results.csv, after printing
    entry_point         main(): parse, check, set up processes, dispatch
"""
import os
from contextlib import contextmanager, nullcontext

import torch

import metrics
import recipe
from distributed import barrier, broadcast_object, cleanup, device_for, init_distributed
from utils import (FolderLock, UserError, atomic_torch_save, atomic_write_csv, atomic_write_json,
                   check_finite, check_model_id, check_writable, draw_seed, evaluation_seed, given_flags,
                   new_model_id, read_saved_args, refuse_existing_model, resume_settings,
                   state_dict_mismatch)

CHECKPOINT = "checkpoint.pt"  # modules, optimiser, step and random streams, for --resume
# --resume takes these from the command line (where the folder is now, the device) ...
RESUME_OWN = ("resume", "model_dir", "model_id", "no_cuda")
# ... and lets these change (a longer run, other logging); any other change is refused.
RESUME_HONOURED = ("train_steps", "log_steps")
RESUME_HONOURED = (*RESUME_HONOURED, "tensorboard")  # metrics.py: a mirror of metrics.csv, not a setting


def add_arguments(p, batch_size, lr, train_steps, log_steps):
    """The flags of every entry point, with the entry point's published defaults."""
    p.add_argument("--model-dir", type=str, default="models")
    p.add_argument("--model-id", type=str, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--train-steps", type=int, default=train_steps)
    p.add_argument("--log-steps", type=int, default=log_steps)
    p.add_argument("--evaluate", action="store_true")
    p.add_argument("--load-args", action="store_true",
                   help="with --evaluate, take the model's settings from its args.json")
    p.add_argument("--no-cuda", action="store_true")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted training run from its last checkpoint "
                        "(--train-steps may extend it; other settings are the run's own)")
    recipe.add_arguments(p)
    metrics.add_arguments(p)


def check_arguments(args):
    for flag, value in (("--batch-size", args.batch_size), ("--train-steps", args.train_steps),
                        ("--log-steps", args.log_steps)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    check_finite("--lr", args.lr)
    check_model_id(args.model_id)
    recipe.check_arguments(args)


@contextmanager
def training_folder(args, parser, info, given, check=None, own=RESUME_OWN, honoured=RESUME_HONOURED):
    """The model folder of a training, locked (on rank 0) while the body runs.

    A new training refuses a folder that holds a model; --resume takes the
    interrupted run's settings from its args.json (`check` validates them again).
    A model id and a seed are drawn where none is given, the same on every rank."""
    if args.model_id is None:
        args.model_id = broadcast_object(new_model_id(), info)
    save_dir = os.path.join(args.model_dir, args.model_id)
    with FolderLock(save_dir) if info.is_main else nullcontext():
        if args.resume:
            if not os.path.isfile(os.path.join(save_dir, CHECKPOINT)):
                raise UserError(f"--resume: no {CHECKPOINT} in {save_dir}")
            path = os.path.join(save_dir, "args.json")
            resume_settings(args, read_saved_args(path, parser), given, own, honoured, path)
            if check is not None:
                check(args)
        else:
            refuse_existing_model(save_dir, CHECKPOINT)
        if args.seed is None:
            args.seed = broadcast_object(draw_seed(), info)
        if args.batch_size % info.world_size:
            raise UserError(f"--batch-size {args.batch_size} must be divisible by the "
                            f"{info.world_size} processes")
        barrier(info)  # every rank has checked the folder before rank 0 fills it
        yield save_dir


def save_checkpoint(save_dir, step, modules, optimizer, **extra):
    """checkpoint.pt: each module's state dict under its name, the optimiser, the step, `extra`."""
    atomic_torch_save({"step": step, **{name: m.state_dict() for name, m in modules.items()},
                       "optimizer": optimizer.state_dict(), **extra}, os.path.join(save_dir, CHECKPOINT))


def load_checkpoint(save_dir, modules, optimizer, restore=None, train_steps=None):
    """Load checkpoint.pt into the modules and the optimiser; `restore(state)` takes the rest.
    Returns the first step still to train."""
    path = os.path.join(save_dir, CHECKPOINT)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for name, module in modules.items():
            module.load_state_dict(state[name])
        optimizer.load_state_dict(state["optimizer"])
        if restore is not None:
            restore(state)
        step = int(state["step"])
    except Exception as err:
        raise UserError(f"cannot resume from {path}: {state_dict_mismatch(err)}") from None
    if train_steps is not None and step >= train_steps:
        raise UserError(f"{save_dir} is already trained to step {step}; pass a larger "
                        f"--train-steps with --resume to train it further")
    return step + 1


def evaluation_folder(args, parser, loaded_args, need_seed=False):
    """(folder, saved settings) of the model to evaluate. Restores `loaded_args` with
    --load-args, fixes the evaluation seed (never the training seed), and checks that
    the results can be written before any work is done."""
    if args.model_id is None:
        raise UserError("--evaluate needs the --model-id of a trained model")
    save_dir = os.path.join(args.model_dir, args.model_id)
    if not os.path.isdir(save_dir):
        raise UserError(f"model folder not found: {save_dir}")
    saved = read_saved_args(os.path.join(save_dir, "args.json"), parser)
    check_writable(save_dir, "results.csv")
    if args.load_args:
        restored = {key: saved[key] for key in loaded_args if key in saved}
        vars(args).update(restored)
        print(f"Restored from args.json: {', '.join(f'{k}={v}' for k, v in restored.items())}")
    train_seed = saved.get("seed")
    if need_seed and train_seed is None:
        raise UserError(f"{save_dir}/args.json records no training seed")
    args.seed = evaluation_seed(args.seed, train_seed)
    return save_dir, saved


# Flags that only steer training. An evaluation parses them too, at their defaults
# (lr 1e-5, 100,001 steps, ...), which evaluation.json must not record as if they were
# the model's: its training settings are in args.json beside it.
TRAINING_FLAGS = ("lr", "train_steps", "log_steps", "resume", *recipe.TRAINING_FLAGS)
TRAINING_FLAGS = (*TRAINING_FLAGS, "tensorboard")


def save_results(save_dir, results, args, saved, unused=(), **extra):
    """evaluation.json (the settings the evaluation used, both seeds, `extra`) and
    results.csv with pandas' index column, as the published scripts write it. `unused`:
    an entry point's own flags that its evaluation ignores. Call after printing the
    results: a failed write (a full disk) then loses nothing."""
    skip = {"model_dir", "model_id", "evaluate", *TRAINING_FLAGS, *unused}
    settings = {k: v for k, v in vars(args).items() if k not in skip}
    atomic_write_json(os.path.join(save_dir, "evaluation.json"),
                      {**settings, "training_seed": saved.get("seed"), **extra})
    atomic_write_csv(results, os.path.join(save_dir, "results.csv"), index=True)


def entry_point(build_parser, check_args, train, evaluate):
    """main(argv) of an entry point: parse and check the flags, join torchrun's processes if
    any, then train (every rank) or evaluate (rank 0: cheap next to training)."""
    def main(argv=None):
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.model_id is None and args.resume:
            raise UserError("--resume needs the --model-id of the interrupted run")
        check_args(args)
        info = init_distributed(args.no_cuda)
        try:
            device = device_for(info, args.no_cuda)
            if args.evaluate:
                return evaluate(args, device) if info.is_main else None
            return train(args, device, info, given_flags(parser, argv))
        finally:
            cleanup(info)
    return main
