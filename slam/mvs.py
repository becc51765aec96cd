"""Dense depth by plane-sweep multi-view stereo (torch, CPU).

For a reference image and a few source images with known poses, every pixel tests depth
hypotheses evenly spaced in inverse depth inside a per-pixel range; each hypothesis is scored by
zero-mean normalised cross-correlation (ZNCC) over a small window against every source (optionally
box-filtered once more: ``smooth_window``), the best ``top_k`` sources are averaged (robust to
occlusion and to a source that sees a moving actor),
winner-take-all picks the best plane and a parabola through its neighbours refines it below the
plane spacing. A coarse wide sweep at low resolution seeds a narrow sweep at the working
resolution. :func:`consistency_count` counts the other views that confirm a pixel's depth and
:func:`neighbour_support` extends confirmed pixels to agreeing neighbours on the same surface.
:func:`refine_depth_edges` re-decides pixels next to depth jumps with colour-weighted windows (a
window straddling an edge otherwise takes the depth of its more textured side).

ZNCC is computed on locally pre-normalised images: each image is normalised once (window mean
and standard deviation in its own pixel grid), so per hypothesis and source the cost is a warp, a
product and one box filter instead of five. For small windows and small warps this equals ZNCC
up to the local affine distortion of the window.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from slam.photometric import scale_K

UNSEEN_ZNCC = -0.4
"""Score of a source that does not see a hypothesis (see :func:`plane_sweep`)."""

_CHUNK_ELEMS = 400_000
"""Samples per batched grid_sample call (keeps temporaries near cache size)."""

__all__ = [
    "SweepResult",
    "normalize_local",
    "plane_sweep",
    "sweep_coarse_to_fine",
    "consistency_count",
    "neighbour_support",
    "refine_depth_edges",
    "resize_area",
    "resize_depth",
]


@dataclass
class SweepResult:
    depth: torch.Tensor
    """``float32 (H, W)`` metric z-depth (0 where the range was empty)."""
    cost: torch.Tensor
    """``float32 (H, W)`` 1 - ZNCC of the best hypothesis averaged over the best sources, in [0, 2]."""
    texture: torch.Tensor
    """``float32 (H, W)`` local standard deviation of the reference (intensity in [0, 1])."""
    n_visible: torch.Tensor
    """``int (H, W)`` sources in which the best hypothesis projects inside the image."""
    box: tuple[int, int, int, int] = (0, 0, 0, 0)
    """``(y0, y1, x0, x1)`` of these maps inside the full working-resolution image (a crop or all)."""

    def full(self, name: str, h: int, w: int, fill: float = 0.0) -> torch.Tensor:
        """Map ``name`` placed into a ``(h, w)`` working-resolution image (``fill`` outside the box)."""
        a = getattr(self, name)
        out = torch.full((h, w), fill, dtype=a.dtype)
        y0, y1, x0, x1 = self.box
        out[y0:y1, x0:x1] = a
        return out


def _box_sum(x: torch.Tensor, window: int) -> torch.Tensor:
    """Sum over a ``window x window`` box with zero padding, ``(..., H, W)`` (two cumulative sums)."""
    r = window // 2
    c = F.pad(x, (0, 0, r + 1, r)).cumsum(-2)
    s = c[..., window:, :] - c[..., :-window, :]
    c = F.pad(s, (r + 1, r)).cumsum(-1)
    return c[..., window:] - c[..., :-window]


@functools.lru_cache(maxsize=32)
def _box_counts(H: int, W: int, window: int) -> torch.Tensor:
    """Pixels inside the image under each ``window x window`` box (cached per size; never written to)."""
    return _box_sum(torch.ones((H, W)), window)


def _box(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a ``window x window`` box (zero padding divided out at borders), ``(..., H, W)``.

    Cumulative sums: ~4x faster on CPU than ``avg_pool2d`` for a 7x7 window, and equal to
    ``avg_pool2d(count_include_pad=False)`` up to float32 rounding.
    """
    H, W = x.shape[-2:]
    return _box_sum(x, window) / _box_counts(int(H), int(W), int(window))


