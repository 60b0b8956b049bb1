import numpy as np
import pytest
import torch
from scipy.stats import wishart

import spaces


def make_space(**kw):
    cfg = dict(content_n=3, style_n=4, modality_n=2, statistical_dependence=False,
               content_dependent_style=False)
    cfg.update({k: kw.pop(k) for k in list(kw) if k in cfg})
    params = spaces.draw_parameters(7, cfg["content_n"], cfg["style_n"], cfg["modality_n"],
                                    [k for k in ("statistical_dependence", "content_dependent_style") if cfg[k]],
                                    kw.pop("independent_covariances", False))
    return spaces.LatentSpace(cfg["content_n"], cfg["style_n"], cfg["modality_n"], params=params, **kw)


def test_pairs_share_content_and_views_are_laid_out():
    space = make_space()
    blocks = space.sample(100, torch.Generator().manual_seed(0))
    z1, z2 = space.views(blocks)
    assert z1.shape == z2.shape == (100, 9)
    torch.testing.assert_close(z1[:, :3], z2[:, :3])
    torch.testing.assert_close(z1[:, 3:7], blocks["s"])
    torch.testing.assert_close(z2[:, 3:7], blocks["s~"])
    torch.testing.assert_close(z1[:, 7:], blocks["m1"])
    torch.testing.assert_close(z2[:, 7:], blocks["m2"])
    assert not torch.allclose(blocks["m1"], blocks["m2"])


@pytest.mark.parametrize("prob", [0.0, 0.25, 0.75, 1.0])
def test_style_changes_with_given_probability(prob):
    space = make_space(style_change_prob=prob)
    blocks = space.sample(50000, torch.Generator().manual_seed(1))
    changed = (blocks["s"] != blocks["s~"]).double().mean(0)
    assert torch.all((changed - prob).abs() < 0.01)


def test_marginals_have_requested_scale():
    space = make_space(m_param=2.0, c_param=0.5)
    blocks = space.sample(100000, torch.Generator().manual_seed(2))
    for k in ("c", "s", "m1", "m2"):
        assert torch.all((blocks[k].std(0) - 2.0).abs() < 0.03)
    assert torch.all(((blocks["s~"] - blocks["s"]).std(0) - 0.5).abs() < 0.01)


def test_covariances_follow_the_published_wishart_recipe():
    params = spaces.draw_parameters(11, 5, 5, 3, ("statistical_dependence",))
    for name, n in (("c", 5), ("s", 5), ("a", 5), ("m1", 3), ("m2", 3)):
        expected = wishart.rvs(df=n, scale=np.eye(n), size=1, random_state=11)
        np.testing.assert_allclose(params[f"Sigma_{name}"].numpy(), expected)
    # The published defect, kept for fidelity: equal sizes give one shared matrix.
    torch.testing.assert_close(params["Sigma_c"], params["Sigma_s"])


def test_independent_covariances_differ():
    params = spaces.draw_parameters(11, 5, 5, 5, ("statistical_dependence",), independent_covariances=True)
    mats = [params[f"Sigma_{k}"] for k in ("c", "s", "a", "m1", "m2")]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not torch.allclose(mats[i], mats[j])


def test_sampled_covariance_matches_sigma():
    space = make_space(statistical_dependence=True)
    blocks = space.sample(200000, torch.Generator().manual_seed(3))
    for key, name in (("c", "c"), ("s", "s"), ("m1", "m1")):
        emp = np.cov(blocks[key].double().numpy().T)
        sigma = space.params[f"Sigma_{name}"].numpy()
        assert np.abs(emp - sigma).max() < 0.05 * np.abs(sigma).max() + 0.02
    change = (blocks["s~"] - blocks["s"]).double().numpy()
    np.testing.assert_allclose(np.cov(change.T), space.params["Sigma_a"].numpy(), atol=0.1)


