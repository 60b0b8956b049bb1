"""Any number of views: K-tuples of views share content; two views behave exactly as before."""
import math

import numpy as np
import pytest
import torch

import main_mlp
import spaces
from encoders import ViewEncoder, contrastive_loss, simulation_encoder
from losses import LpSimCLRLoss, MultiViewLpLoss, symmetric_lp_loss

NAN = math.nan
TINY = ["--content-n", "2", "--style-n", "2", "--modality-n", "2", "--encoding-size", "2",
        "--batch-size", "32", "--train-steps", "3", "--log-steps", "2", "--no-cuda"]
COMBOS = {"default": [],
          "dependent": ["--statistical-dependence", "--content-dependent-style", "--style-change-prob", "0.75"],
          "unimodal_nm0": ["--shared-mixing", "--shared-encoder", "--modality-n", "0"],
          "discrete": ["--discrete-content", "3", "--discrete-modality", "2"]}
# Two views, training seed 3, evaluation seed 4 (2 x 128 pairs per set, --permuted-content):
# the sum of g1's weights and (linear, nonlinear) R^2 of the 12 rows hz1/hz2 x c, s, s~, m1,
# m2, c'. "default", "unimodal_nm0" and "discrete" are those of commit 6780e78, before the
# views redesign and the hardening; "dependent" differs from 6780e78 on purpose (new runs
# draw B and a from their own random stream) and was recorded just before the redesign.
# The tolerances are float32 rounding, not slack: CPUs with other vector units (AVX2 or
# AVX-512 kernels) sum in another order and move g1's sum by up to 2e-7 of itself and the
# R^2 by up to 8e-7, while any change to the sampling, networks or probes moves them by
# orders of magnitude more.
REFERENCE = {
    "default": (-14.963848737307, [(-0.008321047, -0.005139032), (0.349477679, 0.386711959), (0.174246341, 0.156366276), (0.081720233, 0.120570481), (-0.032222986, -0.030672687), (0.103440285, 0.170671083), (-0.012423813, -0.00984256), (0.049683064, 0.079948322), (0.137920678, 0.220305539), (0.00021106, -0.001280836), (0.19025445, 0.237353945), (0.112679183, 0.227597415)]),  # noqa: E501
    "dependent": (-15.34017637023, [(0.337615818, 0.411655817), (0.487308323, 0.547665849), (0.35870415, 0.371326994), (0.195399195, 0.228814229), (0.002605498, 0.003795542), (0.044024587, 0.128787333), (0.11672163, 0.13724024), (0.204269677, 0.283279202), (0.208380312, 0.332081757), (-0.01397258, -0.009356056), (0.191334844, 0.228609827), (0.287929475, 0.467288676)]),  # noqa: E501
    "unimodal_nm0": (-22.277330870458, [(0.001519442, -0.007689864), (0.318014711, 0.391655465), (0.181073874, 0.195021604), (NAN, NAN), (NAN, NAN), (0.336924404, 0.381079905), (0.002897173, -0.068398101), (0.19180721, 0.199209215), (0.382827163, 0.456934312), (NAN, NAN), (NAN, NAN), (0.269659072, 0.332638609)]),  # noqa: E501
    "discrete": (-15.175123680698, [(-0.005535632, -0.0027838), (0.380595863, 0.404355777), (0.184449255, 0.19127387), (0.109888375, 0.265243804), (-0.017361224, -0.013432438), (0.096844047, 0.161696138), (-0.005351663, -0.003058339), (0.080509782, 0.094656441), (0.153176337, 0.236130528), (0.00230661, 0.001318738), (0.159303188, 0.208761093), (0.152080446, 0.271744036)]),  # noqa: E501
}


def train_and_evaluate(tmp_path, flags, eval_flags=("--permuted-content",)):
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "m", "--seed", "3", *TINY, *flags])
    return main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "m", "--evaluate", "--load-args",
                          "--seed", "4", "--num-eval-batches", "2", "--no-cuda", *eval_flags])


@pytest.mark.parametrize("combo", list(COMBOS))
def test_two_views_give_the_recorded_results(tmp_path, combo):
    results = train_and_evaluate(tmp_path, COMBOS[combo])
    g1 = torch.load(tmp_path / "m" / "g1.pt")
    g1_sum, rows = REFERENCE[combo]
    assert float(sum(v.double().sum() for v in g1.values())) == pytest.approx(g1_sum, rel=1e-6)
    ours = results[["r2_linear", "r2_nonlinear"]].to_numpy(float)
    np.testing.assert_allclose(ours, np.array(rows, dtype=float), rtol=0, atol=1e-5)
    assert list(results["encoding"]) == ["hz1"] * 6 + ["hz2"] * 6


