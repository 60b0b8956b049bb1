"""Write a tiny Multimodal3DIdent folder for tests and benchmarks.

The latents follow the published distributions (shape, x, y uniform; hues and
rotations uniform on [0, 1]; colour names from matplotlib's palettes); the
images are simple drawings (background hue, a square of the object hue at the
object's grid position), not renderings, so a model can learn the shared
factors quickly.
"""
import colorsys
import os

import numpy as np
import pandas as pd
from PIL import Image

SHAPES = ("teapot", "hare", "dragon", "cow", "armadillo", "horse", "head")
XPOS = ("left", "center", "right")
YPOS = ("top", "mid", "bottom")
PHRASES = (
    'A {SHAPE} of "{COLOR}" color is visible, positioned at the {YPOS}-{XPOS} of the image.',
    'A "{COLOR}" {SHAPE} is at the {YPOS}-{XPOS} of the image.',
    'The {YPOS}-{XPOS} of the image shows a "{COLOR}" colored {SHAPE}.',
    'At the {YPOS}-{XPOS} of the picture is a {SHAPE} in "{COLOR}" color.',
    'At the {YPOS}-{XPOS} of the image, there is a "{COLOR}" object in the form of a {SHAPE}.',
)
# A few names of each palette, with the characters that matter for tokenisation.
COLOR_NAMES = ("tab:blue", "tab:olive", "lawngreen", "crimson", "xkcd:bright aqua",
               "xkcd:robin's egg blue", "xkcd:blue/green", "xkcd:puke green")
ALL_COLOR_NAMES = None


def _all_color_names():
    global ALL_COLOR_NAMES
    if ALL_COLOR_NAMES is None:
        import matplotlib.colors as mc
        ALL_COLOR_NAMES = sorted(list(mc.TABLEAU_COLORS) + list(mc.CSS4_COLORS) + list(mc.XKCD_COLORS))
    return ALL_COLOR_NAMES


def make_split(n, rng, color_names=COLOR_NAMES):
    """Latents (two DataFrames) and sentences of n samples."""
    index = {name: i for i, name in enumerate(_all_color_names())}
    xpos = rng.integers(0, 3, n)
    hue = (xpos + rng.random(n)) / 3.0  # position-dependent colour
    names = [color_names[i] for i in rng.integers(0, len(color_names), n)]
    image = pd.DataFrame({
        "object_shape": rng.integers(0, 7, n), "object_xpos": xpos,
        "object_ypos": rng.integers(0, 3, n), "object_zpos": np.zeros(n),
        "object_alpharot": rng.random(n), "object_betarot": rng.random(n),
        "object_gammarot": rng.random(n), "object_color": hue,
        "spotlight_pos": rng.random(n), "spotlight_color": rng.random(n),
        "background_color": rng.random(n)})
    text = pd.DataFrame({
        "object_shape": image.object_shape, "object_xpos": xpos, "object_ypos": image.object_ypos,
        "object_zpos": np.zeros(n), "object_color_name": names,
        "object_color_index": [index[c] for c in names],
        "text_phrasing": rng.integers(0, 5, n)})
    sentences = [PHRASES[p].format(SHAPE=SHAPES[s], YPOS=YPOS[y], XPOS=XPOS[x], COLOR=c)
                 for p, s, y, x, c in zip(text.text_phrasing, text.object_shape,
                                          text.object_ypos, text.object_xpos, names)]
    return image, text, sentences


def draw_image(row, size):
    bg = np.array(colorsys.hsv_to_rgb(row.background_color, 0.6, 0.8)) * 255
    fg = np.array(colorsys.hsv_to_rgb(row.object_color, 1.0, 1.0)) * 255
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = bg.astype(np.uint8)
    cell = size // 3
    side = max(2, cell * (3 + int(row.object_shape)) // 10)
    top = int(row.object_ypos) * cell + (cell - side) // 2
    left = int(row.object_xpos) * cell + (cell - side) // 2
    img[top:top + side, left:left + side] = fg.astype(np.uint8)
    return Image.fromarray(img)


def write_m3di(root, sizes=None, image_size=32, seed=0, sentences=None, color_names=COLOR_NAMES):
    """Write `root/{train,val,test}` and return `root`.

    sizes: samples per split, default {"train": 40, "val": 10, "test": 10}.
    sentences: optional {split: [sentence, ...]} replacing a split's text.
    """
    sizes = sizes or {"train": 40, "val": 10, "test": 10}
    rng = np.random.default_rng(seed)
    for split, n in sizes.items():
        image, text, sents = make_split(n, rng, color_names)
        if sentences and split in sentences:
            sents = list(sentences[split])
        folder = os.path.join(root, split)
        os.makedirs(os.path.join(folder, "images"), exist_ok=True)
        os.makedirs(os.path.join(folder, "text"), exist_ok=True)
        image.to_csv(os.path.join(folder, "latents_image.csv"), index=False)
        text.to_csv(os.path.join(folder, "latents_text.csv"), index=False)
        with open(os.path.join(folder, "text", "text_raw.txt"), "w") as f:
            f.write("\n".join(sents))  # no final newline, as in the published data
        width = int(np.ceil(np.log10(n))) if n > 1 else 1
        for i, row in enumerate(image.itertuples()):
            draw_image(row, image_size).save(os.path.join(folder, "images", f"{str(i).zfill(width)}.png"))
    return root
