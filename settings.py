"""The simulation's settings: what main_mlp.py trains and evaluates, behind one interface.

Two settings implement it:
    shared_content.SharedContent        one content block shared by all K views (the paper's)
    partial.PartialObservability        --view-latents: each view sees its own latents, and
                                        every set of views has its own content

A setting is made from the parsed flags, and gives
    build(device)                       (space, net) of a new training, drawn from --seed
    load(save_dir, saved, device)       (space, net) of a trained model folder
    loss(info, tau)                     the training and evaluation loss (tau: a number or a
                                        losses.LearnedTemperature; None: --tau)
    warning()                           a line to print before training, or None
    quick_probe(space, net, loss_fn, generator, batch)
                                        (loss on a fresh batch, {name: linear R²} logged while
                                        training); None for the R² where the encodings are
                                        not finite
    encode(space, net, loss_fn, n_batches, generator, batch)
                                        ({"hz1": ..., latents...}, mean loss) of fresh tuples
    evaluation(save_dir, val, test, device)
                                        (results.csv's table, {other file: table}, other fields
                                        of evaluation.json), printed as it goes

`space` samples latent blocks (sample(n, generator)) and cuts them into views
(views(blocks)); `net` is an encoders.ViewEncoder.
"""
from partial import PartialObservability
from shared_content import SharedContent


def of(args):
    """The setting that the flags ask for."""
    return PartialObservability(args) if getattr(args, "view_latents", None) else SharedContent(args)
