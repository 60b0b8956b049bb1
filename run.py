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
                        step and whatever else a run needs to resume; and
                        each module's own <name>.pt
    evaluation_folder   a trained model's folder and settings for --evaluate
    save_results        evaluation.json (its stamp names the weights), provenance.json's
                        evaluation entry and results.csv, after printing
    diverged            the one error of a training whose loss or weights stopped being finite
    stop_signals / stop_training
                        a scheduler's stop (SIGUSR2, SIGTERM) ends a training with a
                        checkpoint at its current step
    entry_point         main(): parse, check, set up processes, dispatch
"""
import math
import os
import re
import signal
import sys
import threading
import uuid
from contextlib import contextmanager, nullcontext
from functools import partial

import torch

import metrics
import provenance
import recipe
import stamps
from cli import UserError, check_finite, first_line, flag_of
from distributed import DistInfo, barrier, broadcast_object, cleanup, device_for, init_distributed
from facts import ARGS_FILE, CHECKPOINT, RESULTS_FILE
from files import FolderLock, atomic_write_json, atomic_write_text, check_writable, read_json
from utils import all_finite, atomic_torch_save, state_dict_mismatch

# --resume takes these from the command line (where the folder is now, the device) ...
RESUME_OWN = ("resume", "model_dir", "model_id", "no_cuda")
# ... and lets these change (a longer run, other logging); any other change is refused.
# (--tensorboard: metrics.py's mirror of metrics.csv, not a setting.)
RESUME_HONOURED = ("train_steps", "log_steps", "tensorboard")
# Seeds seed numpy's legacy generator and scipy's Wishart draws, which take 0 <= seed < 2^32.
MAX_SEED = 2**32 - 1


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
    check_seed("--seed", args.seed)
    check_model_id(args.model_id)
    recipe.check_arguments(args)


def check_seed(what, seed):
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise UserError(f"{what} must be in 0..{MAX_SEED}, got {seed}")


def check_restored(check, args, path, keys):
    """Run the flags' `check` on settings restored from args.json (`keys`); an error names the file
    and the key when the first flag it names came from there, and otherwise stays the command
    line's ("--permuted-content cannot be combined with --view-latents": the flag given is at fault)."""
    try:
        check(args)
    except UserError as err:
        restored = {flag_of(key): key for key in keys}
        named = re.findall(r"--[a-z0-9][a-z0-9-]*", str(err))
        if named and named[0] not in restored:
            also = [flag for flag in named if flag in restored]
            raise UserError(f"{err} ({path} gives the model's {also[0]})" if also else str(err)) from None
        key = f" (key {restored[named[0]]})" if named else ""
        raise UserError(f"{path}{key}: {err}") from None


@contextmanager
def training_folder(args, parser, info, given, encoder_files, check=None, own=RESUME_OWN,
                    honoured=RESUME_HONOURED):
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
            path = os.path.join(save_dir, ARGS_FILE)
            saved = read_saved_args(path, parser)
            metrics.check_resumable(save_dir)  # before anything in the folder is rewritten
            resume_settings(args, saved, given, own, honoured, path)
            if check is not None:
                check_restored(check, args, path, [k for k in saved if k not in given])
            checkpoint_step(save_dir, args.train_steps)  # before args.json is rewritten
        else:
            refuse_existing_model(save_dir, encoder_files)
        if args.seed is None:
            args.seed = broadcast_object(draw_seed(), info)
        if args.batch_size % info.world_size:
            raise UserError(f"--batch-size {args.batch_size} must be divisible by the "
                            f"{info.world_size} processes")
        barrier(info)  # every rank has checked the folder before rank 0 fills it
        record = partial(provenance.record_training, save_dir, device_for(info, args.no_cuda), info.world_size,
                         train_steps=args.train_steps, resumed=args.resume)
        try:
            yield save_dir
        except KeyboardInterrupt:  # a stop signal or Ctrl-C: the segment's time still counts
            if info.is_main and os.path.isdir(save_dir):
                record(stopped=True)
            raise
        if info.is_main:  # under the lock, once the segment has trained to its last step
            record()


def save_checkpoint(save_dir, step, modules, optimizer, **extra):
    """checkpoint.pt (each module's state dict under its name, the optimiser, the step,
    `extra`), then each module's state dict alone as <name>.pt."""
    # checkpoint.pt first: a failure after it (a full disk) leaves a run that --resume
    # continues, never modules without the checkpoint that would resume them.
    atomic_torch_save({"step": step, **{name: m.state_dict() for name, m in modules.items()},
                       "optimizer": optimizer.state_dict(), **extra}, os.path.join(save_dir, CHECKPOINT))
    for name, module in modules.items():
        atomic_torch_save(module.state_dict(), os.path.join(save_dir, f"{name}.pt"))


