"""Partial observability (main_mlp.py --view-latents): each view sees its own subset of the latents.

The multi-view generalisation of the paper by Yao et al., ICLR 2024 ("Multi-View
Causal Representation Learning with Partial Observability"). docs/partial.md
describes it in full; in short:

    latents     z ~ N(0, I_N), N = 1 + the largest index in the view list (independent,
                as the reference's numerical experiment by default)
    views       x_k = f_k(z_{S_k}): view k sees the latents S_k, in the list's order,
                through its own invertible MLP f_k of size |S_k|
    content     of a set V of two or more views: the latents all of them see,
                the intersection of their S_k; sets with an empty one are skipped
    coordinates which encoding coordinates of view k hold the content of V:
                "truth"  the reference's ground-truth selection: g_k has |S_k|
                         outputs, and coordinate i stands for the latent S_k[i],
                         so V's coordinates in view k are the positions of V's
                         content in S_k (sets share coordinates where their
                         contents overlap)
                "split"  no ground truth (beyond which sets share anything):
                         every set gets --encoding-size coordinates of its own in
                         each of its views, in the order of the sets, so g_k has
                         --encoding-size x (number of sets of view k) outputs
    loss        the sum over the sets V of main_mlp's K-view loss (the mean over
                the pairs of views in V of the symmetric L2 InfoNCE loss) on V's
                coordinates

Views are numbered from 1 (f1, g1, hz1, as everywhere in main_mlp.py), latents from
0 (as in the view list and the reference's S_k). The evaluation writes partial.csv
(COLUMNS) beside results.csv.
"""
import itertools
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

import dependencies
import probes
from cli import UserError
from facts import CONTENT_COORDS, PARTIAL_COLUMNS, PARTIAL_FILE
from distributed import DistInfo, gather_with_grad
from encoders import ViewEncoder, simulation_encoder
from invertible_network_utils import construct_invertible_mlp, mlp_shell
from losses import LpSimCLRLoss, symmetric_lp_loss
from utils import load_into
from viewspec import FLAG, canonical, parse_spec  # noqa: F401 (parse_spec: partial.parse_spec)

MODES = CONTENT_COORDS
MAX_ENCODING = 2**16  # split: coordinates per view at most (each a unit of the encoder's last layer)
FILE = PARTIAL_FILE
COLUMNS = PARTIAL_COLUMNS
# Flags of the shared-content model that have no meaning when the view list gives the latents.
UNUSED = ("content_n", "style_n", "modality_n", "style_change_prob", "c_param", "m_param")
# ... and those that it refuses, with every latent dependency of dependencies.REGISTRY.
REFUSED = ("independent_covariances",
           "shared_mixing", "shared_encoder", "permuted_content",
           "discrete_content", "discrete_style", "discrete_modality")


def add_arguments(p):
    p.add_argument(FLAG, default=None, metavar="VIEWS", type=canonical,
                   help="partial observability (Yao et al., 2024): the latents each view sees, views "
                        "separated by ';', each a comma list of indices and ranges A-B, e.g. "
                        "'0-4;0,1,2,4,5;0,1,2,3,5;0,1,3,4,5' (docs/partial.md)")
    p.add_argument("--content-coords", choices=MODES, default=None,
                   help=f"with {FLAG}: which encoding coordinates hold each set's content: 'truth' "
                        "(default; the known position of each latent, as the reference) or 'split' "
                        "(--encoding-size coordinates per set, no ground truth)")


# ------------------------------------------------- sets and coordinates ---

def content_sets(views):
    """[(views, content)] for every set of two or more views (0-based, by size, then in
    lexicographic order, as itertools.combinations gives them) whose latents intersect:
    content = the sorted latents that every view of the set sees."""
    out = []
    for size in range(2, len(views) + 1):
        for subset in itertools.combinations(range(len(views)), size):
            content = sorted(set.intersection(*(set(views[k]) for k in subset)))
            if content:
                out.append((subset, tuple(content)))
    return out


