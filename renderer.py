"""Vectorised, Blender-free 3D renderer for the synthetic Multimodal3DIdent data.

Each image shows one of seven solids, built as unions of analytic primitives
(ellipsoids, cylinders, boxes, rounded boxes, domes), in front of a coloured
wall, lit by a coloured spotlight. Rendering is exact ray casting of those
primitives (closed-form ray/quadric and ray/slab intersections), so occlusion
(also self-occlusion between the parts of a solid) is depth-correct. Shading:
ambient + a weak white camera fill light + the spotlight (Lambert diffuse and
Blinn-Phong specular, with a soft cone). The wall is lit by the same spotlight,
so its pool of light moves with the spotlight position. No shadows are cast.

The seven solids (index -> name; the published data show teapot, hare, dragon,
cow, armadillo, horse, head at these indices, which we do not try to imitate):

    0 teapot    ellipsoid body, lid, knob, tilted spout, C-shaped handle
    1 hammer    handle, grip, head, striking face, angled claw
    2 chair     seat, tilted back, four legs
    3 snowman   three balls, carrot nose, two arms, hat
    4 car       body, cabin set back, four wheels
    5 lamp      an articulated desk lamp: base, two arms, joint, shade, bulb
    6 airplane  fuselage, cockpit, wings, fin, tailplane, two engines

Every solid has at most one mirror plane and no rotational symmetry, so each
of the three rotation angles changes the picture.

Scene conventions (world frame: x right, y up, z towards the camera):
- pinhole camera at (0, 0, CAM_DIST) looking down -z; the field of view shows
  [-VIEW_HALF, VIEW_HALF] in x and y at the plane z = 0;
- object centre (GRID * (xpos - 1), GRID * (1 - ypos), 0): xpos 0/1/2 is
  left/center/right, ypos 0/1/2 is top/mid/bottom, as in the captions;
- every solid is centred and scaled to fit in a ball of radius OBJ_RADIUS;
- rotation R = Rz(gamma) Ry(beta) Rx(alpha) B, with each angle
  (u - 0.5) * pi for its latent u in [0, 1], and B a fixed 3/4 viewing pose;
- spotlight at (-LIGHT_R cos(pi s), LIGHT_R sin(pi s), LIGHT_Z) for
  spotlight_pos s: on a semicircle above the scene, left (s=0) over the top
  (s=0.5) to the right (s=1), aimed at the object;
- colours are hues with HSV saturation = value = 1 (object albedo, spotlight
  colour mixed with white, wall albedo).

Per-image constants (pose, light, colours) are computed image by image in
float64, and the per-pixel work is elementwise float32 torch (no matrix
products, reductions or transcendental functions), so a latent vector gives
the same pixels whatever batch it is rendered in (checked by the tests).
"""

import math

import numpy as np
import torch

from colors import hsv_to_rgb
from facts import SHAPE_NAMES

__all__ = ["SHAPE_NAMES", "FACTOR_ORDER", "Renderer", "hsv_to_rgb", "render"]


CAM_DIST = 12.0
VIEW_HALF = 3.0          # half width of the view at z = 0
GRID = 1.35              # distance between grid positions
OBJ_RADIUS = 1.35        # every solid fits in a ball of this radius
WALL_Z = -2.0            # the background wall
LIGHT_R = 7.0
LIGHT_Z = 3.5
SPOT_INNER_DEG = 12.0
SPOT_OUTER_DEG = 30.0
BASE_POSE_DEG = (20.0, -35.0, 0.0)   # B = Rx(20) Ry(-35)

_BIG = 1.0e4
_TINY = 1.0 / _BIG ** 2   # quadric coefficient of an unbounded axis


# ---------------------------------------------------------------- geometry ---

def _rot(ax, ay, az):
    """Rotation matrix Rz(az) @ Ry(ay) @ Rx(ax) (radians), float64 numpy."""
    cx, sx, cy, sy, cz, sz = (math.cos(ax), math.sin(ax), math.cos(ay),
                              math.sin(ay), math.cos(az), math.sin(az))
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _rot_deg(rot):
    return _rot(*(math.radians(r) for r in rot))


