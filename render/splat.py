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
   bound; NaN never passes).
4. Its pixel is ``(col, row) = (round(h_0 / z_c), round(h_1 / z_c))``: the nearest pixel centre.
5. Footprint half-size ``r = clamp(round((fx * radius) / z_c), 0, max_radius_px)`` with
   ``fx = float32(K[0, 0])`` and ``radius`` in float32 (``radius=None``: ``r = 0``). The point
   covers every pixel ``(col + dc, row + dr)`` with ``|dc| <= r`` and ``|dr| <= r`` inside the
   image: a ``(2r+1) x (2r+1)`` square clipped at the border (its centre may lie outside).
6. Depth test: a pixel shows the covering point with the smallest ``z_c``; equal depths go to the
   lower point index.

How it is fast
--------------
A pixel's winner is the minimum of the 64-bit key ``(float32 bits of z_c) << 32 | index``
(positive floats order like their bit patterns), so the depth test with its tie-break is one
``torch.scatter_reduce(amin)``. Each point is scattered once, at its centre pixel, into the plane
of its footprint size ``r`` (planes padded by ``max_radius_px`` so off-screen centres still reach
the image). A ``(2r+1)^2`` square splat is a ``2r+1`` box min-filter of such a plane, box filters
compose (``F_a(F_b(p)) = F_{a+b}(p)``) and distribute over ``min``, so all planes fold into one
with a 3x3 min-filter per radius step: ``acc = min(plane_r, F_1(acc))`` from the largest ``r`` down.

