"""Tests of generate_m3di.py: command line, folder format, latents, captions,
colour names, determinism across worker counts, preview. CPU, about 20-30 s."""

import math
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import colors  # noqa: E402
import generate_m3di as g  # noqa: E402
from cli import run_cli  # noqa: E402
from helpers import file_contents  # noqa: E402
import generate_m3di
from helpers import fails
from helpers import file_contents as digest

SMALL = ["--n-train", "12", "--n-val", "10", "--n-test", "1", "--image-size", "16",
         "--workers", "1", "--quiet"]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("m3di") / "data"
    assert g.main([str(out)] + SMALL) == 0
    return out


# ------------------------------------------------------------ command line ---

def _error(capsys, argv):
    with pytest.raises(SystemExit) as e:
        run_cli(g.main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2
    assert len(err) == 1, err                   # one line, no usage dump or traceback
    return err[0]


@pytest.mark.parametrize("argv,flag", [
    (["--n-train", "0"], "--n-train"),
    (["--n-val", "-3"], "--n-val"),
    (["--n-test", "abc"], "--n-test"),
    (["--image-size", "4"], "--image-size"),
    (["--workers", "0"], "--workers"),
    (["--seed", "-1"], "--seed"),
    (["--supersample", "0"], "--supersample"),
    (["--png-compress-level", "10"], "--png-compress-level"),
])
def test_bad_flags_exit_2(tmp_path, capsys, argv, flag):
    line = _error(capsys, [str(tmp_path / "out")] + argv)
    assert "error: argument " + flag in line
    assert not (tmp_path / "out").exists()


def test_missing_outdir(capsys):
    line = _error(capsys, ["--n-train", "5"])
    assert "OUTDIR" in line


def test_non_empty_outdir_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    line = _error(capsys, [str(out)] + SMALL)
    assert "OUTDIR" in line and "--overwrite" in line
    # --overwrite replaces the splits, keeps unrelated files
    (out / "train").mkdir()
    (out / "train" / "stale.png").write_text("x")
    (out / "vocab.json").write_text("{}")
    assert g.main([str(out), "--overwrite"] + SMALL) == 0
    assert (out / "keep.txt").exists()
    assert not (out / "train" / "stale.png").exists()
    assert not (out / "vocab.json").exists()
    assert len(os.listdir(out / "train" / "images")) == 12


def test_outdir_is_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert "OUTDIR" in _error(capsys, [str(f)] + SMALL)


def test_bad_preview(tmp_path, capsys):
    assert "--preview" in _error(capsys, ["--preview", str(tmp_path / "p.txt")])
    assert "--preview" in _error(capsys, ["--preview", str(tmp_path / "no" / "p.png")])


def test_cli_subprocess_one_line_error(tmp_path):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "generate_m3di.py"),
                        str(tmp_path / "o"), "--n-train", "0"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "generate_m3di.py: error: argument --n-train: must be in 1..10000000, got 0"]
    assert p.stdout == ""


# ---------------------------------------------------------------- format ---

def test_index_width():
    for n, w in ((1, 1), (2, 1), (10, 1), (11, 2), (100, 2), (101, 3), (1000, 3),
                 (1001, 4), (125000, 6), (10000, 4)):
        assert g.index_width(n) == w, n
    for n in range(1, 3000):
        assert g.index_width(n) == max(1, math.ceil(math.log10(n)))