def _align_y(p0, p1):
    """Rotation taking the local y axis onto the direction p0 -> p1."""
    v = np.asarray(p1, float) - np.asarray(p0, float)
    v /= np.linalg.norm(v)
    y = np.array([0.0, 1.0, 0.0])
    axis = np.cross(y, v)
    s, c = np.linalg.norm(axis), float(y @ v)
    if s < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    k = axis / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * kx + (1 - c) * kx @ kx


class _Prim:
    """{x : sum_i A_i x_i^2 <= 1} intersected with the box lo <= x <= hi,
    in a local frame given by rotation Q (local -> object) and centre c.
    Unbounded axes get A_i = _TINY (an ellipsoid semi-axis of _BIG), so the
    ray/quadric equation is always a proper quadratic (a > 0)."""

    def __init__(self, c, Q, A, lo, hi):
        self.c = np.asarray(c, float)
        self.Q = np.asarray(Q, float)
        self.A = np.asarray(A, float)
        self.lo = np.asarray(lo, float)
        self.hi = np.asarray(hi, float)


def ellipsoid(c, radii, rot=(0, 0, 0), lo=(-_BIG,) * 3, hi=(_BIG,) * 3):
    r = np.asarray(radii, float)
    lo, hi = np.maximum(lo, -r), np.minimum(hi, r)
    return _Prim(c, _rot_deg(rot), 1.0 / r ** 2, lo, hi)


def sphere(c, r):
    return ellipsoid(c, (r, r, r))


def box(c, half, rot=(0, 0, 0), rounding=None):
    """Box of half extents `half`; with `rounding` k > 1 the box is intersected
    with the ellipsoid of semi-axes k * half (rounded edges and corners)."""
    h = np.asarray(half, float)
    A = np.full(3, _TINY) if rounding is None else 1.0 / (rounding * h) ** 2
    return _Prim(c, _rot_deg(rot), A, -h, h)


