"""Colour transfer from past frames: the rendered geometry, coloured by the images that saw it.

A point cloud estimated from pixels is a few centimetres thick, and which of its points wins a
pixel is decided by that noise: rendered colours are a mosaic of neighbouring points, softer and
noisier than the frames they came from. Image-based rendering avoids that. Every pixel of a target
view with rendered depth is lifted to 3D, projected into a source frame (a past frame with its
camera), and takes the source's colour there (bilinear) when the source saw that very surface: its
own depth at that pixel agrees within ``depth_tol_rel`` and the pixel is marked usable (static, not
an actor). Sources are tried in the given order; each pixel takes the first that passes. From the
pose a frame was taken at, depth errors cancel and the frame comes back unchanged; nearby, a depth
error of ``e`` moves the sampled pixel by only about ``f * baseline * e / z**2``.

Pure function of arrays and cameras (OpenCV convention, ``T_world_cam``); which frames to use and
what counts as usable is the caller's choice (``spatia_py/conditioning.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ColourSource", "transfer_colours", "local_colour_difference"]


def local_colour_difference(a: np.ndarray, b: np.ndarray, window: int) -> np.ndarray:
    """``float32 (H, W)``: mean over channels of the absolute difference between the
    ``window x window`` box means of two images (``(H, W, 3)``, values in [0, 255], colours
    compared in [0, 1]). Low where two images show the same thing up to fine detail and noise."""
    from scipy import ndimage

    ma = ndimage.uniform_filter(np.asarray(a, np.float32) / 255.0, (window, window, 1))
    mb = ndimage.uniform_filter(np.asarray(b, np.float32) / 255.0, (window, window, 1))
    return np.abs(ma - mb).mean(-1)


@dataclass
class ColourSource:
    """One past frame as a colour source."""

    image: np.ndarray
    """``uint8 (Hs, Ws, 3)``."""
    K: np.ndarray
    """``(3, 3)`` intrinsics in pixels."""
    T_world_cam: np.ndarray
    """``(4, 4)`` its camera-to-world pose."""
    depth: np.ndarray
    """``float (Hs, Ws)`` metric z-depth of the surface it saw (0 = unknown: never used)."""
    usable: np.ndarray
    """``bool (Hs, Ws)`` pixels that may be copied (e.g. static ones)."""


def transfer_colours(
    depth: np.ndarray,
    K: np.ndarray,
    T_world_cam: np.ndarray,
    sources: list[ColourSource],
    *,
    depth_tol_rel: float = 0.03,
) -> tuple[np.ndarray, np.ndarray]:
    """Colour the pixels of ``depth`` (a target view) from ``sources``.

    Args:
        depth: ``float (H, W)`` target z-depth (0 = empty: never coloured).
        K: ``(3, 3)`` target intrinsics; ``T_world_cam``: ``(4, 4)`` target pose.
        sources: colour sources in order of preference.
        depth_tol_rel: a source sees the target's surface point when its depth at the projection
            is within this fraction of the point's depth in the source camera.

    Returns:
        ``rgb float32 (H, W, 3)`` in [0, 255] (0 where not coloured) and ``source int16 (H, W)``:
        the index in ``sources`` each pixel was coloured from, -1 where none saw it.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"transfer_colours: depth must be (H, W), got {depth.shape}")
    H, W = depth.shape
    rgb = np.zeros((H, W, 3), np.float32)
    source = np.full((H, W), -1, np.int16)
    vs, us = np.nonzero(depth > 0)
    if len(vs) == 0 or not sources:
        return rgb, source
    z = depth[vs, us].astype(np.float64)
    rays = np.linalg.solve(np.asarray(K, np.float64), np.stack([us, vs, np.ones_like(us)]).astype(np.float64))
    T = np.asarray(T_world_cam, np.float64)
    world = T[:3, :3] @ (rays * z) + T[:3, 3:4]  # (3, M)
    todo = np.arange(len(vs))
    for si, s in enumerate(sources):
        if len(todo) == 0:
            break
        Hs, Ws = s.depth.shape
        Ts = np.asarray(s.T_world_cam, np.float64)
        p = Ts[:3, :3].T @ (world[:, todo] - Ts[:3, 3:4])
        zs = p[2]
        front = zs > 1e-6
        uv = (np.asarray(s.K, np.float64) @ p)[:2] / np.where(front, zs, 1.0)
        u, v = uv
        # Inside the image (pixel centres are integers); the outer half pixel takes the edge colour.
        ok = front & (u >= -0.5) & (u <= Ws - 0.5) & (v >= -0.5) & (v <= Hs - 0.5)
        idx = np.flatnonzero(ok)
        u, v, zs = np.clip(u[idx], 0, Ws - 1), np.clip(v[idx], 0, Hs - 1), zs[idx]
        u0 = np.minimum(np.floor(u).astype(np.int64), Ws - 2)
        v0 = np.minimum(np.floor(v).astype(np.int64), Hs - 2)
        fu, fv = (u - u0)[:, None], (v - v0)[:, None]
        # The surface test at the nearest pixel; the colour from four taps, all of them usable.
        ds = s.depth[np.rint(v).astype(np.int64), np.rint(u).astype(np.int64)]
        good = (ds > 0) & (np.abs(ds - zs) <= depth_tol_rel * zs)
        good &= s.usable[v0, u0] & s.usable[v0, u0 + 1] & s.usable[v0 + 1, u0] & s.usable[v0 + 1, u0 + 1]
        g = np.flatnonzero(good)
        u0, v0, fu, fv = u0[g], v0[g], fu[g], fv[g]
        img = s.image
        col = ((1 - fu) * (1 - fv) * img[v0, u0] + fu * (1 - fv) * img[v0, u0 + 1]
               + (1 - fu) * fv * img[v0 + 1, u0] + fu * fv * img[v0 + 1, u0 + 1])
        done = todo[idx[g]]
        rgb[vs[done], us[done]] = col
        source[vs[done], us[done]] = si
        todo = np.delete(todo, idx[g])
    return rgb, source
