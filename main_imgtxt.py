"""Image/text experiment: contrastive learning on Multimodal3DIdent image/text pairs.

A ResNet-18 image encoder and a text encoder (conv, as in the paper, or GRU)
are trained with the symmetric InfoNCE loss; `--evaluate` then measures,
per modality, how well each ground-truth factor can be predicted from the
encodings (regression R^2 for continuous factors, accuracy for discrete ones).

    python main_imgtxt.py --datapath m3di --model-id imgtxt_example --encoding-size 4
    python main_imgtxt.py --datapath m3di --model-id imgtxt_example --load-args --evaluate
"""
from cli import OneLineParser, UserError, first_line, run_cli  # first: a Ctrl-C while torch loads then gives one line
import math
import os
import time
from contextlib import closing

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

import metrics
import probes
import recipe
import run
import size_estimates
from distributed import DistInfo, sync_batchnorm, wrap_ddp
from datasets import Multimodal3DIdent, Vocabulary, sequence_length_of, tokenized_split
from encoders import TEXT_ENCODERS, image_encoder, text_encoder
from losses import (LEARN_TAU_HELP, TEMPERATURE, GatheredInfoNCE, check_learn_tau, check_tau,
                    learned_temperature, load_temperature)
from facts import ARGS_FILE, SPLITS
from files import atomic_write_json, read_json
from utils import atomic_torch_save, infinite_iterator, load_into, set_seed, should_log

# results.csv columns (the published names) and the probe behind each: regression for
# continuous factors, classification for discrete ones.
CONTINUOUS_PROBES = {"r2_linreg": "linear", "r2_krreg": "kernel_ridge"}
DISCRETE_PROBES = {"acc_logreg": "logistic", "acc_mlp": "mlp_classifier"}
RESULT_COLUMNS = ["ix", "modality", "factor_name", "factor_type", *CONTINUOUS_PROBES, *DISCRETE_PROBES]
# Settings that --load-args restores from args.json: everything that shapes the
# encoders or the loss. (The vocabulary and the sequence length are always the
# model's own: they come from the model folder.)
LOADED_ARGS = ("encoding_size", "hidden_size", "tau", "text_encoder", "learn_tau")
# The ones that every args.json holds, the published script's included (what its --load-args
# restores): --load-args refuses a folder without one rather than build the model from a default.
PUBLISHED_ARGS = ("encoding_size", "hidden_size")
MODALITIES = ("image", "text")
# Each modality's encoder is saved under the published file name: encoder_img.pt, encoder_txt.pt.
CHECKPOINT_NAMES = {"image": "encoder_img", "text": "encoder_txt"}
ENCODER_FILES = r"encoder_(img|txt)(_\d+)?\.pt"  # saved after checkpoint.pt
# What a training derived from its data, kept apart from its flags (args.json): the
# text encoder's input shape and the image size an evaluation must see again.
METADATA_FILE = "metadata.json"
METADATA_KEYS = ("sequence_length", "vocab_size", "image_size")
EVAL_PROTOCOLS = ("exact", "published")
# --resume: flags taken from the command line (the data may have moved), and flags that may change
# (--eval-protocol steers --evaluate alone: a training ignores it, resumed or not).
RESUME_OWN = (*run.RESUME_OWN, "datapath", "workers")
RESUME_HONOURED = (*run.RESUME_HONOURED, "checkpoint_steps", "save_all_checkpoints", "eval_protocol")