def cylinder(p0, p1, r):
    """Solid cylinder of radius r from point p0 to point p1."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    half = np.linalg.norm(p1 - p0) / 2
    return _Prim((p0 + p1) / 2, _align_y(p0, p1), (1 / r ** 2, _TINY, 1 / r ** 2),
                 (-_BIG, -half, -_BIG), (_BIG, half, _BIG))


def dome(c, radii, rot=(0, 0, 0)):
    """Upper half (local y >= 0) of an ellipsoid: a solid cap."""
    return ellipsoid(c, radii, rot, lo=(-_BIG, 0.0, -_BIG))


def _shapes():
    S = []
    # 0 teapot (spout +x, handle -x)
    S.append([
        ellipsoid((0, 0, 0), (0.62, 0.47, 0.62), lo=(-_BIG, -0.40, -_BIG)),
        dome((0, 0.36, 0), (0.36, 0.17, 0.36)),
        sphere((0, 0.58, 0), 0.09),
        cylinder((0.45, -0.10, 0), (0.98, 0.42, 0), 0.085),
        cylinder((-0.52, 0.24, 0), (-0.88, 0.24, 0), 0.06),
        cylinder((-0.88, 0.24, 0), (-0.86, -0.22, 0), 0.06),
        cylinder((-0.86, -0.22, 0), (-0.50, -0.22, 0), 0.06),
    ])
    # 1 hammer (face +x, claw -x)
    S.append([
        cylinder((0, -0.95, 0), (0, 0.55, 0), 0.075),
        cylinder((0, -0.98, 0), (0, -0.45, 0), 0.105),
        box((0.08, 0.62, 0), (0.38, 0.12, 0.12), rounding=1.3),
        cylinder((0.42, 0.62, 0), (0.62, 0.62, 0), 0.15),
        box((-0.48, 0.52, 0), (0.24, 0.06, 0.11), rot=(0, 0, 28)),
    ])
    # 2 chair (back at -x)
    S.append([box((0, -0.02, 0), (0.48, 0.06, 0.46))]
             + [box((-0.47, 0.46, 0), (0.05, 0.44, 0.46), rot=(0, 0, 8))]
             + [box((sx * 0.40, -0.48, sz * 0.38), (0.05, 0.42, 0.05))
                for sx in (-1, 1) for sz in (-1, 1)])
    # 3 snowman (nose +x)
    S.append([
        sphere((0, -0.52, 0), 0.44),
        sphere((0, 0.08, 0), 0.32),
        sphere((0, 0.52, 0), 0.21),
        ellipsoid((0.28, 0.52, 0), (0.17, 0.045, 0.045)),
        cylinder((0, 0.70, 0), (0, 0.74, 0), 0.22),
        cylinder((0, 0.72, 0), (0, 0.98, 0), 0.14),
        cylinder((0, 0.15, 0.25), (0.10, 0.45, 0.70), 0.035),
        cylinder((0, 0.15, -0.25), (-0.05, 0.35, -0.72), 0.035),
    ])
    # 4 car (front +x)
    S.append([
        box((0, -0.08, 0), (0.92, 0.19, 0.42), rounding=1.15),
        box((-0.18, 0.24, 0), (0.42, 0.16, 0.36), rounding=1.2),
    ] + [cylinder((sx, -0.30, sz * 0.36), (sx, -0.30, sz * 0.48), 0.2)
         for sx in (-0.55, 0.55) for sz in (-1, 1)])
    # 5 desk lamp (shade faces +x)
    S.append([
        cylinder((0, -0.95, 0), (0, -0.83, 0), 0.40),
        cylinder((-0.05, -0.85, 0), (0.35, 0.05, 0), 0.05),
        sphere((0.35, 0.05, 0), 0.08),
        cylinder((0.35, 0.05, 0), (-0.10, 0.55, 0), 0.05),
        dome((-0.02, 0.50, 0), (0.30, 0.36, 0.30), rot=(0, 0, 45)),
        sphere((0.04, 0.44, 0), 0.11),
    ])
    # 6 airplane (nose +x, fin up)
    S.append([
        ellipsoid((0, 0, 0), (0.95, 0.15, 0.15)),
        ellipsoid((0.45, 0.11, 0), (0.24, 0.10, 0.09)),
        box((0.08, -0.02, 0), (0.20, 0.025, 0.85), rounding=1.4),
        box((-0.76, 0.24, 0), (0.14, 0.22, 0.025), rot=(0, 0, -20), rounding=1.3),
        box((-0.80, 0.02, 0), (0.10, 0.02, 0.32), rounding=1.4),
        cylinder((-0.02, -0.10, 0.42), (0.30, -0.10, 0.42), 0.07),
        cylinder((-0.02, -0.10, -0.42), (0.30, -0.10, -0.42), 0.07),
    ])
    return S


def _extent(p):
    """Local bounding box of a primitive (slabs clipped by the quadric)."""
    semi = 1.0 / np.sqrt(p.A)
    return np.maximum(p.lo, -semi), np.minimum(p.hi, semi)


def _normalise(prims, grid=25):
    """Centre the solid on its bounding-box centre and scale it into the ball
    of radius OBJ_RADIUS. The extent is measured on a dense grid of points
    inside each primitive, plus half a grid cell diagonal, so the bound is
    tight but conservative."""
    pts, margin = [], 0.0
    for p in prims:
        lo, hi = _extent(p)
        axes = [np.linspace(lo[i], hi[i], grid) for i in range(3)]
        x = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        x = x[(p.A * x ** 2).sum(1) <= 1.0 + 1e-9]
        pts.append(x @ p.Q.T + p.c)
        margin = max(margin, 0.5 * np.linalg.norm((hi - lo) / (grid - 1)))
    pts = np.concatenate(pts)
    centre = (pts.min(0) + pts.max(0)) / 2
    rad = np.linalg.norm(pts - centre, axis=1).max() + margin
    s = OBJ_RADIUS / rad
    out = []
    for p in prims:
        out.append(_Prim((p.c - centre) * s, p.Q, p.A / s ** 2,
                         np.where(np.abs(p.lo) >= _BIG, p.lo, p.lo * s),
                         np.where(np.abs(p.hi) >= _BIG, p.hi, p.hi * s)))
    return out


def _shape_table():
    """Padded float64 tables [7, P, ...] of all primitives of all solids."""
    shapes = [_normalise(s) for s in _shapes()]
    P = max(len(s) for s in shapes)
    n = len(shapes)
    Q = np.tile(np.eye(3), (n, P, 1, 1))
    c = np.zeros((n, P, 3))
    A = np.ones((n, P, 3))              # padding slots: masked out by `on`
    lo = np.full((n, P, 3), -1.0)
    hi = np.full((n, P, 3), 1.0)
    on = np.zeros((n, P), bool)
    for i, prims in enumerate(shapes):
        for k, p in enumerate(prims):
            Q[i, k], c[i, k], A[i, k], lo[i, k], hi[i, k] = p.Q, p.c, p.A, p.lo, p.hi
            on[i, k] = True
    return dict(Q=Q, c=c, A=A, lo=lo, hi=hi, on=on)


def _smoothstep(e0, e1, x):
    t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# ---------------------------------------------------------------- renderer ---

FACTOR_ORDER = ["object_shape", "object_ypos", "object_xpos", "object_alpharot",
                "object_betarot", "object_gammarot", "spotlight_pos",
                "object_color", "spotlight_color", "background_color"]


class Renderer:
    """Renders batches of latent vectors to uint8 RGB images [B, S, S, 3].

    image_size: output side length S in pixels.
    supersample: render at supersample * S and average k x k blocks
        (anti-aliasing; 1 = one ray per pixel).
    batch_size: images ray cast together; None picks one that keeps the
        working tensors cache-sized (about 64k window pixels per batch).
    threads: torch intra-op threads used while rendering (restored after).
        1 is fastest on a loaded CPU; use worker processes for parallelism.
    full_frame: ray cast every pixel instead of a window around the object
        (slower; the result is the same, which the tests check).
    device: torch device; only "cpu" has been tested.
    """

    def __init__(self, image_size=64, supersample=1, batch_size=None, device="cpu",
                 threads=1, full_frame=False):
        if int(image_size) < 8:
            raise ValueError("image_size must be at least 8")
        if int(supersample) < 1:
            raise ValueError("supersample must be at least 1")
        self.size = int(image_size)
        self.ss = int(supersample)
        self.threads = threads
        self.device = torch.device(device)
        S = self.R = self.size * self.ss              # internal resolution
        f32 = dict(dtype=torch.float32, device=self.device)
        tab = _shape_table()
        self.n_slots = tab["on"].shape[1]
        self.tab = {k: torch.as_tensor(v, dtype=torch.bool if k == "on" else torch.float32,
                                       device=self.device) for k, v in tab.items()}
        self._base_pose64 = _rot_deg(BASE_POSE_DEG)
        # unit ray direction through each pixel centre, [S*S, 3]
        tan = VIEW_HALF / CAM_DIST
        g = (torch.arange(S, **f32) + 0.5) / S * 2.0 - 1.0
        u = (g * tan)[None, :].expand(S, S)
        v = (-g * tan)[:, None].expand(S, S)
        d = torch.stack([u, v, -torch.ones_like(u)], -1).reshape(-1, 3)
        self.dirs = d / d.norm(dim=-1, keepdim=True)
        # window: a fixed-size square that holds the projection of the
        # object's bounding ball at every grid position
        self.win, self._offsets = self._window_layout()
        if full_frame:
            self.win, self._offsets = S, torch.zeros_like(self._offsets)
        # the wall's lighting is smooth: computed on a coarse grid, upsampled
        self.wall_res = min(S, max(8, S // 4))
        rw = self.wall_res
        gw = (torch.arange(rw, **f32) + 0.5) / rw * 2.0 - 1.0
        dw = torch.stack([(gw * tan)[None, :].expand(rw, rw), (-gw * tan)[:, None].expand(rw, rw),
                          -torch.ones(rw, rw, **f32)], -1).reshape(-1, 3)
        self.wall_dirs = dw / dw.norm(dim=-1, keepdim=True)
        self.batch_size = (int(batch_size) if batch_size is not None
                           else max(1, 65536 // (self.win * self.win)))

    # --- helpers -------------------------------------------------------------
    def object_center_px(self, xpos, ypos):
        """(row, col) output-pixel coordinates of the object centre for grid
        positions xpos, ypos (arrays or ints)."""
        p = np.stack(np.broadcast_arrays(GRID * (np.asarray(xpos, float) - 1.0),
                                         GRID * (1.0 - np.asarray(ypos, float)), 0.0), -1)
        col, row = self._project(p)
        return row / self.ss, col / self.ss

    def _project(self, p):
        """World points [..., 3] -> continuous pixel coordinates (col, row)."""
        tan = VIEW_HALF / CAM_DIST
        z = CAM_DIST - p[..., 2]
        col = (p[..., 0] / z / tan + 1.0) / 2.0 * self.R
        row = (1.0 - p[..., 1] / z / tan) / 2.0 * self.R
        return col, row

    def _window_layout(self):
        # dense points on the object's bounding sphere (slightly enlarged);
        # the bounding box of their projections, plus a pixel, holds the
        # sphere's projection
        k = np.arange(4000) + 0.5
        phi, cz = k * math.pi * (3.0 - math.sqrt(5.0)), 1.0 - 2.0 * k / len(k)
        rz = np.sqrt(1.0 - cz ** 2)
        ball = np.stack([rz * np.cos(phi), rz * np.sin(phi), cz], 1) * (OBJ_RADIUS * 1.01)
        spans, starts = [], {}
        for yp in range(3):
            for xp in range(3):
                c = np.array([GRID * (xp - 1), GRID * (1 - yp), 0.0])
                col, row = self._project(ball + c)
                c0, c1 = math.floor(col.min()) - 1, math.ceil(col.max()) + 1
                r0, r1 = math.floor(row.min()) - 1, math.ceil(row.max()) + 1
                spans.append(max(c1 - c0, r1 - r0))
                starts[(yp, xp)] = (r0, r1, c0, c1)
        w = min(max(spans), self.R)
        offsets = np.zeros((3, 3, 2), np.int64)
        for (yp, xp), (r0, r1, c0, c1) in starts.items():
            # centre the window on the projected box, keep it inside the image
            r = min(max((r0 + r1 - w) // 2, 0), self.R - w)
            c = min(max((c0 + c1 - w) // 2, 0), self.R - w)
            offsets[yp, xp] = (r, c)
        return w, torch.as_tensor(offsets, device=self.device)

    # --- main entry ------------------------------------------------------------
    def render(self, latents):
        """latents: mapping with the image-latent column names (see
        FACTOR_ORDER; a pandas DataFrame works) or an array [B, 10] in
        FACTOR_ORDER (object_zpos is always 0 and not read). Shape and
        positions are integers, everything else in [0, 1].
        Returns a uint8 numpy array [B, S, S, 3]."""
        if isinstance(latents, np.ndarray) or torch.is_tensor(latents):
            arr = np.asarray(latents, np.float64)
            if arr.ndim != 2 or arr.shape[1] != len(FACTOR_ORDER):
                raise ValueError(f"latent array must be [B, {len(FACTOR_ORDER)}], got {arr.shape}")
            cols = {k: np.array(arr[:, i]) for i, k in enumerate(FACTOR_ORDER)}
        else:
            cols = {k: np.array(latents[k], np.float64) for k in FACTOR_ORDER}
        for k in FACTOR_ORDER[:3]:
            cols[k] = np.rint(cols[k]).astype(np.int64)
        n = len(cols["object_shape"])
        out = np.empty((n, self.size, self.size, 3), np.uint8)
        old_threads = torch.get_num_threads()
        if self.threads and self.threads != old_threads:
            torch.set_num_threads(self.threads)
        try:
            for s in range(0, n, self.batch_size):
                part = {k: v[s:s + self.batch_size] for k, v in cols.items()}
                out[s:s + self.batch_size] = self._render_batch(part)
        finally:
            if torch.get_num_threads() != old_threads:
                torch.set_num_threads(old_threads)
        return out

    @torch.no_grad()
    def _render_batch(self, cols):
        """Images [B, size, size, 3] (uint8) of one batch of latents, in five steps."""
        pose = self._pose(cols)
        pix, d = self._rays(pose["ypos"], pose["xpos"])
        best_t, best_k, best_face = self._cast(pose, d)
        hit, t, normal = self._normals(pose, d, best_t, best_k, best_face)
        return self._shade(cols, pix, d, hit, t, normal)

    def _pose(self, cols):
        """Each image's object pose and, per primitive slot, the camera and the ray
        transform in that primitive's frame (all [B, P]); see the module docstring."""
        dev = self.device
        f32 = dict(dtype=torch.float32, device=dev)
        shape = torch.as_tensor(cols["object_shape"], dtype=torch.long, device=dev)
        ypos = torch.as_tensor(cols["object_ypos"], dtype=torch.long, device=dev)
        xpos = torch.as_tensor(cols["object_xpos"], dtype=torch.long, device=dev)
        if (shape.min() < 0 or shape.max() > 6 or xpos.min() < 0 or xpos.max() > 2
                or ypos.min() < 0 or ypos.max() > 2):
            raise ValueError("object_shape must be in 0..6 and positions in 0..2")
        B = len(shape)
        # world = Rot @ object + pos. Per-image constants are computed image by image in
        # float64 (scalar math), so they cannot depend on the batch an image is rendered in.
        rot = np.stack([_rot(*((u - 0.5) * math.pi for u in abc)) @ self._base_pose64
                        for abc in zip(cols["object_alpharot"], cols["object_betarot"],
                                       cols["object_gammarot"])])
        rot = torch.as_tensor(rot, **f32)
        Rot = [[rot[:, i, j] for j in range(3)] for i in range(3)]   # 3x3 of [B]
        pos = [GRID * (xpos.to(torch.float32) - 1.0), GRID * (1.0 - ypos.to(torch.float32))]
        cam_rel = [-pos[0], -pos[1], torch.full((B,), CAM_DIST, **f32)]

        T = self.tab
        Q, c = T["Q"][shape], T["c"][shape]                  # [B, P, 3, 3], [B, P, 3]
        A, lo, hi, on = T["A"][shape], T["lo"][shape], T["hi"][shape], T["on"][shape]
        Rb = [[x[:, None] for x in row] for row in Rot]
        # M = Q^T Rot^T: world -> primitive frame; W = Rot Q: primitive -> world
        M = [[Q[..., 0, i] * Rb[j][0] + Q[..., 1, i] * Rb[j][1] + Q[..., 2, i] * Rb[j][2]
              for j in range(3)] for i in range(3)]
        W = [[Rb[i][0] * Q[..., 0, j] + Rb[i][1] * Q[..., 1, j] + Rb[i][2] * Q[..., 2, j]
              for j in range(3)] for i in range(3)]
        cr = [cam_rel[j][:, None] for j in range(3)]
        o = [M[i][0] * cr[0] + M[i][1] * cr[1] + M[i][2] * cr[2]
             - (Q[..., 0, i] * c[..., 0] + Q[..., 1, i] * c[..., 1] + Q[..., 2, i] * c[..., 2])
             for i in range(3)]                              # camera, primitive frame
        Ai = [A[..., i] for i in range(3)]
        Ao = [Ai[i] * o[i] for i in range(3)]
        return {"B": B, "ypos": ypos, "xpos": xpos, "on": on, "M": M, "W": W, "o": o, "Ai": Ai, "Ao": Ao,
                "cq": Ao[0] * o[0] + Ao[1] * o[1] + Ao[2] * o[2] - 1.0,
                "lo_o": [lo[..., i] - o[i] for i in range(3)], "hi_o": [hi[..., i] - o[i] for i in range(3)]}

    def _rays(self, ypos, xpos):
        """The pixels of each image's window around its object ([B, N]) and their ray directions."""
        R, w = self.R, self.win
        off = self._offsets[ypos, xpos]                     # [B, 2]
        rr = torch.arange(w, device=self.device)
        pix = ((off[:, 0, None, None] + rr[None, :, None]) * R
               + off[:, 1, None, None] + rr[None, None, :]).reshape(len(ypos), -1)
        dd = self.dirs[pix]                                  # [B, N, 3]
        return pix, [dd[..., 0].contiguous(), dd[..., 1].contiguous(), dd[..., 2].contiguous()]

    def _cast(self, pose, d):
        """Ray casting: the nearest entry over all primitive slots; its distance, slot and
        face (3 = the quadric, 0-2 = a slab axis)."""
        M, Ai, Ao, on = pose["M"], pose["Ai"], pose["Ao"], pose["on"]
        best_t = torch.full_like(d[0], float("inf"))
        best_k = torch.zeros(d[0].shape, dtype=torch.uint8, device=self.device)
        best_face = torch.zeros(d[0].shape, dtype=torch.uint8, device=self.device)
        for k in range(self.n_slots):
            onk = on[:, k]
            if not bool(onk.any()):
                continue
            col = lambda x: x[:, k, None]                   # [B, P] -> [B, 1]
            dl = [col(M[i][0]) * d[0] + col(M[i][1]) * d[1] + col(M[i][2]) * d[2]
                  for i in range(3)]
            # quadric  sum A_i x_i^2 <= 1  along x = o + t d
            Adl = [col(Ai[i]) * dl[i] for i in range(3)]
            a = Adl[0] * dl[0] + Adl[1] * dl[1] + Adl[2] * dl[2]
            b = 2.0 * (col(Ao[0]) * dl[0] + col(Ao[1]) * dl[1] + col(Ao[2]) * dl[2])
            cq = col(pose["cq"])
            disc = b * b - 4.0 * a * cq
            sq = disc.clamp(min=0.0).sqrt()
            q = -0.5 * (b + torch.copysign(sq, b))       # stable roots q/a, c/q
            r1, r2 = q / a, cq / q
            tq0, tq1 = torch.minimum(r1, r2), torch.maximum(r1, r2)
            # slabs  lo <= x <= hi  (1/0 = inf is fine here)
            near, far = [], []
            for i in range(3):
                inv = 1.0 / dl[i]
                t_lo, t_hi = col(pose["lo_o"][i]) * inv, col(pose["hi_o"][i]) * inv
                near.append(torch.minimum(t_lo, t_hi))
                far.append(torch.maximum(t_lo, t_hi))
            ts0 = torch.maximum(torch.maximum(near[0], near[1]), near[2])
            ts1 = torch.minimum(torch.minimum(far[0], far[1]), far[2])
            t0 = torch.maximum(tq0, ts0)
            # (the camera is outside every solid, so t0 > 0 whenever it hits)
            hit = (disc >= 0) & (t0 <= torch.minimum(tq1, ts1)) & (t0 < best_t) & onk[:, None]
            face = torch.where(tq0 >= ts0, 3, torch.where(near[0] >= ts0, 0,
                                                          torch.where(near[1] >= ts0, 1, 2)))
            best_t = torch.where(hit, t0, best_t)
            best_k = torch.where(hit, k, best_k)
            best_face = torch.where(hit, face.to(torch.uint8), best_face)
        return best_t, best_k, best_face

    def _normals(self, pose, d, best_t, best_k, best_face):
        """Which rays hit, their distance (0 where none) and the unit world normal there."""
        M, W, Ai, o = pose["M"], pose["W"], pose["Ai"], pose["o"]
        hit = torch.isfinite(best_t)
        tt = torch.where(hit, best_t, torch.zeros_like(best_t))
        kk = best_k.long()
        g = lambda x: torch.gather(x, 1, kk)                # [B, P] -> [B, N]
        Mg = [[g(M[i][j]) for j in range(3)] for i in range(3)]
        dl = [Mg[i][0] * d[0] + Mg[i][1] * d[1] + Mg[i][2] * d[2] for i in range(3)]
        nl = []
        for i in range(3):
            quad = g(Ai[i]) * (g(o[i]) + tt * dl[i])
            slab = torch.where(best_face == i, -torch.sign(dl[i]), 0.0)
            nl.append(torch.where(best_face == 3, quad, slab))
        n = [g(W[i][0]) * nl[0] + g(W[i][1]) * nl[1] + g(W[i][2]) * nl[2] for i in range(3)]
        norm = torch.sqrt(n[0] ** 2 + n[1] ** 2 + n[2] ** 2).clamp(min=1e-12)
        return hit, tt, [x / norm for x in n]

    def _shade(self, cols, pix, d, hitm, tt, n):
        """Spotlit background wall and object (diffuse, specular, ambient), gamma, uint8."""
        f32 = dict(dtype=torch.float32, device=self.device)
        B, R = len(pix), self.R
        one = lambda x: x[:, None]                          # [B] -> [B, 1]
        t32 = lambda a: torch.as_tensor(np.asarray(a), **f32)
        obj_rgb = t32([hsv_to_rgb(h) for h in cols["object_color"]])        # [B, 3]
        bg_rgb = t32([hsv_to_rgb(h) for h in cols["background_color"]])
        light_rgb = t32([0.35 + 0.65 * hsv_to_rgb(h) for h in cols["spotlight_color"]])
        lp64 = np.array([(-LIGHT_R * math.cos(math.pi * u), LIGHT_R * math.sin(math.pi * u),
                          LIGHT_Z) for u in cols["spotlight_pos"]])
        ax64 = np.stack([GRID * (cols["object_xpos"] - 1.0), GRID * (1.0 - cols["object_ypos"]),
                         np.zeros(B)], 1) - lp64             # aimed at the object
        ax64 = np.array([v / math.sqrt(v[0] ** 2 + v[1] ** 2 + v[2] ** 2) for v in ax64])
        Lp = [t32(lp64[:, i]) for i in range(3)]
        ax = [t32(ax64[:, i]) for i in range(3)]
        cos_in = math.cos(math.radians(SPOT_INNER_DEG))
        cos_out = math.cos(math.radians(SPOT_OUTER_DEG))

        def spot(P):
            """Unit directions to the light and cone factor at world points P."""
            lv = [one(Lp[i]) - P[i] for i in range(3)]
            ln = torch.sqrt(lv[0] ** 2 + lv[1] ** 2 + lv[2] ** 2)
            lv = [x / ln for x in lv]
            cosang = -(one(ax[0]) * lv[0] + one(ax[1]) * lv[1] + one(ax[2]) * lv[2])
            return lv, _smoothstep(cos_out, cos_in, cosang)

        # background wall: smooth, so lit on a coarse grid and upsampled
        Dw = self.wall_dirs                                   # [r*r, 3]
        tw = (CAM_DIST - WALL_Z) / (-Dw[:, 2])
        Pw = [(Dw[:, 0] * tw)[None, :], (Dw[:, 1] * tw)[None, :],
              torch.full((1, Dw.shape[0]), WALL_Z, **f32)]
        lw, sw = spot(Pw)
        rw = self.wall_res
        lamb_w = (lw[2].clamp(min=0.0) * sw).reshape(B, 1, rw, rw)   # wall normal +z
        if rw != R:
            lamb_w = torch.nn.functional.interpolate(lamb_w, size=(R, R), mode="bilinear",
                                                     align_corners=False)
        lamb_w = lamb_w.reshape(B, 1, R * R)
        img = bg_rgb[:, :, None] * (0.22 + 0.85 * light_rgb[:, :, None] * lamb_w)  # [B, 3, RR]

        # object shading (window pixels that hit)
        P = [tt * d[0], tt * d[1], CAM_DIST + tt * d[2]]    # world hit points
        lv, so = spot(P)
        ndl = (n[0] * lv[0] + n[1] * lv[1] + n[2] * lv[2]).clamp(min=0.0)
        ndv = -(n[0] * d[0] + n[1] * d[1] + n[2] * d[2]).clamp(max=0.0)
        hv = [lv[i] - d[i] for i in range(3)]
        hn = torch.sqrt(hv[0] ** 2 + hv[1] ** 2 + hv[2] ** 2).clamp(min=1e-12)
        ndh = ((n[0] * hv[0] + n[1] * hv[1] + n[2] * hv[2]) / hn).clamp(min=0.0)
        spec = ndh * ndh                                     # ndh^32 by squaring
        for _ in range(4):
            spec = spec * spec
        spec = spec * so * 0.45
        amb = 0.10 + 0.14 * ndv
        dif = 0.90 * so * ndl
        obj = torch.stack([obj_rgb[:, i, None] * (amb + dif * light_rgb[:, i, None])
                           + spec * light_rgb[:, i, None] for i in range(3)], 1)  # [B, 3, N]
        idx = pix[:, None, :].expand(-1, 3, -1)
        cur = torch.gather(img, 2, idx)
        img.scatter_(2, idx, torch.where(hitm[:, None, :], obj, cur))

        img = img.clamp(0.0, 1.0).sqrt()                     # display gamma 2
        if self.ss > 1:
            img = torch.nn.functional.avg_pool2d(img.reshape(B, 3, R, R), self.ss)
        img = (img * 255.0 + 0.5).to(torch.uint8).reshape(B, 3, self.size, self.size)
        return img.permute(0, 2, 3, 1).cpu().numpy()


_CACHE = {}


def render(latents, image_size=64, supersample=1):
    """Convenience wrapper with a per-(size, supersample) cached Renderer."""
    key = (int(image_size), int(supersample))
    if key not in _CACHE:
        _CACHE[key] = Renderer(image_size, supersample)
    return _CACHE[key].render(latents)
