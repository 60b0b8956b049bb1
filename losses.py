"""Contrastive losses: the L_p SimCLR loss of the simulation and the InfoNCE loss of image/text."""
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from cli import UserError
from distributed import DistInfo, gather_with_grad, mean_over_ranks
from utils import load_into

# Below this temperature the logits (similarities / tau) are so large that float32 rounds the
# differences between them, which carry the loss, away: --tau 1e-30 trains on a loss of 1e25.
MIN_TAU = 1e-4


def check_tau(tau):
    if not MIN_TAU <= tau < math.inf:
        raise UserError(f"--tau must be a finite number >= {MIN_TAU:g}, got {tau} (the loss divides the "
                        "similarities by it: smaller temperatures round its differences away in float32)")


def pairwise_lp(a, b, p=2.0):
    """Matrix of sum_k |a_ik - b_jk|^p, without forming the n x m x d difference tensor for p = 2."""
    if p == 2:
        sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2.0 * (a @ b.T)
        return sq.clamp_min(0.0)  # rounding can make tiny distances negative
    return torch.cdist(a, b, p=p).pow(p)


class LearnedTemperature(nn.Module):
    """A temperature trained with the encoders, as CLIP's: tau = exp(log_tau), started at the
    given tau and kept at least MIN (CLIP caps its logit scale 1 / tau at 100).
    Calling it gives tau as a tensor that carries the gradient."""
    MIN = 0.01

    def __init__(self, tau):
        super().__init__()
        self.log_tau = nn.Parameter(torch.tensor(math.log(tau)))

    def forward(self):
        return self.log_tau.clamp(min=math.log(self.MIN)).exp()


TEMPERATURE = "temperature"  # --learn-tau: the module's name in checkpoint.pt, and temperature.pt
LEARN_TAU_HELP = ("learn the temperature with the encoders, as CLIP does: log tau is a trained parameter "
                  f"that starts at --tau and stays at least {LearnedTemperature.MIN} (saved as "
                  f"{TEMPERATURE}.pt; off by default, the published fixed temperature)")


def check_learn_tau(args):
    if getattr(args, "learn_tau", False) and args.tau < LearnedTemperature.MIN:
        raise UserError(f"--learn-tau starts at --tau, which must then be at least {LearnedTemperature.MIN}, "
                        f"got {args.tau}")


def learned_temperature(args, device, info=DistInfo()):
    """--learn-tau's temperature, started at --tau, its gradient averaged over processes (it
    lives outside the module DDP wraps); None for the fixed --tau."""
    if not getattr(args, "learn_tau", False):
        return None
    tau = LearnedTemperature(args.tau).to(device)
    if info.enabled:
        tau.log_tau.register_hook(lambda grad: mean_over_ranks(grad, info))
    return tau


def load_temperature(args, save_dir, device):
    """The trained temperature of a --learn-tau model folder, or None for the fixed --tau."""
    if not getattr(args, "learn_tau", False):
        return None
    return load_into(LearnedTemperature(args.tau), os.path.join(save_dir, f"{TEMPERATURE}.pt")).to(device)


def temperature(tau):
    """The value of a temperature: a number, or a LearnedTemperature's current tensor."""
    return tau() if isinstance(tau, nn.Module) else tau


