"""The training recipe: learning-rate schedules, Adam settings, bfloat16 autocast; defaults unchanged."""
import math
from argparse import Namespace

import pytest
import torch

import main_mlp
import recipe
import settings
import spaces
from encoders import ViewEncoder, contrastive_loss, simulation_encoder, whiten_first_layer_
from losses import MultiViewLpLoss


def args(**kw):
    base = dict(lr=1e-3, lr_schedule="constant", warmup_steps=0, adam_beta1=0.9, adam_beta2=0.999, adam_eps=1e-8,
                weight_decay=0.0, grad_clip=2.0, train_steps=101, precision="fp32")
    return Namespace(**{**base, **kw})


def test_schedule_values_at_given_steps():
    lr = 1e-3
    assert recipe.lr_at(1, lr) == lr and recipe.lr_at(10 ** 6, lr) == lr
    # warm-up: lr * step / N for the first N steps, then the schedule
    assert [recipe.lr_at(s, lr, "constant", 4, 100) for s in (1, 2, 4, 5, 100)] == \
        [lr / 4, lr / 2, lr, lr, lr]
    # cosine over the steps after the warm-up: 1 at its start, 1/2 half-way, 0 at the last step
    cos = [recipe.lr_at(s, lr, "cosine", 10, 110) for s in (10, 60, 110)]
    assert cos[0] == lr and math.isclose(cos[1], lr / 2) and abs(cos[2]) < 1e-18
    assert math.isclose(recipe.lr_at(35, lr, "cosine", 10, 110), lr * 0.5 * (1 + math.cos(math.pi / 4)))


def test_set_lr_and_optimizer_defaults_are_the_published_recipe():
    p = [torch.nn.Parameter(torch.zeros(2))]
    opt = recipe.build_optimizer(p, args())
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["lr"] == 1e-3
    assert opt.defaults["eps"] == 1e-8  # torch's, as published
    assert [recipe.set_lr(opt, s, args()) for s in (1, 50, 101)] == [1e-3] * 3
    cosine = args(lr_schedule="cosine", warmup_steps=10)
    recipe.set_lr(opt, 5, cosine)
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)
    assert recipe.build_optimizer(p, args(adam_beta2=0.99)).defaults["betas"] == (0.9, 0.99)
    assert recipe.build_optimizer(p, args(adam_beta1=0.8)).defaults["betas"] == (0.8, 0.999)
    assert recipe.build_optimizer(p, args(adam_eps=1e-6)).defaults["eps"] == 1e-6
    assert recipe.build_optimizer(p, args(adam_eps=1e-6, weight_decay=0.1)).defaults["eps"] == 1e-6
    assert type(opt) is torch.optim.Adam  # --weight-decay 0: plain Adam, as published


def test_weight_decay_is_decoupled_adamw():
    """One step from w = 1 with zero gradient: AdamW shrinks w by lr * wd, Adam leaves it."""
    w = torch.nn.Parameter(torch.ones(3))
    opt = recipe.build_optimizer([w], args(weight_decay=0.1))
    assert type(opt) is torch.optim.AdamW and opt.defaults["weight_decay"] == 0.1
    w.grad = torch.zeros(3)
    opt.step()
    assert torch.allclose(w.detach(), torch.full((3,), 1 - 1e-3 * 0.1))