def checkpoint_step(save_dir, train_steps=None):
    """The step of checkpoint.pt, read and checked (a readable checkpoint short of train_steps)
    before --resume rewrites anything in the folder (args.json, metrics.csv)."""
    path = os.path.join(save_dir, CHECKPOINT)
    try:
        step = int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except Exception as err:
        raise UserError(f"cannot resume from {path}: {state_dict_mismatch(err)}") from None
    check_more_steps(save_dir, step, train_steps)
    return step


def check_more_steps(save_dir, step, train_steps):
    if train_steps is not None and step >= train_steps:
        raise UserError(f"{save_dir} is already trained to step {step}; pass a larger "
                        f"--train-steps with --resume to train it further")


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
    check_more_steps(save_dir, step, train_steps)
    print(f"resumed from {path} at step {step}", flush=True)  # marks each segment of train.log
    return step + 1


def model_folder(args):
    """The folder of the trained model that --evaluate names; it must exist."""
    if args.model_id is None:
        raise UserError("--evaluate needs the --model-id of a trained model")
    save_dir = os.path.join(args.model_dir, args.model_id)
    if not os.path.isdir(save_dir):
        raise UserError(f"model folder not found: {save_dir}")
    return save_dir


def evaluation_folder(args, parser, loaded_args, need_seed=False, check=None, required=()):
    """(folder, saved settings) of the model to evaluate. Restores `loaded_args` with
    --load-args (checked by `check` as if given as flags; the `required` ones, which every
    args.json of the model's kind holds, must be there), refuses settings that differ
    from the model's without it, fixes the evaluation seed (never the training seed), and
    checks that the results can be written before any work is done."""
    save_dir = model_folder(args)
    path = os.path.join(save_dir, ARGS_FILE)
    saved = read_saved_args(path, parser)
    check_writable(save_dir, RESULTS_FILE)
    if args.load_args:
        missing = [key for key in required if key not in saved]
        if missing:
            raise UserError(f"{path} has no key {missing[0]}: --load-args cannot restore the model's "
                            f"{flag_of(missing[0])} (give the flags and leave out --load-args)")
        restored = {key: saved[key] for key in loaded_args if key in saved}
        vars(args).update(restored)
        print(f"Restored from args.json: {', '.join(f'{k}={v}' for k, v in restored.items())}")
        if check is not None:
            check_restored(check, args, path, restored)
    else:
        refuse_other_settings(args, saved, parser, loaded_args, save_dir)
    train_seed = saved.get("seed")
    if need_seed and train_seed is None:
        raise UserError(f"{path} records no training seed")
    check_seed(f"{path}: seed", train_seed)
    args.seed = evaluation_seed(args.seed, train_seed)
    return save_dir, saved


def refuse_other_settings(args, saved, parser, keys, save_dir):
    """An evaluation without --load-args must describe the saved model: a setting that differs
    (3 views evaluated as 2, other sizes) would give wrong results or a misleading error.
    A key missing from args.json (older folders) means its flag's default."""
    for key in keys:
        have, want = saved.get(key, parser.get_default(key)), getattr(args, key)
        if have != want:
            raise UserError(f"{save_dir} was trained with {describe_setting(key, have)}, not "
                            f"{describe_setting(key, want)}; add --load-args to evaluate it with "
                            "its own settings")


def describe_setting(key, value):
    if isinstance(value, bool):
        return f"{flag_of(key)}" if value else f"no {flag_of(key)}"
    return f"{flag_of(key)} {value}"


@contextmanager
def evaluation_lock(args):
    """The model folder's lock for an evaluation: a training still writing the weights, or
    a second evaluation writing results.csv at the same time, is refused."""
    with FolderLock(model_folder(args)):
        yield


# A scheduler's stop: SLURM (through submitit) sends SIGUSR2 before a time limit or a
# preemption, then SIGTERM; a runner stops its children with SIGTERM.
STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


