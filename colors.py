"""Colours of Multimodal3DIdent: hues as RGB, and the name of the nearest colour of a palette.

The text names an object's colour by the colour nearest in RGB to its hue (HSV
with saturation = value = 1) in a palette drawn per sample from matplotlib's
Tableau (10), CSS4 (148) and XKCD (949) colours; the index of a name is its
position in the sorted list of all names.
"""
import numpy as np

PALETTE_NAMES = ["tableau", "css4", "xkcd"]
_COLOR_TABLES = None


def color_tables():
    """(all_names, palettes): all_names is the sorted list of every colour name
    of the three palettes; palettes is a list of (names, rgb [k, 3], indices
    into all_names), in PALETTE_NAMES order, names sorted within a palette."""
    global _COLOR_TABLES
    if _COLOR_TABLES is None:
        from matplotlib import colors as mcolors
        dicts = [mcolors.TABLEAU_COLORS, mcolors.CSS4_COLORS, mcolors.XKCD_COLORS]
        all_names = sorted(n for d in dicts for n in d)
        pos = {n: i for i, n in enumerate(all_names)}
        palettes = []
        for d in dicts:
            names = sorted(d)
            rgb = np.array([mcolors.to_rgb(d[n]) for n in names])
            palettes.append((names, rgb, np.array([pos[n] for n in names])))
        _COLOR_TABLES = (all_names, palettes)
    return _COLOR_TABLES


def hsv_to_rgb(h):
    """Hue in [0, 1] (any shape) -> RGB with saturation = value = 1, shape + trailing 3
    (as matplotlib.colors.hsv_to_rgb)."""
    h6 = (np.asarray(h, float) % 1.0) * 6.0
    return np.stack([np.clip(np.abs(h6 - 3) - 1, 0, 1), np.clip(2 - np.abs(h6 - 2), 0, 1),
                     np.clip(2 - np.abs(h6 - 4), 0, 1)], -1)


def nearest_color_names(hues, palette_ids):
    """Name and global index of the colour nearest in RGB to each hue, within
    the palette given per sample (0 tableau, 1 css4, 2 xkcd)."""
    all_names, palettes = color_tables()
    rgb = hsv_to_rgb(hues)
    index = np.empty(len(rgb), np.int64)
    for p, (names, prgb, gidx) in enumerate(palettes):
        m = np.asarray(palette_ids) == p
        if m.any():
            dist = ((rgb[m, None, :] - prgb[None]) ** 2).sum(-1)
            index[m] = gidx[dist.argmin(1)]
    return [all_names[i] for i in index], index
