import math

import numpy as np
import pytest
import torch
from torch import nn

from losses import LearnedTemperature, LpSimCLRLoss, infonce_loss, pairwise_lp, symmetric_lp_loss


def direct_lp_loss(a, b, neg, tau=1.0, alpha=0.5):
    """The loss formula of the published LpSimCLRLoss, written out in float64 with explicit loops."""
    out = []
    for i in range(len(a)):
        pos = float(((a[i] - b[i]) ** 2).sum())
        logits = [-float(((a[i] - neg[j]) ** 2).sum()) / tau for j in range(len(neg))] + [-pos / tau]
        lme = math.log(sum(math.exp(v) for v in logits) / len(logits))
        out.append(2 * (alpha * pos / tau + (1 - alpha) * lme))
    return np.array(out)


def test_lp_loss_matches_formula():
    rng = np.random.default_rng(0)
    a, b, n = (rng.normal(size=(7, 3)) for _ in range(3))
    mean, per_sample, (pos_mean, neg_mean) = LpSimCLRLoss()(
        None, None, None, *(torch.tensor(v) for v in (a, b, n)))
    expected = direct_lp_loss(a, b, n)
    np.testing.assert_allclose(per_sample.numpy(), expected, rtol=1e-12)
    assert abs(mean.item() - expected.mean()) < 1e-12
    assert abs(pos_mean.item() - ((a - b) ** 2).sum(1).mean()) < 1e-12
    assert abs(2 * (0.5 * pos_mean.item() + 0.5 * neg_mean.item()) - expected.mean()) < 1e-12


def test_lp_loss_with_temperature_and_alpha():
    rng = np.random.default_rng(1)
    a, b, n = (rng.normal(size=(5, 4)) for _ in range(3))
    _, per_sample, _ = LpSimCLRLoss(tau=0.3, alpha=0.7)(None, None, None, *(torch.tensor(v) for v in (a, b, n)))
    np.testing.assert_allclose(per_sample.numpy(), direct_lp_loss(a, b, n, tau=0.3, alpha=0.7), rtol=1e-12)


def test_symmetric_objective():
    rng = np.random.default_rng(2)
    h1, h2, n1, n2 = (rng.normal(size=(6, 2)) for _ in range(4))
    got = symmetric_lp_loss(LpSimCLRLoss(), *(torch.tensor(v) for v in (h1, h2, n1, n2))).item()
    expected = 0.5 * (direct_lp_loss(h1, h2, n1).mean() + direct_lp_loss(h2, h1, n2).mean())
    assert abs(got - expected) < 1e-12


def test_pairwise_distances_match_broadcast():
    rng = np.random.default_rng(3)
    a, b = torch.tensor(rng.normal(size=(9, 5))), torch.tensor(rng.normal(size=(4, 5)))
    broadcast = ((a[:, None] - b[None]) ** 2).sum(-1)
    torch.testing.assert_close(pairwise_lp(a, b, 2), broadcast, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pairwise_lp(a, b, 1), (a[:, None] - b[None]).abs().sum(-1))


def test_lp_loss_gradients_match_broadcast_form():
    rng = np.random.default_rng(4)
    a = torch.tensor(rng.normal(size=(8, 3)), requires_grad=True)
    b, n = torch.tensor(rng.normal(size=(8, 3))), torch.tensor(rng.normal(size=(8, 3)))
    LpSimCLRLoss()(None, None, None, a, b, n)[0].backward()
    a2 = a.detach().clone().requires_grad_(True)
    neg = ((a2[:, None] - n[None]) ** 2).sum(-1)
    pos = ((a2 - b) ** 2).sum(-1)
    logits = torch.cat((-neg, -pos[:, None]), 1)
    ref = 2 * (0.5 * pos + 0.5 * (torch.logsumexp(logits, 1) - math.log(9)))
    ref.mean().backward()
    torch.testing.assert_close(a.grad, a2.grad, rtol=1e-10, atol=1e-12)


def direct_infonce(z1, z2, tau):
    n = len(z1)
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    total = 0.0
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        logits = np.array([z[i] @ z[j] / tau for j in range(2 * n) if j != i])
        others = [j for j in range(2 * n) if j != i]
        total += -(z[i] @ z[partner] / tau) + math.log(np.exp(logits).sum())
        assert partner in others
    return total / (2 * n)


def test_infonce_matches_formula():
    rng = np.random.default_rng(5)
    z1, z2 = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    for tau in (1.0, 0.2):
        got = infonce_loss(torch.tensor(z1), torch.tensor(z2), nn.CosineSimilarity(dim=-1),
                           nn.CrossEntropyLoss(), tau).item()
        assert abs(got - direct_infonce(z1, z2, tau)) < 1e-10
        # symmetric: the 2n-way loss already takes every sample of both views as an anchor
        assert abs(got - 0.5 * (direct_infonce(z1, z2, tau) + direct_infonce(z2, z1, tau))) < 1e-10