def build_parser():
    p = OneLineParser(description=__doc__.split("\n\n")[0])  # a bad flag: one line, as every other bad input
    p.add_argument("--datapath", type=str, required=True,
                   help="folder with the train/, val/ and test/ splits of Multimodal3DIdent")
    run.add_arguments(p, batch_size=256, lr=1e-5, train_steps=100001, log_steps=1000)
    p.add_argument("--encoding-size", type=int, default=4)
    p.add_argument("--hidden-size", type=int, default=100)
    p.add_argument("--tau", type=float, default=1.0)
    p.add_argument("--learn-tau", action="store_true", help=LEARN_TAU_HELP)
    p.add_argument("--checkpoint-steps", type=int, default=10000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--save-all-checkpoints", action="store_true")
    p.add_argument("--text-encoder", choices=TEXT_ENCODERS, default="conv")
    p.add_argument("--eval-protocol", choices=EVAL_PROTOCOLS, default="exact",
                   help="--evaluate: exact (default) encodes every val/test sample once, in order, "
                        "BatchNorm in eval mode; published encodes as the published script does: "
                        "BatchNorm in training mode over shuffled, drop-last batches of --batch-size, "
                        "ceil(n / batch) of them, so some samples repeat and others are left out")
    p.add_argument("--max-sequence-length", type=int, default=128,
                   help="token slots per caption at most, {eos} included (default 128; the "
                        "published captions need at most 32); longer captions are cut")
    size_estimates.add_argument(p)  # --estimate-content-size
    return p


def check_args(args):
    run.check_arguments(args)
    for flag, value in (("--encoding-size", args.encoding_size), ("--hidden-size", args.hidden_size),
                        ("--checkpoint-steps", args.checkpoint_steps)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    if args.workers < 0:
        raise UserError(f"--workers must be at least 0, got {args.workers}")
    if args.max_sequence_length < 2:
        raise UserError(f"--max-sequence-length must be at least 2, got {args.max_sequence_length}")
    check_tau(args.tau)
    if args.evaluate and args.eval_protocol == "published" and args.batch_size < 2:
        raise UserError("--eval-protocol published needs --batch-size at least 2 (its BatchNorm in "
                        f"training mode normalises each batch by the batch's own statistics), got {args.batch_size}")
    check_learn_tau(args)
    if not os.path.isdir(args.datapath):
        raise UserError(f"data folder not found: {args.datapath}")


def check_complete_data(datapath):
    """A data folder with every split: a half-written one (a killed generation) is refused."""
    missing = [s for s in SPLITS if not os.path.isdir(os.path.join(datapath, s))]
    if missing:
        raise UserError(f"data folder {datapath} has no {', '.join(m + '/' for m in missing)} "
                        f"(a Multimodal3DIdent folder holds train/, val/ and test/; an interrupted "
                        f"generate_m3di.py leaves an incomplete folder)")


def loader(dataset, args, device, train, seed=0, info=DistInfo()):
    """Training: shuffled, drop-last batches, each rank its share of every global batch.
    Evaluation: every sample once, in order."""
    kwargs = {"num_workers": args.workers, "pin_memory": device.type == "cuda",
              "persistent_workers": train and args.workers > 0,
              "worker_init_fn": run.ignore_stop_signals if args.workers > 0 else None}
    if not train:
        return DataLoader(dataset, batch_size=args.batch_size, shuffle=False, drop_last=False, **kwargs)
    # One process uses the same sampler (world size 1), so a seed gives the same
    # global batches whatever the number of processes.
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=seed, drop_last=True)
    return DataLoader(dataset, batch_size=args.batch_size // info.world_size, sampler=sampler,
                      drop_last=True, **kwargs)


class ModalityEncoders(torch.nn.ModuleDict):
    """One encoder per modality, as one module (so that DDP wraps them once):
    forward({modality: input}) returns {modality: encoding}."""

    def forward(self, inputs):
        return {name: self[name](x) for name, x in inputs.items()}

    def by_file(self):
        """{checkpoint name: encoder}: encoder_img, encoder_txt."""
        return {CHECKPOINT_NAMES[name]: encoder for name, encoder in self.items()}


def build_encoders(args, vocab_size, sequence_length, device):
    try:
        return ModalityEncoders({
            "image": image_encoder(args.hidden_size, args.encoding_size),
            "text": text_encoder(args.text_encoder, vocab_size, args.encoding_size, sequence_length),
        }).to(device)
    except (MemoryError, RuntimeError) as err:  # e.g. --encoding-size 1000000000
        raise UserError(f"the encoders do not fit in memory with --hidden-size {args.hidden_size}, "
                        f"--encoding-size {args.encoding_size}: {first_line(err)}") from None


def print_args(args, title="Arguments:"):
    print(title)
    for k, v in sorted(vars(args).items()):
        print(f"\t{k}: {v}")


# ---------------------------------------------------------------------------
# Training

def train(args, device, info=DistInfo(), given=()):
    check_complete_data(args.datapath)
    with run.training_folder(args, build_parser(), info, given, ENCODER_FILES, check_args,
                             RESUME_OWN, RESUME_HONOURED) as save_dir:
        return run_training(args, device, info, save_dir)


def training_data(args, save_dir, info):
    data_vocab = os.path.join(save_dir if args.resume else args.datapath, "vocab.json")
    vocab = Vocabulary.load(data_vocab) if os.path.isfile(data_vocab) else None
    # The sequence length and image size are fixed by the first run, so that --resume
    # keeps the model's shape and the data it was trained on.
    saved = read_metadata(save_dir, read_json(os.path.join(save_dir, ARGS_FILE), ARGS_FILE)) \
        if args.resume else {}
    dataset = Multimodal3DIdent(args.datapath, "train", vocab=vocab, sequence_length=saved.get("sequence_length"),
                                max_sequence_length=args.max_sequence_length)
    trained_size = saved.get("image_size")
    if trained_size is not None and list(dataset.image_size) != trained_size:
        raise UserError(f"--resume: {save_dir} was trained on {trained_size[0]}x{trained_size[1]} images, "
                        f"but {dataset.paths['root']} holds {dataset.image_size[0]}x"
                        f"{dataset.image_size[1]} images: resume on data of the training size")
    if len(dataset) < args.batch_size:
        raise UserError(f"--batch-size {args.batch_size} exceeds the {len(dataset)} training "
                        f"samples in {dataset.paths['root']}")
    if args.batch_size < 2:
        raise UserError("--batch-size must be at least 2 for training (contrastive negatives, "
                        "BatchNorm statistics)")
    return dataset, data_vocab, vocab


def run_training(args, device, info, save_dir):
    seed = args.seed
    set_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest kernels
    dataset, data_vocab, vocab = training_data(args, save_dir, info)
    metadata = {"sequence_length": dataset.sequence_length, "vocab_size": dataset.vocab_size,
                "image_size": list(dataset.image_size)}

    encoders = build_encoders(args, dataset.vocab_size, dataset.sequence_length, device)
    # oneDNN's (and cuDNN's) bfloat16 convolutions prefer channels-last images (measured on
    # this CPU: 1.1x); float32 keeps the default layout, so its results stay as they were.
    layout = torch.channels_last if args.precision == "bf16" else torch.contiguous_format
    encoders["image"].to(memory_format=layout)
    if info.is_main:
        if not args.resume:
            dataset.vocab.save(os.path.join(save_dir, "vocab.json"))
        atomic_write_json(os.path.join(save_dir, ARGS_FILE), vars(args))
        atomic_write_json(os.path.join(save_dir, METADATA_FILE), metadata)
        report_training_setup(args, dataset, save_dir, data_vocab, vocab, device)

    encoders = sync_batchnorm(encoders, info, device)
    tau = learned_temperature(args, device, info)
    trained = {**encoders.by_file(), **({TEMPERATURE: tau} if tau is not None else {})}
    params = list(encoders.parameters()) + (list(tau.parameters()) if tau is not None else [])
    optimizer = recipe.build_optimizer(recipe.undecayed_last(params, tau is not None), args)
    ddp = wrap_ddp(encoders, info, device)
    loss_fn = GatheredInfoNCE(args.tau if tau is None else tau, info)
    first = run.load_checkpoint(save_dir, trained, optimizer, train_steps=args.train_steps) \
        if args.resume else 1
    shuffled = loader(dataset, args, device, train=True, seed=seed, info=info)
    encoders.train()
    curve = metrics.open_log(save_dir, first, args, info.is_main)  # metrics.csv

    window_sum, window_n = torch.zeros((), device=device), 0
    bar = tqdm(range(first, args.train_steps + 1), desc="train", unit="step", dynamic_ncols=True,
               mininterval=1.0, disable=not info.is_main, initial=first - 1, total=args.train_steps)
    start = time.perf_counter()
    # a scheduler's stop: checkpoint, then end; closing the batches ends the loader's workers
    with run.stop_signals() as stop, closing(infinite_iterator(shuffled, start_batch=first - 1)) as batches:
        for step in bar:
            recipe.set_lr(optimizer, step, args)
            loss = train_step(ddp, loss_fn, optimizer, params, next(batches), args, device, layout)
            window_sum += loss
            window_n += 1

            logging = should_log(step, args.log_steps, args.train_steps)
            if logging or step % run.READ_LOSS_EVERY == 0:
                value = loss.item()
                run.check_finite_training(step, save_dir, args, value)
                rate = (step - first + 1) * args.batch_size / (time.perf_counter() - start)
                bar.set_postfix(loss=f"{value:.4f}", samples_per_s=f"{rate:.1f}")
            if logging and info.is_main:
                tqdm.write(f"Step: {step} \t Loss: {value:.6f} \t "
                           f"<Loss>: {(window_sum / window_n).item():.4f}")
                curve.write(step, lr=optimizer.param_groups[0]["lr"], train_loss=value,
                            mean_loss=(window_sum / window_n).item(),
                            **({"tau": float(tau().detach())} if tau is not None else {}))  # before the checkpoint: see metrics.py
            if logging:
                window_sum.zero_()
                window_n = 0
            if should_log(step, args.checkpoint_steps, args.train_steps) and info.is_main:
                save_checkpoint(save_dir, step, encoders, trained, optimizer, args)
            if stop:
                run.stop_training(step, lambda: save_checkpoint(save_dir, step, encoders, trained, optimizer, args), info)
    bar.close()
    curve.close()
    if info.is_main:
        print(f"Saved the encoders to {save_dir}")
    return save_dir


def save_checkpoint(save_dir, step, encoders, trained, optimizer, args):
    """checkpoint.pt and the trained modules (the encoders, and the temperature with --learn-tau)."""
    run.check_finite_training(step, save_dir, args, modules=trained.values())
    run.save_checkpoint(save_dir, step, trained, optimizer)
    if args.save_all_checkpoints:  # the published file names
        for name, encoder in encoders.by_file().items():
            atomic_torch_save(encoder.state_dict(), os.path.join(save_dir, f"{name}_{step}.pt"))


def train_step(net, loss_fn, optimizer, params, batch, args, device, layout):
    """One optimisation step on a batch of pairs, shaped as the simulation's: forward (the
    encoders under --precision's autocast), loss, backward, clipping, Adam."""
    inputs = {"image": batch["image"].to(device, non_blocking=True).contiguous(memory_format=layout),
              "text": batch["text"].to(device, non_blocking=True)}
    with recipe.autocast(args, device):
        hz = net(inputs)
    loss = loss_fn(hz["image"], hz["text"])
    recipe.descend(loss, optimizer, params, args)
    return loss.detach()


def report_training_setup(args, dataset, save_dir, data_vocab, vocab, device):
    print_args(args)
    print(f"Model folder: {save_dir}  (vocabulary: {dataset.vocab_size} tokens"
          f"{' from ' + data_vocab if vocab is not None else ', built from the training split'}; "
          f"sequence length {dataset.sequence_length}; device {device})")
    if dataset.num_unknown:
        print(f"Note: {dataset.num_unknown} training tokens are missing from {data_vocab} and map "
              f"to {{unk}}")
    if dataset.num_truncated:
        print(f"Note: {dataset.num_truncated} training captions are longer than "
              f"--max-sequence-length {args.max_sequence_length} and were cut")


# ---------------------------------------------------------------------------
# Evaluation

def read_metadata(save_dir, saved):
    """A model folder's metadata.json, checked: the evaluation rebuilds the text encoder and
    checks the images with it, so a hand-edited or damaged value must not pass. Folders
    without it keep these values in args.json (`saved`), or nowhere (the published scripts':
    None, derived again from the data)."""
    path = os.path.join(save_dir, METADATA_FILE)
    if os.path.isfile(path):
        metadata = read_json(path, METADATA_FILE)
        if not isinstance(metadata, dict):
            raise UserError(f"{path} does not hold a JSON object")
    else:
        path, metadata = os.path.join(save_dir, ARGS_FILE), saved
    check_metadata(metadata, path)
    return {key: metadata.get(key) for key in METADATA_KEYS}


def check_metadata(saved, path):
    length, size = saved.get("sequence_length"), saved.get("image_size")
    if length is not None and not (isinstance(length, int) and not isinstance(length, bool) and length >= 2):
        raise UserError(f"{path}: sequence_length = {length!r} is not a sequence length (an integer >= 2)")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)):
        raise UserError(f"{path}: image_size = {size!r} is not [height, width] in pixels")