def test_k_views_share_content_and_change_style_each():
    space = spaces.LatentSpace(2, 3, 2, style_change_prob=0.5, n_views=4)
    blocks = space.sample(4000, torch.Generator().manual_seed(0))
    assert list(blocks) == ["c", "s", "s~", "s~3", "s~4", "m1", "m2", "m3", "m4"]
    views = space.views(blocks)
    assert len(views) == 4 and all(v.shape == (4000, 7) for v in views)
    assert all(torch.equal(v[:, :2], blocks["c"]) for v in views)
    changed = [(blocks[k] != blocks["s"]).float().mean().item() for k in ("s~", "s~3", "s~4")]
    assert all(abs(f - 0.5) < 0.03 for f in changed)
    # each view changes its style on its own: the masks are independent
    both = ((blocks["s~"] != blocks["s"]) & (blocks["s~3"] != blocks["s"])).float().mean().item()
    assert abs(both - 0.25) < 0.03
    m = torch.stack([blocks[f"m{k}"].flatten() for k in range(1, 5)])
    assert torch.corrcoef(m).sub(torch.eye(4)).abs().max() < 0.05


def test_two_view_samples_are_unchanged_by_the_view_count_code():
    """K = 2 draws what it always drew; K = 3 draws the same c, s, s~ and m1, m2 first."""
    two = spaces.LatentSpace(2, 2, 2).sample(50, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    c, s, m1, m2 = (torch.randn(50, 2, generator=g) for _ in range(4))
    s_tilde = s + (torch.rand(50, 2, generator=g) < 1.0) * torch.randn(50, 2, generator=g)
    for key, value in (("c", c), ("s", s), ("s~", s_tilde), ("m1", m1), ("m2", m2)):
        assert torch.equal(two[key], value)


def test_k_view_loss_is_the_mean_over_pairs_of_views():
    torch.manual_seed(0)
    space = spaces.LatentSpace(2, 2, 2, n_views=3)
    mixings = [torch.nn.Linear(6, 6, bias=False) for _ in range(3)]
    encoders = [simulation_encoder(6, 2) for _ in range(3)]
    net = ViewEncoder(mixings, encoders)
    blocks = space.sample(32, torch.Generator().manual_seed(2))
    loss_fn = LpSimCLRLoss()
    loss = contrastive_loss(MultiViewLpLoss(base=loss_fn), net, blocks, 16, space.views)
    h = [encoders[k](mixings[k](z)) for k, z in enumerate(space.views(blocks))]
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(symmetric_lp_loss(loss_fn, h[i][:16], h[j][:16], h[i][16:], h[j][16:]) for i, j in pairs) / 3
    torch.testing.assert_close(loss, expected)


def test_three_views_train_and_evaluate_every_block_from_every_view(tmp_path):
    results = train_and_evaluate(tmp_path, ["--n-views", "3", "--statistical-dependence",
                                            "--independent-covariances"], ("--mlp-eval",))
    files = set(p.name for p in (tmp_path / "m").iterdir())
    assert {"f1.pt", "f2.pt", "f3.pt", "g1.pt", "g2.pt", "g3.pt"} <= files
    assert list(results["encoding"].unique()) == ["hz1", "hz2", "hz3"]
    assert list(results["predicted_factors"][:8]) == ["c", "s", "s~", "s~3", "m1", "m2", "m3", "c'"]
    assert len(results) == 3 * 8
    assert results.loc[results.predicted_factors != "c'", "r2_linear"].notna().all()
    sigmas = torch.load(tmp_path / "m" / "latent_space.pt")
    assert {"Sigma_m1", "Sigma_m2", "Sigma_m3"} <= set(sigmas)


def test_n_views_must_be_at_least_two(tmp_path, capsys):
    from cli import run_cli
    with pytest.raises(SystemExit):
        run_cli(main_mlp.main, ["--model-dir", str(tmp_path), "--n-views", "1", *TINY])
    assert "--n-views must be at least 2" in capsys.readouterr().err


def test_a_failed_start_with_three_views_does_not_block_its_id(tmp_path):
    from run import refuse_existing_model
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("args.json", "f1.pt", "f2.pt", "f3.pt", "latent_space.pt"):
        (folder / name).write_text("x")
    refuse_existing_model(str(folder), main_mlp.ENCODER_FILES)  # nothing trained yet: may start afresh
    (folder / "g3.pt").write_text("x")
    with pytest.raises(Exception, match="already holds a model"):
        refuse_existing_model(str(folder), main_mlp.ENCODER_FILES)