@contextmanager
def stop_signals():
    """While the body runs, a stop signal is noted in the yielded list instead of ending the
    process at once: the training loop finishes its step and calls stop_training."""
    caught = []
    if threading.current_thread() is not threading.main_thread():
        yield caught  # only the main thread can handle signals
        return
    previous = {signum: signal.signal(signum, lambda num, frame: caught.append(num)) for signum in STOP_SIGNALS}
    try:
        yield caught
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def ignore_stop_signals(worker_id=None):
    """A data-loading worker's start: SLURM signals every process of the job, and a worker
    that died of the signal would fail the training before its checkpoint. The training's own
    process ends the workers when it exits."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def stop_training(step, save, info):
    """A stop signal came during the training: save a checkpoint at `step` (rank 0, through
    `save()`), so that --resume loses no work, then end as interrupted."""
    if info.is_main:
        save()
        print(f"stopped by a signal: checkpoint saved at step {step}", flush=True)
    raise KeyboardInterrupt


# Reading the loss synchronises CUDA: the training loops read it every this many steps
# (and at each log step), to show it and to stop a diverged run.
READ_LOSS_EVERY = 20


def check_finite_training(step, save_dir, args, loss=None, modules=()):
    """Stop a training whose loss, or a module's weights, are no longer finite (the one check
    of both entry points); the checkpoints already written stay as they are."""
    if (loss is not None and not math.isfinite(loss)) or not all_finite(modules):
        raise diverged(step, save_dir, args)


def diverged(step, save_dir, args):
    """The error of a training whose loss or weights stopped being finite: what to change,
    and whether a checkpoint is left to resume or to evaluate."""
    hints = ["a lower --lr"]
    if getattr(args, "weight_decay", 0):
        hints.append("a lower --weight-decay")
    if "tau" in vars(args):
        hints.append("a higher --tau")
    kept = (f"the last good checkpoint in {save_dir} is kept"
            if os.path.isfile(os.path.join(save_dir, CHECKPOINT)) else
            f"no checkpoint was written to {save_dir} before it")
    return UserError(f"training diverged by step {step} (the loss or the weights are no longer "
                     f"finite; try {' or '.join(hints)}); {kept}")


# Flags that only steer training. An evaluation parses them too, at their defaults
# (lr 1e-5, 100,001 steps, ...), which evaluation.json must not record as if they were
# the model's: its training settings are in args.json beside it.
TRAINING_FLAGS = ("lr", "train_steps", "log_steps", "resume", "tensorboard", *recipe.TRAINING_FLAGS)


def save_results(save_dir, results, args, saved, unused=(), tables=None, **extra):
    """evaluation.json (the settings the evaluation used, both seeds, `extra`, and the stamp that
    ties the results to the weights: stamps.py), then `tables` ({file name: DataFrame}, e.g.
    partial.csv) and last results.csv, with pandas' index column as the published scripts write
    it. `unused`: an entry point's own flags that its evaluation ignores. Call after printing
    the results: a failed write (a full disk) then loses nothing."""
    skip = {"model_dir", "model_id", "evaluate", *TRAINING_FLAGS, *unused}
    settings = {k: v for k, v in vars(args).items() if k not in skip}
    texts = {**{name: table.to_csv(index=False) for name, table in (tables or {}).items()},
             RESULTS_FILE: results.to_csv(index=True)}  # results.csv last: it marks the end
    atomic_write_json(os.path.join(save_dir, stamps.EVALUATION_FILE),
                      {**settings, "training_seed": saved.get("seed"), **extra,
                       "stamp": stamps.stamp(save_dir, texts)})
    provenance.record_evaluation(save_dir, device_for(DistInfo(), args.no_cuda))
    for name, text in texts.items():
        atomic_write_text(os.path.join(save_dir, name), text)


# ---------------------------------------------------------------------------
# Model ids, seeds, and the settings a folder's args.json records

def check_model_id(model_id):
    if model_id is not None and (model_id.strip() in ("", ".", "..") or os.sep in model_id):
        raise UserError(f"--model-id must name one folder, got {model_id!r}")


def new_model_id():
    return str(uuid.uuid4())


def draw_seed(exclude=None):
    """A fresh seed from the OS entropy pool, different from `exclude`."""
    while True:
        seed = int.from_bytes(os.urandom(4), "little") % (2**31 - 1)
        if seed != exclude:
            return seed


def evaluation_seed(seed, train_seed):
    """The seed of an evaluation: the given one unless it repeats the training seed
    (the samples would not be fresh), or a drawn one that differs from it."""
    if seed is None:
        return draw_seed(exclude=train_seed)
    if train_seed is not None and seed == train_seed:
        raise UserError(f"--seed {seed} equals the training seed; evaluate with another seed "
                        f"(or leave --seed out to draw one)")
    return seed


def refuse_existing_model(save_dir, encoder_files):
    """Training never overwrites a model: a folder with checkpoint.pt or a saved encoder
    (a file name matching the entry point's `encoder_files` pattern) is taken.

    Encoders are saved after checkpoint.pt, so a folder whose training died before its
    first checkpoint holds nothing to keep or resume (args.json and the frozen parts
    written at the start): it is started afresh. Call this while holding the folder's
    lock, so that no live run is mistaken for one."""
    if not os.path.isdir(save_dir):
        return
    has_checkpoint = os.path.exists(os.path.join(save_dir, CHECKPOINT))
    if not has_checkpoint and not any(re.fullmatch(encoder_files, name) for name in os.listdir(save_dir)):
        return
    resume = ", add --resume to continue it," if has_checkpoint else ""
    raise UserError(f"model folder {save_dir} already holds a model; choose another "
                    f"--model-id{resume} or --evaluate it")


def read_saved_args(path, parser):
    """A model's args.json, checked against the parser that wrote it: a dict whose
    known settings have the types of their flags (a hand-edited "seed": "1" would
    otherwise slip through as a different seed)."""
    saved = read_json(path, ARGS_FILE)
    if not isinstance(saved, dict):
        raise UserError(f"{path} does not hold a model's arguments (a JSON object), "
                        f"but a {type(saved).__name__}")
    for action in parser._actions:
        key = action.dest
        if key not in saved or (saved[key] is None and action.default is None):
            continue
        value = saved[key]
        if action.const is True:  # store_true
            ok = isinstance(value, bool)
        elif action.type is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif action.type is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        if ok and action.choices is not None:
            ok = value in action.choices
        if not ok:
            raise UserError(f"{path}: {key} = {value!r} is not a valid value of --"
                            f"{key.replace('_', '-')}")
        if action.type not in (None, int, float):  # the flag's own parsing: one spelling (--view-latents)
            try:
                saved[key] = action.type(value)
            except UserError as err:
                raise UserError(f"{path} (key {key}): {err}") from None
    return saved


def given_flags(parser, argv):
    """The destinations of the flags present on the command line (not defaulted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    given = set()
    for action in parser._actions:
        if any(arg == opt or arg.startswith(opt + "=") for opt in action.option_strings for arg in argv):
            given.add(action.dest)
    return given


def resume_settings(args, saved, given, own, honoured, path):
    """Take the interrupted run's settings from `saved` (its args.json).

    `own` flags keep the command line's value (where the folder is, the device);
    `honoured` flags given on the command line replace the saved value (a longer
    run); any other flag given with a value that differs from the run's is
    refused, rather than silently ignored."""
    for key, value in saved.items():
        if key in own or not hasattr(args, key):
            continue
        if key in given and key in honoured:
            continue
        if key in given and getattr(args, key) != value:
            raise UserError(f"--resume continues the run as {path} records it, with "
                            f"--{key.replace('_', '-')} {value}, not {getattr(args, key)}; "
                            f"train a new --model-id to change it")
        setattr(args, key, value)
    if "train_steps" in given and getattr(args, "lr_schedule", "constant") != "constant" \
            and args.train_steps != saved.get("train_steps"):
        raise UserError(f"--train-steps cannot change on --resume with --lr-schedule "
                        f"{args.lr_schedule}: the schedule is laid over the run's "
                        f"{saved.get('train_steps')} steps")


def out_of_memory(err):
    """A failed allocation: Python's MemoryError, or torch's on the CPU or a GPU."""
    text = str(err)
    return isinstance(err, MemoryError) or "can't allocate memory" in text or "out of memory" in text


def entry_point(build_parser, check_args, train, evaluate):
    """main(argv) of an entry point: parse and check the flags, join torchrun's processes if
    any, then train (every rank) or evaluate (rank 0: cheap next to training). A failed
    allocation anywhere becomes one line that says so."""
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
                if not info.is_main:
                    return None
                with evaluation_lock(args):
                    provenance.start("evaluation", argv)
                    return evaluate(args, device)
            provenance.start("training", argv)
            return train(args, device, info, given_flags(parser, argv))
        except (MemoryError, RuntimeError) as err:
            if not out_of_memory(err):
                raise
            raise UserError(f"out of memory: {first_line(err)[:160]} (try a smaller --batch-size or "
                            "smaller sizes)") from None
        finally:
            cleanup(info)
    return main