@torch.no_grad()
def encode(dataset, encoders, args, device, loss_fn=None, protocol="exact"):
    """Encodings of `dataset` under an evaluation protocol (--eval-protocol).

    exact: every sample exactly once, in order, BatchNorm in eval mode (running
    statistics), so an encoding depends on its sample alone. published: as the
    published script, BatchNorm in training mode (each batch normalised with its own
    statistics) over shuffled, drop-last batches, ceil(n / batch) of them, a new pass
    reshuffled when one runs out. That script ran each encoder twice per batch, for the
    loss and for the encodings; with no dropout both passes give the same values, so
    one pass serves both here.

    Returns ({modality: float64 array}, the sample index of each row, the mean loss
    over batches).
    """
    if protocol == "exact":
        encoders.eval()
        batches = loader(dataset, args, device, train=False)
    else:
        encoders.train()
        batches = published_batches(dataset, args)
    hz = {m: [] for m in encoders}
    losses, seen = [], []
    for batch in batches:
        h = encoders({m: batch[m].to(device, non_blocking=True) for m in encoders})
        if loss_fn is not None:
            losses.append(loss_fn(h["image"], h["text"]).item())
        for m in encoders:
            hz[m].append(h[m].double().cpu())
        seen.append(batch["index"])
    seen = torch.cat(seen).numpy()
    if protocol == "exact" and not np.array_equal(seen, np.arange(len(dataset))):
        raise RuntimeError("evaluation did not see every sample exactly once, in order")
    out = {m: torch.cat(v).numpy().reshape(len(seen), -1) for m, v in hz.items()}
    return out, seen, float(np.mean(losses)) if losses else math.nan


