"""Soft colour resolve: blend the colours of every point on the front surface of each pixel.

:func:`render.splat.render_points` shows, at each pixel, the one nearest point whose square
footprint covers it. Where a memory's points scatter a little in depth (geometry estimated from
pixels is a few centimetres thick), which point wins a pixel is decided by that noise, and the
picture is a jagged mosaic of neighbouring points' colours. :func:`blend_front_colours` resolves
colour the way surface splatting does instead: every point whose footprint covers a pixel and
whose depth lies within ``depth_tol_rel`` of the pixel's z-buffer depth contributes its colour with
a Gaussian weight of its centre's distance to the pixel. Occlusion is unchanged (the z-buffer
decides what is in front); depth, validity and point ids stay those of the hard render.

Measured on the loop preset's memory after two rounds (self-render PSNR on static pixels, frames
of those rounds at their estimated cameras): 25.2 -> 26.1 dB with a memory from visual SLAM,
29.5 -> 31.0 dB with the oracle's memory.
"""

from __future__ import annotations

import numpy as np

__all__ = ["blend_front_colours"]


def blend_front_colours(
    xyz: np.ndarray,
    rgb: np.ndarray,
    K: np.ndarray,
    T_cam_world: np.ndarray,
    depth: np.ndarray,
    *,
    radius: float,
    max_radius_px: int,
    depth_tol_rel: float = 0.03,
    sigma_scale: float = 0.5,
) -> np.ndarray:
    """Colour of each pixel as the Gaussian-weighted mean of the front-surface points covering it.

    Args:
        xyz: ``(P, 3)`` world points.
        rgb: ``uint8 (P, 3)`` their colours.
        K: ``(3, 3)`` intrinsics; ``T_cam_world``: ``(4, 4)`` world-to-camera (OpenCV).
        depth: ``float32 (H, W)`` z-buffer of the hard render of the same points (0 = empty).
        radius: world-space footprint radius (as for ``render_points``); the footprint half-size of
            a point at depth ``z`` is ``clamp(round(fx * radius / z), 0, max_radius_px)`` pixels.
        max_radius_px: largest footprint half-size.
        depth_tol_rel: a point is on the pixel's front surface when its depth is at most
            ``depth * (1 + depth_tol_rel)``.
        sigma_scale: Gaussian sigma of a point, as a fraction of its projected diameter
            ``2 * fx * radius / z`` (at least half a pixel).

    Returns:
        ``uint8 (H, W, 3)``; 0 where ``depth`` is 0.
    """
    H, W = depth.shape
    xyz = np.asarray(xyz, np.float32)
    if len(xyz) == 0:
        return np.zeros((H, W, 3), np.uint8)
    M = (np.asarray(K, np.float64) @ np.asarray(T_cam_world, np.float64)[:3, :]).astype(np.float32)
    z = xyz @ M[2, :3] + M[2, 3]
    ok = z > 1e-6
    zs = np.where(ok, z, 1.0)
    u = (xyz @ M[0, :3] + M[0, 3]) / zs
    v = (xyz @ M[1, :3] + M[1, 3]) / zs
    fx = float(K[0, 0])
    r = np.clip(np.rint(fx * radius / zs), 0, max_radius_px).astype(np.int64)
    ok &= (u > -max_radius_px - 1) & (u < W + max_radius_px) & (v > -max_radius_px - 1) & (v < H + max_radius_px)
    idx = np.nonzero(ok)[0]
    u, v, z, r = u[idx], v[idx], z[idx], r[idx]
    col = np.asarray(rgb)[idx].astype(np.float32)
    ui, vi = np.rint(u).astype(np.int64), np.rint(v).astype(np.int64)
    inv2s2 = 1.0 / (2.0 * np.maximum(sigma_scale * 2.0 * fx * radius / z, 0.5) ** 2)
    dflat = np.asarray(depth, np.float32).reshape(-1)
    acc = np.zeros((4, H * W), np.float64)
    R = int(r.max()) if len(r) else 0
    for dv in range(-R, R + 1):
        for du in range(-R, R + 1):
            need = max(abs(du), abs(dv))
            sel = np.nonzero(r >= need)[0] if need else np.arange(len(r))
            uu, vv = ui[sel] + du, vi[sel] + dv
            inside = (uu >= 0) & (uu < W) & (vv >= 0) & (vv < H)
            sel, uu, vv = sel[inside], uu[inside], vv[inside]
            pix = vv * W + uu
            front = z[sel] <= dflat[pix] * (1.0 + depth_tol_rel)
            sel, uu, vv, pix = sel[front], uu[front], vv[front], pix[front]
            w = np.exp(-((uu - u[sel]) ** 2 + (vv - v[sel]) ** 2) * inv2s2[sel])
            acc[3] += np.bincount(pix, weights=w, minlength=H * W)
            for c in range(3):
                acc[c] += np.bincount(pix, weights=w * col[sel, c], minlength=H * W)
    wsum = acc[3]
    out = np.where(wsum > 0, acc[:3] / np.maximum(wsum, 1e-12), 0.0)
    out = np.clip(np.rint(out.T.reshape(H, W, 3)), 0, 255).astype(np.uint8)
    out[dflat.reshape(H, W) <= 0] = 0
    return out