Per-point work runs in numpy on cache-sized blocks of points, single-threaded by construction:
torch's element-wise CPU ops open an OpenMP region per op, and where the cores are shared with
other jobs every region waits for its slowest thread (measured 10-100x slower per op under load),
while one thread does a pass over 1M points in a few milliseconds. A block whose bounding box lies
outside the view (a conservative plane test, see ``_BoxCuller``) is skipped whole, which pays off
for memories stored in spatially coherent order (fused frame by frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["RenderOutput", "render_points", "render_points_batch", "check_render_inputs"]

_EMPTY_KEY = np.iinfo(np.int64).max
_LOW_32_BITS = 0xFFFFFFFF
_BLOCK_POINTS = 32768
"""Points per block: a block's float32 temporaries (~1 MB in all) stay in L2 cache."""


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
    f = np.float32(value)
    return f if float(f) >= value else np.nextafter(f, np.float32(np.inf))


def _float32_at_most(value: float) -> np.float32:
    """Largest float32 <= ``value``: for float32 ``z``, ``z <= value`` iff ``z <= result``."""
    f = np.float32(value)
    return f if float(f) <= value else np.nextafter(f, np.float32(-np.inf))


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
    M = (K64 @ T64[:3, :]).astype(np.float32)
    fx = np.float32(K64[0, 0])
    radius_np = None if radius is None else _to_numpy(radius)
    if radius_np is not None and radius_np.shape == ():
        fx_radius = fx * np.float32(radius_np)  # float32 product, as in the per-point case
    near32 = _float32_at_least(near)
    far32 = np.float32(np.finfo(np.float32).max) if far is None else _float32_at_most(far)
    # Centres further than R pixels outside the image cannot reach it.
    col_lo, col_hi = np.float32(-R), np.float32(W - 1 + R)
    row_lo, row_hi = np.float32(-R), np.float32(H - 1 + R)

    pad_w, pad_h = W + 2 * R, H + 2 * R
    plane = pad_w * pad_h
    n_planes = R + 1 if radius is not None else 1
    # Planes are filled on first use: most renders touch one or two footprint sizes.
    planes = np.empty(n_planes * plane, dtype=np.int64)
    planes_t = torch.from_numpy(planes)
    points_per_radius = np.zeros(n_planes, dtype=np.int64)

    block = min(_BLOCK_POINTS, max(n_points, 1))
    coords = np.empty((3, block), dtype=np.float32)
    h_buf = np.empty((3, block), dtype=np.float32)
    tmp_buf = np.empty(block, dtype=np.float32)
    keep_buf = np.empty(block, dtype=bool)
    test_buf = np.empty(block, dtype=bool)

    culler = _BoxCuller(K64 @ T64[:3, :], W, H, R, near, far)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # non-finite points fail the tests
        for start in range(0, n_points, block):
            n = min(block, n_points - start)
            c = coords[:, :n]
            np.copyto(c, xyz_np[start : start + n].T, casting="same_kind")  # transpose (and cast float64)
            if culler.outside(c.min(axis=1).astype(np.float64), c.max(axis=1).astype(np.float64)):
                continue
            x, y, z = c
            h0, h1, z_c = h_buf[0, :n], h_buf[1, :n], h_buf[2, :n]
            tmp, keep, test = tmp_buf[:n], keep_buf[:n], test_buf[:n]
            for i, h in ((2, z_c), (0, h0), (1, h1)):
                np.multiply(x, M[i, 0], out=h)
                h += np.multiply(y, M[i, 1], out=tmp)
                h += np.multiply(z, M[i, 2], out=tmp)
                h += M[i, 3]
            col = np.rint(np.divide(h0, z_c, out=h0), out=h0)
            row = np.rint(np.divide(h1, z_c, out=h1), out=h1)

            np.greater_equal(z_c, near32, out=keep)  # NaN fails every comparison
            keep &= np.less_equal(z_c, far32, out=test)
            keep &= np.greater_equal(col, col_lo, out=test)
            keep &= np.less_equal(col, col_hi, out=test)
            keep &= np.greater_equal(row, row_lo, out=test)
            keep &= np.less_equal(row, row_hi, out=test)
            local = np.flatnonzero(keep)
            if local.size == 0:
                continue
            z_k = z_c.take(local)
            flat = row.take(local).astype(np.int64)
            flat *= pad_w
            flat += col.take(local).astype(np.int64)
            flat += R * pad_w + R
            keys = z_k.view(np.int32).astype(np.int64)
            keys <<= 32
            keys |= local
            keys += start  # the low word holds the global point index (< 2**31, so no carry)

            if n_planes > 1:
                if radius_np.shape == ():
                    r_px = np.divide(fx_radius, z_k)
                else:
                    r_px = np.multiply(fx, radius_np[start : start + n].take(local).astype(np.float32))
                    np.divide(r_px, z_k, out=r_px)
                r_int = np.clip(np.rint(r_px, out=r_px), 0, R, out=r_px).astype(np.int64)
                block_counts = np.bincount(r_int, minlength=n_planes)
                r_int *= plane
                flat += r_int
            else:
                block_counts = np.array([local.size])
            for r in np.flatnonzero((block_counts > 0) & (points_per_radius == 0)):
                planes[r * plane : (r + 1) * plane] = _EMPTY_KEY
            points_per_radius += block_counts
            planes_t.scatter_reduce_(0, torch.from_numpy(flat), torch.from_numpy(keys), reduce="amin")

    best = _fold_planes(planes.reshape(n_planes, pad_h, pad_w), points_per_radius, R, W, H)
    return _unpack(best, rgb_np, None if weights is None else _to_numpy(weights))


class _BoxCuller:
    """Decides whether a whole block of points can be skipped from its bounding box.

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
        self.A_pos, self.A_neg, self.A_abs = np.maximum(A[:, :3], 0.0), np.minimum(A[:, :3], 0.0), np.abs(A[:, :3])
        self.b, self.b_abs = A[:, 3], np.abs(A[:, 3])

    def outside(self, lo: np.ndarray, hi: np.ndarray) -> bool:
        """True if every point of the box ``[lo, hi] (3,)`` fails one of the forms.

        A linear form's maximum over a box is at a corner; the tolerance, far above float32
        rounding of the per-point test, keeps the decision conservative. NaN bounds never cull.
        """
        upper = self.A_pos @ hi + self.A_neg @ lo + self.b
        scale = self.A_abs @ np.maximum(np.abs(lo), np.abs(hi)) + self.b_abs
        with np.errstate(invalid="ignore"):
            return bool((upper < -1e-5 * scale).any())


def _min_filter_3x3(a: np.ndarray) -> np.ndarray:
    """3x3 box minimum of ``int64 (h, w)``, valid part only: ``(h - 2, w - 2)``."""
    horizontal = np.minimum(a[:, :-2], a[:, 1:-1])
    np.minimum(horizontal, a[:, 2:], out=horizontal)
    out = np.minimum(horizontal[:-2], horizontal[1:-1])
    return np.minimum(out, horizontal[2:], out=out)


def _fold_planes(planes: np.ndarray, points_per_radius: np.ndarray, pad: int, width: int, height: int) -> np.ndarray:
    """Combine per-radius centre planes ``int64 (n_planes, H + 2 pad, W + 2 pad)`` into ``(H, W)`` keys.

    Plane ``r`` holds the keys of points with footprint ``r`` at their centre pixel (planes without
    points are never read: they may be unfilled); the result is
    ``min_r F_r(plane_r)`` cropped to the image, ``F_r`` being the ``(2r+1)^2`` box minimum,
    computed as ``acc = min(plane_r, F_1(acc))`` from the largest non-empty ``r`` down to 0.
    """
    nonempty = np.flatnonzero(points_per_radius)
    if nonempty.size == 0:
        return np.full((height, width), _EMPTY_KEY, dtype=np.int64)
    top = int(nonempty[-1])
    acc = planes[top]
    acc_pad = pad  # acc covers the image plus acc_pad pixels on each side
    for r in range(top - 1, -1, -1):
        acc = _min_filter_3x3(acc)
        acc_pad -= 1
        if points_per_radius[r]:
            offset = pad - acc_pad
            np.minimum(
                acc, planes[r, offset : offset + height + 2 * acc_pad, offset : offset + width + 2 * acc_pad], out=acc
            )
    return acc[acc_pad : acc_pad + height, acc_pad : acc_pad + width]


def _empty_output(width: int, height: int) -> RenderOutput:
    return RenderOutput(
        rgb=torch.zeros((height, width, 3), dtype=torch.uint8),
        depth=torch.zeros((height, width), dtype=torch.float32),
        validity=torch.zeros((height, width), dtype=torch.float32),
        point_ids=torch.full((height, width), -1, dtype=torch.int64),
    )


def _unpack(best: np.ndarray, rgb: np.ndarray, weights: np.ndarray | None) -> RenderOutput:
    """Split winning keys ``int64 (H, W)`` into the output buffers."""
    height, width = best.shape
    empty = np.flatnonzero(best == _EMPTY_KEY)  # usually few: fill them by index, not by mask
    point_ids = best & _LOW_32_BITS
    point_ids.reshape(-1)[empty] = -1
    depth = (best >> 32).astype(np.int32).view(np.float32)
    depth.reshape(-1)[empty] = 0.0
    # One 3-byte item per point, so the colour gather is a single take (-1 reads a real row, zeroed below).
    colours = np.ascontiguousarray(rgb).view(np.dtype((np.void, 3))).reshape(-1)
    out_rgb = colours.take(point_ids.reshape(-1)).view(np.uint8).reshape(height, width, 3)
    out_rgb.reshape(-1, 3)[empty] = 0
    if weights is None:
        validity = np.ones((height, width), dtype=np.float32)
    else:
        validity = weights.take(point_ids).astype(np.float32)
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
