"""Tests of renderer.py: geometry, determinism, each factor visible in the
pixels (one-factor changes and supervised probes). CPU, about 30-40 s."""

import math
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import colors  # noqa: E402
import renderer  # noqa: E402
from renderer import FACTOR_ORDER, Renderer  # noqa: E402

F = {name: i for i, name in enumerate(FACTOR_ORDER)}


def base_latent(shape=0, x=1, y=1):
    v = np.array([shape, y, x, 0.3, 0.6, 0.45, 0.3, 0.55, 0.1, 0.8])
    return v


def random_latents(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.integers(0, 7, n), rng.integers(0, 3, n), rng.integers(0, 3, n)]
                           + [rng.random(n) for _ in range(7)])


@pytest.fixture(scope="module")
def r48():
    return Renderer(48)


def diff(a, b):
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def object_mask(r, lat):
    """Object pixels: those that change when only the object hue changes."""
    a = lat.copy()
    b = lat.copy()
    b[:, F["object_color"]] = (b[:, F["object_color"]] + 0.5) % 1.0
    return diff(r.render(a), r.render(b)).sum(-1) > 30


def test_hsv_matches_matplotlib():
    from matplotlib.colors import hsv_to_rgb as mpl
    h = np.linspace(0, 1, 101)
    ref = mpl(np.stack([h, np.ones_like(h), np.ones_like(h)], -1))
    np.testing.assert_allclose(colors.hsv_to_rgb(h), ref, atol=1e-12)
    np.testing.assert_allclose(colors.hsv_to_rgb(0.3), mpl([0.3, 1.0, 1.0]), atol=1e-12)


def test_output_format(r48):
    im = r48.render(random_latents(5))
    assert im.shape == (5, 48, 48, 3) and im.dtype == np.uint8
    assert im.std() > 5


def test_bad_latents_rejected(r48):
    lat = random_latents(2)
    lat[0, F["object_shape"]] = 7
    with pytest.raises(ValueError):
        r48.render(lat)


def test_batch_independent_bit_identical():
    lat = random_latents(40, seed=3)
    full = Renderer(40).render(lat)
    small = Renderer(40, batch_size=7).render(lat[::-1])[::-1]
    np.testing.assert_array_equal(full, small)
    single = np.concatenate([Renderer(40, batch_size=1).render(lat[i:i + 1]) for i in range(5)])
    np.testing.assert_array_equal(full[:5], single)


