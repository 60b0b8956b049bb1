"""Estimate the number of content (shared) latents from a trained model's encodings, without ground truth.

    python content_size.py runs/table1/p1.0_multi_s0        # a main_mlp.py or main_imgtxt.py model folder

Encodes held-out pairs (the simulation: fresh ones; image/text: the test split) and
writes size_estimates.py's table to <model>/content_size.csv: the TwoNN and canonical-
correlation upper bounds, MLE and lPCA beside them, the estimate (the smaller bound) and
the truth: the simulation's --content-n, or image/text's 3 content factors.
The last line printed is `content size: N`.
"""
import os
import sys

from cli import OneLineParser, UserError, run_cli
from facts import ARGS_FILE
from files import read_json
from size_estimates import write


def simulation_encodings(model_dir, seed, batches, no_cuda):
    """{hz1: ..., hz2: ...} of fresh held-out pairs, and the true content size."""
    import torch

    import main_mlp
    from shared_content import SharedContent, encode_batches
    from utils import get_device
    parent, name = os.path.split(os.path.normpath(model_dir))
    args = main_mlp.build_parser().parse_args(["--model-dir", parent or ".", "--model-id", name, "--evaluate",
                                               "--load-args", "--seed", str(seed), "--num-eval-batches", "1"])
    save_dir, saved = main_mlp.load_for_evaluation(args)
    if args.view_latents:
        raise UserError(f"{model_dir} sees its latents through --view-latents: each set of views has "
                        "its own content, and this estimate assumes one content shared by all views")
    device = get_device(no_cuda)
    setting = SharedContent(args)
    space, net = setting.load(save_dir, saved, device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    data, _ = encode_batches(space, net, setting.loss(), batches, gen, False, main_mlp.EVAL_BATCH)
    return {f"hz{k}": data[f"hz{k}"] for k in range(1, args.n_views + 1)}, args.content_n


def imgtxt_encodings(model_dir, seed, no_cuda):
    """{image: ..., text: ...} of the test split, and the number of content factors
    (Multimodal3DIdent.CONTENT_FACTORS: shape and position, all discrete)."""
    import main_imgtxt
    from datasets import Multimodal3DIdent
    import run
    from utils import get_device
    parent, name = os.path.split(os.path.normpath(model_dir))
    saved = read_json(os.path.join(model_dir, ARGS_FILE), ARGS_FILE)
    args = main_imgtxt.build_parser().parse_args(["--model-dir", parent or ".", "--model-id", name, "--evaluate",
                                                  "--load-args", "--seed", str(seed), "--datapath",
                                                  saved["datapath"], "--workers", "0"])
    save_dir, saved = run.evaluation_folder(args, main_imgtxt.build_parser(), main_imgtxt.LOADED_ARGS,
                                            check=main_imgtxt.check_args, required=main_imgtxt.PUBLISHED_ARGS)
    _, hz, _, _ = main_imgtxt.encode_splits(args, get_device(no_cuda), save_dir, saved)
    return hz["test"], len(Multimodal3DIdent.CONTENT_FACTORS)


def main(argv=None):
    p = OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a trained model folder of main_mlp.py or main_imgtxt.py")
    p.add_argument("--seed", type=int, default=12345, help="seed of the held-out pairs (simulation)")
    p.add_argument("--num-batches", type=int, default=1, help="simulation: batches of 4,096 held-out pairs (1)")
    p.add_argument("--no-cuda", action="store_true")
    args = p.parse_args(argv)
    saved = read_json(os.path.join(args.model, ARGS_FILE), ARGS_FILE)
    if not isinstance(saved, dict):
        raise UserError(f"{args.model}/args.json does not hold a model's arguments")
    if args.num_batches < 1:
        raise UserError(f"--num-batches must be at least 1, got {args.num_batches}")
    if "datapath" in saved:
        encodings, truth = imgtxt_encodings(args.model, args.seed, args.no_cuda)
    else:
        encodings, truth = simulation_encodings(args.model, args.seed, args.num_batches, args.no_cuda)
    write(args.model, encodings, truth)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main) or 0)