def test_default_training_is_unchanged_by_the_recipe_options(tmp_path):
    """A run without the new flags equals one with their default values spelled out."""
    tiny = ["--content-n", "2", "--style-n", "2", "--modality-n", "2", "--encoding-size", "2",
            "--batch-size", "32", "--train-steps", "4", "--log-steps", "4", "--no-cuda", "--seed", "3"]
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "a", *tiny])
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "b", *tiny, "--lr-schedule", "constant",
                   "--warmup-steps", "0", "--adam-beta1", "0.9", "--adam-beta2", "0.999",
                   "--adam-eps", "1e-8", "--weight-decay", "0", "--grad-clip", "2", "--tau", "1",
                   "--precision", "fp32"])
    a, b = torch.load(tmp_path / "a" / "g1.pt"), torch.load(tmp_path / "b" / "g1.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_autocast_is_engaged_only_under_bf16(precision, dtype):
    space = spaces.LatentSpace(2, 2, 2)
    net = ViewEncoder([torch.nn.Linear(6, 6, bias=False), torch.nn.Linear(6, 6, bias=False)],
                               [simulation_encoder(6, 2), simulation_encoder(6, 2)])
    seen, observed = [], []
    net.nets["g1"][0].register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    net.nets["f1"].register_forward_hook(lambda m, i, out: observed.append(out.dtype))
    loss_fn = MultiViewLpLoss()
    blocks = space.sample(16, torch.Generator().manual_seed(0))
    loss = contrastive_loss(loss_fn, net, blocks, 8, space.views,
                            autocast=lambda: recipe.autocast(args(precision=precision), "cpu"))
    assert seen == [dtype] and loss.dtype == torch.float32  # the loss stays float32
    assert observed == [torch.float32]  # the mixing functions run outside autocast: float32 observations


@pytest.mark.parametrize("flags, needle", [
    (["--warmup-steps", "-1"], "--warmup-steps"),
    (["--lr-schedule", "cosine", "--warmup-steps", "5", "--train-steps", "5"], "needs at least 2 steps after"),
    (["--adam-beta2", "1.0"], "--adam-beta2"),
    (["--adam-beta1", "-0.1"], "--adam-beta1"),
    (["--adam-beta1", "nan"], "--adam-beta1"),
    (["--adam-eps", "0"], "--adam-eps"),
    (["--grad-clip", "0"], "--grad-clip"),
    (["--grad-clip", "nan"], "--grad-clip"),
    (["--tau", "0"], "--tau"),
    (["--tau", "inf"], "--tau"),
    (["--weight-decay", "-0.1"], "--weight-decay"),
    (["--weight-decay", "nan"], "--weight-decay"),
])
def test_bad_recipe_flags(tmp_path, capsys, flags, needle):
    from cli import run_cli
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main_mlp.main, ["--model-dir", str(tmp_path), "--model-id", "x", "--no-cuda", *flags])
    assert exit_info.value.code == 2 and needle in capsys.readouterr().err


def test_kaiming_encoder_init():
    """He et al.'s variance for leaky ReLU in every layer, zero biases; torch's default otherwise."""
    torch.manual_seed(0)
    net = simulation_encoder(15, 5, "kaiming")
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 7
    for m in linears[1:-1]:  # the wide layers, where the sample std is close to the target
        fan_in = m.weight.shape[1]
        target = math.sqrt(2.0 / (1 + 0.01 ** 2) / fan_in)
        assert m.weight.std().item() == pytest.approx(target, rel=0.03)
        assert not m.bias.any()
    torch.manual_seed(0)
    default = simulation_encoder(15, 5)
    assert all(m.bias.any() for m in default if isinstance(m, torch.nn.Linear))
    # torch's default draws a third of He's variance (uniform, a = sqrt(5))
    he = math.sqrt(2.0 / (1 + 0.01 ** 2) / default[2].weight.shape[1])
    assert default[2].weight.std().item() == pytest.approx(he / math.sqrt(6), rel=0.03)


def test_encoder_init_is_saved_and_used(tmp_path):
    tiny = ["--content-n", "2", "--style-n", "2", "--modality-n", "2", "--encoding-size", "2",
            "--batch-size", "32", "--train-steps", "2", "--log-steps", "2", "--no-cuda", "--seed", "3"]
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "k", *tiny, "--encoder-init", "kaiming"])
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "t", *tiny])
    import json
    assert json.loads((tmp_path / "k" / "args.json").read_text())["encoder_init"] == "kaiming"
    k, t = torch.load(tmp_path / "k" / "g1.pt"), torch.load(tmp_path / "t" / "g1.pt")
    # two Adam steps move a zero bias by at most 2 * lr: the kaiming run started from zero biases
    assert k["0.bias"].abs().max() <= 2.1e-4 < t["0.bias"].abs().max()


def tiny_run(tmp_path, model_id, *flags, steps="3"):
    tiny = ["--content-n", "2", "--style-n", "2", "--modality-n", "2", "--encoding-size", "2",
            "--batch-size", "32", "--train-steps", steps, "--log-steps", steps, "--no-cuda", "--seed", "3"]
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", model_id, *tiny, *flags])
    import json
    return json.loads((tmp_path / model_id / "args.json").read_text()), torch.load(tmp_path / model_id / "g1.pt")