def test_window_holds_whole_object():
    """Ray casting only a window around the object loses no object pixel:
    same image as casting every pixel, including extreme rotations."""
    lat = random_latents(120, seed=5)
    lat[:60, 3:6] = np.random.default_rng(1).choice([0.0, 1.0], size=(60, 3))
    lat[:, 1] = np.arange(120) % 3
    lat[:, 2] = (np.arange(120) // 3) % 3
    a = Renderer(40).render(lat)
    b = Renderer(40, full_frame=True).render(lat)
    np.testing.assert_array_equal(a, b)


def test_supersample_and_sizes():
    lat = random_latents(3)
    for size, ss in ((8, 1), (33, 1), (32, 2)):
        im = Renderer(size, supersample=ss).render(lat)
        assert im.shape == (3, size, size, 3)


def test_position_grid(r48):
    """The object's centroid is nearest to the grid centre named by x
    (left/center/right) and y (top/mid/bottom), for every shape; x = 0 is
    left and y = 0 is the top of the image."""
    lats = np.stack([base_latent(s, x, y) for s in range(7) for y in range(3) for x in range(3)])
    masks = object_mask(r48, lats)
    centres_r, centres_c = r48.object_center_px(np.arange(3), np.arange(3))
    assert centres_c[0] < 24 < centres_c[2] and centres_r[0] < 24 < centres_r[2]
    for lat, m in zip(lats, masks):
        rows, cols = np.nonzero(m)
        assert len(rows) > 10
        y, x = int(lat[1]), int(lat[2])
        assert np.abs(centres_c - cols.mean()).argmin() == x, (lat, cols.mean())
        assert np.abs(centres_r - rows.mean()).argmin() == y, (lat, rows.mean())


def test_shapes_distinct(r48):
    lats = np.stack([base_latent(s) for s in range(7)])
    masks = object_mask(r48, lats)
    for i in range(7):
        for j in range(i + 1, 7):
            assert (masks[i] != masks[j]).sum() > 40, (i, j)


@pytest.mark.parametrize("factor,delta", [
    ("object_shape", None), ("object_xpos", None), ("object_ypos", None),
    ("object_alpharot", 0.25), ("object_betarot", 0.25), ("object_gammarot", 0.25),
    ("spotlight_pos", 0.3), ("object_color", 0.3), ("spotlight_color", 0.3),
    ("background_color", 0.3)])
def test_one_factor_changes_image(r48, factor, delta):
    """Changing one factor with all others fixed changes the picture, for
    every shape (rotations: none of the solids is rotation-symmetric)."""
    for s in range(7):
        a = base_latent(s)
        b = a.copy()
        i = F[factor]
        if factor == "object_shape":
            b[i] = (s + 1) % 7
        elif factor in ("object_xpos", "object_ypos"):
            b[i] = 0
        else:
            b[i] = (a[i] + delta) % 1.0
        d = diff(*r48.render(np.stack([a, b]))).sum(-1)
        assert (d > 20).sum() >= 10, (factor, s, (d > 20).sum())


def test_rotation_changes_object_pixels(r48):
    """Each rotation angle moves the object's silhouette, for each shape."""
    for s in range(7):
        lats = []
        for k in ("object_alpharot", "object_betarot", "object_gammarot"):
            for v in (0.2, 0.8):
                lat = base_latent(s)
                lat[F[k]] = v
                lats.append(lat)
        masks = object_mask(r48, np.stack(lats))
        for j in range(0, 6, 2):
            assert (masks[j] != masks[j + 1]).sum() > 15, (s, j)


def test_spotlight_moves_lit_side():
    """Spotlight at the left (pos 0) lights the object's left half more than
    its right half; at the right (pos 1) the other way round."""
    r = Renderer(64)
    lats = np.stack([base_latent(3), base_latent(3)])
    lats[:, F["object_color"]] = 0.0
    lats[:, F["spotlight_color"]] = 0.0
    lats[0, F["spotlight_pos"]] = 0.0
    lats[1, F["spotlight_pos"]] = 1.0
    ims = r.render(lats).astype(float).sum(-1)
    m = object_mask(r, lats)
    cols = np.nonzero(m[0])[1]
    mid = np.median(cols)
    left = lambda k: ims[k][m[k] & (np.arange(64)[None, :] < mid)].mean()
    right = lambda k: ims[k][m[k] & (np.arange(64)[None, :] > mid)].mean()
    assert left(0) > right(0) + 10
    assert right(1) > left(1) + 10


def test_solids_fit_their_ball():
    """Every solid is centred and fills, but does not leave, its ball."""
    tab = renderer._shape_table()
    rng = np.random.default_rng(0)
    for s in range(7):
        pts = []
        for k in np.nonzero(tab["on"][s])[0]:
            p = renderer._Prim(tab["c"][s, k], tab["Q"][s, k], tab["A"][s, k],
                               tab["lo"][s, k], tab["hi"][s, k])
            lo, hi = renderer._extent(p)
            x = lo + (hi - lo) * rng.random((20000, 3))
            x = x[(p.A * x ** 2).sum(1) <= 1.0]
            pts.append(x @ p.Q.T + p.c)
        rad = np.linalg.norm(np.concatenate(pts), axis=1).max()
        assert 0.85 * renderer.OBJ_RADIUS < rad <= renderer.OBJ_RADIUS, (s, rad)
    assert len(renderer.SHAPE_NAMES) == 7


# ------------------------------------------------------------------ probes ---

N_TRAIN, N_TEST, PROBE_SIZE = 2000, 500, 48


@pytest.fixture(scope="module")
def probe_data():
    import generate_m3di
    df, _, _ = generate_m3di.sample_latents(N_TRAIN + N_TEST, 123, 0)
    r = Renderer(PROBE_SIZE)
    X = r.render(generate_m3di._render_columns(df)).astype(np.float32) / 255.0
    return df, X, r


def _circular(v):
    return np.stack([np.cos(2 * np.pi * v), np.sin(2 * np.pi * v)], 1)


def test_probe_position_spotlight_background(probe_data):
    """Linear probes on whole downsampled images (measured: x 1.00, y 0.996,
    spotlight position R^2 0.80, background hue R^2 0.93)."""
    from sklearn.linear_model import LogisticRegression, Ridge
    df, X, _ = probe_data
    n, S, k = len(X), PROBE_SIZE, 4
    med = np.median(X.reshape(n, -1, 3), axis=1)
    dev = np.abs(X - med[:, None, None, :]).sum(-1)
    feat = dev.reshape(n, S // k, k, S // k, k).mean((2, 4)).reshape(n, -1)
    tr, te = slice(0, N_TRAIN), slice(N_TRAIN, None)
    for c in ("object_xpos", "object_ypos"):
        y = df[c].to_numpy()
        acc = LogisticRegression(max_iter=1000).fit(feat[tr], y[tr]).score(feat[te], y[te])
        print(f"probe {c}: accuracy {acc:.3f}")
        assert acc > 0.9, (c, acc)              # chance 0.33
    lum = X.mean(-1).reshape(n, S // k, k, S // k, k).mean((2, 4)).reshape(n, -1)
    y = df["spotlight_pos"].to_numpy()
    r2 = Ridge(1.0).fit(lum[tr], y[tr]).score(lum[te], y[te])
    print(f"probe spotlight_pos: R^2 {r2:.3f}")
    assert r2 > 0.5, r2                         # chance 0
    y = _circular(df["background_color"].to_numpy())
    r2 = Ridge(1.0).fit(med[tr], y[tr]).score(med[te], y[te])
    print(f"probe background_color (cos, sin): R^2 {r2:.3f}")
    assert r2 > 0.7, r2


def test_probe_shape_and_object_hue(probe_data):
    """A small CNN on an object-centred crop (cut at the grid cell named by
    the position latents) recovers shape and object hue. Measured: shape
    accuracy 0.60 (chance 0.14), hue R^2 (cos, sin) >= 0.88."""
    import torch
    df, X, r = probe_data
    C = 28
    rows, cols = r.object_center_px(df["object_xpos"].to_numpy(), df["object_ypos"].to_numpy())
    r0 = np.clip(np.round(rows - C / 2).astype(int), 0, PROBE_SIZE - C)
    c0 = np.clip(np.round(cols - C / 2).astype(int), 0, PROBE_SIZE - C)
    crops = np.stack([X[i, r0[i]:r0[i] + C, c0[i]:c0[i] + C] for i in range(len(X))])
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        x = torch.tensor(crops).permute(0, 3, 1, 2).contiguous()
        y = torch.tensor(df["object_shape"].to_numpy())
        hue = torch.tensor(_circular(df["object_color"].to_numpy()), dtype=torch.float32)

        def blk(i, o):
            return [torch.nn.Conv2d(i, o, 3, padding=1, bias=False), torch.nn.BatchNorm2d(o),
                    torch.nn.ReLU()]
        net = torch.nn.Sequential(*blk(3, 24), torch.nn.MaxPool2d(2), *blk(24, 48),
                                  torch.nn.MaxPool2d(2), *blk(48, 64),
                                  torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                  torch.nn.Linear(64, 9))
        epochs, bs = 10, 64
        opt = torch.optim.Adam(net.parameters(), 3e-3)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, 3e-3, total_steps=epochs * math.ceil(N_TRAIN / bs))
        for _ in range(epochs):
            net.train()
            perm = torch.randperm(N_TRAIN)
            for i in range(0, N_TRAIN, bs):
                b = perm[i:i + bs]
                o = net(x[b])
                loss = (torch.nn.functional.cross_entropy(o[:, :7], y[b])
                        + ((o[:, 7:] - hue[b]) ** 2).mean())
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        net.eval()
        with torch.no_grad():
            o = net(x[N_TRAIN:])
    finally:
        torch.set_num_threads(old_threads)
    acc = (o[:, :7].argmax(1) == y[N_TRAIN:]).float().mean().item()
    t = hue[N_TRAIN:]
    r2 = (1 - ((o[:, 7:] - t) ** 2).mean(0) / t.var(0)).min().item()
    print(f"probe object_shape: accuracy {acc:.3f}; object_color (cos, sin): min R^2 {r2:.3f}")
    assert acc > 0.35, acc                      # chance 1/7 = 0.14
    assert r2 > 0.6, r2                         # chance 0
