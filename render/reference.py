"""Slow, obviously-correct reference of :func:`render.splat.render_points`.

It walks the points one by one in index order and writes each point's square footprint into
a z-buffer with an explicit depth test. It shares only argument validation with the fast path;
the projection is the same float32 arithmetic (``render/splat.py``'s module docstring), written
out element-wise, so the two agree bit-for-bit. Meant for tests and the benchmark's identity
check on ~10^4 points, not for rendering.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from render.splat import RenderOutput, check_render_inputs

__all__ = ["render_points_reference"]


def _numpy(a: Any, dtype: type) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a).astype(dtype)


def render_points_reference(
    xyz: Any,  # float32 (P, 3)
    rgb: Any,  # uint8 (P, 3)
    K: Any,  # (3, 3)
    T_cam_world: Any,  # (4, 4) world-to-camera
    width: int,
    height: int,
    *,
    radius: Any = None,  # float or (P,) metres
    weights: Any = None,  # (P,) in [0, 1]
    max_radius_px: int = 3,
    near: float = 0.05,
    far: float | None = None,
) -> RenderOutput:
    """Same arguments and result as :func:`render.splat.render_points`."""
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
    W, H = int(width), int(height)
    xyz = _numpy(xyz, np.float32)
    rgb = _numpy(rgb, np.uint8)
    n = len(xyz)

    # Rule steps 1-2: h_i = ((M[i,0] x + M[i,1] y) + M[i,2] z) + M[i,3] in float32.
    M = (K64 @ T64[:3, :]).astype(np.float32)
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    h0, h1, z_c = (((M[i, 0] * x + M[i, 1] * y) + M[i, 2] * z) + M[i, 3] for i in range(3))
    if radius is None:
        r_px = np.zeros(n)
    else:
        fx = np.float32(K64[0, 0])
        radius_f32 = np.broadcast_to(_numpy(radius, np.float32), (n,))
        with np.errstate(all="ignore"):
            r_px = np.clip(np.rint((fx * radius_f32) / z_c), 0, max_radius_px)  # rule step 5
    w = None if weights is None else _numpy(weights, np.float32)
    far_limit = np.inf if far is None else far

    zbuf = np.full((H, W), np.inf, dtype=np.float32)
    ids = np.full((H, W), -1, dtype=np.int64)
    for i in range(n):
        if not (near <= float(z_c[i]) <= far_limit):  # rule step 3 (exact comparison)
            continue
        with np.errstate(all="ignore"):
            u, v = h0[i] / z_c[i], h1[i] / z_c[i]
        if not (np.isfinite(u) and np.isfinite(v)):
            continue
        col, row, r = int(np.rint(u)), int(np.rint(v)), int(r_px[i])  # rule steps 4-5
        r0, r1 = max(row - r, 0), min(row + r, H - 1) + 1
        c0, c1 = max(col - r, 0), min(col + r, W - 1) + 1
        if r0 >= r1 or c0 >= c1:
            continue
        # Rule step 6: strictly nearer wins; points come in index order, so equal depth keeps the lower index.
        nearer = z_c[i] < zbuf[r0:r1, c0:c1]
        zbuf[r0:r1, c0:c1][nearer] = z_c[i]
        ids[r0:r1, c0:c1][nearer] = i

    hit = ids >= 0
    depth = np.where(hit, zbuf, np.float32(0)).astype(np.float32)
    out_rgb = np.zeros((H, W, 3), dtype=np.uint8)
    out_rgb[hit] = rgb[ids[hit]]
    validity = np.zeros((H, W), dtype=np.float32)
    validity[hit] = 1.0 if w is None else w[ids[hit]]
    return RenderOutput(
        rgb=torch.from_numpy(out_rgb),
        depth=torch.from_numpy(depth),
        validity=torch.from_numpy(validity),
        point_ids=torch.from_numpy(ids),
    )