def test_content_dependent_style_uses_published_generator():
    params = spaces.draw_parameters(5, 3, 4, 2, ("content_dependent_style",), published=True)
    ours = spaces.draw_parameters(5, 3, 4, 2, ("content_dependent_style",))  # new runs: a stream of its own
    assert not torch.equal(ours["B"], params["B"])
    assert torch.equal(ours["B"], spaces.draw_parameters(5, 3, 4, 2, ("content_dependent_style",))["B"])
    g = torch.Generator().manual_seed(5)
    B = torch.randn(4, 3, generator=g)
    a = torch.randn(4, generator=g)
    torch.testing.assert_close(params["B"], B)
    torch.testing.assert_close(params["a"], a)
    space = spaces.LatentSpace(3, 4, 2, params=params)
    blocks = space.sample(100000, torch.Generator().manual_seed(6))
    # s = noise + B c + a, so regressing s on c recovers B and a.
    c = blocks["c"].double().numpy()
    X = np.c_[c, np.ones(len(c))]
    coef = np.linalg.lstsq(X, blocks["s"].double().numpy(), rcond=None)[0]
    np.testing.assert_allclose(coef[:3].T, B.numpy(), atol=0.02)
    np.testing.assert_allclose(coef[3], a.numpy(), atol=0.02)


def test_no_modality_latents():
    space = make_space(modality_n=0)
    blocks = space.sample(10, torch.Generator().manual_seed(0))
    assert blocks["m1"].shape == (10, 0)
    assert space.views(blocks)[0].shape == (10, 7)


def test_permuted_content_replaces_content_in_both_views():
    space = make_space()
    blocks = space.sample(20, torch.Generator().manual_seed(0))
    perm = torch.randperm(20)
    z1, z2 = space.views(blocks, blocks["c"][perm])
    torch.testing.assert_close(z1[:, :3], blocks["c"][perm])
    torch.testing.assert_close(z2[:, :3], blocks["c"][perm])


def test_discrete_levels_are_standardised():
    for k in (2, 3, 5, 10):
        levels = spaces.discrete_levels(k, scale=2.0).double()
        assert len(levels) == k and torch.all(levels[1:] > levels[:-1])
        assert abs(levels.mean().item()) < 1e-6
        assert abs(levels.pow(2).mean().sqrt().item() - 2.0) < 1e-5


@pytest.mark.parametrize("block", ["c", "s", "m"])
def test_discrete_block_takes_k_uniform_values(block):
    space = make_space(discrete={block: 4}, style_change_prob=0.75)
    blocks = space.sample(40000, torch.Generator().manual_seed(3))
    names = {"c": ("c",), "s": ("s", "s~"), "m": ("m1", "m2")}[block]
    levels = spaces.discrete_levels(4)
    for name in names:
        values = blocks[name]
        assert torch.isin(values, levels).all()
        freq = (values[:, :, None] == levels).double().mean((0, 1))  # each value ~1/4 of the time
        assert torch.all((freq - 0.25).abs() < 0.01)
    for name in {"c", "s", "m1", "m2"} - set(names):  # the others stay Gaussian
        assert blocks[name].unique().numel() > 1000
    z1, z2 = space.views(blocks)
    torch.testing.assert_close(z1[:, :3], z2[:, :3])


def test_discrete_style_changes_by_redrawing():
    space = make_space(discrete={"s": 3}, style_change_prob=0.75)
    blocks = space.sample(60000, torch.Generator().manual_seed(4))
    # A redrawn value equals the old one 1/3 of the time: 0.75 * 2/3 of entries differ.
    changed = (blocks["s"] != blocks["s~"]).double().mean().item()
    assert abs(changed - 0.5) < 0.01
    # s and s~ are each uniform and correlated only through the kept entries.
    assert abs(torch.corrcoef(torch.stack((blocks["s"][:, 0], blocks["s~"][:, 0])))[0, 1] - 0.25) < 0.02


def test_continuous_sampling_is_unchanged_by_the_discrete_option():
    a = make_space().sample(50, torch.Generator().manual_seed(5))
    b = make_space(discrete={"c": 0, "s": 0, "m": 0}).sample(50, torch.Generator().manual_seed(5))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_discrete_style_refuses_content_dependent_shift():
    with pytest.raises(ValueError, match="continuous"):
        make_space(content_dependent_style=True, discrete={"s": 3})
