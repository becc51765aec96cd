"""Point splatting: world points + one pinhole camera -> rgb, depth, validity and point-id buffers.

Conventions (``spatia_py/geometry.py``): OpenCV camera (x right, y down, z forward), ``T_cam_world``
is world-to-camera, ``K`` in pixels, integer pixel coordinates are pixel centres, depth is metric z.

Footprint and depth-test rule
-----------------------------
``render/reference.py`` implements the same rule with an explicit per-point loop; the two agree
bit-for-bit. Arithmetic is IEEE float32, evaluated exactly as written (left to right, no fused or
reordered operations); ``round`` is round-half-to-even (``np.rint``); ``(x, y, z)`` is a point.

1. ``M = float32(K @ T_cam_world[:3, :])``: the ``3 x 4`` projection, multiplied in float64, then cast.
2. ``h_i = ((M[i,0] * x + M[i,1] * y) + M[i,2] * z) + M[i,3]`` for ``i = 0, 1, 2``.
   ``z_c = h_2`` is the point's depth (camera z; ``K``'s last row is ``[0, 0, 1]``).
3. The point is rendered only if ``near <= z_c <= far`` (exact comparison; ``far=None``: no upper
   bound, but a point with ``z_c = inf`` (float32 overflow) never wins a pixel; NaN never passes).
4. Its pixel is ``(col, row) = (round(h_0 / z_c), round(h_1 / z_c))``: the nearest pixel centre.
5. Footprint half-size ``r = clamp(round((fx * radius) / z_c), 0, max_radius_px)`` with
   ``fx = float32(K[0, 0])`` and ``radius`` in float32 (``radius=None``: ``r = 0``). The point
   covers every pixel ``(col + dc, row + dr)`` with ``|dc| <= r`` and ``|dr| <= r`` inside the
   image: a ``(2r+1) x (2r+1)`` square clipped at the border (its centre may lie outside).
6. Depth test: a pixel shows the covering point with the smallest ``z_c``; equal depths go to the
   lower point index.

How it is fast
--------------
A pixel's winner is the minimum of the 64-bit key ``(float32 bits of z_c) << 32 | slot``
(positive floats order like their bit patterns; a point's *slot* is its rank among the rendered
points in point order, so it breaks ties like the index), and the depth test with its tie-break is
one ``torch.scatter_reduce(amin)``. Each point is scattered once, at its centre pixel, into the
plane of its footprint size ``r`` (planes padded by ``max_radius_px`` so off-screen centres still
reach the image). A ``(2r+1)^2`` square splat is a ``2r+1`` box min-filter of such a plane, box
filters compose (``F_a(F_b(p)) = F_{a+b}(p)``) and distribute over ``min``, so all planes fold into
one with a 3x3 min-filter per radius step: ``acc = min(plane_r, F_1(acc))`` from the largest ``r``
down, each filter four ``np.minimum`` over whole flattened planes.

Per-point work (steps 1-4) runs in numpy on blocks of 64k points, with every pass over a block a
single vectorised operation: a transposing copy, the projection as written, two divisions and six
comparisons of the quotients and depth against precomputed float32 bounds (equivalent to testing
the rounded pixel, see ``_rint_bounds``), and a compaction of the rendered points. Before that, the
bounding boxes of 8k-point chunks are tested against the view (a conservative plane test, see
``_BoxCuller``) and chunks outside it skipped, which pays off for memories stored in spatially
coherent order (fused frame by frame); points in random order never cull, so after three
fruitless tests in a row the test backs off. The rendered points (a few per cent to all of them)
are splatted in batches of ~100k, and their colours gathered per batch in point order into
aligned per-slot arrays, from which the per-pixel colour gather at the end is cheap.

No torch element-wise ops: they open an OpenMP region per op, and where the cores are shared with
other jobs every region waits for its slowest thread (measured 10-100x slower per op under load).
Instead, when a second core is free, a second Python thread claims blocks too (numpy releases the
GIL inside each operation, and the only synchronisation is one wait per render); renders in which
the two threads do not actually run in parallel switch it off for a while (``_HelperThread``).
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from spatia_py.parallel import reset_after_fork, usable_cpu_count

__all__ = ["RenderOutput", "render_points", "render_points_batch", "check_render_inputs"]

_EMPTY_KEY = np.iinfo(np.int64).max
_LOW_32_BITS = 0xFFFFFFFF
_HIGH_WORD = 1 if sys.byteorder == "little" else 0
"""Index of an int64's high 32 bits in its view as two int32s."""
_BLOCK_POINTS = 65536
"""Points per block: numpy's per-call overhead stays small and a block's temporaries (~2 MB) in cache."""
_CULL_POINTS = 8192
"""Points per bounding box tested by the culler: finer boxes cull more of a coherent memory."""
_FLUSH_POINTS = 131072
"""Rendered points collected before they are splatted together."""
_MAX_UNCULLED_BLOCKS = 4
"""Most blocks processed in a row without a culling test once tests keep failing."""
_MIN_PARALLELISM = 1.3
"""CPU-seconds per second the two projecting threads must reach for the helper thread to stay on."""
_HELPER_BACKOFF_RENDERS = 8
"""Renders without the helper thread after one in which it did not run in parallel."""


