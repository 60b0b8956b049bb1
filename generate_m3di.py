"""Blender-free generator of synthetic Multimodal3DIdent (m3di) image/text data.

Writes the published folder layout, so `main_imgtxt.py --datapath OUT` runs on
it unchanged:

    OUT/{train,val,test}/images/<index>.png      index zero-padded to
                                                 max(1, ceil(log10(N))) digits
    OUT/{train,val,test}/text/text_raw.txt       line i describes image i
    OUT/{train,val,test}/latents_image.csv       IMAGE_COLUMNS
    OUT/{train,val,test}/latents_text.csv        TEXT_COLUMNS
    OUT/generator_args.json                      settings used (provenance)

Latents follow the distributions of the published data set: shape uniform on
{0..6}, x and y position uniform on {0,1,2} (x: left/center/right, y:
top/mid/bottom), z = 0, three rotations, spotlight position and three hues
uniform on [0, 1]; with --position-dependent-color the object hue is
(x + U[0,1]) / 3. The caption colour is the name of the colour nearest in RGB
to the object hue (HSV, s = v = 1) within a palette drawn uniformly per sample
from matplotlib's TABLEAU_COLORS (10), CSS4_COLORS (148) and XKCD_COLORS (949);
object_color_index is that name's index in the sorted list of all 1107 names
(ties within a palette go to the alphabetically first name). Phrasing is
uniform on the five published templates.

Images come from `renderer.py` (ray-cast analytic solids). The seven shapes
are NOT the published meshes; captions name what the images show:
0 teapot, 1 hammer, 2 chair, 3 snowman, 4 car, 5 lamp, 6 airplane
(published: teapot, hare, dragon, cow, armadillo, horse, head).

Determinism: latents are drawn in fixed blocks of LATENT_BLOCK rows, block b
of split s from SeedSequence(seed, spawn_key=(s, b)); rendering is a pure,
elementwise function of the latents. The output is therefore byte-identical
for a seed whatever --workers is, and the first k samples of a split do not
depend on the split's size.

Usage:
    python generate_m3di.py data/m3di --n-train 10000 --n-val 1000 --n-test 1000
    python generate_m3di.py data/m3di_224 --image-size 224 --position-dependent-color
    python generate_m3di.py --preview docs/m3di_preview.png --image-size 128
"""

import argparse
import json
import math
import multiprocessing
import os
import shutil
import sys
import textwrap
import time

import numpy as np

from cli import OneLineParser, run_cli
from colors import nearest_color_names
from facts import SHAPE_NAMES, SPLITS
from files import atomic_write_csv, atomic_write_text

IMAGE_COLUMNS = ["object_shape", "object_ypos", "object_xpos", "object_zpos",
                 "object_alpharot", "object_betarot", "object_gammarot",
                 "spotlight_pos", "object_color", "spotlight_color", "background_color"]
TEXT_COLUMNS = ["object_shape", "object_ypos", "object_xpos", "object_zpos",
                "object_color_index", "text_phrasing", "object_color_name"]
XPOS_NAMES = ["left", "center", "right"]
YPOS_NAMES = ["top", "mid", "bottom"]
PHRASINGS = [
    'A {SHAPE} of "{COLOR}" color is visible, positioned at the {YPOS}-{XPOS} of the image.',
    'A "{COLOR}" {SHAPE} is at the {YPOS}-{XPOS} of the image.',
    'The {YPOS}-{XPOS} of the image shows a "{COLOR}" colored {SHAPE}.',
    'At the {YPOS}-{XPOS} of the picture is a {SHAPE} in "{COLOR}" color.',
    'At the {YPOS}-{XPOS} of the image, there is a "{COLOR}" object in the form of a {SHAPE}.',
]
LATENT_BLOCK = 1000          # rows per seeded latent block
TASK_SIZE = 200              # images per worker task
KNOWN_OUTPUTS = set(SPLITS) | {"generator_args.json", "vocab.json"}
PREVIEW_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


# ---------------------------------------------------------------- latents ---