def published_batches(dataset, args):
    """The published script's evaluation batches: ceil(n / batch) shuffled, drop-last
    batches of --batch-size from a stream that reshuffles at every pass (seeded by the
    evaluation seed)."""
    shuffled = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                          num_workers=args.workers, generator=torch.Generator().manual_seed(args.seed))
    if len(shuffled) == 0:
        raise UserError(f"--eval-protocol published: {dataset.paths['root']} has {len(dataset)} samples, "
                        f"fewer than one batch of --batch-size {args.batch_size}")
    stream = infinite_iterator(shuffled)
    return (next(stream) for _ in range(math.ceil(len(dataset) / args.batch_size)))


def model_vocabulary(args, save_dir):
    """The model's vocabulary: its own vocab.json, else the data folder's, else rebuilt."""
    for path in (os.path.join(save_dir, "vocab.json"), os.path.join(args.datapath, "vocab.json")):
        if os.path.isfile(path):
            return Vocabulary.load(path), path
    print("No vocab.json in the model or data folder: rebuilding the vocabulary from the "
          "training split (as the published scripts did).")
    return Vocabulary.build(tokenized_split(args.datapath, "train")), None


def factor_rows(modality, hz, splits, device, seed, rows):
    """results.csv rows of one modality: every factor predicted from its encodings
    (fit on validation, scored on test); rows[split]: the sample of each encoding."""
    x_val, x_test = probes.standardize(hz["val"][modality], hz["test"][modality])
    factors = Multimodal3DIdent.FACTORS[modality]
    discrete = Multimodal3DIdent.DISCRETE_FACTORS[modality]
    values = {name: (splits["val"].factor_values(modality, name)[rows["val"]],
                     splits["test"].factor_values(modality, name)[rows["test"]])
              for name in factors.values()}
    kinds = {"continuous": ({n: values[n] for ix, n in factors.items() if ix not in discrete}, CONTINUOUS_PROBES),
             "discrete": ({n: values[n] for ix, n in factors.items() if ix in discrete}, DISCRETE_PROBES)}
    scores, notes = {}, []
    for kind, (targets, columns) in kinds.items():
        if not targets:
            continue
        with tqdm(total=probes.krr_work_units(len(targets)) if kind == "continuous" else 2 * len(targets),
                  desc=f"{kind} probes ({modality})", leave=False, dynamic_ncols=True) as bar:
            scores.update(probes.evaluate_probes(list(columns.values()), x_val, x_test, targets, device=device,
                                                 progress=lambda: bar.update(1), seed=seed, notes=notes))
    for line in notes:
        print(f"\t{modality}/{line}")
    rows = []
    for ix, name in factors.items():
        kind = "discrete" if ix in discrete else "continuous"
        rows.append([ix, modality, name, kind, *(scores[name][CONTINUOUS_PROBES[c]] if kind == "continuous"
                                                 else math.nan for c in CONTINUOUS_PROBES),
                     *(scores[name][DISCRETE_PROBES[c]] if kind == "discrete" else math.nan
                       for c in DISCRETE_PROBES)])
    return rows


