"""The training recipe: Adam, its learning-rate schedule, the arithmetic precision.

The defaults are the published recipe (Adam at a constant learning rate, in
float32). The options change how a model is optimised, never the model or
the loss:
    --lr-schedule cosine   decay to 0 at --train-steps by a half cosine
    --warmup-steps N       rise linearly from lr / N to lr over the first N steps
    --adam-beta1 B         Adam's first-moment decay (default 0.9, torch's)
    --adam-beta2 B         Adam's second-moment decay (default 0.999, torch's)
    --adam-eps E           Adam's denominator term (default 1e-8, torch's)
    --grad-clip G          clip the gradients' global norm at G (default 2.0, the
                           published scripts'; inf: no clipping)
    --weight-decay W       decoupled weight decay (AdamW); 0, the default, is plain Adam
    --precision bf16       run the encoders under bfloat16 autocast (as open_clip's
                           --precision amp_bfloat16); losses and probes stay float32/64
The learning rate is a pure function of the step, so --resume needs no
scheduler state and continues on the same curve.
"""
import math
from contextlib import nullcontext

import torch

from cli import UserError
from facts import RECIPE_DEFAULTS

SCHEDULES = ("constant", "cosine")
PRECISIONS = ("fp32", "bf16")
# All of this module's flags steer training only: both evaluations run in float32.
TRAINING_FLAGS = ("lr_schedule", "warmup_steps", "adam_beta1", "adam_beta2", "adam_eps", "weight_decay",
                  "grad_clip", "precision")


def add_arguments(parser):
    parser.add_argument("--lr-schedule", choices=SCHEDULES, default=RECIPE_DEFAULTS["lr_schedule"],
                        help="learning rate over the run: constant (the published recipe) or a "
                             "half-cosine decay to 0 at the last step")
    parser.add_argument("--warmup-steps", type=int, default=RECIPE_DEFAULTS["warmup_steps"],
                        help="raise the learning rate linearly over this many first steps (default 0)")
    parser.add_argument("--adam-beta1", type=float, default=RECIPE_DEFAULTS["adam_beta1"],
                        help="Adam's first-moment decay rate (default 0.9)")
    parser.add_argument("--adam-beta2", type=float, default=RECIPE_DEFAULTS["adam_beta2"],
                        help="Adam's second-moment decay rate (default 0.999)")
    parser.add_argument("--adam-eps", type=float, default=RECIPE_DEFAULTS["adam_eps"],
                        help="Adam's term added to the denominator (default 1e-8)")
    parser.add_argument("--weight-decay", type=float, default=RECIPE_DEFAULTS["weight_decay"],
                        help="decoupled weight decay (AdamW) per step, times the learning rate; "
                             "0 (default) keeps plain Adam")
    parser.add_argument("--grad-clip", type=float, default=RECIPE_DEFAULTS["grad_clip"],
                        help=f"clip the global gradient norm at this value before each step "
                             f"(default {RECIPE_DEFAULTS['grad_clip']:g}, the published scripts'; inf: no clipping)")
    parser.add_argument("--precision", choices=PRECISIONS, default=RECIPE_DEFAULTS["precision"],
                        help="fp32 (default) or bf16: the encoders' forward pass under bfloat16 "
                             "autocast; the loss is computed in float32")


def check_arguments(args):
    if args.warmup_steps < 0:
        raise UserError(f"--warmup-steps must be at least 0, got {args.warmup_steps}")
    if args.lr_schedule == "cosine" and args.train_steps - args.warmup_steps < 2:
        # The cosine's last step has learning rate 0: it needs a step before it to train at all.
        raise UserError(f"--lr-schedule cosine needs at least 2 steps after --warmup-steps "
                        f"{args.warmup_steps}, but --train-steps is {args.train_steps}")
    if args.warmup_steps > args.train_steps:
        raise UserError(f"--warmup-steps {args.warmup_steps} exceeds --train-steps {args.train_steps}: "
                        "the learning rate would never reach --lr")
    for flag, beta in (("--adam-beta1", args.adam_beta1), ("--adam-beta2", args.adam_beta2)):
        if not 0.0 <= beta < 1.0:
            raise UserError(f"{flag} must be in [0, 1), got {beta}")
    if not 0.0 < args.adam_eps < float("inf"):
        raise UserError(f"--adam-eps must be a finite number > 0, got {args.adam_eps}")
    if not args.grad_clip > 0.0:  # inf is allowed: no clipping
        raise UserError(f"--grad-clip must be > 0 (inf: no clipping), got {args.grad_clip}")
    if not 0.0 <= args.weight_decay < float("inf"):
        raise UserError(f"--weight-decay must be a finite number >= 0, got {args.weight_decay}")
    if args.weight_decay * args.lr >= 1.0:
        raise UserError(f"--weight-decay {args.weight_decay} times --lr {args.lr} is at least 1: AdamW "
                        "would scale every weight by 1 - lr * wd <= 0 at each step")


def lr_at(step, lr, schedule="constant", warmup_steps=0, train_steps=1):
    """The learning rate of step `step` (1-based, as the training loops count)."""
    if step <= warmup_steps:
        return lr * step / warmup_steps
    if schedule == "constant":
        return lr
    progress = (step - warmup_steps) / max(1, train_steps - warmup_steps)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(params, args):
    betas = (args.adam_beta1, args.adam_beta2)
    if args.weight_decay:
        return torch.optim.AdamW(params, lr=args.lr, betas=betas, eps=args.adam_eps,
                                 weight_decay=args.weight_decay)
    return torch.optim.Adam(params, lr=args.lr, betas=betas, eps=args.adam_eps)


def undecayed_last(params, last_undecayed):
    """The optimiser's parameters, with the last one (a learned temperature, as CLIP's logit
    scale) in a group without weight decay when last_undecayed."""
    if not last_undecayed:
        return params
    return [{"params": params[:-1]}, {"params": params[-1:], "weight_decay": 0.0}]


def set_lr(optimizer, step, args):
    """Put step's learning rate into every parameter group (a no-op for the published recipe)."""
    lr = lr_at(step, args.lr, args.lr_schedule, args.warmup_steps, args.train_steps)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def descend(loss, optimizer, params, args):
    """The end of every training step: backward, the gradients' global norm clipped at
    --grad-clip, the optimiser's step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # DDP averages the gradients over ranks here
    torch.nn.utils.clip_grad_norm_(params, max_norm=args.grad_clip)
    optimizer.step()


def autocast(args, device):
    """The context of the encoders' forward pass: bfloat16 autocast, or nothing."""
    if getattr(args, "precision", "fp32") == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()