def sample_latents(n, seed, split_index, position_dependent_color=False):
    """Latents of one split: (image DataFrame, text DataFrame, captions)."""
    import pandas as pd
    blocks = []
    for b in range(math.ceil(n / LATENT_BLOCK)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split_index, b)))
        k = LATENT_BLOCK
        blk = {
            "object_shape": rng.integers(0, 7, k),
            "object_ypos": rng.integers(0, 3, k),
            "object_xpos": rng.integers(0, 3, k),
            "object_zpos": np.zeros(k, np.int64),
        }
        for name in ("object_alpharot", "object_betarot", "object_gammarot", "spotlight_pos"):
            blk[name] = rng.random(k)
        u = rng.random(k)
        blk["object_color"] = (blk["object_xpos"] + u) / 3.0 if position_dependent_color else u
        blk["spotlight_color"] = rng.random(k)
        blk["background_color"] = rng.random(k)
        blk["palette"] = rng.integers(0, 3, k)
        blk["text_phrasing"] = rng.integers(0, len(PHRASINGS), k)
        blocks.append(blk)
    cols = {key: np.concatenate([b[key] for b in blocks])[:n] for key in blocks[0]}
    names, index = nearest_color_names(cols["object_color"], cols["palette"])
    img = pd.DataFrame({c: cols[c] for c in IMAGE_COLUMNS})
    txt = pd.DataFrame({
        "object_shape": cols["object_shape"], "object_ypos": cols["object_ypos"],
        "object_xpos": cols["object_xpos"], "object_zpos": cols["object_zpos"],
        "object_color_index": index, "text_phrasing": cols["text_phrasing"],
        "object_color_name": names})
    captions = [caption(s, y, x, c, p) for s, y, x, c, p in zip(
        cols["object_shape"], cols["object_ypos"], cols["object_xpos"], names,
        cols["text_phrasing"])]
    return img, txt, captions


def caption(shape, ypos, xpos, color_name, phrasing):
    return PHRASINGS[int(phrasing)].format(SHAPE=SHAPE_NAMES[int(shape)], COLOR=color_name,
                                           YPOS=YPOS_NAMES[int(ypos)], XPOS=XPOS_NAMES[int(xpos)])


def index_width(n):
    """Digits of the zero-padded file index: ceil(log10(n)), at least 1
    (n = 1 -> 1, 10 -> 1, 11 -> 2, 100 -> 2, 101 -> 3). Exact integer form."""
    return max(1, len(str(n - 1)))


# ---------------------------------------------------------------- writing ---

_WORKER_RENDERER = {}


def _render_task(task):
    """Render and save one block of images; returns the number written."""
    images_dir, start, width, lat, image_size, supersample, png_level = task
    from PIL import Image
    import renderer
    key = (image_size, supersample)
    if key not in _WORKER_RENDERER:
        _WORKER_RENDERER[key] = renderer.Renderer(image_size, supersample)
    imgs = _WORKER_RENDERER[key].render(lat)
    for i, im in enumerate(imgs):
        name = os.path.join(images_dir, f"{start + i:0{width}d}.png")
        Image.fromarray(im).save(name, format="PNG", compress_level=png_level)
    open(os.path.join(os.path.dirname(images_dir), "done", str(start)), "w").close()
    return len(imgs)


def _render_columns(img_df):
    import renderer
    return np.column_stack([img_df[c].to_numpy(np.float64) for c in renderer.FACTOR_ORDER])


def write_split(out, split, img_df, txt_df, captions, image_size, supersample,
                png_level, pool=None, progress=True):
    """Write one split into OUT/.<split>.partial, then rename it to OUT/<split>.

    Each block of TASK_SIZE images leaves a marker in .<split>.partial/done/ once
    written, so an interrupted split continues where it stopped (the latents are
    drawn from the seed, so a rerun renders the very same images)."""
    from tqdm import tqdm
    final = os.path.join(out, split)
    if os.path.isdir(final):  # finished by an earlier, interrupted run
        return
    tmp = os.path.join(out, f".{split}.partial")
    for sub in ("images", "text", "done"):
        os.makedirs(os.path.join(tmp, sub), exist_ok=True)
    n = len(img_df)
    width = index_width(n)
    lat = _render_columns(img_df)
    done = set(os.listdir(os.path.join(tmp, "done")))
    tasks = [(os.path.join(tmp, "images"), s, width, lat[s:s + TASK_SIZE], image_size,
              supersample, png_level) for s in range(0, n, TASK_SIZE) if str(s) not in done]
    with tqdm(total=n, initial=n - sum(len(t[3]) for t in tasks), desc=f"{split:5s}", unit="img",
              disable=not progress, dynamic_ncols=True) as bar:
        results = pool.imap(_render_task, tasks) if pool is not None else map(_render_task, tasks)
        for done in results:
            bar.update(done)
    atomic_write_text(os.path.join(tmp, "text", "text_raw.txt"),
                       "".join(c + "\n" for c in captions))
    atomic_write_csv(img_df, os.path.join(tmp, "latents_image.csv"))
    atomic_write_csv(txt_df, os.path.join(tmp, "latents_text.csv"))
    shutil.rmtree(os.path.join(tmp, "done"))
    os.replace(tmp, final)