class LpSimCLRLoss(nn.Module):
    """InfoNCE with negative L_p distances as similarities (Zimmermann et al., 2021).

    loss_i = 2 * (alpha * pos_i / tau + (1 - alpha) * logmeanexp_j(-[neg_i., pos_i] / tau))
    """

    def __init__(self, p=2, tau=1.0, alpha=0.5, simclr_compatibility_mode=False,
                 simclr_denominator=True, pow=True):
        super().__init__()
        self.p = p
        self.tau = tau
        self.alpha = alpha
        self.simclr_compatibility_mode = simclr_compatibility_mode
        self.simclr_denominator = simclr_denominator
        self.pow = pow

    def forward(self, *encodings):
        """loss(anchors, positives, negatives), or the published six-argument call
        loss(z1, z2_con_z1, z3, z1_rec, z2_con_z1_rec, z3_rec), whose first three
        arguments (the latents) play no role. Returns (mean, per sample, [pos mean, neg mean])."""
        if len(encodings) not in (3, 6):
            raise TypeError(f"LpSimCLRLoss takes (anchors, positives, negatives) or the published "
                            f"six arguments, got {len(encodings)}")
        a, b, n = encodings[-3:]
        tau = temperature(self.tau)
        if self.p == 2 and self.pow and self.simclr_denominator and not self.simclr_compatibility_mode:
            loss_pos, loss_neg = self._l2_terms(a, b, n, tau)
        else:
            loss_pos, loss_neg = self._general_terms(a, b, n, tau)
        loss = 2 * (self.alpha * loss_pos + (1.0 - self.alpha) * loss_neg)
        return loss.mean(), loss, [loss_pos.mean(), loss_neg.mean()]

    def _l2_terms(self, a, b, n, tau):
        """The default case in few passes over the n x n matrix.

        -|a_i - n_j|^2 = 2 a_i.n_j - |n_j|^2 - |a_i|^2; the row constant -|a_i|^2 is
        taken out of the log-sum-exp, so the only n x n matrix is one fused addmm
        (addmm's alpha takes a number: a learned temperature scales the product instead).
        """
        inv_tau = 1.0 / tau
        sq_a = (a * a).sum(1)
        pos = ((a - b) ** 2).sum(1)
        if isinstance(inv_tau, torch.Tensor):
            scores = ((n * n).sum(1) * -inv_tau) + (a @ n.T) * (2.0 * inv_tau)
        else:
            scores = torch.addmm((n * n).sum(1) * -inv_tau, a, n.T, alpha=2.0 * inv_tau)
        lse_neg = torch.logsumexp(scores, dim=1) - sq_a * inv_tau
        loss_neg = torch.logaddexp(lse_neg, -pos * inv_tau) - math.log(n.shape[0] + 1)
        return pos * inv_tau, loss_neg

    def _general_terms(self, a, b, n, tau):
        neg = pairwise_lp(a, n, self.p)
        pos = (a - b).abs().pow(self.p).sum(-1)
        if not self.pow:
            neg, pos = neg.pow(1.0 / self.p), pos.pow(1.0 / self.p)
        if self.simclr_compatibility_mode or self.simclr_denominator:
            logits = torch.cat((-neg, -pos.unsqueeze(1)), dim=1) / tau
        else:
            logits = -neg / tau
        loss_neg = torch.logsumexp(logits, dim=1)
        if not self.simclr_compatibility_mode:
            loss_neg = loss_neg - math.log(logits.shape[1])  # logmeanexp
        return pos / tau, loss_neg


def symmetric_lp_loss(loss_fn, h1, h2, h1_neg, h2_neg):
    """The simulation's training objective: the loss averaged over both anchor modalities."""
    l12 = loss_fn(h1, h2, h1_neg)
    l21 = loss_fn(h2, h1, h2_neg)
    return 0.5 * (l12[0] + l21[0])


class MultiViewLpLoss(nn.Module):
    """The simulation's objective for K views, across processes, as one scalar.

    Takes each view's encodings of this rank's rows, the first n of them tuples
    and the rest independent negatives; gathers the negatives of every rank
    (with gradients), so each anchor sees all negatives of the global batch;
    returns the mean over the K (K - 1) / 2 pairs of views of symmetric_lp_loss
    (for two views, that loss itself)."""

    def __init__(self, info=DistInfo(), base=None):
        super().__init__()
        self.info = info
        self.base = base if base is not None else LpSimCLRLoss()

    def forward(self, encodings, n):
        negatives = [gather_with_grad(h[n:], self.info) for h in encodings]
        k = len(encodings)
        losses = [symmetric_lp_loss(self.base, encodings[i][:n], encodings[j][:n], negatives[i], negatives[j])
                  for i in range(k) for j in range(i + 1, k)]
        return losses[0] if len(losses) == 1 else torch.stack(losses).mean()


def _similarities(sim_metric, x, y):
    if isinstance(sim_metric, nn.CosineSimilarity):
        # Same values as the module on broadcast pairs, as one matrix product.
        return F.normalize(x, dim=-1, eps=sim_metric.eps) @ F.normalize(y, dim=-1, eps=sim_metric.eps).T
    return sim_metric(x.unsqueeze(-2), y.unsqueeze(-3))


def infonce_loss(z1, z2, sim_metric, criterion, tau=1.0):
    """2n-way InfoNCE: each sample's positive is its partner in the other modality;
    negatives are every other sample of both modalities (self-similarity excluded)."""
    n = z1.shape[0]
    z = torch.cat((z1, z2), dim=0)
    logits = _similarities(sim_metric, z, z) / tau
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat((torch.arange(n, 2 * n), torch.arange(0, n))).to(z.device)
    return criterion(logits, targets)


class GatheredInfoNCE(nn.Module):
    """The image/text objective across processes, as one scalar (as open_clip's ClipLoss):
    every rank gathers the encodings of all ranks (with gradients) and scores the whole
    global batch, so a run on N processes sees the negatives of a one-process run."""

    def __init__(self, tau=1.0, info=DistInfo()):
        super().__init__()
        self.tau, self.info = tau, info
        self.sim_metric, self.criterion = nn.CosineSimilarity(dim=-1), nn.CrossEntropyLoss()

    def forward(self, hz1, hz2):
        hz1, hz2 = gather_with_grad(hz1.float(), self.info), gather_with_grad(hz2.float(), self.info)
        # infonce_loss is symmetric already (every sample of both modalities is an anchor)
        return infonce_loss(hz1, hz2, self.sim_metric, self.criterion, temperature(self.tau))