def test_new_flags_are_saved_and_change_the_training(tmp_path):
    _, base = tiny_run(tmp_path, "base")
    for flags in (["--tau", "0.3"], ["--grad-clip", "0.01"], ["--adam-beta1", "0.5"], ["--adam-eps", "1e-2"]):
        saved, g1 = tiny_run(tmp_path, flags[0][2:], *flags)
        assert saved[flags[0][2:].replace("-", "_")] == float(flags[1])
        assert not all(torch.equal(base[k], g1[k]) for k in base), flags


def test_grad_clip_reaches_the_step():
    """A 1e-3 threshold scales the gradient down to that norm; inf leaves it as it is."""
    space = spaces.LatentSpace(2, 2, 2)
    torch.manual_seed(0)
    net = ViewEncoder([torch.nn.Identity(), torch.nn.Identity()],
                               [simulation_encoder(6, 2), simulation_encoder(6, 2)])
    params = list(net.parameters())
    opt = torch.optim.SGD(params, lr=0.0)  # no update: the gradients stay to be read
    norms = []
    for clip in (1e-3, float("inf")):
        main_mlp.train_step(space, net, MultiViewLpLoss(), opt, params,
                            args(batch_size=8, grad_clip=clip), torch.Generator().manual_seed(0))
        norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item())
    assert norms[0] == pytest.approx(1e-3, rel=1e-3) and norms[1] > 1e-2


def test_tau_reaches_the_loss_and_the_evaluation(tmp_path):
    loss = settings.of(Namespace(tau=0.25)).loss()
    assert loss.base.tau == 0.25 and settings.of(Namespace()).loss().base.tau == 1.0
    assert "tau" in main_mlp.loaded_args()  # --evaluate --load-args scores the loss it was trained with


def test_resume_keeps_the_new_flags(tmp_path):
    tiny_run(tmp_path, "r", "--tau", "0.5", "--grad-clip", "1", "--adam-beta1", "0.8", steps="2")
    from cli import run_cli
    with pytest.raises(SystemExit):  # a changed setting is refused, not ignored
        run_cli(main_mlp.main, ["--model-dir", str(tmp_path), "--model-id", "r", "--resume",
                                "--train-steps", "4", "--tau", "1.0"])
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", "r", "--resume", "--train-steps", "4"])
    import json
    saved = json.loads((tmp_path / "r" / "args.json").read_text())
    assert (saved["tau"], saved["grad_clip"], saved["adam_beta1"], saved["train_steps"]) == (0.5, 1.0, 0.8, 4)


def test_orthogonal_encoder_init():
    """Every singular value of every weight is leaky ReLU's gain; biases zero; torch's RNG only."""
    torch.manual_seed(0)
    net = simulation_encoder(15, 5, "orthogonal")
    gain = math.sqrt(2.0 / (1 + 0.01 ** 2))
    for m in (m for m in net if isinstance(m, torch.nn.Linear)):
        assert torch.allclose(torch.linalg.svdvals(m.weight), torch.full((min(m.weight.shape),), gain), atol=1e-4)
        assert not m.bias.any()
    assert main_mlp.build_parser().parse_args(["--encoder-init", "orthogonal"]).encoder_init == "orthogonal"


def test_whiten_first_layer_folds_zca_into_the_weights():
    """The first layer maps the samples as the kaiming weights map their ZCA-whitened version."""
    torch.manual_seed(0)
    x = torch.randn(4096, 6) @ torch.diag(torch.tensor([3.0, 1.0, 0.3, 0.1, 0.03, 1.0])) + 2.0
    net = simulation_encoder(6, 2, "whitened")
    kaiming = net[0].weight.detach().clone()
    whiten_first_layer_(net, x)
    pre = net[0](x).detach().double()
    assert pre.mean(0).abs().max() < 1e-4  # centred
    cov = torch.cov(pre.T)
    assert torch.allclose(cov, kaiming.double() @ kaiming.double().T, atol=1e-3)


def test_whitened_init_in_training(tmp_path):
    saved, _ = tiny_run(tmp_path, "w", "--encoder-init", "whitened")
    assert saved["encoder_init"] == "whitened"
    space, net = main_mlp.build_training(Namespace(**saved), "cpu")
    with torch.no_grad():  # each encoder's first layer sees its own view centred and whitened
        blocks = space.sample(8192, torch.Generator().manual_seed(9))
        for k, z in enumerate(space.views(blocks), 1):
            pre = net.nets[f"g{k}"][0](net.nets[f"f{k}"](z)).double()
            assert pre.mean(0).abs().max() < 0.1