def write_preview(path, seed, image_size, supersample, position_dependent_color, n=16):
    """Contact sheet of the first n training samples with their captions."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import renderer
    img_df, _, caps = sample_latents(n, seed, 0, position_dependent_color)
    imgs = renderer.Renderer(image_size, supersample).render(img_df)
    cols = 4
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.2, rows * 2.75))
    for ax in np.ravel(axes):
        ax.axis("off")
    for i, ax in enumerate(np.ravel(axes)[:n]):
        ax.imshow(imgs[i], interpolation="nearest")
        ax.set_title("\n".join(textwrap.wrap(caps[i], 34)), fontsize=6.2, pad=3)
    fig.suptitle(f"Synthetic Multimodal3DIdent (seed {seed}, {image_size} px"
                 + (", position-dependent colour" if position_dependent_color else "") + ")",
                 fontsize=9)
    fig.tight_layout()
    tmp = path + ".tmp" + os.path.splitext(path)[1]
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# -------------------------------------------------------------------- CLI ---

def _int_in(lo, hi=None, what="an integer"):
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}")
        if v < lo or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise argparse.ArgumentTypeError(f"must be {rng}, got {v}")
        return v
    return parse


MAX_PAIRS = 10_000_000  # per split: 80 times the published training set


def build_parser():
    p = OneLineParser(
        description="Generate a synthetic Multimodal3DIdent image/text data set "
                    "(published folder format) without Blender.")
    p.add_argument("outdir", nargs="?", metavar="OUTDIR",
                   help="output folder (created; must be empty unless --overwrite)")
    p.add_argument("--n-train", type=_int_in(1, MAX_PAIRS), default=125000,
                   help=f"training pairs (125000; at most {MAX_PAIRS:,}, a split's latents are held in memory)")
    p.add_argument("--n-val", type=_int_in(1, MAX_PAIRS), default=10000, help="validation pairs (10000)")
    p.add_argument("--n-test", type=_int_in(1, MAX_PAIRS), default=10000, help="test pairs (10000)")
    p.add_argument("--seed", type=_int_in(0), default=0, help="random seed (0)")
    p.add_argument("--image-size", type=_int_in(8, 2048), default=64,
                   help="image side in pixels (64; 224 is the published size)")
    p.add_argument("--supersample", type=_int_in(1, 8), default=1,
                   help="rays per pixel side for anti-aliasing (1)")
    p.add_argument("--position-dependent-color", action="store_true",
                   help="object hue = (x + U[0,1]) / 3 (the paper's main figure)")
    p.add_argument("--workers", type=_int_in(1, 256), default=min(4, os.cpu_count() or 1),
                   help="worker processes for rendering (min(4, CPUs)); "
                        "the output does not depend on it")
    p.add_argument("--png-compress-level", type=_int_in(0, 9), default=3,
                   help="PNG zlib level 0-9 (3; higher is smaller and slower)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the splits (and vocab.json, generator_args.json) "
                        "of an existing OUTDIR")
    p.add_argument("--preview", metavar="FILE.png",
                   help="also (or, without OUTDIR, only) write a 4x4 contact sheet "
                        "of training samples with their captions")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _validate(parser, args):
    if args.outdir is None and args.preview is None:
        parser.error("the following arguments are required: OUTDIR (or --preview FILE.png)")
    if args.preview is not None:
        if not args.preview.lower().endswith(PREVIEW_SUFFIXES):
            parser.error(f"argument --preview: file name must end with one of "
                         f"{', '.join(PREVIEW_SUFFIXES)}, got {args.preview!r}")
        parent = os.path.dirname(os.path.abspath(args.preview))
        if not os.path.isdir(parent):
            parser.error(f"argument --preview: folder {parent!r} does not exist")
    if args.outdir is not None:
        out = args.outdir
        if os.path.exists(out) and not os.path.isdir(out):
            parser.error(f"argument OUTDIR: {out!r} exists and is not a folder")
        here, target = os.path.realpath(os.getcwd()), os.path.realpath(out)
        if here == target or here.startswith(target.rstrip(os.sep) + os.sep) or target == os.sep:
            parser.error(f"argument OUTDIR: {out!r} is the current folder or above it; the data set is "
                         "built beside OUTDIR and renamed into place, so name a sub-folder")
        if os.path.isdir(out) and os.listdir(out) and not args.overwrite:
            parser.error(f"argument OUTDIR: {out!r} exists and is not empty "
                         "(pass --overwrite to replace its splits)")


PROGRESS = "generation.json"  # in OUT.partial: the settings of the generation under way


def generator_settings(args):
    return {k: v for k, v in vars(args).items()
            if k in ("seed", "n_train", "n_val", "n_test", "image_size", "supersample",
                     "position_dependent_color", "png_compress_level")}


def prepare_work_folder(out, args):
    """OUT.partial, beside OUT: the data set is built there and swapped in when complete,
    so neither Ctrl-C nor a kill ever leaves OUT half-written or its old data deleted.
    A partial folder of the same settings is continued; one of other settings restarts."""
    work = out + ".partial"
    progress = os.path.join(work, PROGRESS)
    if os.path.isdir(work):
        try:
            with open(progress) as f:
                same = json.load(f) == generator_settings(args)
        except (OSError, ValueError):
            same = False
        if same:
            print(f"continuing the interrupted generation in {work}")
            return work
        shutil.rmtree(work)
    os.makedirs(work)
    atomic_write_text(progress, json.dumps(generator_settings(args), indent=2) + "\n")
    return work


def swap_into_place(work, out):
    """Replace OUT's data by WORK's; files of OUT that the generator does not write stay."""
    if not os.path.isdir(out):
        os.rename(work, out)
        return
    old = out + ".old"
    if os.path.exists(old):
        shutil.rmtree(old)
    os.rename(out, old)
    os.rename(work, out)
    _finish_swap(old, out)


def recover_interrupted_swap(out):
    """A kill between the two renames of swap_into_place leaves OUT.old and no OUT:
    finish the swap if the new data set is complete, else put the old one back."""
    old, work = out + ".old", out + ".partial"
    if os.path.exists(out) or not os.path.isdir(old):
        return
    complete = os.path.isfile(os.path.join(work, "generator_args.json")) and \
        not os.path.exists(os.path.join(work, PROGRESS))
    os.rename(work if complete else old, out)
    if complete:
        _finish_swap(old, out)


def _finish_swap(old, out):
    for name in os.listdir(old):
        if name not in KNOWN_OUTPUTS and not name.endswith(".partial"):
            os.rename(os.path.join(old, name), os.path.join(out, name))
    shutil.rmtree(old)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    _validate(parser, args)
    t_start = time.time()
    if args.preview is not None:
        write_preview(args.preview, args.seed, args.image_size, args.supersample,
                      args.position_dependent_color)
        if not args.quiet:
            print(f"wrote preview {args.preview}")
    if args.outdir is None:
        return 0

    out = os.path.normpath(args.outdir)
    recover_interrupted_swap(out)
    work = prepare_work_folder(out, args)
    sizes = {"train": args.n_train, "val": args.n_val, "test": args.n_test}
    total = sum(sizes.values())
    n_tasks = max(math.ceil(n / TASK_SIZE) for n in sizes.values())
    workers = min(args.workers, n_tasks)
    pool = None
    if workers > 1:
        pool = multiprocessing.get_context("spawn").Pool(workers)
    try:
        for i, split in enumerate(SPLITS):
            img_df, txt_df, caps = sample_latents(sizes[split], args.seed, i,
                                                  args.position_dependent_color)
            write_split(work, split, img_df, txt_df, caps, args.image_size, args.supersample,
                        args.png_compress_level, pool=pool, progress=not args.quiet)
    except BaseException:
        if pool is not None:
            pool.terminate()
        raise
    if pool is not None:
        pool.close()
        pool.join()
    meta = generator_settings(args)
    meta["generator"] = "generate_m3di.py (ray-cast analytic solids, renderer.py)"
    meta["shape_names"] = list(SHAPE_NAMES)
    atomic_write_text(os.path.join(work, "generator_args.json"), json.dumps(meta, indent=2) + "\n")
    os.remove(os.path.join(work, PROGRESS))
    swap_into_place(work, out)
    if not args.quiet:
        dt = time.time() - t_start
        print(f"wrote {total} pairs to {out} in {dt:.1f} s ({total / dt:.0f} img/s, "
              f"{workers} worker{'s' if workers > 1 else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main) or 0)