def test_folder_format(small_set):
    out = small_set
    assert sorted(p for p in os.listdir(out)) == ["generator_args.json", "test", "train", "val"]
    expect = {"train": [f"{i:02d}.png" for i in range(12)],
              "val": [f"{i}.png" for i in range(10)], "test": ["0.png"]}
    for split, names in expect.items():
        d = out / split
        assert sorted(os.listdir(d)) == ["images", "latents_image.csv", "latents_text.csv", "text"]
        assert sorted(os.listdir(d / "images")) == names
        assert os.listdir(d / "text") == ["text_raw.txt"]
        im = Image.open(d / "images" / names[-1])
        assert im.mode == "RGB" and im.size == (16, 16)
        img = pd.read_csv(d / "latents_image.csv")
        txt = pd.read_csv(d / "latents_text.csv")
        assert list(img.columns) == g.IMAGE_COLUMNS
        assert list(txt.columns) == g.TEXT_COLUMNS
        assert list(img.columns) == [
            "object_shape", "object_ypos", "object_xpos", "object_zpos", "object_alpharot",
            "object_betarot", "object_gammarot", "spotlight_pos", "object_color",
            "spotlight_color", "background_color"]
        assert list(txt.columns) == [
            "object_shape", "object_ypos", "object_xpos", "object_zpos",
            "object_color_index", "text_phrasing", "object_color_name"]
        lines = (d / "text" / "text_raw.txt").read_text().split("\n")
        assert lines[-1] == "" and len(lines) - 1 == len(names) == len(img) == len(txt)
        for c in ("object_shape", "object_ypos", "object_xpos", "object_zpos"):
            assert (img[c] == txt[c]).all()
        assert not any(n.endswith(".tmp") for n in os.listdir(d))
    assert not any(n.endswith(".partial") for n in os.listdir(out))


# --------------------------------------------------------------- latents ---

@pytest.fixture(scope="module")
def latents():
    return g.sample_latents(6000, 7, 0)


def test_distributions(latents):
    img, txt, _ = latents
    n = len(img)
    for c, k in (("object_shape", 7), ("object_xpos", 3), ("object_ypos", 3)):
        counts = np.bincount(img[c], minlength=k)
        assert len(counts) == k and counts.min() > n / k * 0.85, (c, counts)
    assert (img["object_zpos"] == 0).all()
    for c in g.IMAGE_COLUMNS[4:]:
        v = img[c].to_numpy()
        assert v.min() >= 0 and v.max() < 1 and abs(v.mean() - 0.5) < 0.02, c
    assert sorted(txt["text_phrasing"].unique()) == [0, 1, 2, 3, 4]
    assert np.bincount(txt["text_phrasing"]).min() > n / 5 * 0.85


def test_position_dependent_color():
    img, _, _ = g.sample_latents(3000, 1, 0, position_dependent_color=True)
    h, x = img["object_color"].to_numpy(), img["object_xpos"].to_numpy()
    assert ((h >= x / 3) & (h < (x + 1) / 3)).all()
    u = h * 3 - x
    assert abs(u.mean() - 0.5) < 0.03


def test_seed_and_prefix_stability():
    a = g.sample_latents(50, 3, 0)[0]
    b = g.sample_latents(1500, 3, 0)[0]
    pd.testing.assert_frame_equal(a, b.iloc[:50])
    c = g.sample_latents(50, 4, 0)[0]
    d = g.sample_latents(50, 3, 1)[0]
    assert not a.equals(c) and not a.equals(d)


_PATTERNS = [re.compile("^" + re.escape(p).replace(r"\{SHAPE\}", "(?P<shape>[a-z]+)")
                        .replace(r"\{COLOR\}", "(?P<color>[^\"]+)")
                        .replace(r"\{YPOS\}", "(?P<y>top|mid|bottom)")
                        .replace(r"\{XPOS\}", "(?P<x>left|center|right)") + "$")
             for p in g.PHRASINGS]


def test_phrasings_verbatim():
    assert g.PHRASINGS == [
        'A {SHAPE} of "{COLOR}" color is visible, positioned at the {YPOS}-{XPOS} of the image.',
        'A "{COLOR}" {SHAPE} is at the {YPOS}-{XPOS} of the image.',
        'The {YPOS}-{XPOS} of the image shows a "{COLOR}" colored {SHAPE}.',
        'At the {YPOS}-{XPOS} of the picture is a {SHAPE} in "{COLOR}" color.',
        'At the {YPOS}-{XPOS} of the image, there is a "{COLOR}" object in the form of a {SHAPE}.',
    ]
    assert g.XPOS_NAMES == ["left", "center", "right"]
    assert g.YPOS_NAMES == ["top", "mid", "bottom"]


