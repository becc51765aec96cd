"""The procedural stand-in world model: a ray-cast procedural scene that forgets (DESIGN.md, Generators).

:class:`ProceduralWorld` is the scene: static geometry (a box ``room`` with furniture and pillars,
or an open-sky ``courtyard`` with walls and pillars) seeded by ``world_seed``, textured by a seeded
procedural shader (bricks, tiles, wood planks, plaster panels, concrete, all modulated by
band-limited noise) evaluated at the 3D hit point so every view of a surface agrees, plus dynamic
actors (balls and spinning boxes) moving along smooth periodic Lissajous paths. Everything is an
analytic ray intersection (room slabs, oriented boxes, vertical capped cylinders, spheres),
vectorised over pixels with torch; there is no per-pixel Python.

:class:`ProceduralGenerator` turns the world into a :class:`~spatia_py.types.VideoGenerator`
that behaves like a video model with a short memory:

- every call draws a fresh *appearance* (palettes, hues, pattern phases) from
  ``(request.seed, request.round_index)``, so whatever the conditioning does not cover is
  re-sampled: without memory a revisited wall changes;
- it follows the commanded cameras with a small, smooth, seeded control error;
- where the conditioning is valid it follows it: each pixel's static hit point is projected into
  the *commanded* camera the conditioning was rendered for, and its rgb is taken if the
  conditioning depth agrees (the DESIGN's "lift to 3D and re-project", done backwards through the
  known geometry), with isolated holes filled from neighbours;
- actors are composited on top with a depth test and never come from the conditioning;
- with ``forget_layout`` movable furniture also takes one of a few seeded placements per call,
  except where the conditioning depth shows it (see ``ProceduralGenerator._call_layout``);
- it returns ground truth (actual poses, depth, dynamic masks, actor positions) for metrics.

Textures keep little energy below ~5 cm (bricks ~40-60 x 14-24 cm, soft 3-5 cm grooves, noise
of 6-90 cm): a 1 cm voxel memory splatted back into 512x320 frames cannot hold finer detail,
while SIFT still finds ~700-1000 features per 512x320 frame.

Scene dimensions (world z up, metres):

- ``room``: interior of the box ``[-3, 3] x [-2.5, 2.5] x [0, 3]``; furniture and pillars stay
  out of the cylinder of radius :attr:`ProceduralWorld.free_radius` (1.8) around the z axis
  between heights 1.0 and 1.8 (low furniture, at most 0.9 tall, keeps 1.5 m from the axis).
- ``courtyard``: paved ground, walls enclosing ``[-5, 5] x [-4, 4]`` (2.3-2.8 m tall, one
  doorway), pillars taller than the walls, open sky (sky pixels have depth 0 and no geometry).
- Actors move within 1.2 m of the z axis, between 0.1 and 2.0 m high.
- Cameras must stay inside the room (checked); the courtyard is open.

A good default camera path orbits ``interior_center = (0, 0, 1.2)`` at radius 1.5 and height
1.4 (``suggested_height``), looking at the centre.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from spatia_py.config import ProceduralConfig
from spatia_py.geometry import Camera, so3_exp
from spatia_py.parallel import torch_threads
from spatia_py.types import Clip, ConditioningMaps, GenerationRequest, GroundTruth

__all__ = ["ProceduralWorld", "ProceduralGenerator"]

log = logging.getLogger(__name__)

# Materials of the unified cell shader (see ``_shade_static``).
BRICK, TILES, WOOD, PLASTER, CONCRETE = range(5)

# Columns of the per-surface shader table: the layout's geometry, then the call's appearance.
_G_CX, _G_CY, _G_CZ, _G_COS, _G_SIN, _G_HX, _G_HY, _G_HZ, _G_CYL, _G_SIDE = range(10)
_N_GEOM = 10
(
    _CW,
    _CH,
    _SHIFT,
    _GROOVE,
    _VAR,
    _GRAIN_AMP,
    _GRAIN_FREQ,
    _NOISE_AMP,
    _ROT_COS,
    _ROT_SIN,
    _OFF_U,
    _OFF_V,
    _NOFF_U,
    _NOFF_V,
    _SALT,
) = range(_N_GEOM, _N_GEOM + 15)
_COL_A, _COL_BA, _COL_G = _N_GEOM + 15, _N_GEOM + 18, _N_GEOM + 21  # rgb rows: a, b - a, groove
_N_APPEARANCE = 24

_FAR = 1e4
"""Depth of "no hit" inside the ray caster: finite, so hits and misses blend arithmetically
(torch's masked ``where`` is far slower than arithmetic on CPU)."""

_NOISE_RES = 1024
"""Texels per side of the periodic noise texture."""
_NOISE_TEXEL_M = 0.01
"""Texel size of the noise texture in metres (period 10.24 m)."""

_NOISE_BANDS = (((0.3, 0.9), 0.6), ((0.12, 0.3), 0.35), ((0.06, 0.12), 0.15))
"""``((shortest, longest) wavelength in metres, weight)`` of the noise octaves. Little energy below
5 cm: a 1 cm voxel memory splatted back into 512x320 frames cannot hold finer detail."""
_PATTERN_SCALE = 2.0
"""Scale of every cell pattern (bricks, tiles, planks, panels) and groove width."""
_GROOVE_VALUE = (0.3, 0.91)
"""Brightness of dark and light grooves."""
_AA_MIN_M = 0.015
"""Least half-width of the groove edges in metres (soft edges survive the memory round trip)."""

_EPS_T = 1e-4
_DEPTH_REL_TOL = 0.03
_DEPTH_ABS_TOL_M = 0.02
_FOLLOW_ABS_TOL_M = 0.03

_LIGHT_KEY = np.array([0.35, 0.55, 0.76]) / np.linalg.norm([0.35, 0.55, 0.76])
_LIGHT_FILL = np.array([-0.6, -0.3, 0.2]) / np.linalg.norm([-0.6, -0.3, 0.2])

_ROOM_LO = (-3.0, -2.5, 0.0)
_ROOM_HI = (3.0, 2.5, 3.0)


# --------------------------------------------------------------------------------------------
# scene description
# --------------------------------------------------------------------------------------------


@dataclass
class _Layout:
    """Static primitives of the world. Surface ids (``sid``) index the per-surface tables."""

    room: tuple[np.ndarray, np.ndarray] | None
    """``(lo (3,), hi (3,))`` of the room interior (surfaces 0..5), or None."""
    box_center: np.ndarray
    """``(B, 3)``."""
    box_half: np.ndarray
    """``(B, 3)`` half extents in the box frame."""
    box_yaw: np.ndarray
    """``(B,)`` rotation about world z (radians)."""
    box_sid: np.ndarray
    """``(B,)`` surface id of each box."""
    box_movable: np.ndarray
    """``(B,)`` furniture that ``forget_layout`` may move."""
    cyl_center: np.ndarray
    """``(C, 2)`` xy of vertical cylinders."""
    cyl_radius: np.ndarray
    """``(C,)``."""
    cyl_z: np.ndarray
    """``(C, 2)`` bottom and top heights (the top is capped)."""
    cyl_sid: np.ndarray
    """``(C,)``."""
    material: np.ndarray
    """``(S,)`` material of each surface."""

    @property
    def n_surfaces(self) -> int:
        return len(self.material)

    def surface_geometry(self) -> torch.Tensor:
        """Per-surface frames for the shader, ``(S, _N_GEOM)``: centre xyz, cos and sin of the yaw,
        half extents (cylinders: radius, radius, half height), cylinder flag, and side (-1 for the
        room's faces, seen from inside)."""
        S = self.n_surfaces
        g = np.zeros((S, _N_GEOM))
        g[:, _G_COS] = 1.0
        g[:, _G_SIDE] = 1.0
        g[:, _G_HX : _G_HZ + 1] = 1.0
        if self.room is not None:
            g[:6, _G_CX : _G_CZ + 1] = (self.room[0] + self.room[1]) / 2
            g[:6, _G_HX : _G_HZ + 1] = (self.room[1] - self.room[0]) / 2
            g[:6, _G_SIDE] = -1.0
        b = self.box_sid
        g[b, _G_CX : _G_CZ + 1] = self.box_center
        g[b, _G_COS], g[b, _G_SIN] = np.cos(self.box_yaw), np.sin(self.box_yaw)
        g[b, _G_HX : _G_HZ + 1] = self.box_half
        c = self.cyl_sid
        if len(c):
            g[c, _G_CX : _G_CY + 1] = self.cyl_center
            g[c, _G_CZ] = self.cyl_z.mean(axis=1)
            g[c, _G_HX] = g[c, _G_HY] = self.cyl_radius
            g[c, _G_HZ] = (self.cyl_z[:, 1] - self.cyl_z[:, 0]) / 2
            g[c, _G_CYL] = 1.0
        return torch.as_tensor(g, dtype=torch.float32)


def _lambert_planar(nx: torch.Tensor, ny: torch.Tensor, nz: torch.Tensor) -> torch.Tensor:
    """Fixed two-light Lambertian shading of world normals given as planes ``(M,)`` each."""
    key = nx * _LIGHT_KEY[0] + ny * _LIGHT_KEY[1] + nz * _LIGHT_KEY[2]
    fill = nx * _LIGHT_FILL[0] + ny * _LIGHT_FILL[1] + nz * _LIGHT_FILL[2]
    return key.clamp_(min=0.0).mul_(0.35).add_(fill.clamp_(min=0.0).mul_(0.2)).add_(0.55)


@dataclass
class _Actor:
    kind: str
    """``sphere`` or ``box``."""
    size: np.ndarray
    """Sphere: ``(1,)`` radius; box: ``(3,)`` half extents."""
    amp: np.ndarray
    """``(3,)`` Lissajous amplitudes."""
    omega: np.ndarray
    """``(3,)`` angular frequencies (rad/s)."""
    phase: np.ndarray
    """``(3,)``."""
    base: np.ndarray
    """``(3,)`` path centre."""
    spin: float
    """Yaw rate (rad/s); the texture turns with it."""
    spin_phase: float
    colors: np.ndarray
    """``(2, 3)`` bright checker colours in [0, 1]."""

    @property
    def radius(self) -> float:
        return float(self.size[0]) if self.kind == "sphere" else float(np.linalg.norm(self.size))

    def position(self, time_s: float) -> np.ndarray:
        return self.base + self.amp * np.sin(self.omega * time_s + self.phase)

    def yaw(self, time_s: float) -> float:
        return self.spin * time_s + self.spin_phase


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    h = (h % 1.0) * 6.0
    i = int(h) % 6
    f = h - int(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _footprint(center: np.ndarray, half: np.ndarray, yaw: float) -> np.ndarray:
    """Corners ``(4, 2)`` of a yawed box's footprint."""
    c, s = math.cos(yaw), math.sin(yaw)
    loc = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half[:2]
    return center[:2] + loc @ np.array([[c, s], [-s, c]])


def _rect_distance_to_origin(center: np.ndarray, half: np.ndarray, yaw: float) -> float:
    """Distance in xy from the z axis to a yawed box's footprint."""
    c, s = math.cos(yaw), math.sin(yaw)
    o = np.array([-c * center[0] - s * center[1], s * center[0] - c * center[1]])  # origin in the box frame
    return float(np.linalg.norm(np.maximum(np.abs(o) - half[:2], 0.0)))


def _aabb_overlap(a: np.ndarray, b: np.ndarray, margin: float) -> bool:
    """Do the xy bounding boxes of two footprints ``(4, 2)`` overlap (grown by ``margin``)?"""
    return bool(np.all(a.min(0) - margin < b.max(0)) and np.all(b.min(0) - margin < a.max(0)))


# --------------------------------------------------------------------------------------------
# analytic ray intersections (torch). Rays are o + t d with d the world direction of the camera
# ray whose camera-frame z is 1, so t is the z-depth of the hit in that camera.
# --------------------------------------------------------------------------------------------


def _step(x: torch.Tensor) -> torch.Tensor:
    """1.0 where ``x > 0``, else 0.0 (``x`` finite)."""
    return torch.sign(x).clamp_(min=0.0)


def _finite(t: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(t, nan=_FAR, posinf=_FAR, neginf=-_FAR)


def _cast_room_inside(o: tuple[float, float, float], d: torch.Tensor, lo, hi):
    """Exit of rays from inside an axis-aligned box (the camera must be inside).

    Args:
        o: ray origin (3 floats); d: ``(3, ...)`` directions (planar); lo, hi: 3 floats each.

    Returns:
        ``t (...)`` and ``face (...)`` (float) in 0..5 = (-x, +x, -y, +y, -z, +z).
    """
    t = face = None
    for k in range(3):
        pos = _step(d[k])
        # Rays parallel to a slab never leave through it: -inf from (lo - o) / 0 becomes +FAR.
        tk = _finite(((lo[k] - o[k]) + (hi[k] - lo[k]) * pos) / d[k]).abs_()
        fk = pos + 2 * k
        if t is None:
            t, face = tk, fk
        else:
            closer = _step(t - tk)
            t = torch.minimum(t, tk)
            face = face.add_((fk - face).mul_(closer))
    return t, face


def _cast_box(o, d: torch.Tensor, center, half, yaw: float) -> torch.Tensor:
    """Entry depth ``t (...)`` of rays into a box yawed about z (slab test in the box frame);
    ``_FAR`` on a miss or from inside.

    Args:
        o: 3 floats; d: ``(3, ...)`` planar directions; center, half: 3 floats; yaw: radians.
    """
    rx, ry, rz = o[0] - center[0], o[1] - center[1], o[2] - center[2]
    if yaw == 0.0:
        ol, dl = (rx, ry, rz), (d[0], d[1], d[2])
    else:
        c, s = math.cos(yaw), math.sin(yaw)
        ol = (c * rx + s * ry, c * ry - s * rx, rz)
        dl = (c * d[0] + s * d[1], c * d[1] - s * d[0], d[2])
    t_near = t_far = None
    for k in range(3):
        inv = torch.reciprocal(dl[k])
        a = inv * (-half[k] - ol[k])
        b = inv * (half[k] - ol[k])
        near, far = torch.minimum(a, b), torch.maximum(a, b)
        t_near = near if t_near is None else torch.maximum(t_near, near)
        t_far = far if t_far is None else torch.minimum(t_far, far)
    t_near, t_far = _finite(t_near), _finite(t_far)
    hit = _step(t_far - t_near) * _step(t_near - _EPS_T)
    return (t_near - _FAR).mul_(hit).add_(_FAR)


def _cast_cylinder(o, d: torch.Tensor, cxy, r: float, z0: float, z1: float) -> torch.Tensor:
    """Entry depth ``t (...)`` into a vertical cylinder with a top cap (``_FAR`` on a miss)."""
    ox, oy, oz = o[0] - float(cxy[0]), o[1] - float(cxy[1]), o[2]
    cc = ox * ox + oy * oy - r * r
    if cc <= 0:  # inside the cylinder: nothing to see of it
        return torch.full(d.shape[1:], _FAR)
    dx, dy, dz = d[0], d[1], d[2]
    a = dx * dx + dy * dy
    b = 2.0 * (ox * dx + oy * dy)
    disc = b * b - 4.0 * a * cc
    t = _finite((-b - torch.sqrt(disc.clamp(min=0.0))) / (2.0 * a))
    z = oz + t * dz
    hit = _step(disc) * _step(t - _EPS_T) * _step(z - z0) * _step(z1 - z)
    t = (t - _FAR).mul_(hit).add_(_FAR)
    if oz > z1:
        t_cap = _finite((z1 - oz) / dz)
        px, py = ox + t_cap * dx, oy + t_cap * dy
        cap = _step(t_cap - _EPS_T) * _step(r * r - px * px - py * py)
        t = torch.minimum(t, (t_cap - _FAR).mul_(cap).add_(_FAR))
    return t


def _cast_sphere(o, d: torch.Tensor, center, r: float) -> torch.Tensor:
    """Sphere entry ``t (...)`` (``_FAR`` on a miss) for planar directions ``d (3, ...)``."""
    rx, ry, rz = o[0] - center[0], o[1] - center[1], o[2] - center[2]
    cc = rx * rx + ry * ry + rz * rz - r * r
    if cc <= 0:
        return torch.full(d.shape[1:], _FAR)
    a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    b = 2.0 * (rx * d[0] + ry * d[1] + rz * d[2])
    disc = b * b - 4.0 * a * cc
    t = _finite((-b - torch.sqrt(disc.clamp(min=0.0))) / (2.0 * a))
    hit = _step(disc) * _step(t - _EPS_T)
    return (t - _FAR).mul_(hit).add_(_FAR)


def _hash(row: torch.Tensor, col: torch.Tensor, salt: torch.Tensor) -> torch.Tensor:
    """Pseudo-random value in [0, 1) per integer cell ``(row, col)`` (float tensors) and salt."""
    return torch.frac(torch.sin(row * 12.9898 + col * 78.233 + salt).mul_(43758.5453)).abs_()


def _smoothstep(e0: torch.Tensor, e1: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    s = ((x - e0) / (e1 - e0).clamp_min(1e-6)).clamp(0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


def _band_noise(rng: np.random.Generator, res: int, texel_m: float, bands_m) -> np.ndarray:
    """Periodic band-limited noise ``(len(bands), res, res)`` float32 with unit std per channel.

    ``bands_m`` are ``(shortest, longest)`` feature wavelengths in metres.
    """
    f = np.fft.fftfreq(res, d=texel_m)  # cycles per metre
    fr = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    out = []
    for lo_m, hi_m in bands_m:
        white = rng.standard_normal((res, res))
        mask = ((fr >= 1.0 / hi_m) & (fr <= 1.0 / lo_m)).astype(np.float64)
        n = np.fft.ifft2(np.fft.fft2(white) * mask).real
        out.append((n - n.mean()) / max(n.std(), 1e-12))
    return np.stack(out).astype(np.float32)


# --------------------------------------------------------------------------------------------
# the world
# --------------------------------------------------------------------------------------------


class ProceduralWorld:
    """The procedural stand-in world model's scene: static geometry, textures and actors.

    Geometry and actor paths are fixed by ``cfg.world_seed``; the appearance of the static
    surfaces is a function of an ``appearance_seed`` chosen per call (that is how the generator
    forgets). World z is up, units are metres; see the module docstring for dimensions.
    """

    free_radius: float = 1.8
    """Radius around the z axis kept free of furniture between heights 1.0 and 1.8 m."""
    suggested_orbit_radius: float = 1.5
    """Orbit radius of the default camera path around :attr:`interior_center`."""
    suggested_height: float = 1.4
    """Camera height of the default path."""

    def __init__(self, cfg: ProceduralConfig) -> None:
        if cfg.scene not in ("room", "courtyard"):
            raise ValueError(f"ProceduralConfig.scene must be 'room' or 'courtyard', got {cfg.scene!r}")
        if cfg.n_actors < 0:
            raise ValueError(f"ProceduralConfig.n_actors must be >= 0, got {cfg.n_actors}")
        self.cfg = cfg
        self.scene = cfg.scene
        rng = np.random.default_rng([int(cfg.world_seed) & 0xFFFFFFFF, 0x5EED])
        self.layout = self._build_room(rng) if cfg.scene == "room" else self._build_courtyard(rng)
        self.actors = self._build_actors(rng, cfg.n_actors)
        # A separate stream, so the layout above does not depend on whether placements are used.
        self.placements = self._build_placements(np.random.default_rng([int(cfg.world_seed) & 0xFFFFFFFF, 0x1A7]))
        bands = _band_noise(rng, _NOISE_RES, _NOISE_TEXEL_M, [b for b, _ in _NOISE_BANDS])
        noise = np.tensordot([w for _, w in _NOISE_BANDS], bands, axes=1)[None]
        # One texel of circular padding so bilinear lookups wrap without a seam.
        noise = np.pad(noise, ((0, 0), (1, 1), (1, 1)), mode="wrap").astype(np.float32)
        self._noise_tex = torch.from_numpy(noise)[None]  # (1, 1, R+2, R+2)
        self._sky_colors = (
            _hsv_to_rgb(rng.uniform(0.55, 0.62), 0.35, 0.95),
            _hsv_to_rgb(rng.uniform(0.58, 0.64), 0.65, 0.75),
        )
        self._actor_id0 = self.layout.n_surfaces
        self._appearance_cache: dict[int, torch.Tensor] = {}
        self._ray_cache: dict[tuple, torch.Tensor] = {}
        log.debug(
            "procedural stand-in world model: scene=%s world_seed=%d, %d surfaces, %d actors",
            cfg.scene,
            cfg.world_seed,
            self.layout.n_surfaces,
            len(self.actors),
        )

    # ---- layout ------------------------------------------------------------------------------

    def _build_room(self, rng: np.random.Generator) -> _Layout:
        lo, hi = np.array(_ROOM_LO), np.array(_ROOM_HI)
        material = [BRICK, BRICK, BRICK, BRICK, TILES, PLASTER]  # walls -x +x -y +y, floor, ceiling
        boxes: list[tuple] = []  # (center, half, yaw, movable, material)
        cyls: list[tuple] = []  # (cxy, r, z0, z1)
        feet: list[np.ndarray] = []

        # Pillars first: two, near opposite corners, well outside the free cylinder.
        corner_signs = [(1, 1), (-1, -1)] if rng.random() < 0.5 else [(1, -1), (-1, 1)]
        for sx, sy in corner_signs:
            cxy = np.array([sx * rng.uniform(2.0, 2.4), sy * rng.uniform(1.35, 1.75)])
            if rng.random() < 0.5:
                r = rng.uniform(0.15, 0.22)
                cyls.append((cxy, r, 0.0, hi[2]))
                feet.append(np.array([cxy - r, cxy + r, [cxy[0] - r, cxy[1] + r], [cxy[0] + r, cxy[1] - r]]))
            else:
                h = np.array([rng.uniform(0.15, 0.22)] * 2 + [hi[2] / 2])
                c = np.array([cxy[0], cxy[1], hi[2] / 2])
                boxes.append((c, h, 0.0, False, CONCRETE))
                feet.append(_footprint(c, h, 0.0))

        def try_place(center, half, yaw, movable, min_r) -> bool:
            fp = _footprint(center, half, yaw)
            if np.any(fp.min(0) < lo[:2] + 0.02) or np.any(fp.max(0) > hi[:2] - 0.02):
                return False
            if _rect_distance_to_origin(center, half, yaw) < min_r:
                return False
            if any(_aabb_overlap(fp, other, 0.1) for other in feet):
                return False
            boxes.append((center, half, yaw, movable, WOOD))
            feet.append(fp)
            return True

        # Tall cabinets and shelves against the walls.
        n_tall = int(rng.integers(3, 5))
        walls = rng.permutation(4)
        placed = attempts = 0
        while placed < n_tall and attempts < 200:
            attempts += 1
            wall = int(walls[placed % 4])
            width, depth, height = rng.uniform(0.8, 1.6), rng.uniform(0.35, 0.6), rng.uniform(1.5, 2.2)
            if wall < 2:  # against x = -3 or x = 3, running along y
                x = (lo[0] + depth / 2 + 0.03) if wall == 0 else (hi[0] - depth / 2 - 0.03)
                y = rng.uniform(lo[1] + width / 2 + 0.05, hi[1] - width / 2 - 0.05)
                center, half = np.array([x, y, height / 2]), np.array([depth / 2, width / 2, height / 2])
            else:  # against y = -2.5 or y = 2.5, running along x
                y = (lo[1] + depth / 2 + 0.03) if wall == 2 else (hi[1] - depth / 2 - 0.03)
                x = rng.uniform(lo[0] + width / 2 + 0.05, hi[0] - width / 2 - 0.05)
                center, half = np.array([x, y, height / 2]), np.array([width / 2, depth / 2, height / 2])
            placed += try_place(center, half, 0.0, True, self.free_radius + 0.05)

        # Low tables, benches and crates: at most 0.9 m tall, 1.5 m or more from the axis.
        n_low = int(rng.integers(3, 5))
        placed = attempts = 0
        while placed < n_low and attempts < 300:
            attempts += 1
            half = np.array([rng.uniform(0.25, 0.6), rng.uniform(0.2, 0.4), rng.uniform(0.2, 0.45)])
            ang, rad = rng.uniform(0, 2 * np.pi), rng.uniform(1.9, 3.0)
            center = np.array([rad * math.cos(ang), rad * math.sin(ang), half[2]])
            placed += try_place(center, half, rng.uniform(-0.5, 0.5), True, 1.5)

        return self._finish_layout((lo, hi), material, boxes, cyls)

    def _build_courtyard(self, rng: np.random.Generator) -> _Layout:
        ground = (np.array([0.0, 0.0, -0.5]), np.array([15.0, 15.0, 0.5]), 0.0, False, TILES)
        boxes: list[tuple] = []
        cyls: list[tuple] = []
        hx, hy, th = 5.0, 4.0, 0.15
        wall_h = rng.uniform(2.3, 2.8)
        door_wall, door_w = int(rng.integers(4)), 1.5
        door_at = rng.uniform(-1.5, 1.5)
        # Walls (-x, +x, -y, +y); the doorway wall is split in two.
        for k in range(4):
            along = hy + th if k < 2 else hx + th
            fixed = (-hx - th if k == 0 else hx + th) if k < 2 else (-hy - th if k == 2 else hy + th)
            spans = [(-along, along)]
            if k == door_wall:
                spans = [(-along, door_at - door_w / 2), (door_at + door_w / 2, along)]
            for a0, a1 in spans:
                mid, half_len = (a0 + a1) / 2, (a1 - a0) / 2
                if k < 2:
                    c, h = np.array([fixed, mid, wall_h / 2]), np.array([th, half_len, wall_h / 2])
                else:
                    c, h = np.array([mid, fixed, wall_h / 2]), np.array([half_len, th, wall_h / 2])
                boxes.append((c, h, 0.0, False, BRICK))
        feet: list[np.ndarray] = []
        # Pillars on a ring, taller than the walls so they stand against the sky.
        n_p = int(rng.integers(4, 7))
        a0 = rng.uniform(0, 2 * np.pi)
        for i in range(n_p):
            a = a0 + 2 * np.pi * i / n_p + rng.uniform(-0.2, 0.2)
            rad = rng.uniform(2.6, 3.3)
            cxy = np.array([rad * math.cos(a) * 1.15, rad * math.sin(a) * 0.95])
            r = rng.uniform(0.18, 0.3)
            cyls.append((cxy, r, 0.0, rng.uniform(3.0, 3.6)))
            feet.append(np.array([cxy - r, cxy + r]))
        # Benches, planters and a few tall blocks.
        placed = attempts = 0
        n_f = int(rng.integers(4, 7))
        while placed < n_f and attempts < 300:
            attempts += 1
            tall = placed < 2
            half = np.array(
                [
                    rng.uniform(0.3, 0.8),
                    rng.uniform(0.25, 0.5),
                    rng.uniform(0.6, 1.0) if tall else rng.uniform(0.2, 0.45),
                ]
            )
            ang, rad = rng.uniform(0, 2 * np.pi), rng.uniform(2.2, 4.2)
            center = np.array([rad * math.cos(ang) * 1.1, rad * math.sin(ang) * 0.85, half[2]])
            yaw = rng.uniform(-0.6, 0.6)
            fp = _footprint(center, half, yaw)
            if (
                np.any(np.abs(fp) > [hx - 0.05, hy - 0.05])
                or _rect_distance_to_origin(center, half, yaw) < self.free_radius + 0.1
            ):
                continue
            if any(_aabb_overlap(fp, f, 0.15) for f in feet):
                continue
            feet.append(fp)
            boxes.append((center, half, yaw, True, WOOD if not tall else CONCRETE))
            placed += 1
        return self._finish_layout(None, [], [ground] + boxes, cyls)

    @staticmethod
    def _finish_layout(room, material_prefix, boxes, cyls) -> _Layout:
        """Assign surface ids: the prefix (room faces), then boxes, then cylinders."""
        material = list(material_prefix)
        box_sid = []
        for b in boxes:
            box_sid.append(len(material))
            material.append(b[4])
        cyl_sid = []
        for _ in cyls:
            cyl_sid.append(len(material))
            material.append(CONCRETE)
        return _Layout(
            room=(np.asarray(room[0], float), np.asarray(room[1], float)) if room is not None else None,
            box_center=np.array([b[0] for b in boxes], dtype=np.float64).reshape(-1, 3),
            box_half=np.array([b[1] for b in boxes], dtype=np.float64).reshape(-1, 3),
            box_yaw=np.array([b[2] for b in boxes], dtype=np.float64),
            box_sid=np.array(box_sid, dtype=np.int64),
            box_movable=np.array([b[3] for b in boxes], dtype=bool),
            cyl_center=np.array([c[0] for c in cyls], dtype=np.float64).reshape(-1, 2),
            cyl_radius=np.array([c[1] for c in cyls], dtype=np.float64),
            cyl_z=np.array([(c[2], c[3]) for c in cyls], dtype=np.float64).reshape(-1, 2),
            cyl_sid=np.array(cyl_sid, dtype=np.int64),
            material=np.array(material, dtype=np.int64),
        )

    def _build_placements(self, rng: np.random.Generator, n_alt: int = 3) -> dict[int, np.ndarray]:
        """Alternative placements of the movable furniture for ``forget_layout``.

        Returns box index -> ``(K, 4)`` rows ``(cx, cy, cz, yaw)``, row 0 the base placement.
        Alternates are the base moved by up to 0.3 m and 0.25 rad, inside the scene, clear of the
        free region and of every placement of every other box and pillar, so any combination of
        choices is a valid layout.
        """
        L = self.layout
        movable = np.flatnonzero(L.box_movable)
        lo = L.room[0][:2] if L.room is not None else np.array([-5.0, -4.0])
        hi = L.room[1][:2] if L.room is not None else np.array([5.0, 4.0])
        fixed_feet = [
            _footprint(c, h, y)
            for c, h, y, m in zip(L.box_center, L.box_half, L.box_yaw, L.box_movable, strict=True)
            if not m and h[0] < 10
        ]  # the courtyard's ground is no obstacle
        fixed_feet += [np.array([cxy - r, cxy + r]) for cxy, r in zip(L.cyl_center, L.cyl_radius, strict=True)]
        feet = {int(b): [_footprint(L.box_center[b], L.box_half[b], L.box_yaw[b])] for b in movable}
        out = {int(b): [np.r_[L.box_center[b], L.box_yaw[b]]] for b in movable}
        for b in movable:
            b = int(b)
            half = L.box_half[b]
            tall = L.box_center[b, 2] + half[2] > 0.95
            min_r = self.free_radius + 0.05 if tall else 1.5
            for _ in range(40):
                if len(out[b]) > n_alt:
                    break
                c = L.box_center[b].copy()
                c[:2] += rng.uniform(-0.3, 0.3, 2)
                yaw = L.box_yaw[b] + rng.uniform(-0.25, 0.25)
                fp = _footprint(c, half, yaw)
                if np.any(fp.min(0) < lo + 0.02) or np.any(fp.max(0) > hi - 0.02):
                    continue
                if _rect_distance_to_origin(c, half, yaw) < min_r:
                    continue
                others = fixed_feet + [f for j, fs in feet.items() if j != b for f in fs]
                if any(_aabb_overlap(fp, f, 0.03) for f in others):
                    continue
                out[b].append(np.r_[c, yaw])
                feet[b].append(fp)
        return {b: np.array(rows) for b, rows in out.items()}

    def _build_actors(self, rng: np.random.Generator, n: int) -> list[_Actor]:
        actors = []
        for i in range(n):
            kind = "sphere" if i % 2 == 0 else "box"
            size = np.array([rng.uniform(0.14, 0.22)]) if kind == "sphere" else rng.uniform(0.1, 0.17, 3)
            bound = float(size[0]) if kind == "sphere" else float(np.linalg.norm(size))
            a_xy = (1.2 - bound) / math.sqrt(2.0)
            z_lo, z_hi = 0.1 + bound, 2.0 - bound
            hue = rng.uniform()
            actors.append(
                _Actor(
                    kind=kind,
                    size=size,
                    amp=np.array(
                        [
                            a_xy * rng.uniform(0.7, 1.0),
                            a_xy * rng.uniform(0.7, 1.0),
                            (z_hi - z_lo) / 2 * rng.uniform(0.5, 1.0),
                        ]
                    ),
                    omega=rng.uniform(0.35, 0.75, 3),
                    phase=rng.uniform(0, 2 * np.pi, 3),
                    base=np.array([0.0, 0.0, (z_lo + z_hi) / 2]),
                    spin=float(rng.uniform(0.6, 1.6) * rng.choice([-1, 1])),
                    spin_phase=float(rng.uniform(0, 2 * np.pi)),
                    colors=np.stack([_hsv_to_rgb(hue, 0.9, 1.0), _hsv_to_rgb(hue + 0.5, 0.35, 0.98)]),
                )
            )
        return actors

    # ---- public properties -------------------------------------------------------------------

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(min (3,), max (3,))`` of the static scene (the courtyard's ground plane excluded)."""
        L = self.layout
        if L.room is not None:
            return L.room[0].copy(), L.room[1].copy()
        keep = L.box_sid != 0
        corners = []
        for c, h, y in zip(L.box_center[keep], L.box_half[keep], L.box_yaw[keep], strict=True):
            fp = _footprint(c, h, y)
            corners += [np.c_[fp, np.full(4, c[2] - h[2])], np.c_[fp, np.full(4, c[2] + h[2])]]
        for cxy, r, z in zip(L.cyl_center, L.cyl_radius, L.cyl_z, strict=True):
            corners.append(np.array([[cxy[0] - r, cxy[1] - r, z[0]], [cxy[0] + r, cxy[1] + r, z[1]]]))
        pts = np.concatenate(corners)
        return np.minimum(pts.min(0), 0.0), pts.max(0)

    @property
    def interior_center(self) -> np.ndarray:
        """``(3,)`` centre of the free region cameras fly around: ``(0, 0, 1.2)``."""
        return np.array([0.0, 0.0, 1.2])

    @property
    def actor_radii(self) -> np.ndarray:
        """``float32 (A,)`` bounding-sphere radius of each actor."""
        return np.array([a.radius for a in self.actors], dtype=np.float32)

    def actor_positions(self, time_s: float) -> np.ndarray:
        """``float32 (A, 3)`` actor centres at ``time_s`` seconds."""
        return np.array([a.position(time_s) for a in self.actors], dtype=np.float32).reshape(-1, 3)

    @property
    def n_surfaces(self) -> int:
        """Number of static surfaces; actor ``a`` has surface id ``n_surfaces + a``."""
        return self.layout.n_surfaces

    # ---- appearance --------------------------------------------------------------------------

    def _appearance(self, appearance_seed: int) -> torch.Tensor:
        """Per-surface shader parameters ``(S, 24)`` of one appearance seed (columns ``_CW`` .. ``_COL_G + 2``,
        offset by ``_N_GEOM``)."""
        key = int(appearance_seed)
        if key in self._appearance_cache:
            return self._appearance_cache[key]
        rng = np.random.default_rng([int(self.cfg.world_seed) & 0xFFFFFFFF, key & 0xFFFFFFFFFFFFFFFF, 0xA99])
        rows = []
        for mat in self.layout.material:
            p = np.zeros(_N_GEOM + _N_APPEARANCE)  # geometry columns stay 0 here
            z = _PATTERN_SCALE
            if mat == BRICK:
                p[_CW], p[_CH], p[_SHIFT] = z * rng.uniform(0.2, 0.32), z * rng.uniform(0.07, 0.12), 0.5
                p[_GROOVE], p[_VAR], p[_NOISE_AMP] = (
                    z * rng.uniform(0.007, 0.012),
                    rng.uniform(0.6, 1.0),
                    rng.uniform(0.15, 0.3),
                )
            elif mat == TILES:
                size = z * rng.uniform(0.25, 0.5)
                p[_CW], p[_CH], p[_SHIFT], p[_GROOVE] = size, size, rng.choice([0.0, 0.5]), z * rng.uniform(0.005, 0.01)
                p[_VAR], p[_NOISE_AMP] = rng.uniform(0.5, 0.9), rng.uniform(0.15, 0.3)
                rot = rng.choice([0.0, np.pi / 4])
                p[_ROT_COS], p[_ROT_SIN] = np.cos(rot), np.sin(rot)
            elif mat == WOOD:
                p[_CW], p[_CH], p[_SHIFT] = (
                    z * rng.uniform(0.6, 1.4),
                    z * rng.uniform(0.08, 0.16),
                    rng.uniform(0.3, 0.7),
                )
                p[_GROOVE], p[_VAR] = z * rng.uniform(0.003, 0.006), rng.uniform(0.3, 0.6)
                p[_GRAIN_AMP], p[_GRAIN_FREQ] = rng.uniform(0.3, 0.6), rng.uniform(8.0, 20.0) / z
                p[_NOISE_AMP] = rng.uniform(0.15, 0.25)
            elif mat == PLASTER:
                size = z * rng.uniform(0.6, 1.2)
                p[_CW], p[_CH], p[_SHIFT], p[_GROOVE] = size, size, 0.0, z * rng.uniform(0.008, 0.014)
                p[_VAR], p[_NOISE_AMP] = rng.uniform(0.2, 0.4), rng.uniform(0.35, 0.5)
            else:  # CONCRETE
                p[_CW], p[_CH], p[_SHIFT] = z * rng.uniform(0.3, 0.6), z * rng.uniform(0.15, 0.3), 0.5
                p[_GROOVE], p[_VAR], p[_NOISE_AMP] = (
                    z * rng.uniform(0.005, 0.009),
                    rng.uniform(0.3, 0.6),
                    rng.uniform(0.3, 0.45),
                )
            if mat != TILES:
                p[_ROT_COS] = 1.0
            # Phases: the pattern and the noise are shifted by a whole random amount per call.
            p[_OFF_U], p[_OFF_V] = rng.uniform(0, 10.0, 2)
            p[_NOFF_U], p[_NOFF_V] = rng.uniform(0, _NOISE_RES * _NOISE_TEXEL_M, 2)
            hue = rng.uniform()
            sat = rng.uniform(0.35, 0.8)
            va = rng.uniform(0.65, 0.92)
            vb = va - rng.uniform(0.3, 0.45)
            p[_COL_A : _COL_A + 3] = _hsv_to_rgb(hue, sat, va)
            p[_COL_BA : _COL_BA + 3] = (
                _hsv_to_rgb(hue + rng.uniform(-0.12, 0.12), min(1.0, sat + 0.1), vb) - p[_COL_A : _COL_A + 3]
            )
            dark = rng.random() < 0.7
            p[_COL_G : _COL_G + 3] = _hsv_to_rgb(hue + 0.5, 0.15, _GROOVE_VALUE[0] if dark else _GROOVE_VALUE[1])
            p[_SALT] = rng.uniform(0.0, 100.0)
            rows.append(p)
        table = torch.as_tensor(np.stack(rows)[:, _N_GEOM:], dtype=torch.float32)
        if len(self._appearance_cache) > 16:
            self._appearance_cache.pop(next(iter(self._appearance_cache)))
        self._appearance_cache[key] = table
        return table

    # ---- casting -----------------------------------------------------------------------------

    def _camera_rays(self, camera: Camera) -> tuple[tuple[float, float, float], torch.Tensor]:
        """Origin (3 floats) and planar world directions ``d (3, H, W)`` whose camera-frame z is 1,
        so a hit at ``o + t d`` has z-depth ``t``."""
        key = (camera.width, camera.height, camera.K.tobytes())
        xy = self._ray_cache.get(key)
        if xy is None:
            v, u = np.mgrid[0 : camera.height, 0 : camera.width].astype(np.float64)
            Kinv = np.linalg.inv(camera.K)
            x = Kinv[0, 0] * u + Kinv[0, 1] * v + Kinv[0, 2]
            y = Kinv[1, 1] * v + Kinv[1, 2]
            xy = torch.as_tensor(np.stack([x, y]), dtype=torch.float32)
            if len(self._ray_cache) > 8:
                self._ray_cache.clear()
            self._ray_cache[key] = xy
        R = camera.T_world_cam[:3, :3]
        d = torch.empty((3,) + xy.shape[1:])
        for k in range(3):
            torch.add(xy[0] * float(R[k, 0]), xy[1], alpha=float(R[k, 1]), out=d[k]).add_(float(R[k, 2]))
        o = tuple(float(x) for x in camera.T_world_cam[:3, 3])
        return o, d

    @staticmethod
    def _screen_rect(camera: Camera, corners: np.ndarray, stride: int = 1):
        """Pixel rectangle ``(v0, v1, u0, u1)`` (slices of the strided image) covering the projection
        of ``corners (M, 3)``; the whole image if any corner is behind the camera; None if off-screen."""
        T = camera.T_world_cam
        pc = (corners - T[:3, 3]) @ T[:3, :3]
        H, W = (camera.height + stride - 1) // stride, (camera.width + stride - 1) // stride
        if np.all(pc[:, 2] <= 1e-3):
            return None
        if np.any(pc[:, 2] <= 1e-3):
            return 0, H, 0, W
        uv = pc[:, :2] / pc[:, 2:3] @ camera.K[:2, :2].T + camera.K[:2, 2]
        u0 = max(int(math.floor(uv[:, 0].min() / stride)) - 1, 0)
        u1 = min(int(math.ceil(uv[:, 0].max() / stride)) + 2, W)
        v0 = max(int(math.floor(uv[:, 1].min() / stride)) - 1, 0)
        v1 = min(int(math.ceil(uv[:, 1].max() / stride)) + 2, H)
        if u0 >= u1 or v0 >= v1:
            return None
        return v0, v1, u0, u1

    def _cast_static(self, camera: Camera, o, d: torch.Tensor, layout: _Layout, stride: int = 1):
        """Nearest static hit per pixel of planar rays ``d (3, H, W)``: depth ``t (H, W)``
        (``_FAR`` = none) and surface id ``sid (H, W)`` (float; meaningless where ``t`` is ``_FAR``)."""
        shape = d.shape[1:]
        if layout.room is not None:
            t, sid = _cast_room_inside(o, d, layout.room[0].tolist(), layout.room[1].tolist())
        else:
            t, sid = torch.full(shape, _FAR), torch.zeros(shape)

        def merge(rect, t_new, s):
            v0, v1, u0, u1 = rect
            t_view, sid_view = t[v0:v1, u0:u1], sid[v0:v1, u0:u1]
            closer = _step(t_view - t_new)
            sid_view.add_((s - sid_view).mul_(closer))
            t_view.copy_(torch.minimum(t_view, t_new))

        for c, h, yaw, s in zip(layout.box_center, layout.box_half, layout.box_yaw, layout.box_sid, strict=True):
            rect = self._screen_rect(camera, self._box_corners(c, h, yaw), stride)
            if rect is not None:
                v0, v1, u0, u1 = rect
                merge(rect, _cast_box(o, d[:, v0:v1, u0:u1], c.tolist(), h.tolist(), float(yaw)), float(s))
        for cxy, r, z, s in zip(layout.cyl_center, layout.cyl_radius, layout.cyl_z, layout.cyl_sid, strict=True):
            corners = self._box_corners(np.array([cxy[0], cxy[1], z.mean()]), np.array([r, r, (z[1] - z[0]) / 2]), 0.0)
            rect = self._screen_rect(camera, corners, stride)
            if rect is not None:
                v0, v1, u0, u1 = rect
                merge(rect, _cast_cylinder(o, d[:, v0:v1, u0:u1], cxy, float(r), float(z[0]), float(z[1])), float(s))
        return t, sid

    @staticmethod
    def _box_corners(center: np.ndarray, half: np.ndarray, yaw: float) -> np.ndarray:
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        c, s = math.cos(yaw), math.sin(yaw)
        R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return center + (signs * half) @ R.T

    def _cast_actors(self, camera: Camera, o, d: torch.Tensor, time_s: float):
        """Nearest actor hit: ``t (H, W)`` (``_FAR`` = none) and actor index ``(H, W)`` (float)."""
        shape = d.shape[1:]
        t = torch.full(shape, _FAR)
        idx = torch.zeros(shape)
        for a, actor in enumerate(self.actors):
            pos = actor.position(time_s)
            rect = self._screen_rect(camera, self._box_corners(pos, np.full(3, actor.radius), 0.0))
            if rect is None:
                continue
            v0, v1, u0, u1 = rect
            if actor.kind == "sphere":
                ta = _cast_sphere(o, d[:, v0:v1, u0:u1], pos.tolist(), actor.radius)
            else:
                ta = _cast_box(o, d[:, v0:v1, u0:u1], pos.tolist(), actor.size.tolist(), actor.yaw(time_s))
            t_view, i_view = t[v0:v1, u0:u1], idx[v0:v1, u0:u1]
            i_view.add_((a - i_view).mul_(_step(t_view - ta)))
            t_view.copy_(torch.minimum(t_view, ta))
        return t, idx

    def check_camera(self, camera: Camera, where: str = "camera") -> None:
        """Raise ``ValueError`` if ``camera`` is outside the room (the room is only modelled from inside)."""
        L = self.layout
        if L.room is None:
            return
        c = camera.T_world_cam[:3, 3]
        if np.any(c <= L.room[0] + 0.01) or np.any(c >= L.room[1] - 0.01):
            raise ValueError(
                f"{where} is at {np.round(c, 3).tolist()}, outside the procedural room "
                f"{L.room[0].tolist()} .. {L.room[1].tolist()}; keep camera paths inside it (the default "
                f"orbit: centre (0, 0, 1.2), radius 1.5, height 1.4)"
            )

    # ---- shading -----------------------------------------------------------------------------

    def _shade_static(
        self, X: torch.Tensor, t: torch.Tensor, sid: torch.Tensor, table: torch.Tensor, focal: float
    ) -> torch.Tensor:
        """Colour ``(3, M)`` in [0, 1] of static hits.

        Args:
            X: ``(3, M)`` world hit points; t: ``(M,)`` their depth; sid: ``(M,)`` surface ids (long,
            >= 0); table: ``(_N_GEOM + _N_APPEARANCE, S)`` geometry + appearance; focal: pixels.

        One cell shader for all materials: a grid of cells (bricks, tiles, planks, panels) with
        grooves between them, per-cell colour variation, optional wood grain and band-limited
        noise, all functions of the hit point in the surface's own frame (view-consistent),
        times a fixed two-light Lambertian shading. The face is recovered from the hit point (the
        local axis where it lies on the box's half extent).
        """
        P = table.index_select(1, sid)  # (params, M): one gather of every per-surface parameter
        cs, sn = P[_G_COS], P[_G_SIN]
        rx, ry, lz = X[0] - P[_G_CX], X[1] - P[_G_CY], X[2] - P[_G_CZ]
        lx = cs * rx + sn * ry
        ly = cs * ry - sn * rx
        # Which face: the local axis with the largest |l| / half extent (radial for cylinders).
        ax, ay, az = lx.abs() / P[_G_HX], ly.abs() / P[_G_HY], lz.abs() / P[_G_HZ]
        cyl = P[_G_CYL]
        has_cyl = bool(cyl.any())
        if has_cyl:
            radial = torch.sqrt(lx * lx + ly * ly)
            ar = radial / P[_G_HX]
            ax = ax + (ar - ax) * cyl
            ay = ay + (ar - ay) * cyl
        is_z = _step(az - torch.maximum(ax, ay))
        is_x = _step(ax - ay) * (1.0 - is_z)
        is_y = 1.0 - is_z - is_x
        # Surface coordinates (metres): the two local axes across the face's normal axis.
        u = lx + (ly - lx) * is_x
        v = lz + (ly - lz) * is_z
        # Lambert shading of the (local) normal turned to world axes.
        side = P[_G_SIDE]
        nlx, nly, nlz = torch.sign(lx) * is_x * side, torch.sign(ly) * is_y * side, torch.sign(lz) * is_z * side
        if has_cyl:
            cyl_side = cyl * (1.0 - is_z)
            u = u + (torch.atan2(ly, lx) * P[_G_HX] - u) * cyl_side
            inv_r = 1.0 / radial.clamp(min=1e-6)
            nlx = nlx + (lx * inv_r - nlx) * cyl_side
            nly = nly + (ly * inv_r - nly) * cyl_side
        nx, ny = cs * nlx - sn * nly, sn * nlx + cs * nly
        lam = _lambert_planar(nx, ny, nlz)

        cr, sr = P[_ROT_COS], P[_ROT_SIN]
        uu = cr * u - sr * v + P[_OFF_U]
        vv = sr * u + cr * v + P[_OFF_V]
        cw, ch = P[_CW], P[_CH]
        row = torch.floor(vv / ch)
        uu += P[_SHIFT] * cw * row
        col = torch.floor(uu / cw)
        fu = uu - col * cw
        fv = vv - row * ch
        edge = torch.minimum(torch.minimum(fu, cw - fu), torch.minimum(fv, ch - fv))
        aa = (t * (0.6 / focal)).clamp_(min=_AA_MIN_M)  # at least a pixel footprint: band-limits the grooves
        groove = 1.0 - _smoothstep(P[_GROOVE] - aa, P[_GROOVE] + aa, edge)
        cell = _hash(row, col, P[_SALT])

        # Band-limited noise from the periodic texture (wrapped lookup).
        period = _NOISE_RES * _NOISE_TEXEL_M
        scale = 2.0 / (_NOISE_TEXEL_M * (_NOISE_RES + 2))
        offset = 2.0 / (_NOISE_RES + 2) - 1.0
        gu = torch.remainder(u + P[_NOFF_U], period).mul_(scale).add_(offset)
        gv = torch.remainder(v + P[_NOFF_V], period).mul_(scale).add_(offset)
        noise = F.grid_sample(
            self._noise_tex, torch.stack([gu, gv], dim=-1)[None, None], mode="bilinear", align_corners=False
        )[0, 0, 0]  # (M,)
        grain = torch.sin((2 * math.pi) * P[_GRAIN_FREQ] * (fv + 0.05 * noise))

        var = P[_VAR]
        mix = (var * cell + 0.5 * (1.0 - var) + 0.5 * P[_GRAIN_AMP] * grain).clamp_(0.0, 1.0)
        # rgb = lambert * ((1 - groove) * (1 + amp * noise) * (a + (b - a) * mix) + groove * groove_rgb)
        s_body = lam * (1.0 - groove) * (1.0 + P[_NOISE_AMP] * noise)
        body = torch.addcmul(P[_COL_A : _COL_A + 3], P[_COL_BA : _COL_BA + 3], mix)
        rgb = torch.addcmul(body * s_body, P[_COL_G : _COL_G + 3], lam * groove)
        return rgb.clamp_(0.0, 1.0)

    def _shade_actors(self, X: torch.Tensor, idx: torch.Tensor, time_s: float) -> torch.Tensor:
        """Colour ``(3, M)`` of actor hits ``X (3, M)``: bright checkers that move and spin with the actor."""
        out = torch.zeros(3, X.shape[1])
        for a, actor in enumerate(self.actors):
            sel = torch.nonzero(idx == a)[:, 0]
            if not len(sel):
                continue
            pos = actor.position(time_s)
            rx, ry, rz = X[0, sel] - pos[0], X[1, sel] - pos[1], X[2, sel] - pos[2]
            yaw = actor.yaw(time_s)
            c, s = math.cos(yaw), math.sin(yaw)
            lx, ly = c * rx + s * ry, c * ry - s * rx
            if actor.kind == "sphere":
                r = actor.radius
                lon = torch.atan2(ly, lx)
                lat = torch.asin((rz / r).clamp(-1, 1))
                parity = (torch.floor(lon / (math.pi / 4)) + torch.floor(lat / (math.pi / 4))).long() % 2
                n = torch.stack([rx, ry, rz], dim=-1) / r
            else:
                h = torch.as_tensor(actor.size, dtype=torch.float32)
                loc = torch.stack([lx, ly, rz], dim=-1)
                parity = torch.floor(loc / h * 1.5 + 3.0).long().sum(-1) % 2
                axis = (loc / h).abs().argmax(-1)
                nl = F.one_hot(axis, 3).float() * torch.sign(loc)
                n = torch.stack([c * nl[:, 0] - s * nl[:, 1], s * nl[:, 0] + c * nl[:, 1], nl[:, 2]], dim=-1)
            colors = torch.as_tensor(actor.colors, dtype=torch.float32)
            shade = 0.6 + 0.4 * (n @ torch.as_tensor(_LIGHT_KEY, dtype=torch.float32)).clamp_min(0.0)
            out[:, sel] = (colors[parity] * shade[:, None]).T
        return out.clamp_(0.0, 1.0)

    def _sky(self, d: torch.Tensor) -> torch.Tensor:
        """Sky colour ``(3, M)`` for directions ``d (3, M)``: a smooth gradient (no features)."""
        elev = (d[2] / d.norm(dim=0)).clamp(0.0, 1.0)
        w = (elev / 0.6).clamp(0.0, 1.0)
        horizon = torch.as_tensor(self._sky_colors[0], dtype=torch.float32)[:, None]
        zenith = torch.as_tensor(self._sky_colors[1], dtype=torch.float32)[:, None]
        return horizon + (zenith - horizon) * w

    # ---- rendering ---------------------------------------------------------------------------

    def _render(
        self,
        camera: Camera,
        time_s: float,
        appearance_seed: int,
        *,
        layout: _Layout | None = None,
        actors: bool = True,
        follow=None,
    ) -> dict[str, torch.Tensor]:
        """Ray-cast one frame; torch outputs as :meth:`raycast`, but ``rgb`` is planar float
        ``(3, H, W)`` in [0, 1], plus ``followed (H, W)``: pixels taken from the conditioning, and
        ``covered (H, W)``: static pixels where the conditioning was valid (followed or not).

        ``follow`` optionally holds the conditioning of this frame as a callable
        ``(X (3,H,W), hit (H,W) 0/1 float, static depth (H,W)) -> (accept (H,W) 0/1 float, rgb (3,H,W),
        covered (H,W) 0/1 float)``; ``covered`` marks pixels where the conditioning is valid whether
        or not its depth agreed.
        """
        layout = layout or self.layout
        H, W = camera.height, camera.width
        o, d = self._camera_rays(camera)
        t_s, sid = self._cast_static(camera, o, d, layout)
        hit_f = _step(_FAR / 2 - t_s)
        if actors and self.actors:
            t_a, a_idx = self._cast_actors(camera, o, d, time_s)
            dyn_f = _step(t_s - t_a)
        else:
            t_a, a_idx, dyn_f = torch.full((H, W), _FAR), torch.zeros(H, W), torch.zeros(H, W)
        t_hit = t_s * hit_f
        X = torch.addcmul(torch.tensor(o)[:, None, None], d, t_hit)

        need_f = hit_f * (1.0 - dyn_f)
        if follow is not None:
            accept_f, rgb, covered_f = follow(X, hit_f, t_hit)
            followed_f = accept_f * need_f
            covered_f = covered_f * need_f
            need_f = need_f * (1.0 - accept_f)
        else:
            followed_f = covered_f = torch.zeros(H, W)
            rgb = torch.zeros(3, H, W)
        n_need = int(need_f.sum())
        if n_need:
            table = torch.cat([layout.surface_geometry(), self._appearance(appearance_seed)], dim=1).T.contiguous()
            sid_l = sid.long()
            if n_need > 0.6 * H * W:  # shading everything beats gathering a subset this large
                fresh = self._shade_static(
                    X.reshape(3, -1), t_hit.reshape(-1), sid_l.reshape(-1), table, camera.fx
                ).reshape(3, H, W)
                rgb = torch.lerp(rgb, fresh, need_f)
            else:
                idx = torch.nonzero(need_f.reshape(-1))[:, 0]
                fresh = self._shade_static(
                    X.reshape(3, -1)[:, idx], t_hit.reshape(-1)[idx], sid_l.reshape(-1)[idx], table, camera.fx
                )
                rgb = rgb.reshape(3, -1).index_copy(1, idx, fresh).reshape(3, H, W)
        rgb_flat = rgb.reshape(3, -1)
        if self.layout.room is None:  # only the courtyard has sky
            sky = torch.nonzero(((1.0 - hit_f) * (1.0 - dyn_f)).reshape(-1))[:, 0]
            if len(sky):
                rgb_flat.index_copy_(1, sky, self._sky(d.reshape(3, -1)[:, sky]))
        dyn_idx = torch.nonzero(dyn_f.reshape(-1))[:, 0]
        if len(dyn_idx):
            Xa = torch.addcmul(torch.tensor(o)[:, None], d.reshape(3, -1)[:, dyn_idx], t_a.reshape(-1)[dyn_idx])
            rgb_flat.index_copy_(1, dyn_idx, self._shade_actors(Xa, a_idx.reshape(-1)[dyn_idx].long(), time_s))

        dyn = dyn_f > 0
        depth = torch.lerp(t_hit, t_a, dyn_f)
        surface_id = torch.where(hit_f > 0, sid.long(), -1)
        surface_id = torch.where(dyn, a_idx.long() + self._actor_id0, surface_id)
        return {
            "rgb": rgb,
            "depth": depth,
            "dynamic_mask": dyn,
            "static_depth": t_hit,
            "surface_id": surface_id,
            "followed": followed_f > 0,
            "covered": covered_f > 0,
        }

    def raycast(self, camera: Camera, time_s: float, appearance_seed: int, *, actors: bool = True) -> dict:
        """Ray-cast the world (static scene + actors) in one camera, without pixel noise.

        Args:
            camera: the camera to render (OpenCV axes, ``T_world_cam`` camera-to-world).
            time_s: time in seconds (places the actors).
            appearance_seed: chooses palettes, hues and pattern phases of the static surfaces.
            actors: include the dynamic actors.

        Returns:
            ``rgb uint8 (H,W,3)``, ``depth float32 (H,W)`` z-depth (0 = sky / no geometry),
            ``dynamic_mask bool (H,W)``, ``static_depth float32 (H,W)`` (actors removed),
            ``surface_id int32 (H,W)`` (-1 sky, actors are ``n_surfaces + a``).
        """
        self.check_camera(camera)
        with torch.no_grad(), torch_threads(self.cfg.torch_threads):
            r = self._render(camera, time_s, appearance_seed, actors=actors)
        return {
            "rgb": (r["rgb"] * 255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy().copy(),
            "depth": r["depth"].numpy(),
            "dynamic_mask": r["dynamic_mask"].numpy(),
            "static_depth": r["static_depth"].numpy(),
            "surface_id": r["surface_id"].to(torch.int32).numpy(),
        }

    def surface_distance(self, points: np.ndarray, layout: _Layout | None = None) -> np.ndarray:
        """Unsigned distance ``(M,)`` from world ``points (M, 3)`` to the nearest static surface.

        A slow, obviously-correct reference (signed distance functions) to check the ray caster.
        """
        L = layout or self.layout
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        best = np.full(len(p), np.inf)
        if L.room is not None:
            best = np.minimum(best, np.min(np.concatenate([np.abs(p - L.room[0]), np.abs(L.room[1] - p)], 1), 1))
        for c, h, yaw in zip(L.box_center, L.box_half, L.box_yaw, strict=True):
            cs, sn = math.cos(yaw), math.sin(yaw)
            rel = p - c
            loc = np.stack([cs * rel[:, 0] + sn * rel[:, 1], -sn * rel[:, 0] + cs * rel[:, 1], rel[:, 2]], 1)
            q = np.abs(loc) - h
            sdf = np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)
            best = np.minimum(best, np.abs(sdf))
        for cxy, r, z in zip(L.cyl_center, L.cyl_radius, L.cyl_z, strict=True):
            dr = np.linalg.norm(p[:, :2] - cxy, axis=1) - r
            dz = np.maximum(z[0] - p[:, 2], p[:, 2] - z[1])
            q = np.stack([dr, dz], 1)
            sdf = np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)
            best = np.minimum(best, np.abs(sdf))
        return best


# --------------------------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------------------------


class ProceduralGenerator:
    """The procedural stand-in world model as a :class:`~spatia_py.types.VideoGenerator`.

    See the module docstring for what it does; ``seed`` is mixed into every per-call seed.
    ``generate`` returns frames for the commanded cameras plus evaluation-only ground truth.
    """

    name = "procedural"

    def __init__(self, cfg: ProceduralConfig, seed: int = 0) -> None:
        if cfg.control_error_m < 0 or cfg.control_error_deg < 0 or cfg.noise_std < 0:
            raise ValueError(
                "ProceduralConfig control_error_m, control_error_deg and noise_std must be >= 0, got "
                f"{cfg.control_error_m}, {cfg.control_error_deg}, {cfg.noise_std}"
            )
        if not 0.0 <= cfg.validity_threshold < 1.0:
            raise ValueError(f"ProceduralConfig.validity_threshold must be in [0, 1), got {cfg.validity_threshold}")
        self.cfg = cfg
        self.seed = int(seed)
        self.world = ProceduralWorld(cfg)
        log.info(
            "procedural stand-in world model: %s scene, world_seed=%d, %d actors",
            cfg.scene,
            cfg.world_seed,
            cfg.n_actors,
        )

    # ---- seeds -------------------------------------------------------------------------------

    def _seed(self, request: GenerationRequest, stream: int) -> int:
        ss = np.random.SeedSequence(
            [self.seed & 0xFFFFFFFF, int(request.seed) & 0xFFFFFFFF, int(request.round_index) & 0xFFFFFFFF, stream]
        )
        return int(ss.generate_state(1, dtype=np.uint64)[0] >> 1)

    def appearance_seed(self, request: GenerationRequest) -> int:
        """The appearance seed this request's clip is rendered with (from seed and round index)."""
        return self._seed(request, 1)

    def control_error(self, request: GenerationRequest) -> np.ndarray:
        """``(N, 4, 4)`` perturbations ``T_cmd_actual``: actual pose = commanded pose @ perturbation.

        Each axis of the camera-frame translation has std ``control_error_m`` and each axis of the
        rotation vector std ``control_error_deg``; all six vary smoothly over the clip (white noise
        filtered by a Gaussian of 8 frames, normalised to keep the std).
        """
        n = len(request.cameras)
        rng = np.random.default_rng(self._seed(request, 2))
        sigma_f = 8.0
        half = int(3 * sigma_f)
        k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma_f) ** 2)
        k /= np.linalg.norm(k)
        # Drawn frame by frame, so a frame's error does not depend on how many frames follow it
        # (a longer request for the same round extends the sequence; look-ahead frames rely on it).
        white = rng.standard_normal((n + 2 * half, 6))
        smooth = np.stack([np.convolve(w, k, mode="valid") for w in white.T], axis=1)  # (n, 6)
        rot = smooth[:, :3] * math.radians(self.cfg.control_error_deg)
        trans = smooth[:, 3:] * self.cfg.control_error_m
        T = np.tile(np.eye(4), (n, 1, 1))
        for i in range(n):
            T[i, :3, :3] = so3_exp(rot[i])
            T[i, :3, 3] = trans[i]
        return T

    # ---- validation --------------------------------------------------------------------------

    @staticmethod
    def _validate(request: GenerationRequest) -> None:
        cams = request.cameras
        if not isinstance(cams, (list, tuple)) or len(cams) == 0:
            raise ValueError("GenerationRequest.cameras must be a non-empty list of Camera")
        for i, c in enumerate(cams):
            if not isinstance(c, Camera):
                raise ValueError(
                    f"GenerationRequest.cameras[{i}] is a {type(c).__name__}, expected spatia_py.geometry.Camera"
                )
        W, H = cams[0].width, cams[0].height
        bad = [i for i, c in enumerate(cams) if (c.width, c.height) != (W, H)]
        if bad:
            raise ValueError(
                f"all cameras of a request must share one image size; camera 0 is {W}x{H} but "
                f"camera {bad[0]} is {cams[bad[0]].width}x{cams[bad[0]].height}"
            )
        if not (request.fps > 0 and math.isfinite(request.fps)):
            raise ValueError(f"GenerationRequest.fps must be a positive number, got {request.fps}")
        c = request.conditioning
        if c is not None:
            if not isinstance(c, ConditioningMaps):
                raise ValueError(
                    f"GenerationRequest.conditioning must be ConditioningMaps or None, got {type(c).__name__}"
                )
            want = (len(cams), H, W)
            if tuple(c.depth.shape) != want:
                raise ValueError(
                    f"conditioning depth has shape {tuple(c.depth.shape)} but the request has "
                    f"{len(cams)} cameras of {W}x{H}; expected {want}"
                )
            if c.rgb.dtype != np.uint8:
                raise ValueError(f"conditioning rgb must be uint8 (N,H,W,3), got {c.rgb.dtype}")
        h = request.history_frames
        if h is not None and (h.ndim != 4 or h.shape[1:] != (H, W, 3)):
            raise ValueError(f"history_frames must be uint8 (M,{H},{W},3), got shape {h.shape}")

    # ---- conditioning ------------------------------------------------------------------------

    def _follower(self, rgb_c: np.ndarray, depth_c: np.ndarray, val_c: np.ndarray, cam_cmd: Camera):
        """The ``follow`` callable of one frame (see :meth:`ProceduralWorld._render`).

        Each static hit point is projected into the commanded camera, where the conditioning was
        rendered; its four bilinear taps count where validity is above the threshold and the
        conditioning depth agrees with the point's depth there (``follow_depth_rel_tol`` + 3 cm:
        an occlusion test — a video model keeps what the memory shows even where the memory's
        geometry is a little off, but not a surface the memory puts far in front or behind). A pixel follows the
        conditioning when agreeing taps carry more than half the weight; its colour is their
        weighted mean (depth-aware bilinear: no bleeding across depth edges).
        """
        thr = float(self.cfg.validity_threshold)
        rel_tol = float(self.cfg.follow_depth_rel_tol)
        H, W = depth_c.shape
        rgb_flat = torch.from_numpy(np.ascontiguousarray(np.moveaxis(rgb_c, -1, 0))).reshape(3, -1).float() / 255.0
        depth_flat = torch.from_numpy(np.ascontiguousarray(depth_c, dtype=np.float32)).reshape(-1)
        ok_flat = (
            (torch.from_numpy(np.ascontiguousarray(val_c, dtype=np.float32)).reshape(-1) > thr) & (depth_flat > 0)
        ).float()
        R = cam_cmd.T_world_cam[:3, :3]
        oc = cam_cmd.T_world_cam[:3, 3]
        K = cam_cmd.K

        def follow(X: torch.Tensor, hit_f: torch.Tensor, t_hit: torch.Tensor):
            rel = [X[k] - float(oc[k]) for k in range(3)]
            # Commanded-camera coordinates: p_cam = R^T (X - o).
            pc = [rel[0] * float(R[0, k]) + rel[1] * float(R[1, k]) + rel[2] * float(R[2, k]) for k in range(3)]
            z = pc[2]
            inv_z = 1.0 / z.clamp(min=1e-6)
            u = (pc[0] * float(K[0, 0]) + pc[1] * float(K[0, 1])) * inv_z + float(K[0, 2])
            v = pc[1] * inv_z * float(K[1, 1]) + float(K[1, 2])
            inside = hit_f * _step(z - 1e-3) * _step(u + 0.5) * _step(W - 0.5 - u) * _step(v + 0.5) * _step(H - 0.5 - v)
            u = u.clamp_(-0.5, W - 0.5)
            v = v.clamp_(-0.5, H - 0.5)
            u0, v0 = torch.floor(u), torch.floor(v)
            fu, fv = u - u0, v - v0
            iu0, iv0 = u0.long(), v0.long()
            iu1, iv1 = (iu0 + 1).clamp_(max=W - 1), (iv0 + 1).clamp_(max=H - 1)
            iu0.clamp_(min=0)
            iv0.clamp_(min=0)
            tol = rel_tol * z + _FOLLOW_ABS_TOL_M
            wsum = torch.zeros_like(z)
            wvalid = torch.zeros_like(z)
            acc = torch.zeros((3,) + z.shape)
            for iv, iu, w in (
                (iv0, iu0, (1 - fu) * (1 - fv)),
                (iv0, iu1, fu * (1 - fv)),
                (iv1, iu0, (1 - fu) * fv),
                (iv1, iu1, fu * fv),
            ):
                idx = (iv * W + iu).reshape(-1)
                agree = _step(tol - (depth_flat[idx].reshape(z.shape) - z).abs())
                wv = w * ok_flat[idx].reshape(z.shape)
                wvalid += wv
                wk = wv * agree
                wsum += wk
                acc.addcmul_(rgb_flat.index_select(1, idx).reshape(acc.shape), wk)
            accept = inside * _step(wsum - 0.5)
            rgb = acc / wsum.clamp(min=1e-6)
            accept, rgb = _fill_holes(accept, rgb, hit_f, t_hit)
            return accept, rgb, inside * _step(wvalid - 0.5)

        return follow

    # ---- layout forgetting -------------------------------------------------------------------

    def _call_layout(self, request: GenerationRequest) -> _Layout:
        """The layout of this call. With ``forget_layout`` each movable piece of furniture takes one
        of its placements (:meth:`ProceduralWorld._build_placements`): the one the conditioning
        depth shows where the conditioning sees it (like lifting the conditioning to 3D), else a
        random one per call that does not cover pixels the conditioning covers."""
        world = self.world
        base = world.layout
        if not self.cfg.forget_layout or not world.placements:
            return base
        rng = np.random.default_rng(self._seed(request, 4))
        cond, cams = request.conditioning, request.cameras
        stride = max(1, round(cams[0].width / 128))  # about 128 samples across
        thr = self.cfg.validity_threshold
        sampled = []
        if cond is not None:
            for i, cam in enumerate(cams):
                o, d = world._camera_rays(cam)
                d = d[:, ::stride, ::stride]
                dep = torch.from_numpy(np.ascontiguousarray(cond.depth[i, ::stride, ::stride], dtype=np.float32))
                val = torch.from_numpy(np.ascontiguousarray(cond.validity[i, ::stride, ::stride], dtype=np.float32))
                sampled.append((cam, o, d, dep, (val > thr) & (dep > 0)))
        center, yaw = base.box_center.copy(), base.box_yaw.copy()
        for b, cands in world.placements.items():
            evidence, conflict = np.zeros(len(cands)), np.zeros(len(cands))
            for cam, o, d, dep, valid in sampled:
                for k, (cx, cy, cz, yw) in enumerate(cands):
                    c = np.array([cx, cy, cz])
                    rect = world._screen_rect(cam, world._box_corners(c, base.box_half[b], yw), stride)
                    if rect is None:
                        continue
                    v0, v1, u0, u1 = rect
                    t = _cast_box(o, d[:, v0:v1, u0:u1], c.tolist(), base.box_half[b].tolist(), float(yw))
                    dp, ok = dep[v0:v1, u0:u1], valid[v0:v1, u0:u1]
                    tol = _DEPTH_REL_TOL * dp + _DEPTH_ABS_TOL_M
                    evidence[k] += int((ok & ((dp - t).abs() <= tol)).sum())
                    conflict[k] += int((ok & (t < dp - tol)).sum())
            if evidence.max() > 0:
                k = int(np.argmax(evidence - conflict))
            else:
                order = rng.permutation(len(cands))
                k = int(order[np.argmin(conflict[order])])
            center[b], yaw[b] = cands[k, :3], cands[k, 3]
        return replace(base, box_center=center, box_yaw=yaw)

    # ---- generation --------------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> Clip:
        """Render a clip for ``request`` (see the module docstring).

        Returns:
            :class:`~spatia_py.types.Clip` with ``frames uint8 (N,H,W,3)``, the commanded cameras,
            ``depth`` (the ray-cast depth with ``hand_over_depth``, else ``None``) and ground truth
            (actual ``T_world_cam (N,4,4)``, depth, dynamic masks, actor positions ``(N,A,3)`` and
            radii ``(A,)``, static depth).
        """
        self._validate(request)
        cams = request.cameras
        for i, cam in enumerate(cams):
            self.world.check_camera(cam, f"GenerationRequest.cameras[{i}]")
        n, H, W = len(cams), cams[0].height, cams[0].width
        app_seed = self.appearance_seed(request)
        T_act = np.stack([c.T_world_cam for c in cams]) @ self.control_error(request)
        gen = torch.Generator().manual_seed(self._seed(request, 3))
        cond = request.conditioning
        frames = np.empty((n, H, W, 3), dtype=np.uint8)
        depth = np.empty((n, H, W), dtype=np.float32)
        static_depth = np.empty((n, H, W), dtype=np.float32)
        dyn = np.empty((n, H, W), dtype=bool)
        status = np.empty((n, H, W), dtype=np.uint8)
        actor_pos = np.empty((n, len(self.world.actors), 3), dtype=np.float32)
        n_followed = n_static = 0
        with torch.no_grad(), torch_threads(self.cfg.torch_threads):
            layout = self._call_layout(request)
            for i, cam in enumerate(cams):
                time_s = (request.frame_offset + i) / request.fps
                follow = None
                if cond is not None:
                    follow = self._follower(cond.rgb[i], cond.depth[i], cond.validity[i], cam)
                r = self.world._render(cam.with_pose(T_act[i]), time_s, app_seed, layout=layout, follow=follow)
                rgb = r["rgb"] * 255.0
                if self.cfg.noise_std > 0:
                    rgb.add_(torch.randn(rgb.shape, generator=gen), alpha=float(self.cfg.noise_std))
                frames[i] = rgb.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
                depth[i] = r["depth"].numpy()
                static_depth[i] = r["static_depth"].numpy()
                dyn[i] = r["dynamic_mask"].numpy()
                static_i = (static_depth[i] > 0) & ~dyn[i]
                followed_i = r["followed"].numpy()
                status[i] = np.select([followed_i, r["covered"].numpy(), static_i], [1, 2, 3], 0)
                actor_pos[i] = self.world.actor_positions(time_s)
                n_followed += int(followed_i.sum())
                n_static += int(static_i.sum())
        log.debug(
            "procedural stand-in world model: round %d, %d frames, followed conditioning on %.1f%% of static pixels",
            request.round_index,
            n,
            100.0 * n_followed / max(n_static, 1),
        )
        gt = GroundTruth(
            T_world_cam=T_act,
            depth=depth,
            dynamic_masks=dyn,
            actor_positions=actor_pos,
            actor_radii=self.world.actor_radii,
            static_depth=static_depth,
            conditioning_status=status,
        )
        handed = depth.copy() if self.cfg.hand_over_depth else None
        return Clip(frames=frames, cameras=list(cams), depth=handed, ground_truth=gt)


def _fill_holes(
    accept: torch.Tensor, rgb: torch.Tensor, hit: torch.Tensor, depth: torch.Tensor, iterations: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hole clean-up: a static pixel not followed whose same-depth 8-neighbours are mostly
    followed takes their mean colour, so covered areas do not speckle with re-sampled colour.

    Args:
        accept: ``(H, W)`` 0/1 float; rgb: ``(3, H, W)``; hit: ``(H, W)`` 0/1 float;
        depth: ``(H, W)`` static depth (0 where no hit).

    Returns:
        The grown ``accept`` and ``rgb``.
    """
    H, W = accept.shape
    dpad = F.pad(depth, (1, 1, 1, 1))
    tol = _DEPTH_REL_TOL * depth + _DEPTH_ABS_TOL_M
    shifts = [(dv, du) for dv in (-1, 0, 1) for du in (-1, 0, 1) if dv or du]
    same = []
    for dv, du in shifts:
        nd = dpad[1 + dv : 1 + dv + H, 1 + du : 1 + du + W]
        same.append(_step(nd) * _step(tol - (nd - depth).abs()))
    n_same = torch.stack(same).sum(0)
    for _ in range(iterations):
        apad = F.pad(accept, (1, 1, 1, 1))
        cpad = F.pad(rgb * accept, (1, 1, 1, 1))
        n_acc = torch.zeros(H, W)
        csum = torch.zeros(3, H, W)
        for (dv, du), s in zip(shifts, same, strict=True):
            na = apad[1 + dv : 1 + dv + H, 1 + du : 1 + du + W] * s
            n_acc += na
            csum.addcmul_(cpad[:, 1 + dv : 1 + dv + H, 1 + du : 1 + du + W], na)
        # >= 3 agreeing followed neighbours and >= 60 % of the same-depth ones.
        fill = hit * (1.0 - accept) * _step(n_acc - 2.5) * _step(n_acc - 0.6 * n_same + 1e-3)
        if not bool(fill.any()):
            break
        rgb = torch.lerp(rgb, csum / n_acc.clamp(min=1.0), fill)
        accept = accept + fill
    return accept, rgb