def set_name(subset):
    """(0, 2) -> '1+3': a set of views, numbered from 1."""
    return "+".join(str(k + 1) for k in subset)


def assign_coordinates(views, sets, mode, width):
    """([{view: coordinates}] for each set, [encoding size of each view]); see the docstring."""
    if mode == "truth":
        coords = [{k: tuple(views[k].index(i) for i in content) for k in subset} for subset, content in sets]
        return coords, [len(v) for v in views]
    sizes, coords = [0] * len(views), []
    most = max(sum(k in subset for subset, _ in sets) for k in range(len(views))) * width
    if most > MAX_ENCODING:  # before the coordinate tuples, which would exhaust memory
        raise UserError(f"--encoding-size {width} gives a view {most} coordinates with --content-coords "
                        f"split (--encoding-size per set of views it is in); at most {MAX_ENCODING}")
    for subset, _ in sets:
        entry = {}
        for k in subset:
            entry[k] = tuple(range(sizes[k], sizes[k] + width))
            sizes[k] += width
        coords.append(entry)
    return coords, sizes


@dataclass(frozen=True)
class Layout:
    views: tuple     # the latents of each view
    sets: list       # [(views, content)]
    coords: list     # [{view: coordinates}], one per set
    sizes: list      # encoding size of each view

    @property
    def n_latents(self):
        return 1 + max(max(v) for v in self.views)


def layout(args):
    views = parse_spec(args.view_latents)
    sets = content_sets(views)
    alone = [k for k in range(len(views)) if not any(k in subset for subset, _ in sets)]
    if alone:
        raise UserError(f"{FLAG}: view {alone[0] + 1} shares no latent with any other view, so "
                        "nothing would train its encoder")
    coords, sizes = assign_coordinates(views, sets, args.content_coords or MODES[0], args.encoding_size)
    return Layout(views, sets, coords, sizes)


def check_args(args, parser):
    """Refuse flags that the partial-observability model does not have (one line, naming the flag)."""
    if args.view_latents is None:
        # --resume and --load-args take the view list from args.json (checked again then)
        if args.content_coords is not None and not (args.resume or args.load_args):
            raise UserError(f"--content-coords needs {FLAG}")
        return
    layout(args)  # the view list's own errors
    if args.n_views != parser.get_default("n_views"):
        raise UserError(f"--n-views cannot be combined with {FLAG}: the view list gives the views")
    for key in (*(d.key for d in dependencies.REGISTRY), *REFUSED):
        if getattr(args, key, False):
            raise UserError(f"--{key.replace('_', '-')} cannot be combined with {FLAG} "
                            "(the views see independent Gaussian latents through their own networks)")
    for key in UNUSED:
        if getattr(args, key) != parser.get_default(key):
            raise UserError(f"--{key.replace('_', '-')} has no meaning with {FLAG} (the view list gives "
                            "the latents each view sees); leave it out")


def undersized(plan):
    """(set name, coordinates, content size) of the first set whose coordinates in a view are
    fewer than the latents of its content (split with a small --encoding-size), or None."""
    for (subset, content), coords in zip(plan.sets, plan.coords):
        width = min(len(c) for c in coords.values())
        if width < len(content):
            return set_name(subset), width, len(content)
    return None


# ------------------------------------------------------------ the setting ---