def test_captions_match_latents(latents):
    img, txt, caps = latents
    for i, cap in enumerate(caps[:2000]):
        p = int(txt["text_phrasing"][i])
        m = _PATTERNS[p].match(cap)
        assert m, cap
        assert m["shape"] == g.SHAPE_NAMES[img["object_shape"][i]]
        assert m["x"] == g.XPOS_NAMES[img["object_xpos"][i]]
        assert m["y"] == g.YPOS_NAMES[img["object_ypos"][i]]
        assert m["color"] == txt["object_color_name"][i]
        # no other phrasing matches: the phrasing is recoverable from the text
        assert sum(bool(q.match(cap)) for q in _PATTERNS) == 1


def test_written_captions_match_csv(small_set):
    for split in ("train", "val", "test"):
        d = small_set / split
        txt = pd.read_csv(d / "latents_text.csv")
        caps = (d / "text" / "text_raw.txt").read_text().splitlines()
        for i, cap in enumerate(caps):
            assert cap == g.caption(txt["object_shape"][i], txt["object_ypos"][i],
                                    txt["object_xpos"][i], txt["object_color_name"][i],
                                    txt["text_phrasing"][i])
            assert f'"{txt["object_color_name"][i]}"' in cap


def test_shape_names_consistent_with_renderer():
    import renderer
    assert g.SHAPE_NAMES == renderer.SHAPE_NAMES
    assert len(set(g.SHAPE_NAMES)) == 7 and all(re.fullmatch("[a-z]+", s) for s in g.SHAPE_NAMES)


# --------------------------------------------------------------- colours ---

def test_color_name_index_mapping(latents):
    from matplotlib import colors as mc
    all_names, palettes = colors.color_tables()
    assert len(all_names) == 10 + 148 + 949 == len(set(all_names))
    assert all_names == sorted(list(mc.TABLEAU_COLORS) + list(mc.CSS4_COLORS)
                               + list(mc.XKCD_COLORS))
    img, txt, _ = latents
    idx, names = txt["object_color_index"].to_numpy(), txt["object_color_name"].to_numpy()
    assert all(all_names[i] == n for i, n in zip(idx, names))
    # each sample's name is the nearest (in RGB) to its hue within its palette
    dicts = {"tab:": mc.TABLEAU_COLORS, "xkcd:": mc.XKCD_COLORS}
    kinds = []
    for h, name in zip(img["object_color"][:1500], names[:1500]):
        prefix = name.split(":")[0] + ":" if ":" in name else ""
        pal = dicts.get(prefix, mc.CSS4_COLORS)
        kinds.append(prefix or "css4")
        rgb = np.array(mc.hsv_to_rgb([h, 1.0, 1.0]))
        dist = {n: ((np.array(mc.to_rgb(c)) - rgb) ** 2).sum() for n, c in pal.items()}
        assert dist[name] <= min(dist.values()) + 1e-12, (h, name)
    # palettes drawn uniformly at random per sample
    counts = pd.Series(kinds).value_counts()
    assert set(counts.index) == {"tab:", "css4", "xkcd:"} and counts.min() > 400


def test_nearest_color_examples():
    # exact CSS4 matches; equal colours (aqua/cyan, fuchsia/magenta) resolve
    # to the alphabetically first name
    hues = np.array([0.0, 1 / 3, 0.5, 2 / 3, 5 / 6, 0.0, 0.0])
    names, idx = colors.nearest_color_names(hues, np.array([1, 1, 1, 1, 1, 0, 2]))
    assert names == ["red", "lime", "aqua", "blue", "fuchsia", "tab:red", "xkcd:fire engine red"]
    all_names, _ = colors.color_tables()
    assert [all_names[i] for i in idx] == names


