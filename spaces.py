"""Latent spaces of the numerical simulation and the sampling of (z1, z2) pairs.

z = (c, s, m1, m2); a pair shares content c, the second view sees perturbed
style s~ = s + mask * eps, and each view has its own modality-specific block:
z1 = (c, s, m1), z2 = (c, s~, m2). Sampling runs in torch on any device.

A block may instead be discrete (the paper's Figure 5 setting, which the
published scripts cannot run): each dimension uniform on k evenly spaced values,
standardised to mean 0 and variance m_param^2 like the Gaussian blocks. A
discrete style dimension "changes" by being redrawn, so s~ stays discrete.
"""
import numpy as np
import torch
from scipy.stats import wishart

BLOCKS = ("c", "s", "a", "m1", "m2")  # covariance names: content, style, style change, modalities
PARAMS_FILE = "latent_space.pt"
SHIFT_STREAM = 1  # spawn key of the stream that draws B and a in new runs


def _wishart(n, random_state):
    return torch.as_tensor(np.atleast_2d(wishart.rvs(df=n, scale=np.eye(n), size=1,
                                                     random_state=random_state)), dtype=torch.float64)


def draw_parameters(seed, content_n, style_n, modality_n, statistical_dependence,
                    content_dependent_style, independent_covariances=False, published=False,
                    generator_device="cpu"):
    """The parameters of the latent distribution that a training seed fixes.

    The covariances follow the published recipe by default: every Wishart draw
    uses the training seed as its random state, so blocks of equal size share one
    covariance (the paper's numbers were produced that way);
    `independent_covariances` draws each block from its own stream instead.

    B and a: the published scripts drew them from a torch generator seeded with
    the training seed on the training device, the very stream that then samples
    the first training batch (so entries of B equal the first batch's content).
    New runs draw them from a stream of their own (saved with the model);
    `published=True` rebuilds the published draw, on `generator_device`.
    """
    params = {}
    if statistical_dependence:
        sizes = {"c": content_n, "s": style_n, "a": style_n, "m1": modality_n, "m2": modality_n}
        streams = np.random.SeedSequence(seed).spawn(len(BLOCKS))
        for name, stream in zip(BLOCKS, streams):
            if sizes[name] > 0:
                state = np.random.RandomState(stream.generate_state(1)) if independent_covariances else seed
                params[f"Sigma_{name}"] = _wishart(sizes[name], state)
    if content_dependent_style:
        g_seed = seed if published else int(np.random.SeedSequence([seed, SHIFT_STREAM]).generate_state(1)[0])
        g = torch.Generator(device=generator_device).manual_seed(g_seed)
        params["B"] = torch.randn(style_n, content_n, generator=g, device=generator_device).cpu()
        params["a"] = torch.randn(style_n, generator=g, device=generator_device).cpu()
    return params


def discrete_levels(k, scale=1.0):
    """The k values of a discrete latent dimension: evenly spaced, mean 0, variance scale^2."""
    levels = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    return (levels / levels.pow(2).mean().sqrt() * scale).float()


class LatentSpace:
    """Samples batches of latent pairs from a fixed distribution on one device.

    `discrete` maps block names "c", "s", "m" to a number of values k >= 2;
    blocks not named are Gaussian."""

    def __init__(self, content_n, style_n, modality_n, style_change_prob=1.0, c_param=1.0,
                 m_param=1.0, params=None, device="cpu", discrete=None):
        self.content_n, self.style_n, self.modality_n = content_n, style_n, modality_n
        self.style_change_prob = style_change_prob
        self.c_param, self.m_param = c_param, m_param
        self.params = dict(params or {})
        self.device = torch.device(device)
        # Cholesky factors in float64 on the CPU: Wishart draws with df = n can be ill-conditioned.
        self._chol = {name: torch.linalg.cholesky(self.params[f"Sigma_{name}"]).float().to(self.device)
                      for name in BLOCKS if f"Sigma_{name}" in self.params}
        self._B = self.params["B"].float().to(self.device) if "B" in self.params else None
        self._a = self.params["a"].float().to(self.device) if "a" in self.params else None
        self._levels = {b: discrete_levels(k, m_param).to(self.device)
                        for b, k in (discrete or {}).items() if k}
        if "s" in self._levels and self._B is not None:
            raise ValueError("content-dependent style would make a discrete style block continuous")

    @property
    def view_dim(self):
        return self.content_n + self.style_n + self.modality_n

    def _draw(self, name, n, width, generator):
        """A latent block: discrete values where the block is discrete, else Gaussian."""
        block = "m" if name in ("m1", "m2") else name
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
        """A dict of latent blocks c, s, s~, m1, m2 for n pairs."""
        nc, ns, nm = self.content_n, self.style_n, self.modality_n
        c = self._draw("c", n, nc, generator)
        s = self._draw("s", n, ns, generator)
        m1 = self._draw("m1", n, nm, generator)
        m2 = self._draw("m2", n, nm, generator)
        if self._B is not None:
            s = s + c @ self._B.T + self._a
        mask = torch.rand(n, ns, device=self.device, generator=generator) < self.style_change_prob
        if "s" in self._levels:
            s_tilde = torch.where(mask, self._draw("s", n, ns, generator), s)
        else:
            s_tilde = s + mask * self._normal("a", n, ns, self.c_param, generator)
        return {"c": c, "s": s, "s~": s_tilde, "m1": m1, "m2": m2}

    @staticmethod
    def views(blocks, content=None):
        """z1 = (c, s, m1) and z2 = (c, s~, m2); `content` replaces c in both views."""
        c = blocks["c"] if content is None else content
        return (torch.cat((c, blocks["s"], blocks["m1"]), 1),
                torch.cat((c, blocks["s~"], blocks["m2"]), 1))


def save_parameters(params, path, atomic_save):
    atomic_save({k: v.cpu() for k, v in params.items()}, path)


def load_parameters(path):
    return torch.load(path, map_location="cpu", weights_only=True)
