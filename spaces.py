"""Latent spaces of the numerical simulation and the sampling of (z1, z2) pairs, or K-tuples.

z = (c, s, m1, m2); a pair shares content c, the second view sees perturbed
style s~ = s + mask * eps, and each view has its own modality-specific block:
z1 = (c, s, m1), z2 = (c, s~, m2). Sampling runs in torch on any device.

With K > 2 views (as in Yao et al., ICLR 2024, who extend this paper's result
to any number of views) every view k >= 2 perturbs the style on its own,
s~k = s + mask_k * eps_k (named "s~" for k = 2, "s~3", "s~4", ...), and has its
own modality-specific block mk: zk = (c, s~k, mk). Content is shared by all.

A block may instead be discrete (the paper's Figure 5 setting, which the
published scripts cannot run): each dimension uniform on k evenly spaced values,
standardised to mean 0 and variance m_param^2 like the Gaussian blocks. A
discrete style dimension "changes" by being redrawn, so s~ stays discrete.
"""
import os

import torch

import dependencies
from cli import UserError, first_line

PARAMS_FILE = "latent_space.pt"


def style_key(view):
    """The style block that view `view` (1-based) sees: s, s~, s~3, s~4, ..."""
    return "s" if view == 1 else "s~" if view == 2 else f"s~{view}"


def block_names(n_views=2):
    """Every latent block of a sample, in the order of evaluation targets: c, s, s~, ..., m1, m2, ..."""
    return ("c", *(style_key(k) for k in range(1, n_views + 1)), *(f"m{k}" for k in range(1, n_views + 1)))


def draw_parameters(seed, content_n, style_n, modality_n, keys=(), independent_covariances=False,
                    published=False, generator_device="cpu", n_views=2):
    """The parameters of the latent distribution that a training seed fixes: those of the
    dependencies named in `keys` (dependencies.py; e.g. "statistical_dependence").
    `published=True` rebuilds the published scripts' draw, on `generator_device`."""
    ctx = dependencies.Draw(seed, {"c": content_n, "s": style_n, "m": modality_n}, n_views, published,
                            generator_device, independent_covariances)
    return dependencies.draw_parameters(ctx, keys)


def discrete_levels(k, scale=1.0):
    """The k values of a discrete latent dimension: evenly spaced, mean 0, variance scale^2."""
    levels = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    return (levels / levels.pow(2).mean().sqrt() * scale).float()


class LatentSpace:
    """Samples batches of latent pairs from a fixed distribution on one device.

    `discrete` maps block names "c", "s", "m" to a number of values k >= 2;
    blocks not named are Gaussian."""

    def __init__(self, content_n, style_n, modality_n, style_change_prob=1.0, c_param=1.0,
                 m_param=1.0, params=None, device="cpu", discrete=None, n_views=2):
        self.content_n, self.style_n, self.modality_n = content_n, style_n, modality_n
        self.n_views = n_views
        self.style_change_prob = style_change_prob
        self.c_param, self.m_param = c_param, m_param
        self.params = dict(params or {})
        self.device = torch.device(device)
        self._levels = {b: discrete_levels(k, m_param).to(self.device)
                        for b, k in (discrete or {}).items() if k}
        # The dependencies whose parameters were drawn, and the two places where they act.
        self._chol, self._shifts = {}, []
        for dep in dependencies.REGISTRY:
            own = {k: v for k, v in self.params.items() if dep.owns(k)}
            if not own:
                continue
            if set(dep.gaussian) & set(self._levels):
                raise ValueError(f"{dep.flag} needs Gaussian blocks {dep.gaussian}: {dep.why}")
            if dep.factors:
                self._chol.update(dep.factors(own, self.device))
            if dep.shift:
                self._shifts.append((dep.shift, {k: v.float().to(self.device) for k, v in own.items()}))

    @property
    def view_dim(self):
        return self.content_n + self.style_n + self.modality_n

    def _draw(self, name, n, width, generator):
        """A latent block: discrete values where the block is discrete, else Gaussian."""
        block = "m" if name.startswith("m") else name
        if block in self._levels:
            levels = self._levels[block]
            return levels[torch.randint(len(levels), (n, width), device=self.device, generator=generator)]
        return self._normal(name, n, width, self.m_param, generator)

    def _normal(self, name, n, width, scale, generator):
        eps = torch.randn(n, width, device=self.device, generator=generator)
        if name in self._chol:
            return eps @ self._chol[name].T
        return eps * scale

    def sample(self, n, generator=None):
        """A dict of latent blocks c, s, s~, m1, m2 for n pairs (and s~k, mk for more views).

        The draws come in a fixed order (c, s, m1, m2, ..., then each view's style
        change), so two views give the same samples for a seed as ever."""
        nc, ns, nm = self.content_n, self.style_n, self.modality_n
        c = self._draw("c", n, nc, generator)
        s = self._draw("s", n, ns, generator)
        m = {f"m{k}": self._draw(f"m{k}", n, nm, generator) for k in range(1, self.n_views + 1)}
        drawn = {"c": c, "s": s, **m}
        for shift, params in self._shifts:
            drawn = shift(drawn, params)
        blocks = {"c": drawn["c"], "s": drawn["s"]}
        for view in range(2, self.n_views + 1):
            blocks[style_key(view)] = self._perturbed(drawn["s"], n, generator)
        return {**blocks, **{k: drawn[k] for k in m}}

    def _perturbed(self, s, n, generator):
        """Style as another view sees it: each dimension changes with probability p."""
        mask = torch.rand(n, self.style_n, device=self.device, generator=generator) < self.style_change_prob
        if "s" in self._levels:
            return torch.where(mask, self._draw("s", n, self.style_n, generator), s)
        return s + mask * self._normal("a", n, self.style_n, self.c_param, generator)

    @staticmethod
    def views(blocks, content=None):
        """(z1, ..., zK): z1 = (c, s, m1), z2 = (c, s~, m2), zk = (c, s~k, mk); `content`
        replaces c in every view."""
        c = blocks["c"] if content is None else content
        n_views = sum(1 for key in blocks if key[0] == "m")
        return tuple(torch.cat((c, blocks[style_key(k)], blocks[f"m{k}"]), 1) for k in range(1, n_views + 1))


def save_parameters(params, path, atomic_save):
    atomic_save({k: v.cpu() if torch.is_tensor(v) else v for k, v in params.items()}, path)


def load_parameters(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def read_parameters(save_dir):
    """latent_space.pt of a model folder (a dict), or None where there is none (the published scripts')."""
    path = os.path.join(save_dir, PARAMS_FILE)
    if not os.path.exists(path):
        return None
    try:
        params = load_parameters(path)
    except Exception as err:
        raise UserError(f"cannot read {path}: {first_line(err)}") from None
    if not isinstance(params, dict):
        raise UserError(f"{path} does not hold a model's latent parameters (a dict)")
    return params