def normalize_local(img: torch.Tensor, window: int, eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """``(img - mean) / std`` over a ``window`` box, and the std; ``img (..., H, W)``.

    The box mean of the product of two such images is their ZNCC (for aligned windows).
    """
    mu = _box(img, window)
    var = (_box(img * img, window) - mu * mu).clamp_min(0)
    sd = var.sqrt()
    return (img - mu) / (sd + eps), sd


def resize_area(a: np.ndarray, h: int, w: int) -> torch.Tensor:
    """Area downsampling of ``(..., H, W)`` images to ``float32 (..., h, w)`` (each channel alone)."""
    t = torch.from_numpy(np.ascontiguousarray(a, np.float32))
    return F.interpolate(t.reshape(-1, 1, *t.shape[-2:]), size=(h, w), mode="area").reshape(*t.shape[:-2], h, w)


def _rays(K: np.ndarray, H: int, W: int) -> torch.Tensor:
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1)
    return pix @ torch.from_numpy(np.linalg.inv(K)).T  # (H, W, 3), z = 1


def _top_k_mean(zncc: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the best ``k`` scores along the first (source) axis; all of them when ``k`` covers it."""
    return zncc.topk(k, dim=0).values.mean(0) if k < zncc.shape[0] else zncc.mean(0)


def _parabola_offset(costs: torch.Tensor, c_best: torch.Tensor, j_best: torch.Tensor) -> torch.Tensor:
    """Sub-plane offset of the minimum of the parabola through the winning plane's cost and its two
    neighbours' (``costs (P, ...)``, winner ``c_best`` at index ``j_best``), clamped to +-0.5; 0 at
    the first and last plane and where the costs do not curve upwards."""
    n = costs.shape[0]
    cm = costs.gather(0, (j_best - 1).clamp(0, n - 1)[None])[0]
    cp = costs.gather(0, (j_best + 1).clamp(0, n - 1)[None])[0]
    denom = cm - 2 * c_best + cp
    inner = (denom > 1e-6) & (j_best > 0) & (j_best < n - 1)
    safe = torch.where(inner, denom, torch.ones_like(denom))
    return torch.where(inner, 0.5 * (cm - cp) / safe, torch.zeros_like(denom)).clamp(-0.5, 0.5)


def plane_sweep(
    ref_n: torch.Tensor,
    src_n: torch.Tensor,
    K: np.ndarray,
    T_src_ref: np.ndarray,
    inv_lo: torch.Tensor,
    inv_hi: torch.Tensor,
    n_planes: int,
    *,
    window: int = 5,
    top_k: int = 2,
    K_src: np.ndarray | None = None,
    smooth_window: int = 0,
    fallback: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sweep per-pixel inverse-depth ranges.

    Args:
        ref_n: ``(H, W)`` locally normalised reference (see :func:`normalize_local`).
        src_n: ``(S, H, W)`` locally normalised sources.
        K: ``(3, 3)`` intrinsics of the reference at this resolution.
        K_src: ``(3, 3)`` intrinsics of the sources (default ``K``; differs when the reference is a crop).
        T_src_ref: ``(S, 4, 4)`` reference camera -> source camera.
        inv_lo, inv_hi: ``(H, W)`` inverse-depth range per pixel (``inv_lo < inv_hi``).
        n_planes: hypotheses per pixel (>= 3), evenly spaced in inverse depth.
        window: ZNCC window (odd).
        top_k: sources averaged per hypothesis (the best ones).
        smooth_window: if > 1, each source's ZNCC map is box-filtered again over this window
            before the sources are ranked: the two boxes make a tent-weighted support that trusts
            the centre more (figures: ``SlamConfig.mvs_smooth_window``).
        fallback: optional ``bool (S,)``: sources ranked after every other source that sees a
            hypothesis, so they enter the best ``top_k`` only where fewer than ``top_k`` of the
            others see it (short-baseline neighbours for content at the image border, which would
            otherwise win everywhere: a short baseline matches well at wrong depths too).

    Returns:
        ``inv_depth (H, W)`` refined best inverse depth, ``cost (H, W)`` and ``n_visible (H, W)``.
    """
    S, Hs, Ws = src_n.shape
    H, W = ref_n.shape
    k = min(top_k, S)
    rank_offset = None
    if fallback is not None and np.any(fallback) and k < S:
        # ZNCC is in [-1, 1]: primary sources that see the hypothesis rank first, then fallback
        # sources that see it, then unseen ones (scored UNSEEN_ZNCC below).
        rank_offset = torch.as_tensor(np.asarray(fallback, bool), dtype=torch.float32)[:, None, None, None] * 4.0
    rays = _rays(K, H, W)
    R = torch.from_numpy(T_src_ref[:, :3, :3])
    t = torch.from_numpy(T_src_ref[:, :3, 3])
    Kt = torch.from_numpy(K if K_src is None else K_src)
    # p_src ~ K (R ray / inv + t) ~ K R ray + inv K t  (multiplying through by inv > 0).
    A = torch.einsum("ij,sjk,hwk->shwi", Kt, R, rays).float()  # (S, H, W, 3)
    b = (t @ Kt.T).float()[:, None, None, :]  # (S, 1, 1, 3)
    costs = torch.empty((n_planes, H, W))
    vis = torch.empty((n_planes, H, W), dtype=torch.int8)
    src4 = src_n[:, None]  # (S, 1, H, W)
    steps = torch.linspace(0, 1, n_planes)
    # Planes are batched along the image rows of one grid_sample per chunk: (S, P*H, W) samples.
    chunk = max(1, int(_CHUNK_ELEMS // max(S * H * W, 1)))
    for j0 in range(0, n_planes, chunk):
        js = steps[j0 : j0 + chunk]
        P = len(js)
        inv = inv_lo[None] + (inv_hi - inv_lo)[None] * js[:, None, None]  # (P, H, W)
        p = A[:, None] + inv[None, :, :, :, None] * b[:, None]  # (S, P, H, W, 3)
        z = p[..., 2]
        front = z > 1e-6
        zs = torch.where(front, z, torch.ones_like(z))
        gx = p[..., 0] / zs * (2.0 / (Ws - 1)) - 1.0
        gy = p[..., 1] / zs * (2.0 / (Hs - 1)) - 1.0
        inside = front & (gx.abs() <= 1) & (gy.abs() <= 1)
        grid = torch.stack([gx, gy], -1).reshape(S, P * H, W, 2)
        warped = F.grid_sample(src4, grid, mode="bilinear", padding_mode="zeros", align_corners=True).reshape(
            S, P, H, W
        )
        zncc = _box(warped * ref_n, window)
        if smooth_window > 1:
            zncc = _box(zncc, smooth_window)
        # A source that does not see the hypothesis scores UNSEEN_ZNCC among the best top_k: a pixel
        # near the image border is often seen by fewer than top_k sources, and one strong match
        # there should still give it depth (with the default cost cut of 0.8 and top_k=2, a single
        # source must reach ZNCC 0.8); -1 would reject every such pixel.
        zncc = torch.where(inside, zncc, UNSEEN_ZNCC)
        if rank_offset is not None:
            rank = torch.where(inside, zncc - rank_offset, -16.0)
            best = zncc.gather(0, rank.topk(k, dim=0).indices).mean(0)
        else:
            best = _top_k_mean(zncc, k)
        costs[j0 : j0 + P] = 1.0 - best
        vis[j0 : j0 + P] = inside.sum(0).to(torch.int8)
    c_best, j_best = costs.min(0)
    frac = (j_best.float() + _parabola_offset(costs, c_best, j_best)) / (n_planes - 1)
    inv_best = inv_lo + (inv_hi - inv_lo) * frac
    n_vis = vis.gather(0, j_best[None])[0].int()
    return inv_best, c_best, n_vis


def resize_depth(depth: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Nearest-neighbour resize of a depth map ``(h, w)`` to ``(H, W)`` (no mixing across edges)."""
    return F.interpolate(depth[None, None], size=(H, W), mode="nearest")[0, 0]


def sweep_coarse_to_fine(
    ref_gray: np.ndarray,
    src_gray: np.ndarray,
    K: np.ndarray,
    T_src_ref: np.ndarray,
    depth_min: float | np.ndarray,
    depth_max: float | np.ndarray,
    *,
    scale: float = 0.5,
    coarse_scale: float = 0.25,
    max_planes: int = 64,
    fine_planes: int = 8,
    window: int = 5,
    top_k: int = 2,
    smooth_window: int = 0,
    prior_depth: np.ndarray | None = None,
    prior_rel: float = 0.1,
    crop: tuple[int, int, int, int] | None = None,
    fallback: np.ndarray | None = None,
) -> SweepResult:
    """Coarse wide sweep at ``coarse_scale``, then a narrow sweep at ``scale`` around it.

    Args:
        ref_gray: ``float32 (H, W)`` full-resolution reference in [0, 1].
        src_gray: ``float32 (S, H, W)`` sources.
        K: ``(3, 3)`` full-resolution intrinsics.
        T_src_ref: ``(S, 4, 4)`` reference camera -> source camera.
        depth_min, depth_max: search range (scalars or full-resolution ``(H, W)`` maps).
        scale: working resolution of the result (relative to full).
        max_planes: cap on coarse hypotheses; the count follows the largest disparity range so
            consecutive planes move by about one coarse pixel.
        fine_planes: hypotheses of the narrow sweep (it spans two coarse plane steps).
        smooth_window: second box filter of the ZNCC maps (see :func:`plane_sweep`).
        prior_depth: optional full-resolution ``(H, W)`` depth (e.g. rendered memory; 0 = none):
            where given, the fine sweep spans ``+-prior_rel`` around it instead of the coarse result.
        crop: optional ``(y0, y1, x0, x1)`` full-resolution box of the reference to sweep (e.g. the
            part the memory does not already explain); snapped outwards to the coarse pixel grid.
            The result then covers only the (snapped) box, see :attr:`SweepResult.box`.
        fallback: optional ``bool (S,)`` sources used only where the others do not see a
            hypothesis (see :func:`plane_sweep`).

    Returns:
        :class:`SweepResult` at the working resolution.
    """
    H, W = ref_gray.shape
    step_px = int(round(1 / coarse_scale))
    y0, y1, x0, x1 = (0, H, 0, W) if crop is None else crop
    y0, x0 = (y0 // step_px) * step_px, (x0 // step_px) * step_px
    y1, x1 = min(H, -(-y1 // step_px) * step_px), min(W, -(-x1 // step_px) * step_px)

    def at(scale_):
        h, w = int(round(H * scale_)), int(round(W * scale_))
        s = resize_area(src_gray, h, w)
        Ks_ = scale_K(K, w / W)
        r = resize_area(ref_gray, h, w)
        cy0, cy1, cx0, cx1 = (int(round(v * scale_)) for v in (y0, y1, x0, x1))
        r = r[cy0:cy1, cx0:cx1]
        Kr = Ks_.copy()
        Kr[0, 2] -= cx0
        Kr[1, 2] -= cy0
        rn, rsd = normalize_local(r, window)
        sn, _ = normalize_local(s, window)
        return (cy1 - cy0), (cx1 - cx0), Kr, Ks_, rn, sn, rsd

    def as_map(v, h, w):
        if np.ndim(v) == 0:
            return torch.full((h, w), float(v))
        v = np.asarray(v, np.float32)[y0:y1, x0:x1]
        return F.interpolate(torch.from_numpy(np.ascontiguousarray(v))[None, None], size=(h, w), mode="nearest")[0, 0]

    # Coarse stage.
    hc, wc, Kc, Kcs, rn, sn, _ = at(coarse_scale)
    lo_c = 1.0 / as_map(depth_max, hc, wc)
    hi_c = 1.0 / as_map(depth_min, hc, wc)
    base = np.linalg.norm(T_src_ref[:, :3, 3], axis=1).max()
    span = float((hi_c - lo_c).max())
    n_c = int(np.clip(math.ceil(Kc[0, 0] * base * span) + 1, 8, max_planes))
    inv_c, cost_c, _ = plane_sweep(rn, sn, Kc, T_src_ref, lo_c, hi_c, n_c, window=window, top_k=top_k, K_src=Kcs,
                                  smooth_window=smooth_window, fallback=fallback)
    step_c = (hi_c - lo_c) / (n_c - 1)
    # Fine stage around the coarse result (or the prior).
    hf, wf, Kf, Kfs, rn, sn, rsd = at(scale)
    inv0 = F.interpolate(inv_c[None, None], size=(hf, wf), mode="bilinear", align_corners=False)[0, 0]
    step = F.interpolate(step_c[None, None], size=(hf, wf), mode="nearest")[0, 0]
    lo_f = (inv0 - 2 * step).clamp_min(1e-4)
    hi_f = inv0 + 2 * step
    if prior_depth is not None:
        pd = as_map(prior_depth, hf, wf)
        has = pd > 0
        lo_f = torch.where(has, 1.0 / (pd * (1 + prior_rel)).clamp_min(1e-3), lo_f)
        hi_f = torch.where(has, 1.0 / (pd * (1 - prior_rel)).clamp_min(1e-3), hi_f)
    inv_f, cost_f, nvis = plane_sweep(
        rn, sn, Kf, T_src_ref, lo_f, hi_f, fine_planes, window=window, top_k=top_k, K_src=Kfs,
        smooth_window=smooth_window, fallback=fallback,
    )
    depth = torch.where(inv_f > 0, 1.0 / inv_f.clamp_min(1e-6), torch.zeros_like(inv_f))
    box = tuple(int(round(v * scale)) for v in (y0, y1, x0, x1))
    return SweepResult(depth=depth, cost=cost_f, texture=rsd, n_visible=nvis, box=box)


def consistency_count(
    depth_ref: torch.Tensor,
    K: np.ndarray,
    others: list[tuple[torch.Tensor, np.ndarray]],
    rel_tol: float = 0.03,
    radius_px: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """How many other views' depth maps confirm, and how many contradict, each pixel of ``depth_ref``.

    Each reference pixel is lifted, transformed by ``T_other_ref`` and projected into the other
    depth map (same resolution and ``K``); it agrees when any pixel of that map within
    ``radius_px`` of the projection holds a depth equal to the projected depth within ``rel_tol``
    (the neighbourhood absorbs the half-pixel rounding of the lookup at depth edges). It is
    contradicted when that view instead sees clearly *beyond* it at the projection (free space
    where the point should be); a nearer depth there is an occlusion and says nothing.

    It also averages each pixel's depth with the depths the agreeing views imply for it (a view
    that sees the point at its own depth ``d`` where the reference puts it at ``z`` implies
    ``depth_ref * d / z``). Independent sweeps err independently, so the mean of ``n`` agreeing
    views is about ``sqrt(n)`` times less noisy than one sweep.

    Args:
        depth_ref: ``(H, W)`` 0 = unknown.
        others: ``[(depth_other (H, W), T_other_ref (4, 4)), ...]``.

    Returns:
        ``(agree, violate, mean_depth)``: ``int32 (H, W)`` view counts and ``float32 (H, W)``
        averaged depth (all 0 where ``depth_ref`` is 0).
    """
    H, W = depth_ref.shape
    rays = _rays(K, H, W).float()
    X = rays * depth_ref[..., None]
    count = torch.zeros((H, W), dtype=torch.int32)
    violate = torch.zeros((H, W), dtype=torch.int32)
    ratio_sum = torch.zeros((H, W))
    Kt = torch.from_numpy(K).float()
    for d_o, T in others:
        Tt = torch.from_numpy(np.asarray(T)).float()
        Xo = X @ Tt[:3, :3].T + Tt[:3, 3]
        z = Xo[..., 2]
        zs = torch.where(z > 1e-6, z, torch.ones_like(z))
        u = torch.round((Kt[0, 0] * Xo[..., 0] + Kt[0, 1] * Xo[..., 1]) / zs + Kt[0, 2]).long()
        v = torch.round(Kt[1, 1] * Xo[..., 1] / zs + Kt[1, 2]).long()
        hit = torch.zeros((H, W), dtype=torch.bool)
        beyond = torch.ones((H, W), dtype=torch.bool)
        # The agreeing depth nearest the projection (centre first, then the ring) feeds the mean.
        implied = torch.zeros((H, W))
        for dv, du in sorted(
            ((dv, du) for dv in range(-radius_px, radius_px + 1) for du in range(-radius_px, radius_px + 1)),
            key=lambda o: o[0] ** 2 + o[1] ** 2,
        ):
            uu, vv = u + du, v + dv
            ok = (z > 1e-6) & (uu >= 0) & (uu < W) & (vv >= 0) & (vv < H)
            d = d_o[vv.clamp(0, H - 1), uu.clamp(0, W - 1)]
            agree = ok & (d > 0) & ((d - z).abs() <= rel_tol * z)
            implied = torch.where(agree & ~hit, d / torch.where(agree, z, torch.ones_like(z)), implied)
            hit |= agree
            beyond &= ok & (d > z * (1 + 2 * rel_tol))
        count += hit.int()
        violate += (beyond & ~hit).int()
        ratio_sum += implied
    zero = torch.zeros_like(count)
    agree_out = torch.where(depth_ref > 0, count, zero)
    violate_out = torch.where(depth_ref > 0, violate, zero)
    mean = depth_ref * (1.0 + ratio_sum) / (1.0 + agree_out.float())
    return agree_out, violate_out, torch.where(depth_ref > 0, mean, torch.zeros_like(mean))


def neighbour_support(
    depth: torch.Tensor, seeds: torch.Tensor, rel_tol: float = 0.03, window: int = 5, min_seeds: int = 4
) -> torch.Tensor:
    """Pixels whose depth agrees with the median depth of nearby confirmed pixels.

    Confirmed (``seeds``) pixels vouch for unconfirmed neighbours on the same surface: a pixel is
    supported when at least ``min_seeds`` seeds lie in its ``window`` and its depth is within
    ``rel_tol`` of their median (computed as the median of the window with non-seeds excluded).
    """
    H, W = depth.shape
    r = window // 2
    d = torch.where(seeds, depth, torch.full_like(depth, float("nan")))
    pad = F.pad(d[None, None], (r, r, r, r), value=float("nan"))[0, 0]
    patches = pad.unfold(0, window, 1).unfold(1, window, 1).reshape(H, W, -1)
    n = (~torch.isnan(patches)).sum(-1)
    med = torch.nanmedian(patches, dim=-1).values
    return (depth > 0) & ~seeds & (n >= min_seeds) & ((depth - med).abs() <= rel_tol * med)


def cost_at_depth(
    ref_gray: np.ndarray,
    src_gray: np.ndarray,
    K: np.ndarray,
    T_src_ref: np.ndarray,
    depth: np.ndarray,
    *,
    window: int = 7,
    top_k: int = 2,
    rel: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Photometric check of given depths: the best ``1 - ZNCC`` within ``+-rel`` of each pixel's
    depth (three hypotheses, best ``top_k`` sources averaged) and the local texture, at the
    resolution of ``depth``.

    Args:
        ref_gray, src_gray, K, T_src_ref: as for :func:`sweep_coarse_to_fine` (full resolution).
        depth: ``(h, w)`` depth at the working resolution (0 = unknown: cost 2 there).

    Returns:
        ``(cost, texture)``: ``float32 (h, w)`` each.
    """
    H, W = ref_gray.shape
    h, w = depth.shape
    s = resize_area(src_gray, h, w)
    r = resize_area(ref_gray, h, w)
    Kw = scale_K(K, w / W)
    rn, rsd = normalize_local(r, window)
    sn, _ = normalize_local(s, window)
    d = torch.as_tensor(np.asarray(depth, np.float32))
    has = d > 0
    inv = torch.where(has, 1.0 / d.clamp_min(1e-6), torch.ones_like(d))
    _, cost, _ = plane_sweep(rn, sn, Kw, T_src_ref, inv * (1 - rel), inv * (1 + rel), 3, window=window, top_k=top_k)
    return torch.where(has, cost, torch.full_like(cost, 2.0)), rsd


def _max_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over a ``(2 radius + 1)`` square of an ``(H, W)`` map (two separable passes)."""
    k = 2 * radius + 1
    y = F.max_pool2d(x[None, None], (1, k), 1, (0, radius))
    return F.max_pool2d(y, (k, 1), 1, (radius, 0))[0, 0]


def refine_depth_edges(
    depth: torch.Tensor,
    candidates: torch.Tensor,
    ref_gray: torch.Tensor,
    ref_rgb: torch.Tensor,
    src_gray: torch.Tensor,
    K: np.ndarray,
    T_src_ref: np.ndarray,
    *,
    radius: int = 3,
    jump: float = 0.15,
    n_planes: int = 6,
    colour_scale: float = 0.1,
    distance_scale: float = 4.0,
    top_k: int = 2,
    min_texture: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-decide the depth of pixels next to depth jumps with colour-weighted ZNCC.

    A window that straddles a depth edge is matched by the side with the stronger texture, so the
    sweep's depth runs across the edge as a ramp as wide as the window (the textured surface
    "fattens"). Here each pixel near a jump gets its own support: window pixels weigh
    ``exp(-|rgb_q - rgb_p|_1 / colour_scale - |q - p| / distance_scale)``, so pixels of another
    colour (in practice, mostly another surface) hardly count (adaptive support weights, Yoon and
    Kweon, CVPR 2005), and its depth is swept again over the range its neighbourhood spans.

    A pixel is tested when it is a candidate and the inverse depth within ``radius`` of it spans
    more than ``jump`` times its own: on its own depth and on ``n_planes`` fronto-parallel planes
    evenly spaced in inverse depth over that span (widened by 2 % of its own inverse depth on
    either side); each source is sampled on the window warped by the plane's local affine map
    (exact up to the window's perspective distortion), ZNCC is weighted as above and the best
    ``top_k`` sources are averaged. The pixel moves to the best plane (refined by a parabola)
    only when that plane matches better than its own depth; a pixel whose weighted window has
    less intensity deviation than ``min_texture``, or that no source sees, keeps its depth.

    Args:
        depth: ``(H, W)`` swept depth at working resolution (0 = none).
        candidates: ``bool (H, W)`` pixels that may be changed.
        ref_gray, ref_rgb: ``(H, W)`` and ``(H, W, 3)`` reference image in [0, 1].
        src_gray: ``(S, H, W)`` sources in [0, 1], same resolution and intrinsics ``K``.
        T_src_ref: ``(S, 4, 4)`` reference camera -> source camera.

    Returns:
        ``(depth, refined)``: the new depth and the ``bool (H, W)`` mask of pixels that moved.
    """
    if n_planes < 3:
        raise ValueError(f"n_planes must be >= 3, got {n_planes}")
    H, W = depth.shape
    has = depth > 0
    inv = torch.where(has, 1.0 / depth.clamp_min(1e-6), torch.zeros_like(depth))
    inv_hi = _max_filter(torch.where(has, inv, torch.full_like(inv, -1.0)), radius)
    inv_lo = -_max_filter(torch.where(has, -inv, torch.full_like(inv, -1e9)), radius)
    tested = candidates & has & (inv_hi - inv_lo > jump * inv)
    ys, xs = torch.nonzero(tested, as_tuple=True)
    R, S = len(ys), len(src_gray)
    if R == 0 or S == 0:
        return depth.clone(), torch.zeros_like(tested)
    # Window taps: a disc (the corners of the square carry little weight and cost as much).
    o = torch.arange(-radius, radius + 1, dtype=torch.float32)
    oy, ox = torch.meshgrid(o, o, indexing="ij")
    disc = (oy**2 + ox**2 <= (radius + 0.2) ** 2).reshape(-1)
    oy, ox = oy.reshape(-1)[disc], ox.reshape(-1)[disc]
    qy, qx = ys[:, None] + oy.long()[None], xs[:, None] + ox.long()[None]
    inside = (qy >= 0) & (qy < H) & (qx >= 0) & (qx < W)
    qy, qx = qy.clamp(0, H - 1), qx.clamp(0, W - 1)
    ref = ref_gray[qy, qx]  # (R, T)
    dcol = (ref_rgb[qy, qx] - ref_rgb[ys, xs][:, None]).abs().sum(-1)
    w = torch.exp(-dcol / colour_scale - torch.sqrt(oy**2 + ox**2)[None] / distance_scale) * inside
    w = w / w.sum(-1, keepdim=True)
    ref_c = ref - (w * ref).sum(-1, keepdim=True)
    var_ref = (w * ref_c * ref_c).sum(-1)
    w_pair = torch.stack([w, w * ref_c], -1)  # (R, T, 2): weighted mean and covariance in one bmm
    # Each pixel and its +x / +y neighbours projected per plane give the window's affine warp:
    # p_src ~ K R ray + inv K t (multiplying through by the inverse depth inv > 0).
    Kt = torch.from_numpy(K)
    Kinv = torch.from_numpy(np.linalg.inv(K))
    KR = torch.einsum("ij,sjk->sik", Kt, torch.from_numpy(T_src_ref[:, :3, :3]))
    one = torch.ones(R, dtype=torch.float64)
    px = torch.stack([torch.stack([xs + dx, ys + dy, one], -1) @ Kinv.T for dx, dy in ((0, 0), (1, 0), (0, 1))])
    A = torch.einsum("sik,crk->csri", KR, px).float()  # (3, S, R, 3)
    b = (torch.from_numpy(T_src_ref[:, :3, 3]) @ Kt.T).float()[None, :, None, :]  # (1, S, 1, 3)
    lo = (inv_lo - 0.02 * inv)[ys, xs].clamp_min(1e-4)
    hi = (inv_hi + 0.02 * inv)[ys, xs]
    sx, sy = 2.0 / (W - 1), 2.0 / (H - 1)
    grid = torch.empty((S, R, len(oy), 2))
    src4 = src_gray[:, None]
    k = min(top_k, S)
    scores = torch.empty((n_planes + 1, R))
    for j in range(n_planes + 1):  # the planes, then the pixel's own depth
        inv_j = lo + (hi - lo) * (j / (n_planes - 1)) if j < n_planes else inv[ys, xs]
        p = A + inv_j[None, None, :, None] * b
        pos = p[..., 2] > 1e-6
        front = pos[0]
        z = torch.where(pos, p[..., 2], torch.ones_like(p[..., 2]))
        u, v = p[..., 0] / z, p[..., 1] / z  # (3, S, R)
        seen = front & (u[0] >= 0) & (u[0] <= W - 1) & (v[0] >= 0) & (v[0] <= H - 1)
        torch.addcmul((u[0] * sx - 1)[..., None], ((u[1] - u[0]) * sx)[..., None], ox, out=grid[..., 0])
        grid[..., 0].addcmul_(((u[2] - u[0]) * sx)[..., None], oy)
        torch.addcmul((v[0] * sy - 1)[..., None], ((v[1] - v[0]) * sy)[..., None], ox, out=grid[..., 1])
        grid[..., 1].addcmul_(((v[2] - v[0]) * sy)[..., None], oy)
        val = F.grid_sample(src4, grid, mode="bilinear", padding_mode="border", align_corners=True)[:, 0]
        m = torch.bmm(val.transpose(0, 1), w_pair)  # (R, S, 2)
        mean, cov = m[..., 0].T, m[..., 1].T  # (S, R)
        var = torch.bmm((val * val).transpose(0, 1), w[..., None])[..., 0].T - mean * mean
        zncc = torch.where(seen, cov / torch.sqrt(var_ref[None] * var.clamp_min(0) + 1e-9), UNSEEN_ZNCC)
        scores[j] = _top_k_mean(zncc, k)
    own = scores[n_planes]
    scores = scores[:n_planes]
    best, jb = scores.max(0)
    off = _parabola_offset(-scores, -best, jb)  # the best score is the lowest cost
    move = (best > own) & (best > UNSEEN_ZNCC) & (var_ref >= min_texture**2)
    ys, xs = ys[move], xs[move]
    out = depth.clone()
    out[ys, xs] = 1.0 / (lo + (hi - lo) * (jb.float() + off) / (n_planes - 1))[move]
    refined = torch.zeros_like(tested)
    refined[ys, xs] = True
    return out, refined