@dataclass
class RenderOutput:
    """Buffers of one rendered view (or ``N`` stacked views from :func:`render_points_batch`)."""

    rgb: torch.Tensor
    """``uint8 (H, W, 3)``: colour of the winning point; 0 where empty."""
    depth: torch.Tensor
    """``float32 (H, W)``: metric z of the winning point; 0 where empty."""
    validity: torch.Tensor
    """``float32 (H, W)`` in [0, 1]: weight of the winning point (1.0 without weights); 0 where empty."""
    point_ids: torch.Tensor
    """``int64 (H, W)``: index into the input points of the winning point; -1 where empty."""

    @property
    def mask(self) -> torch.Tensor:
        """``bool (H, W)``: pixels covered by at least one point."""
        return self.point_ids >= 0

    def numpy(self) -> dict[str, np.ndarray]:
        """The buffers as numpy arrays: ``{"rgb", "depth", "validity", "point_ids"}``."""
        return {
            "rgb": self.rgb.cpu().numpy(),
            "depth": self.depth.cpu().numpy(),
            "validity": self.validity.cpu().numpy(),
            "point_ids": self.point_ids.cpu().numpy(),
        }


# --------------------------------------------------------------------------------------------
# input validation (shared with render/reference.py)
# --------------------------------------------------------------------------------------------