def evaluate(args, device):
    save_dir, saved = run.evaluation_folder(args, build_parser(), LOADED_ARGS, check=check_args,
                                            required=PUBLISHED_ARGS)
    seed = args.seed
    set_seed(seed)
    print_args(args)
    print(f"Evaluation seed {seed} (training seed {saved.get('seed')}); device {device}")
    splits, hz, seen, loss = encode_splits(args, device, save_dir, saved)
    if args.estimate_content_size:  # before results.csv, which marks a finished evaluation
        size_estimates.write(save_dir, hz["test"], len(Multimodal3DIdent.CONTENT_FACTORS))

    rows = []
    for m in MODALITIES:
        rows += factor_rows(m, hz, splits, device, seed, seen)
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    print(results.to_string())  # before writing: a failed write (full disk) loses nothing
    run.save_results(save_dir, results, args, saved, unused=("checkpoint_steps", "save_all_checkpoints"),
                     val_loss=loss["val"], test_loss=loss["test"])
    print(f"Saved {os.path.join(save_dir, 'results.csv')}")
    return results


def encode_splits(args, device, save_dir, saved):
    """The validation and test splits of a trained model's data and their encodings under
    --eval-protocol: (splits, {split: {modality: array}}, {split: sample indices}, {split: loss})."""
    metadata = read_metadata(save_dir, saved)

    vocab, vocab_path = model_vocabulary(args, save_dir)
    sequence_length = metadata["sequence_length"]
    if sequence_length is None:
        sequence_length = sequence_length_of(tokenized_split(args.datapath, "train"))
    print(f"Vocabulary: {len(vocab)} tokens ({vocab_path or 'rebuilt'}); "
          f"sequence length {sequence_length}")
    splits = {}
    for split in ("val", "test"):
        ds = Multimodal3DIdent(args.datapath, split, vocab=vocab, sequence_length=sequence_length)
        if len(ds) < 3:
            raise UserError(f"the {split} split ({ds.paths['root']}) has {len(ds)} samples; "
                            f"evaluation needs at least 3 (3-fold cross-validation)")
        if ds.num_truncated or ds.num_unknown:
            print(f"{split}: {ds.num_truncated} sentences truncated to {sequence_length} tokens, "
                  f"{ds.num_unknown} unknown words mapped to {{unk}}")
        trained_size = metadata["image_size"]
        if trained_size is not None and list(ds.image_size) != list(trained_size):
            raise UserError(f"{save_dir} was trained on {trained_size[0]}x{trained_size[1]} images, "
                            f"but {ds.paths['root']} holds {ds.image_size[0]}x{ds.image_size[1]} "
                            "images: evaluate on data of the training size")
        splits[split] = ds

    encoders = build_encoders(args, len(vocab), sequence_length, device)
    for name, enc in encoders.by_file().items():
        try:
            load_into(enc, os.path.join(save_dir, f"{name}.pt"))
        except UserError as err:
            hint = "" if args.load_args else " (use --load-args to take the model's settings from args.json)"
            raise UserError(f"{err}{hint}") from None

    learned = load_temperature(args, save_dir, device)
    loss_fn = GatheredInfoNCE(args.tau if learned is None else learned)  # one process: nothing to gather
    hz, seen, loss = {}, {}, {}
    for split, ds in splits.items():
        hz[split], seen[split], loss[split] = encode(ds, encoders, args, device, loss_fn, args.eval_protocol)
        print(f"<{split.capitalize()} Loss>: {loss[split]:.4f}")
    return splits, hz, seen, loss


# Data errors (datasets.DataError) are UserErrors: one line, even when a DataLoader worker raised them.
main = run.entry_point(build_parser, check_args, train, evaluate)


if __name__ == "__main__":
    run_cli(main)
