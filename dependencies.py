"""Dependencies between the simulation's latent blocks: one table, one entry each.

Every entry becomes a flag of main_mlp.py (--KEY with '-' for '_', on or off),
a setting that --load-args restores, a part of the names of Table 1's rows, and
a column of the report. An entry gives
    key        its args.json name; the flag is --key with hyphens
    short      its part of a row name: p0.75_stat_cau_multi
    label      its column in reports (Table 1's Stat, Cau)
    help       the flag's help
    draw       draw(ctx) -> {name: tensor}: the parameters that a training seed fixes,
               on the CPU, saved in latent_space.pt (ctx: a Draw); a new entry draws from
               a stream of its own, stream(ctx.seed, k), with a k no other entry uses
    owns       owns(name) -> bool: which saved parameters are the entry's
    factors    factors(params, device) -> {block: L} or None: the Gaussian noise of these
               blocks (c, s, m1, m2, ..., a: the style change) is eps @ L.T instead of
               eps * scale
    shift      shift(blocks, params) -> blocks or None: applied to the blocks c, s, m1, ...
               once drawn, before each view's style change (so the views see it);
               params are the entry's own, float32, on the sampling device
    gaussian   the blocks ("c", "s", "m") that must stay Gaussian with it, and why:
               --discrete-* of such a block is refused with that reason
    published  the published scripts have it: their folders are rebuilt with
               draw(ctx) with ctx.published set

The order of REGISTRY is the order of draws, of flags and of report columns:
a new entry goes last, so that existing seeds keep their samples.
"""
from dataclasses import dataclass
from typing import Callable, Optional

# numpy, scipy and torch are imported where the draws need them: the runner and the
# report read this table (keys, names, labels) without loading torch.

BLOCKS = ("c", "s", "a", "m1", "m2")  # covariance names: content, style, style change, modalities


@dataclass(frozen=True)
class Draw:
    seed: int
    sizes: dict                       # {"c": content_n, "s": style_n, "m": modality_n}
    n_views: int = 2
    published: bool = False           # rebuild a published folder's draw
    generator_device: str = "cpu"     # the device whose generator the published scripts used
    independent_covariances: bool = False


@dataclass(frozen=True)
class Dependency:
    key: str
    short: str
    label: str
    help: str
    draw: Callable
    owns: Callable
    factors: Optional[Callable] = None
    shift: Optional[Callable] = None
    gaussian: tuple = ()
    why: str = ""
    published: bool = False

    @property
    def flag(self):
        return "--" + self.key.replace("_", "-")


def stream(seed, k):
    """The seed of stream k of a training seed: independent of the training's own streams."""
    import numpy as np
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


# ------------------------------------------------------------ the entries ---

def _wishart(n, random_state):
    import numpy as np
    import torch
    from scipy.stats import wishart
    return torch.as_tensor(np.atleast_2d(wishart.rvs(df=n, scale=np.eye(n), size=1,
                                                     random_state=random_state)), dtype=torch.float64)


def draw_covariances(ctx):
    """One Wishart(n, I) covariance per block. As published, every draw uses the training
    seed as its random state, so blocks of equal size share one matrix (the paper's numbers
    were made that way); with independent_covariances each block has a stream of its own."""
    import numpy as np
    names = (*BLOCKS, *(f"m{k}" for k in range(3, ctx.n_views + 1)))  # more views: more blocks
    sizes = {"c": ctx.sizes["c"], "s": ctx.sizes["s"], "a": ctx.sizes["s"], **{n: ctx.sizes["m"] for n in names[3:]}}
    streams = np.random.SeedSequence(ctx.seed).spawn(len(names))
    params = {}
    for name, seq in zip(names, streams):
        if sizes[name] > 0:
            state = np.random.RandomState(seq.generate_state(1)) if ctx.independent_covariances else ctx.seed
            params[f"Sigma_{name}"] = _wishart(sizes[name], state)
    return params


def cholesky_factors(params, device):
    import torch
    # float64 on the CPU: Wishart draws with df = n can be ill-conditioned.
    return {key[len("Sigma_"):]: torch.linalg.cholesky(value).float().to(device)
            for key, value in params.items() if key.startswith("Sigma_")}


SHIFT_STREAM = 1  # the stream that draws B and a in new runs


def draw_shift(ctx):
    """B (style x content) and a (style), standard normal. The published scripts drew them
    from a torch generator seeded with the training seed on the training device, the very
    stream that then samples the first batch; new runs draw from a stream of their own."""
    import torch
    g_seed = ctx.seed if ctx.published else stream(ctx.seed, SHIFT_STREAM)
    g = torch.Generator(device=ctx.generator_device).manual_seed(g_seed)
    B = torch.randn(ctx.sizes["s"], ctx.sizes["c"], generator=g, device=ctx.generator_device).cpu()
    a = torch.randn(ctx.sizes["s"], generator=g, device=ctx.generator_device).cpu()
    return {"B": B, "a": a}


def shift_style(blocks, params):
    """s = s0 + B c + a."""
    return {**blocks, "s": blocks["s"] + blocks["c"] @ params["B"].T + params["a"]}


REGISTRY = (
    Dependency("statistical_dependence", "stat", "Stat",
               "draw each block's Gaussian from its own Wishart covariance instead of the identity",
               draw_covariances, lambda name: name.startswith("Sigma_"), factors=cholesky_factors,
               gaussian=("c", "s", "m"), why="its Wishart covariances are defined for Gaussian blocks only",
               published=True),
    Dependency("content_dependent_style", "cau", "Cau",
               "shift the style by the content: s = s0 + B c + a (B, a standard normal, fixed by the seed)",
               draw_shift, lambda name: name in ("B", "a"), shift=shift_style,
               gaussian=("s",), why="the shift B c + a would make the style continuous", published=True),
)


def by_key():
    return {d.key: d for d in REGISTRY}


def enabled(args):
    """The entries that a run's settings (argparse or an args.json dict) switch on."""
    get = args.get if isinstance(args, dict) else lambda key, default: getattr(args, key, default)
    return [d for d in REGISTRY if get(d.key, False)]


def row_key(p, keys):
    """Table 1's row name of p(chg) p with the dependencies `keys` on: p0.75_stat_cau."""
    return f"p{p}" + "".join(f"_{d.short}" for d in REGISTRY if d.key in keys)


def parse_row_key(key):
    """(p(chg), {dependency key: on}) of a row name made by row_key."""
    p, *shorts = key.split("_")
    return float(p[1:]), {d.key: d.short in shorts for d in REGISTRY}


def draw_parameters(ctx, keys):
    """The parameters of the dependencies `keys` (in the table's order) that ctx's seed fixes."""
    params = {}
    for d in REGISTRY:
        if d.key in keys:
            params.update(d.draw(ctx))
    return params