class PartialObservability:
    """main_mlp.py's setting for --view-latents (settings.py names the interface it shares
    with shared_content.SharedContent)."""

    def __init__(self, args):
        self.args = args
        self.plan = layout(args)

    def build(self, device):
        """The latent space and the networks of a new training, drawn from --seed."""
        mixings, encoders = build_networks(self.args, self.plan, np.random.default_rng(self.args.seed))
        return PartialSpace(self.plan.views, device), ViewEncoder(mixings, encoders).to(device)

    def load(self, save_dir, saved, device):
        space = PartialSpace(self.plan.views, device)
        mixings, encoders = network_shells(self.args, self.plan)
        for k, (f, g) in enumerate(zip(mixings, encoders), 1):
            load_into(f, os.path.join(save_dir, f"f{k}.pt"))
            load_into(g, os.path.join(save_dir, f"g{k}.pt"))
        return space, ViewEncoder(mixings, encoders).to(device).eval()

    def loss(self, info=DistInfo(), tau=None):
        tau = getattr(self.args, "tau", 1.0) if tau is None else tau
        return SetLoss(self.plan, info, base=LpSimCLRLoss(tau=tau))

    def warning(self):
        small = undersized(self.plan)
        if small:
            name, width, size = small
            return (f"--encoding-size {width} gives the set of views {name} fewer coordinates than "
                    f"its content has latents ({size}): that content cannot be recovered in full")
        return None

    def quick_probe(self, space, net, loss_fn, generator, batch):
        return quick_probe(space, net, loss_fn, generator, self.plan, batch, self.args.seed)

    def encode(self, space, net, loss_fn, n_batches, generator, batch):
        return encode(space, net, loss_fn, n_batches, batch, generator)

    def evaluation(self, save_dir, val, test, device):
        """results.csv (every latent from every view's encoding) and partial.csv (every set's
        content and the rest from each of its views' coordinates for the set), printed."""
        columns = probes.result_columns(self.args.mlp_eval)
        results = latent_rows(self.plan, val, test, columns, device)
        sets = set_rows(self.plan, val, test, columns["r2_nonlinear"], device)
        print("Regression results:\n" + results.to_string(index=False))
        print("Content of each set of views:\n" + sets.to_string(index=False))
        return results, {FILE: sets}, {"encoding_sizes": self.plan.sizes}


# ------------------------------------------------------- data and networks ---

class PartialSpace:
    """Samples z ~ N(0, I_N) and cuts each view's latents out of it."""

    def __init__(self, views, device="cpu"):
        self.view_latents = views
        self.n_views = len(views)
        self.n_latents = 1 + max(max(v) for v in views)
        self.device = torch.device(device)
        self.params = {}  # nothing drawn per seed besides the networks
        self._index = [torch.tensor(v, device=self.device) for v in views]

    def sample(self, n, generator=None):
        return {"z": torch.randn(n, self.n_latents, device=self.device, generator=generator)}

    def views(self, blocks, content=None):
        return tuple(blocks["z"].index_select(1, index) for index in self._index)


def build_networks(args, plan, rng):
    """(mixings f_k, encoders g_k) of every view, at the view's own sizes."""
    mixings = [construct_invertible_mlp(len(v), args.n_mixing_layer, rng=rng) for v in plan.views]
    encoders = [simulation_encoder(len(v), size, args.encoder_init) for v, size in zip(plan.views, plan.sizes)]
    return mixings, encoders


def network_shells(args, plan):
    """Untrained networks of the right shapes, to load f1.pt, g1.pt, ... into."""
    mixings = [mlp_shell(len(v), args.n_mixing_layer) for v in plan.views]
    encoders = [simulation_encoder(len(v), size) for v, size in zip(plan.views, plan.sizes)]
    return mixings, encoders


class SetLoss(nn.Module):
    """The training objective: sum over the sets V of the mean over the pairs (i, j) in V of
    symmetric_lp_loss on V's coordinates (losses.MultiViewLpLoss's term restricted to them).
    Takes each view's encodings of this rank's rows, the first n tuples and the rest
    negatives; the negatives of all ranks are gathered once, with gradients."""

    def __init__(self, plan, info=DistInfo(), base=None):
        super().__init__()
        self.info, self.base = info, base
        self.terms = [(subset, {k: torch.tensor(c) for k, c in coords.items()})
                      for (subset, _), coords in zip(plan.sets, plan.coords)]

    def forward(self, encodings, n):
        negatives = [gather_with_grad(h[n:], self.info) for h in encodings]
        total = 0.0
        for subset, coords in self.terms:
            def pick(h, k):
                return h.index_select(1, coords[k].to(h.device))
            pairs = [symmetric_lp_loss(self.base, pick(encodings[i][:n], i), pick(encodings[j][:n], j),
                                       pick(negatives[i], i), pick(negatives[j], j))
                     for i, j in itertools.combinations(subset, 2)]
            total = total + (pairs[0] if len(pairs) == 1 else torch.stack(pairs).mean())
        return total