# ----------------------------------------------------------- determinism ---


def test_deterministic_across_workers(tmp_path):
    """Byte-identical output with 1 and 2 worker processes (several tasks)."""
    args = ["--n-train", str(2 * g.TASK_SIZE + 30), "--n-val", "20", "--n-test", "5",
            "--image-size", "24", "--seed", "11", "--quiet"]
    assert g.main([str(tmp_path / "a"), "--workers", "1"] + args) == 0
    assert g.main([str(tmp_path / "b"), "--workers", "2"] + args) == 0
    a, b = file_contents(tmp_path / "a"), file_contents(tmp_path / "b")
    assert len(a) == 2 * g.TASK_SIZE + 30 + 20 + 5 + 3 * 3 + 1
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)
    args[args.index("--seed") + 1] = "12"
    assert g.main([str(tmp_path / "c"), "--workers", "1"] + args) == 0
    c = file_contents(tmp_path / "c")
    assert c["train/latents_image.csv"] != a["train/latents_image.csv"]


def test_images_match_renderer(small_set):
    import renderer
    img = pd.read_csv(small_set / "val" / "latents_image.csv")
    ref = renderer.Renderer(16).render(img)
    for i in range(len(img)):
        got = np.asarray(Image.open(small_set / "val" / "images" / f"{i}.png"))
        np.testing.assert_array_equal(got, ref[i])


# --------------------------------------------------------------- preview ---

def test_preview(tmp_path):
    p = tmp_path / "prev.png"
    assert g.main(["--preview", str(p), "--image-size", "32", "--quiet"]) == 0
    im = Image.open(p)
    assert im.size[0] > 400 and os.path.getsize(p) < 300_000
    assert os.listdir(tmp_path) == ["prev.png"]


def test_docs_preview_small():
    p = os.path.join(ROOT, "docs", "m3di_preview.png")
    assert os.path.exists(p) and os.path.getsize(p) < 300_000


# ------------------------------------------- bad input and hostile conditions ---

GEN = ["--n-train", "5", "--n-val", "3", "--n-test", "3", "--image-size", "16", "--workers", "1",
       "--quiet"]


def test_interrupted_overwrite_keeps_the_old_data_and_continues(tmp_path, monkeypatch):
    out = tmp_path / "m3di"
    generate_m3di.main([str(out), *GEN, "--seed", "1"])
    (out / "notes.txt").write_text("mine")
    old = digest(out)
    monkeypatch.setattr(generate_m3di, "TASK_SIZE", 2)
    real = generate_m3di._render_task
    calls = []

    def interrupted(task):
        calls.append(task[1])
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(task)
    monkeypatch.setattr(generate_m3di, "_render_task", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_m3di.main([str(out), *GEN, "--seed", "2", "--overwrite"])
    assert digest(out) == old  # Ctrl-C: the old data set is whole
    monkeypatch.setattr(generate_m3di, "_render_task", real)
    calls.clear()
    generate_m3di.main([str(out), *GEN, "--seed", "2", "--overwrite"])
    fresh = tmp_path / "fresh"
    generate_m3di.main([str(fresh), *GEN, "--seed", "2"])
    new = digest(out)
    assert new.pop("notes.txt") == old["notes.txt"]
    assert new == digest(fresh)
    assert not os.path.exists(str(out) + ".partial")


def test_generator_output_under_a_file(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    fails(capsys, generate_m3di.main, [afile / "sub", *GEN], str(afile))


def test_generator_refuses_the_current_folder_before_rendering(tmp_path, capsys, monkeypatch):
    (tmp_path / "keep").write_text("x")
    monkeypatch.chdir(tmp_path)
    for out in (".", str(tmp_path.parent)):
        fails(capsys, generate_m3di.main, [out, "--overwrite", "--n-train", "2", "--n-val", "2",
                                           "--n-test", "2"], "is the current folder or above it")
    assert os.listdir(tmp_path) == ["keep"]