def _to_numpy(a: Any) -> np.ndarray:
    """Numpy view of a CPU tensor (copied from other devices) or ``np.asarray`` of anything else."""
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _small_float64(a: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(_to_numpy(a), dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a numeric {shape} array ({e})") from None
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN/inf): {arr.tolist()}")
    return arr


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_render_inputs(
    xyz: Any,
    rgb: Any,
    K: Any,
    T_cam_world: Any,
    width: int,
    height: int,
    *,
    radius: Any = None,
    weights: Any = None,
    max_radius_px: int = 3,
    near: float = 0.05,
    far: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate the arguments of :func:`render_points`; return ``K`` and ``T_cam_world`` as float64.

    Checks shapes and dtypes of the per-point arrays, finiteness of ``K``, ``T_cam_world`` and
    ``radius``, the range of ``weights``, the image size, ``max_radius_px``, ``near`` and ``far``.
    Point positions are not checked: non-finite points are simply never rendered.

    Raises:
        ValueError: naming the bad argument.
    """
    xyz = _to_numpy(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must have shape (P, 3), got {xyz.shape}")
    if xyz.dtype not in (np.float32, np.float64):
        raise ValueError(f"xyz must be float32 or float64, got dtype {xyz.dtype}")
    n = xyz.shape[0]
    if n >= 2**31:
        raise ValueError(f"xyz has {n} points; at most 2**31 - 1 are supported (point ids are 32-bit)")
    rgb = _to_numpy(rgb)
    if rgb.shape != (n, 3):
        raise ValueError(f"rgb must have shape (P, 3) = ({n}, 3) like xyz, got {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(
            f"rgb must be uint8 (0-255), got dtype {rgb.dtype}; convert float colours with "
            "(rgb_0_1 * 255).round().astype(np.uint8)"
        )
    if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
        raise ValueError(f"width and height must be positive integers, got width={width!r}, height={height!r}")
    if not (_is_int(max_radius_px) and max_radius_px >= 0):
        raise ValueError(f"max_radius_px must be an integer >= 0, got {max_radius_px!r}")
    if width + 2 * max_radius_px >= 2**24 or height + 2 * max_radius_px >= 2**24:
        raise ValueError(
            f"image size {width}x{height} is too large (pixel rows and columns must stay below 2**24 "
            "to be exact in float32)"
        )
    if not (isinstance(near, (int, float, np.floating)) and np.isfinite(near) and near > 0):
        raise ValueError(f"near must be a finite positive distance in metres, got {near!r}")
    if far is not None and not (isinstance(far, (int, float, np.floating)) and far >= near):
        raise ValueError(f"far must be None or a distance >= near ({near}), got {far!r}")
    K64 = _small_float64(K, "K", (3, 3))
    if K64[0, 0] <= 0 or K64[1, 1] <= 0:
        raise ValueError(f"K focal lengths must be positive pixels, got fx={K64[0, 0]}, fy={K64[1, 1]}")
    if K64[1, 0] != 0 or K64[2].tolist() != [0.0, 0.0, 1.0]:
        raise ValueError(f"K must have the form [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got {K64.tolist()}")
    T64 = _small_float64(T_cam_world, "T_cam_world", (4, 4))
    if T64[3].tolist() != [0.0, 0.0, 0.0, 1.0]:
        raise ValueError(
            f"T_cam_world last row must be [0, 0, 0, 1], got {T64[3].tolist()} "
            "(it is the 4x4 world-to-camera transform, the inverse of T_world_cam)"
        )
    if radius is not None:
        r = _to_numpy(radius)
        if r.shape not in ((), (n,)):
            raise ValueError(f"radius must be None, a float or shape (P,) = ({n},), got shape {r.shape}")
        if r.dtype.kind not in "fiu":
            raise ValueError(f"radius must be numeric (metres), got dtype {r.dtype}")
        if r.size and not (np.isfinite(r).all() and r.min() >= 0):
            raise ValueError("radius must be finite and >= 0 (world-space splat radius in metres)")
    if weights is not None:
        w = _to_numpy(weights)
        if w.shape != (n,):
            raise ValueError(f"weights must have shape (P,) = ({n},), got {w.shape}")
        if w.dtype.kind not in "fiu":
            raise ValueError(f"weights must be numeric in [0, 1], got dtype {w.dtype}")
        if w.size and not (w.min() >= 0 and w.max() <= 1):
            raise ValueError(f"weights must lie in [0, 1], got range [{w.min()}, {w.max()}]")
    return K64, T64


def _float32_at_least(value: float) -> np.float32:
    """Smallest float32 >= ``value``: for float32 ``z``, ``z >= value`` iff ``z >= result``."""
    with np.errstate(over="ignore"):  # beyond the float32 range: inf
        f = np.float32(value)
    return f if float(f) >= value else np.nextafter(f, np.float32(np.inf))


def _float32_at_most(value: float) -> np.float32:
    """Largest float32 <= ``value``: for float32 ``z``, ``z <= value`` iff ``z <= result``."""
    with np.errstate(over="ignore"):  # beyond the float32 range: inf, stepped back below
        f = np.float32(value)
    return f if float(f) <= value else np.nextafter(f, np.float32(-np.inf))


def _rint_bounds(lo: int, hi: int) -> tuple[np.float32, np.float32]:
    """Float32 ``(a, b)`` with ``lo <= round(u) <= hi`` iff ``a <= u <= b`` for float32 ``u`` (half to even).

    ``round`` is monotonic, so the set is an interval; its ends lie within an ulp or two of
    ``lo - 0.5`` and ``hi + 0.5`` (``|lo|, |hi| < 2**24``), and the loops step onto them exactly.
    """
    down, up = np.float32(-np.inf), np.float32(np.inf)
    a = np.float32(lo - 0.5)
    while np.rint(np.nextafter(a, down)) >= lo:
        a = np.nextafter(a, down)
    while np.rint(a) < lo:
        a = np.nextafter(a, up)
    b = np.float32(hi + 0.5)
    while np.rint(np.nextafter(b, up)) <= hi:
        b = np.nextafter(b, up)
    while np.rint(b) > hi:
        b = np.nextafter(b, down)
    return a, b


# --------------------------------------------------------------------------------------------
# renderer
# --------------------------------------------------------------------------------------------


def render_points(
    xyz: torch.Tensor | np.ndarray,  # float32 (P, 3) world points (float64 is cast)
    rgb: torch.Tensor | np.ndarray,  # uint8 (P, 3)
    K: torch.Tensor | np.ndarray,  # (3, 3) intrinsics in pixels
    T_cam_world: torch.Tensor | np.ndarray,  # (4, 4) world-to-camera
    width: int,
    height: int,
    *,
    radius: float | torch.Tensor | np.ndarray | None = None,  # scalar or (P,) world-space radius in m
    weights: torch.Tensor | np.ndarray | None = None,  # (P,) in [0, 1]
    max_radius_px: int = 3,
    near: float = 0.05,
    far: float | None = None,
) -> RenderOutput:
    """Splat coloured points into a ``height x width`` camera with a z-buffer.

    Every point covers the ``(2r+1) x (2r+1)`` pixel square centred on the pixel nearest to its
    projection, ``r = clamp(round(fx * radius / z), 0, max_radius_px)``; each pixel shows the
    nearest covering point, ties going to the lower point index. The exact float32 rule is in this
    module's docstring; ``render.reference.render_points_reference`` is the slow, bit-identical
    reference. Runs on the CPU (tensors on other devices are copied) and returns CPU tensors.

    Args:
        xyz: ``float32 (P, 3)`` world points (torch or numpy). Non-finite points are skipped.
        rgb: ``uint8 (P, 3)`` point colours.
        K: ``(3, 3)`` pinhole intrinsics ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` in pixels.
        T_cam_world: ``(4, 4)`` world-to-camera transform (inverse of the camera's ``T_world_cam``).
        width, height: image size in pixels.
        radius: world-space splat radius in metres, one float or ``(P,)``; ``None`` = one pixel per point.
        weights: ``(P,)`` per-point weights in [0, 1], returned as ``validity`` of the winning point.
        max_radius_px: largest footprint half-size in pixels.
        near, far: depth range in metres (inclusive); ``far=None`` means unbounded.

    Returns:
        :class:`RenderOutput`: ``rgb uint8 (H, W, 3)``, ``depth float32 (H, W)``,
        ``validity float32 (H, W)``, ``point_ids int64 (H, W)``.

    Raises:
        ValueError: a bad argument, named in the message.
    """
    K64, T64 = check_render_inputs(
        xyz,
        rgb,
        K,
        T_cam_world,
        width,
        height,
        radius=radius,
        weights=weights,
        max_radius_px=max_radius_px,
        near=near,
        far=far,
    )
    xyz_np, rgb_np = _to_numpy(xyz), _to_numpy(rgb)
    W, H, R = int(width), int(height), int(max_radius_px)
    n_points = xyz_np.shape[0]
    if n_points == 0:
        return _empty_output(W, H)
    M64 = K64 @ T64[:3, :]
    block = min(_BLOCK_POINTS, n_points)
    n_blocks = -(-n_points // block)
    claims = itertools.count()  # next() is atomic under the GIL: each block goes to one thread
    projected: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}

    splatter = _Splatter(W, H, R, np.float32(K64[0, 0]), None if radius is None else _to_numpy(radius))
    survivors = _Survivors(_FLUSH_POINTS, splatter, rgb_np)
    appended = 0  # blocks handed to the survivors, in block order so that slots follow the point order

    def append_projected() -> None:
        nonlocal appended
        while appended in projected:
            for uvz, index in projected.pop(appended):
                survivors.add(uvz, index)
            appended += 1

    def project_blocks(after_each: Callable[[], None] | None = None) -> float:
        """Claim and project blocks until none is left; return this thread's CPU seconds."""
        cpu_start = time.thread_time()
        projector = _Projector(M64, W, H, R, near, far, block)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # non-finite points fail the tests
            while (i := next(claims)) < n_blocks:
                projected[i] = projector.project(xyz_np, i * block, min((i + 1) * block, n_points))
                if after_each is not None:
                    after_each()
        return time.thread_time() - cpu_start

    if n_blocks > 1:  # this thread splats what is ready between its blocks
        _HELPER.run_alongside(lambda: project_blocks(append_projected), project_blocks)
    else:
        project_blocks()
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        append_projected()
        survivors.flush()
    best = splatter.fold()
    if best is None:
        return _empty_output(W, H)
    return _unpack(best, *survivors.gathered(), None if weights is None else _to_numpy(weights))


class _Projector:
    """Rule steps 1-4 for blocks of points: which are rendered, with their depth and pixel.

    Owns the float32 scratch buffers of one block (``(3, block)`` coordinates and projections).
    """

    def __init__(self, M64: np.ndarray, width: int, height: int, pad: int, near: float, far: float | None, block: int):
        M = M64.astype(np.float32)
        # Rows in the order of the scratch buffer: h_0 (then col), h_1 (then row), z_c.
        self.coefficients = [tuple(np.float32(m) for m in M[i]) for i in (0, 1, 2)]
        self.near = _float32_at_least(near)
        # z_c = inf never wins a pixel in the reference (its z-buffer starts at inf): test it even for far=None.
        self.far = np.float32(np.finfo(np.float32).max) if far is None else _float32_at_most(far)
        # Centres further than ``pad`` pixels outside the image cannot reach it; testing the
        # quotient against these bounds is the same as testing its rounded value.
        self.col_bounds = _rint_bounds(-pad, width - 1 + pad)
        self.row_bounds = _rint_bounds(-pad, height - 1 + pad)
        self.culler = _BoxCuller(M64, width, height, pad, near, far)
        self.cull_misses = 0  # blocks in a row in which the culler skipped nothing
        self.unculled_blocks = 0  # blocks still to process without asking the culler
        self.coords = np.empty((3, block), dtype=np.float32)
        self.h = np.empty((3, block), dtype=np.float32)
        self.tmp = np.empty(block, dtype=np.float32)
        self.keep = np.empty(block, dtype=bool)
        self.test = np.empty(block, dtype=bool)

    def project(self, xyz: np.ndarray, start: int, stop: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The rendered points among ``xyz[start:stop]`` (float32 or float64 ``(P, 3)``), in point order:
        ``[(uvz float32 (3, m), index int64 (m,)), ...]``, ``uvz`` holding ``h_0 / z_c``, ``h_1 / z_c``, ``z_c``."""
        n = stop - start
        c = self.coords[:, :n]
        np.copyto(c, xyz[start:stop].T, casting="same_kind")  # transpose (and cast float64)
        if self.unculled_blocks:
            self.unculled_blocks -= 1
            runs = [(0, n)]
        else:
            runs = self.culler.runs_in_view(c, min(_CULL_POINTS, n))
            # Points in no spatial order (every box spans the scene) never cull: back off
            # exponentially (up to _MAX_UNCULLED_BLOCKS) after three fruitless tests in a row.
            self.cull_misses = self.cull_misses + 1 if runs == [(0, n)] else 0
            if self.cull_misses >= 3:
                self.unculled_blocks = min(2 ** (self.cull_misses - 3), _MAX_UNCULLED_BLOCKS)
        return [part for lo, hi in runs if (part := self._project_run(c[:, lo:hi], start + lo)) is not None]

    def _project_run(self, c: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray] | None:
        n = c.shape[1]
        x, y, z = c
        h, tmp = self.h[:, :n], self.tmp[:n]
        for out, (m0, m1, m2, m3) in zip(h, self.coefficients, strict=True):  # ((m0 x + m1 y) + m2 z) + m3
            np.multiply(x, m0, out=out)
            np.add(out, np.multiply(y, m1, out=tmp), out=out)
            np.add(out, np.multiply(z, m2, out=tmp), out=out)
            np.add(out, m3, out=out)
        u, v, z_c = h
        np.divide(u, z_c, out=u)
        np.divide(v, z_c, out=v)
        keep, test = self.keep[:n], self.test[:n]
        np.greater_equal(z_c, self.near, out=keep)  # NaN fails every comparison
        keep &= np.less_equal(z_c, self.far, out=test)
        keep &= np.greater_equal(u, self.col_bounds[0], out=test)
        keep &= np.less_equal(u, self.col_bounds[1], out=test)
        keep &= np.greater_equal(v, self.row_bounds[0], out=test)
        keep &= np.less_equal(v, self.row_bounds[1], out=test)
        local = np.flatnonzero(keep)
        return (h.take(local, axis=1), local + offset) if local.size else None


class _Survivors:
    """Rendered points ``(h_0 / z_c, h_1 / z_c, z_c, index)``, splatted in large batches.

    Splatting a few 100k points at once instead of each block's few thousand saves the per-call
    overhead of a dozen numpy operations per block. Each rendered point gets a *slot*, its rank
    among the rendered points; points are added in point order, so slots break depth ties like the
    point index. The keys carry slots, and the colours are gathered per batch in slot order
    (ascending point indices: a forward sweep through ``rgb``) into aligned per-slot arrays, from
    which the per-pixel gather at the end is fast; gathering per pixel straight from ``rgb`` reads
    it in random order, 3-byte item by 3-byte item.
    """

    def __init__(self, capacity: int, splatter: _Splatter, rgb: np.ndarray):
        self.capacity = capacity
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.count = 0
        self.splatter = splatter
        self.colours = np.ascontiguousarray(rgb).view(np.dtype((np.void, 3))).reshape(-1)
        self.slots = 0
        self.index_parts: list[np.ndarray] = []
        self.red_green_parts: list[np.ndarray] = []
        self.blue_parts: list[np.ndarray] = []

    def add(self, uvz: np.ndarray, index: np.ndarray) -> None:
        """Add points ``uvz float32 (3, m)``, ``index int64 (m,)`` (from :meth:`_Projector.project`)."""
        self.parts.append((uvz, index))
        self.count += index.size
        if self.count >= self.capacity:
            self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        if len(self.parts) == 1:
            ((uvz, index),) = self.parts
        else:
            uvz = np.concatenate([p[0] for p in self.parts], axis=1)
            index = np.concatenate([p[1] for p in self.parts])
        n = index.size
        u, v, z = uvz  # uvz is ours: splat may overwrite it
        self.splatter.splat(z, u, v, np.arange(self.slots, self.slots + n), index)
        colours = self.colours.take(index).view(np.uint8).reshape(n, 3)
        self.index_parts.append(index)
        red_green = np.empty(n, dtype=np.uint16)
        np.copyto(red_green, np.ndarray((n,), np.uint16, buffer=colours, strides=(3,)))  # unaligned view
        self.red_green_parts.append(red_green)
        self.blue_parts.append(np.ascontiguousarray(colours[:, 2]))
        self.slots += n
        self.parts, self.count = [], 0

    def gathered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per slot: point index ``int64 (S,)``, red and green ``uint16 (S,)`` (native order), blue ``uint8 (S,)``."""
        parts = (self.index_parts, self.red_green_parts, self.blue_parts)
        if len(self.index_parts) == 1:
            return tuple(p[0] for p in parts)
        return tuple(np.concatenate(p) for p in parts)


class _Splatter:
    """Rule steps 5-6: per-radius planes of minimum keys, folded into one image of keys."""

    def __init__(self, width: int, height: int, pad: int, fx: np.float32, radius: np.ndarray | None):
        self.width, self.height, self.pad = width, height, pad
        self.pad_w, self.pad_h = width + 2 * pad, height + 2 * pad
        self.plane = self.pad_w * self.pad_h
        self.n_planes = pad + 1 if radius is not None and pad > 0 else 1
        self.fx, self.radius = fx, radius
        if radius is not None and radius.shape == ():
            self.fx_radius = fx * np.float32(radius)  # float32 product, as in the per-point case
        # Pixel arithmetic on integers is exact in float32 below 2**24, else in float64.
        self.index_dtype = np.float32 if self.n_planes * self.plane <= 2**24 else np.float64
        # Planes are filled on first use: most renders touch one or two footprint sizes.
        self.planes = np.empty(self.n_planes * self.plane, dtype=np.int64)
        self.planes_t = torch.from_numpy(self.planes)
        self.filled = np.zeros(self.n_planes, dtype=bool)

    def splat(self, z: np.ndarray, u: np.ndarray, v: np.ndarray, slot: np.ndarray, index: np.ndarray) -> None:
        """Scatter ``k`` points: depth ``z``, pixel quotients ``u, v`` (float32 ``(k,)``, overwritten),
        ``slot int64 (k,)`` (the key's tie-break) and point ``index int64 (k,)``."""
        col, row = np.rint(u, out=u), np.rint(v, out=v)
        flat = np.multiply(row, self.pad_w, dtype=self.index_dtype)
        flat += col
        flat += self.pad * self.pad_w + self.pad
        r_lo = r_hi = 0
        if self.n_planes > 1 and self.radius.shape == ():
            # r = round(fx radius / z) falls as z grows, so the extreme depths bound it; usually one
            # footprint size covers the whole batch and no per-point r is needed.
            r_lo, r_hi = (int(self._radius_px(d)) for d in (z.max(), z.min()))
            if r_lo == r_hi:
                flat += r_lo * self.plane
            else:
                flat += np.multiply(self._radius_px(z), self.plane, dtype=self.index_dtype)
        elif self.n_planes > 1:
            r_px = np.multiply(self.fx, self.radius.take(index).astype(np.float32))
            np.divide(r_px, z, out=r_px)
            r_px = np.clip(np.rint(r_px, out=r_px), 0, self.n_planes - 1, out=r_px)
            r_lo, r_hi = int(r_px.min()), int(r_px.max())
            if r_hi:
                flat += np.multiply(r_px, self.plane, dtype=self.index_dtype)
        for r in range(r_lo, r_hi + 1):
            if not self.filled[r]:
                self.planes[r * self.plane : (r + 1) * self.plane] = _EMPTY_KEY
                self.filled[r] = True
        keys = z.view(np.int32).astype(np.int64)
        keys <<= 32
        keys |= slot  # the low word holds the slot (< 2**31)
        self.planes_t.scatter_reduce_(0, torch.from_numpy(flat.astype(np.int64)), torch.from_numpy(keys), reduce="amin")

    def _radius_px(self, z: np.ndarray | np.float32) -> np.ndarray | np.float32:
        """Footprint half-size ``clamp(round((fx * radius) / z), 0, R)`` for the scalar radius (float32)."""
        return np.clip(np.rint(np.divide(self.fx_radius, z)), 0, self.n_planes - 1)

    def fold(self) -> np.ndarray | None:
        """The minimum key of each pixel, ``int64 (H, W)`` (a view); ``None`` if nothing was splatted.

        ``min_r F_r(plane_r)`` cropped to the image, ``F_r`` being the ``(2r+1)^2`` box minimum,
        computed as ``acc = min(plane_r, F_1(acc))`` from the largest filled ``r`` down to 0.
        """
        filled = np.flatnonzero(self.filled)
        if filled.size == 0:
            return None
        planes = self.planes.reshape(self.n_planes, self.plane)
        acc = planes[filled[-1]]
        for r in range(int(filled[-1]) - 1, -1, -1):
            acc = _min_filter_3x3_flat(acc, self.pad_w)
            if self.filled[r]:
                np.minimum(acc, planes[r], out=acc)
        p = self.pad
        return acc.reshape(self.pad_h, self.pad_w)[p : p + self.height, p : p + self.width]


class _BoxCuller:
    """Finds the runs of points of a block that may be rendered, from bounding boxes of chunks.

    Built from ``M = K @ T_cam_world[:3] (3, 4)``: linear forms ``a`` with ``a . (x, y, z, 1) >= 0``
    for every rendered point — the near (and far) plane and the four image sides widened by half a
    pixel beyond the ``pad`` pixels a footprint can reach (a rendered point has ``z > 0`` and
    ``col >= -pad``, so ``h_0 / z > -pad - 1``; the half pixel absorbs float32 rounding).
    """

    def __init__(self, M: np.ndarray, width: int, height: int, pad: int, near: float, far: float | None):
        h0, h1, z = M
        one = np.array([0.0, 0.0, 0.0, 1.0])
        forms = [
            z - near * one,
            h0 + (pad + 1) * z,
            (width + pad) * z - h0,
            h1 + (pad + 1) * z,
            (height + pad) * z - h1,
        ]
        if far is not None:
            forms.append(far * one - z)
        A = np.stack(forms)
        # A form's maximum over a box ``[lo, hi]`` is at a corner: ``A+ @ hi + A- @ lo + b``. Adding the
        # tolerance ``1e-5 * (|A| @ max(|lo|, |hi|) + |b|)``, far above float32 rounding of the
        # per-point test, keeps the decision conservative; all of it is one product with a
        # ``(9, k)`` stack of ``hi``, ``lo`` and ``max(-lo, hi) = max(|lo|, |hi|)``.
        self.G = np.hstack([np.maximum(A[:, :3], 0.0), np.minimum(A[:, :3], 0.0), 1e-5 * np.abs(A[:, :3])])
        self.g = A[:, 3:] + 1e-5 * np.abs(A[:, 3:])

    def outside(self, box: np.ndarray) -> np.ndarray:
        """``bool (k,)``: every point of box ``j`` fails one of the forms; ``box (9, k)`` stacks
        ``hi``, ``lo`` and ``max(-lo, hi)`` (``(3, k)`` each). NaN bounds never cull.

        Called inside the renderer's ``np.errstate``: infinite bounds may make NaN (``inf * 0``).
        """
        upper = self.G @ box
        upper += self.g
        return (upper < 0.0).any(axis=0)

    def runs_in_view(self, c: np.ndarray, chunk: int) -> list[tuple[int, int]]:
        """``[(start, stop), ...]``: maximal runs of the chunks of ``c (3, n)`` that are not outside."""
        n = c.shape[1]
        starts = np.arange(0, n, chunk)
        box = np.empty((9, starts.size), dtype=np.float32)
        np.maximum.reduceat(c, starts, axis=1, out=box[0:3])
        np.minimum.reduceat(c, starts, axis=1, out=box[3:6])
        np.maximum(np.negative(box[3:6]), box[0:3], out=box[6:9])
        runs: list[tuple[int, int]] = []
        for i, out in enumerate(self.outside(box).tolist()):
            if out:
                continue
            lo, hi = i * chunk, min((i + 1) * chunk, n)
            if runs and runs[-1][1] == lo:
                runs[-1] = (runs[-1][0], hi)
            else:
                runs.append((lo, hi))
        return runs


class _HelperThread:
    """A second thread for the per-point work, used while it measurably runs alongside the caller's.

    numpy releases the GIL inside each operation, so two threads projecting blocks run in parallel
    when two cores are free, and the only synchronisation is the final wait: no per-operation
    barrier that stalls when another job holds a core (as torch's OpenMP regions do). Without a
    free core (another job is busy, or the scheduler grants this process one core's share) the
    second thread only adds GIL hand-overs, a few per cent: a render in which the two threads
    used less than ``_MIN_PARALLELISM`` CPU-seconds per second turns the helper off for the next
    ``_HELPER_BACKOFF_RENDERS`` renders, after which it is tried again.
    """

    def __init__(self) -> None:
        self.enabled = usable_cpu_count() > 1
        self.renders_off = 0
        self.renders_helped = 0  # renders in which the helper thread took part (for benchmarks)
        self.pool: ThreadPoolExecutor | None = None
        self.lock = threading.Lock()
        reset_after_fork(self)

    def _after_fork(self) -> None:
        """A forked child has the pool object but not its thread, and a lock another thread held
        at fork() stays held there: a fresh lock and no pool."""
        self.lock = threading.Lock()
        self.pool = None

    def run_alongside(self, work: Callable[[], float], helper_work: Callable[[], float]) -> None:
        """Run ``work`` here and, if useful, ``helper_work`` on the helper thread at once; return when
        both are done. Each returns its thread's CPU seconds; they must share the work out between them."""
        with self.lock:  # renders on several threads share the helper and its counters
            skip = not self.enabled or self.renders_off > 0
            if skip:
                self.renders_off = max(self.renders_off - 1, 0)
            else:
                new_thread = self.pool is None
                if new_thread:
                    self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render_points")
                pool = self.pool
        if skip:
            work()
            return
        start = time.perf_counter()
        helper = pool.submit(helper_work)
        cpu = work()
        if helper.cancel():  # still queued (the helper is busy with another render): all done here
            return
        cpu += helper.result()
        with self.lock:
            self.renders_helped += 1
            # The first render also waits for the thread to start: do not judge by it.
            if not new_thread and cpu < _MIN_PARALLELISM * (time.perf_counter() - start):
                self.renders_off = _HELPER_BACKOFF_RENDERS


_HELPER = _HelperThread()


def _min_filter_3x3_flat(a: np.ndarray, row_length: int) -> np.ndarray:
    """3x3 box minimum of a flattened ``int64`` image with rows of ``row_length``, same layout.

    Works on whole flat arrays (contiguous, so vectorised); the first and last row and column of the
    result are garbage (rows wrap around), so after ``k`` filters ``k`` pixels along each border are.
    """
    w = row_length
    horizontal = np.empty_like(a)
    np.minimum(a[:-2], a[1:-1], out=horizontal[1:-1])
    np.minimum(horizontal[1:-1], a[2:], out=horizontal[1:-1])
    out = np.empty_like(a)
    np.minimum(horizontal[: -2 * w], horizontal[w:-w], out=out[w:-w])
    np.minimum(out[w:-w], horizontal[2 * w :], out=out[w:-w])
    return out


def _empty_output(width: int, height: int) -> RenderOutput:
    return RenderOutput(
        rgb=torch.zeros((height, width, 3), dtype=torch.uint8),
        depth=torch.zeros((height, width), dtype=torch.float32),
        validity=torch.zeros((height, width), dtype=torch.float32),
        point_ids=torch.full((height, width), -1, dtype=torch.int64),
    )


def _unpack(
    best: np.ndarray, index: np.ndarray, red_green: np.ndarray, blue: np.ndarray, weights: np.ndarray | None
) -> RenderOutput:
    """Split winning keys ``int64 (H, W)`` into the output buffers, via the per-slot point ``index``
    and colours (:meth:`_Survivors.gathered`)."""
    height, width = best.shape
    depth = np.empty((height, width), dtype=np.float32)
    np.copyto(depth.view(np.int32), best.view(np.int32)[:, _HIGH_WORD::2])  # the float32 bits of z_c
    empty = np.flatnonzero(depth.view(np.int32) == _EMPTY_KEY >> 32)  # usually few: fill them by index
    depth.reshape(-1)[empty] = 0.0
    slot = (best & _LOW_32_BITS).reshape(-1)
    slot[empty] = 0
    point_ids = index.take(slot).reshape(height, width)
    point_ids.reshape(-1)[empty] = -1
    # Two aligned takes (2 bytes, 1 byte) and two strided copies beat one take of 3-byte items.
    out_rgb = np.empty((height, width, 3), dtype=np.uint8)
    np.copyto(np.ndarray((height * width,), np.uint16, buffer=out_rgb, strides=(3,)), red_green.take(slot))
    np.copyto(out_rgb[..., 2].reshape(-1), blue.take(slot))
    out_rgb.reshape(-1, 3)[empty] = 0
    if weights is None:
        validity = np.ones((height, width), dtype=np.float32)
    else:
        validity = weights.take(point_ids).astype(np.float32)  # -1 reads a real weight, zeroed below
    validity.reshape(-1)[empty] = 0.0
    return RenderOutput(
        rgb=torch.from_numpy(out_rgb),
        depth=torch.from_numpy(depth),
        validity=torch.from_numpy(validity),
        point_ids=torch.from_numpy(point_ids),
    )


def render_points_batch(
    xyz: torch.Tensor | np.ndarray,  # float32 (P, 3)
    rgb: torch.Tensor | np.ndarray,  # uint8 (P, 3)
    K: torch.Tensor | np.ndarray,  # (3, 3) shared or (N, 3, 3) per camera
    T_cam_world: torch.Tensor | np.ndarray,  # (N, 4, 4) world-to-camera per camera
    width: int,
    height: int,
    **kwargs: Any,
) -> RenderOutput:
    """:func:`render_points` for ``N`` cameras of one size; buffers stacked to ``(N, H, W, ...)``.

    A plain loop over cameras; ``kwargs`` are those of :func:`render_points`.
    """
    T_np = _to_numpy(T_cam_world)
    if T_np.ndim != 3 or T_np.shape[1:] != (4, 4):
        raise ValueError(f"T_cam_world must have shape (N, 4, 4), got {T_np.shape}")
    K_np = _to_numpy(K)
    if K_np.shape not in ((3, 3), (len(T_np), 3, 3)):
        raise ValueError(f"K must have shape (3, 3) or (N, 3, 3) = ({len(T_np)}, 3, 3), got {K_np.shape}")
    outs = [
        render_points(xyz, rgb, K_np if K_np.ndim == 2 else K_np[i], T_np[i], width, height, **kwargs)
        for i in range(len(T_np))
    ]
    if not outs:
        return RenderOutput(
            rgb=torch.zeros((0, height, width, 3), dtype=torch.uint8),
            depth=torch.zeros((0, height, width), dtype=torch.float32),
            validity=torch.zeros((0, height, width), dtype=torch.float32),
            point_ids=torch.zeros((0, height, width), dtype=torch.int64),
        )
    return RenderOutput(
        *(torch.stack([getattr(o, k) for o in outs]) for k in ("rgb", "depth", "validity", "point_ids"))
    )
