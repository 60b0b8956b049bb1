import numpy as np
import torch

from encoders import simulation_encoder
from invertible_network_utils import (condition_threshold, construct_invertible_mlp, invert_mlp,
                                      mlp_shell)


def test_condition_threshold_is_the_requested_quantile():
    rng = np.random.default_rng(0)
    thr = condition_threshold(rng, 6, cond_thresh_ratio=0.25, n_iter_cond_thresh=4000)
    w = np.random.default_rng(1).uniform(-1, 1, (4000, 6, 6))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    share_below = (np.linalg.cond(w) < thr).mean()
    assert abs(share_below - 0.25) < 0.03


def test_mixing_layers_respect_threshold_and_layout():
    rng = np.random.default_rng(1)
    thr = condition_threshold(np.random.default_rng(2), 8)
    f = construct_invertible_mlp(8, 3, rng=rng, threshold=thr)
    assert list(f.state_dict()) == ["0.weight", "2.weight", "4.weight"]
    assert isinstance(f[1], torch.nn.LeakyReLU) and f[1].negative_slope == 0.2
    for w in f.state_dict().values():
        assert np.linalg.cond(w.double().numpy()) < thr
        np.testing.assert_allclose(np.linalg.norm(w.numpy(), axis=0), 1.0, rtol=1e-5)
        assert w.abs().max() <= 1.0
    assert not any(p.requires_grad for p in f.parameters())


def test_mixing_is_invertible():
    f = construct_invertible_mlp(10, 3, rng=np.random.default_rng(3), n_iter_cond_thresh=2000)
    z = torch.randn(500, 10)
    torch.testing.assert_close(invert_mlp(f, f(z)).float(), z, atol=1e-4, rtol=1e-4)


def test_mlp_shell_loads_saved_mixing():
    f = construct_invertible_mlp(5, 2, rng=np.random.default_rng(4), n_iter_cond_thresh=1000)
    g = mlp_shell(5, 2)
    g.load_state_dict(f.state_dict())
    z = torch.randn(3, 5)
    torch.testing.assert_close(g(z), f(z))


def test_encoder_state_dict_layout():
    d = 15
    g = simulation_encoder(d, 5)
    shapes = {k: tuple(v.shape) for k, v in g.state_dict().items()}
    widths = [d, 10 * d, 50 * d, 50 * d, 50 * d, 50 * d, 10 * d, 5]
    expected = {}
    for i in range(7):
        expected[f"{2 * i}.weight"] = (widths[i + 1], widths[i])
        expected[f"{2 * i}.bias"] = (widths[i + 1],)
    assert shapes == expected
    assert all(isinstance(g[2 * i + 1], torch.nn.LeakyReLU) and g[2 * i + 1].negative_slope == 0.01
               for i in range(6))


def test_a_one_dimensional_mixing_is_built():
    """Every 1 x 1 matrix has condition number 1, the threshold itself: accepted, as published."""
    mlp = construct_invertible_mlp(1, 3, rng=np.random.default_rng(0))
    assert all(abs(layer.weight.item()) == 1.0 for layer in mlp[::2])