# ------------------------------------------------------------- evaluation ---

def encode(space, net, loss_fn, n_batches, batch, generator):
    """({"z": latents, "hz1": ..., "hzK": ...}, mean loss) of n_batches x `batch` fresh tuples."""
    out, losses = {}, []
    with torch.no_grad():
        for _ in range(n_batches):
            blocks = space.sample(2 * batch, generator)
            h = list(net(*space.views(blocks)).values())
            losses.append(loss_fn(h, batch).item())
            for name, value in (("z", blocks["z"]), *((f"hz{k}", e) for k, e in enumerate(h, 1))):
                out.setdefault(name, []).append(value[:batch].cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}, float(np.mean(losses))


def quick_probe(space, net, loss_fn, generator, plan, batch, seed):
    """Loss on a fresh batch and, per set, linear R^2 of its content from the coordinates of
    its first view (75/25 split); "content": their mean. Non-finite values are the caller's."""
    from sklearn.model_selection import train_test_split
    data, loss = encode(space, net, loss_fn, 1, batch, generator)
    r2 = {}
    for (subset, content), coords in zip(plan.sets, plan.coords):
        k = subset[0]
        x = data[f"hz{k + 1}"][:, list(coords[k])]
        if not np.isfinite(x).all():
            return loss, None
        x = probes.standardize(x, x)[0]
        x_tr, x_te, y_tr, y_te = train_test_split(x, data["z"][:, list(content)], random_state=seed)
        r2[set_name(subset)] = probes.linear_r2(x_tr, y_tr, x_te, y_te)
    return loss, {"content": float(np.mean(list(r2.values()))), **r2}


def text(indices):
    return " ".join(map(str, indices))


def targets_of(plan, subset, content, k):
    """{target: (kind, latents)}: the set's content, the view's other latents, each latent it sees."""
    other = [i for i in plan.views[k] if i not in content]
    out = {"content": ("content", list(content))}
    if other:
        out["other"] = ("other", other)
    out.update({f"z{i}": ("latent", [i]) for i in sorted(plan.views[k])})
    return out


def set_rows(plan, val, test, nonlinear, device):
    """partial.csv's rows: for every set, every view in it and every target of targets_of,
    R^2 (linear and `nonlinear`) and MCC of the target from the view's coordinates for the set."""
    rows = []
    names = ["linear", nonlinear, "mcc", "mcc_spearman"]
    for (subset, content), coords in zip(plan.sets, plan.coords):
        for k in subset:
            cols = list(coords[k])
            x_val, x_test = probes.standardize(val[f"hz{k + 1}"][:, cols], test[f"hz{k + 1}"][:, cols])
            wanted = targets_of(plan, subset, content, k)
            scores = probes.evaluate_probes(names, x_val, x_test, {
                t: (val["z"][:, latents], test["z"][:, latents]) for t, (_, latents) in wanted.items()},
                device=device)
            rows += [(set_name(subset), k + 1, text(cols), kind, text(latents),
                      *(scores[t][name] for name in names)) for t, (kind, latents) in wanted.items()]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def latent_rows(plan, val, test, columns, device):
    """results.csv for such a model: every latent z0, z1, ... predicted from every view's whole
    encoding (a latent the view does not see should score near 0)."""
    rows = []
    names = [f"z{i}" for i in range(plan.n_latents)]
    for k in range(len(plan.views)):
        x_val, x_test = probes.standardize(val[f"hz{k + 1}"], test[f"hz{k + 1}"])
        scores = probes.evaluate_probes(list(columns.values()), x_val, x_test,
                                        {n: (val["z"][:, [i]], test["z"][:, [i]]) for i, n in enumerate(names)},
                                        device=device)
        rows += [(f"hz{k + 1}", n, *(scores[n][p] for p in columns.values())) for n in names]
    return pd.DataFrame(rows, columns=["encoding", "predicted_factors", *columns])