def test_infonce_with_generic_similarity():
    rng = np.random.default_rng(6)
    z1, z2 = torch.tensor(rng.normal(size=(5, 3))), torch.tensor(rng.normal(size=(5, 3)))
    cos = lambda x, y: nn.functional.cosine_similarity(x, y, dim=-1)  # noqa: E731
    a = infonce_loss(z1, z2, cos, nn.CrossEntropyLoss(), 0.5)
    b = infonce_loss(z1, z2, nn.CosineSimilarity(dim=-1), nn.CrossEntropyLoss(), 0.5)
    assert abs(a.item() - b.item()) < 1e-10


def test_fast_and_general_paths_agree():
    rng = np.random.default_rng(7)
    a, b, n = (torch.tensor(rng.normal(size=(9, 4)) * 3) for _ in range(3))
    loss = LpSimCLRLoss(tau=0.5)
    fast = loss(None, None, None, a, b, n)
    general = loss._general_terms(a, b, n, 0.5)
    ref = 2 * (0.5 * general[0] + 0.5 * general[1])
    torch.testing.assert_close(fast[1], ref, rtol=1e-12, atol=1e-12)


def test_a_learned_temperature_gives_the_fixed_loss_and_its_gradient():
    rng = np.random.default_rng(9)
    a, b, n = (torch.tensor(rng.normal(size=(9, 4))) for _ in range(3))
    learned = LearnedTemperature(0.5).double()
    loss = LpSimCLRLoss(tau=learned)(a, b, n)[0]
    torch.testing.assert_close(loss, LpSimCLRLoss(tau=0.5)(a, b, n)[0], rtol=1e-7, atol=0)  # log tau is float32
    loss.backward()
    # d loss / d log tau, by central differences of the fixed-temperature loss
    h = 1e-6
    numeric = (LpSimCLRLoss(tau=0.5 * np.exp(h))(a, b, n)[0] - LpSimCLRLoss(tau=0.5 * np.exp(-h))(a, b, n)[0]) / (2 * h)
    assert learned.log_tau.grad.item() == pytest.approx(numeric.item(), rel=1e-5)
    assert list(dict(LpSimCLRLoss(tau=learned).named_parameters())) == ["tau.log_tau"]


def test_a_learned_temperature_stays_above_its_minimum():
    learned = LearnedTemperature(0.02)
    with torch.no_grad():
        learned.log_tau.fill_(-20.0)
    assert learned().item() == pytest.approx(LearnedTemperature.MIN)


def test_non_default_options_use_the_formula():
    rng = np.random.default_rng(8)
    a, b, n = (rng.normal(size=(5, 3)) for _ in range(3))
    ta, tb, tn = (torch.tensor(v) for v in (a, b, n))
    # No positive in the denominator.
    _, per, _ = LpSimCLRLoss(simclr_denominator=False)(None, None, None, ta, tb, tn)
    pos = ((a - b) ** 2).sum(1)
    neg = ((a[:, None] - n[None]) ** 2).sum(-1)
    lme = np.log(np.exp(-neg).mean(1))
    np.testing.assert_allclose(per.numpy(), pos + lme, rtol=1e-12)
    # p = 1 distances, not raised to a power.
    _, per, _ = LpSimCLRLoss(p=1)(None, None, None, ta, tb, tn)
    pos1 = np.abs(a - b).sum(1)
    neg1 = np.abs(a[:, None] - n[None]).sum(-1)
    lme1 = np.log(np.exp(np.c_[-neg1, -pos1]).mean(1))
    np.testing.assert_allclose(per.numpy(), pos1 + lme1, rtol=1e-12)


def test_three_argument_call_equals_the_published_six():
    """loss(anchors, positives, negatives) is the published call without its unused latents."""
    torch.manual_seed(0)
    a, b, n = torch.randn(8, 3), torch.randn(8, 3), torch.randn(16, 3)
    for loss in (LpSimCLRLoss(), LpSimCLRLoss(tau=0.3, alpha=0.7), LpSimCLRLoss(p=1)):
        short, published = loss(a, b, n), loss(None, None, None, a, b, n)
        assert torch.equal(short[0], published[0]) and torch.equal(short[1], published[1])
    with pytest.raises(TypeError, match="got 2"):
        LpSimCLRLoss()(a, b)


@pytest.mark.parametrize("tau", [1e-30, 0.0, -1.0, float("inf"), float("nan")])
def test_temperatures_that_round_the_loss_away_are_refused(tau):
    import main_mlp
    from cli import UserError
    args = main_mlp.build_parser().parse_args(["--tau", str(tau)])
    with pytest.raises(UserError, match="--tau must be a finite number >= 0.0001"):
        main_mlp.check_args(args)
    main_mlp.check_args(main_mlp.build_parser().parse_args(["--tau", "1e-4"]))
