"""Evaluation metrics: image quality, revisit consistency, poses, depth, dynamic leak, masks.

Every function is plain numpy and documented with the convention it uses; ground truth enters
only here (and in benchmarks), never in SLAM or the memory.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter

from spatia_py.geometry import invert_pose, rotation_angle_deg
from spatia_py.types import CONDITIONING_STATUS

__all__ = [
    "psnr",
    "ssim",
    "warp_to_camera",
    "revisit_consistency",
    "find_revisit_pairs",
    "revisit_psnr_by_first_round",
    "revisit_error_split",
    "ate_rmse",
    "rotation_errors_deg",
    "depth_errors",
    "dynamic_leak_fraction",
    "mask_iou",
]

PSNR_CAP_DB = 100.0
"""Revisit means count an exactly identical pair (``inf`` dB) as this many dB."""


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, max_val: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB between images ``(H, W[, C])`` over ``mask (H, W)``.

    Identical images give ``inf`` (callers serialising to JSON should map it, see
    :func:`finite_or_none`); an empty mask gives ``nan``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr: image shapes differ: {a.shape} vs {b.shape}")
    d2 = (a - b) ** 2
    if d2.ndim == 3:
        d2 = d2.mean(axis=-1)
    if mask is not None:
        if not mask.any():
            return float("nan")
        d2 = d2[mask]
    mse = float(d2.mean())
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(max_val**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, max_val: float = 255.0,
         sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004, Gaussian window ``sigma``) averaged over ``mask``.

    Colour images are averaged over channels. Pixels outside ``mask`` are set equal in both
    images before filtering so they do not create spurious structure at the mask border.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"ssim: image shapes differ: {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if mask is not None:
        if not mask.any():
            return float("nan")
        b = np.where(mask[..., None], b, a)
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    vals = []
    for ch in range(a.shape[-1]):
        x, y = a[..., ch], b[..., ch]
        mx, my = gaussian_filter(x, sigma), gaussian_filter(y, sigma)
        sxx = gaussian_filter(x * x, sigma) - mx * mx
        syy = gaussian_filter(y * y, sigma) - my * my
        sxy = gaussian_filter(x * y, sigma) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
        vals.append(s[mask] if mask is not None else s.ravel())
    return float(np.mean(np.concatenate(vals)))


def _bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample ``img (H, W[, C])`` at float pixel coordinates (integer = pixel centre)."""
    H, W = img.shape[:2]
    u0 = np.clip(np.floor(u).astype(np.int64), 0, W - 2)
    v0 = np.clip(np.floor(v).astype(np.int64), 0, H - 2)
    du = np.clip(u - u0, 0, 1)
    dv = np.clip(v - v0, 0, 1)
    if img.ndim == 3:
        du, dv = du[..., None], dv[..., None]
    img = img.astype(np.float64)
    return ((1 - du) * (1 - dv) * img[v0, u0] + du * (1 - dv) * img[v0, u0 + 1]
            + (1 - du) * dv * img[v0 + 1, u0] + du * dv * img[v0 + 1, u0 + 1])


def warp_to_camera(image_src: np.ndarray, depth_src: np.ndarray | None, K_src: np.ndarray,
                   T_world_src: np.ndarray, depth_dst: np.ndarray, K_dst: np.ndarray,
                   T_world_dst: np.ndarray, rel_tol: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``image_src`` into the destination camera through the destination's depth.

    Each destination pixel with ``depth_dst > 0`` is lifted to 3D, projected into the source
    camera and sampled bilinearly. If ``depth_src`` is given, the sample is valid only where the
    source sees the same surface (depth agrees within ``rel_tol``), i.e. not occluded.

    Returns:
        ``warped (H, W, 3) float64`` and ``valid (H, W) bool``.
    """
    H, W = depth_dst.shape
    Hs, Ws = image_src.shape[:2]
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K_dst).T
    p_dst = rays * depth_dst[..., None]
    T_src_dst = invert_pose(T_world_src) @ T_world_dst
    p_src = p_dst @ T_src_dst[:3, :3].T + T_src_dst[:3, 3]
    z = p_src[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uvw = p_src @ K_src.T
        us, vs = uvw[..., 0] / uvw[..., 2], uvw[..., 1] / uvw[..., 2]
    valid = (depth_dst > 0) & (z > 1e-6) & (us >= 0) & (us <= Ws - 1) & (vs >= 0) & (vs <= Hs - 1)
    us = np.where(valid, us, 0)
    vs = np.where(valid, vs, 0)
    warped = _bilinear(image_src, us, vs)
    if depth_src is not None:
        ui = np.clip(np.rint(us).astype(np.int64), 0, Ws - 1)
        vi = np.clip(np.rint(vs).astype(np.int64), 0, Hs - 1)
        ds = depth_src[vi, ui]
        valid &= (ds > 0) & (np.abs(ds - z) <= rel_tol * z)
    return warped, valid


def find_revisit_pairs(T_world_cam_commanded: np.ndarray, round_of_frame: np.ndarray,
                       max_translation_m: float, max_rotation_deg: float) -> list[tuple[int, int]]:
    """Pairs ``(first, later)`` of frames in *different* rounds whose commanded poses coincide.

    Each later frame is paired with the earliest frame of an earlier round within the
    tolerances: the "first visit" of that pose.
    """
    T = np.asarray(T_world_cam_commanded)
    c = T[:, :3, 3]
    pairs = []
    for j in range(len(T)):
        earlier = np.nonzero(round_of_frame < round_of_frame[j])[0]
        if len(earlier) == 0:
            continue
        d = np.linalg.norm(c[earlier] - c[j], axis=1)
        for i in earlier[d <= max_translation_m]:
            if rotation_angle_deg(T[i, :3, :3], T[j, :3, :3]) <= max_rotation_deg:
                pairs.append((int(i), int(j)))
                break
    return pairs


def _capped_psnr(pair: dict) -> float:
    return min(pair["psnr_db"], PSNR_CAP_DB)


def revisit_consistency(frames: np.ndarray, pairs: list[tuple[int, int]], K: np.ndarray,
                        T_world_cam_actual: np.ndarray, static_depth: np.ndarray,
                        dynamic_masks: np.ndarray, conditioning_status: np.ndarray | None = None) -> dict:
    """PSNR/SSIM between the first visit of a pose and later visits, on static pixels.

    A video model never lands exactly on the commanded pose, so the later frame is first
    resampled into the first visit's *actual* camera through the ground-truth static depth
    (occlusion-checked); only pixels static in both frames and visible in both are compared.
    This measures whether the world stayed the same, not the camera-control jitter.

    Args:
        frames: ``uint8 (N, H, W, 3)`` all generated frames of the run.
        pairs: from :func:`find_revisit_pairs`.
        K: ``(3, 3)`` or ``(N, 3, 3)``.
        T_world_cam_actual: ``(N, 4, 4)`` ground-truth cameras.
        static_depth: ``(N, H, W)`` ground-truth depth of the static scene.
        dynamic_masks: ``(N, H, W)`` ground-truth dynamic pixels.
        conditioning_status: optional ``uint8 (N, H, W)`` generator status codes
            (:attr:`~spatia_py.types.GroundTruth.conditioning_status`); each pair then also gets
            ``"split"``: per status of the *later* frame's pixel (resampled like its dynamic mask),
            the share of compared pixels and their part of the pair's mean squared error
            (8-bit units), see :func:`revisit_error_split`.

    Returns:
        ``{"psnr_db": mean over pairs, "ssim": mean, "pairs": count, "per_pair": [...]}``;
        ``psnr_db`` is ``nan`` without pairs.
    """
    Ks = np.broadcast_to(K, (len(frames), 3, 3)) if np.ndim(K) == 2 else K
    n_codes = len(CONDITIONING_STATUS)
    per = []
    for i, j in pairs:
        # One warp carries the later frame, its dynamic mask and (given) a one-hot of its status
        # codes: all are resampled the same way (bilinear per channel), the masks by their mean.
        stack = [frames[j].astype(np.float64), dynamic_masks[j][..., None].astype(np.float64)]
        if conditioning_status is not None:
            # Static codes only: a compared pixel is static, so it takes the strongest of them even
            # where sky or an actor outweighs it among its four bilinear taps.
            stack.append((conditioning_status[j][..., None] == np.arange(1, n_codes)).astype(np.float64))
        warped_all, valid = warp_to_camera(np.concatenate(stack, -1), static_depth[j], Ks[j], T_world_cam_actual[j],
                                           static_depth[i], Ks[i], T_world_cam_actual[i])
        warped = warped_all[..., :3]
        # Static in both: the later frame's dynamic mask is resampled the same way.
        valid &= ~dynamic_masks[i] & (warped_all[..., 3] < 0.01)
        if valid.sum() < 100:
            continue
        p = psnr(frames[i], warped, valid)
        s = ssim(frames[i].astype(np.float64), warped, valid)
        per.append({"first": i, "later": j, "psnr_db": p, "ssim": s, "pixels": int(valid.sum())})
        if conditioning_status is not None:
            per[-1]["split"] = _status_split(frames[i], warped, valid, warped_all[..., 4:].argmax(-1) + 1)
    if not per:
        return {"psnr_db": float("nan"), "ssim": float("nan"), "pairs": 0, "per_pair": []}
    finite = [p["psnr_db"] for p in per if math.isfinite(p["psnr_db"])]
    # An exactly identical pair (inf dB) is capped so one perfect pair cannot make the mean inf.
    capped = [_capped_psnr(p) for p in per]
    return {"psnr_db": float(np.mean(capped)) if capped else float("nan"),
            "psnr_db_median": float(np.median(finite)) if finite else PSNR_CAP_DB,
            "ssim": float(np.mean([p["ssim"] for p in per])), "pairs": len(per), "per_pair": per}


def _status_split(first: np.ndarray, warped: np.ndarray, valid: np.ndarray, code: np.ndarray) -> dict:
    """Per status code of the later frame (``code``, resampled into the first): share of the
    compared pixels and their part of the MSE."""
    err = ((first.astype(np.float64) - warped) ** 2).mean(-1)
    n = max(int(valid.sum()), 1)
    out = {}
    for c, name in enumerate(CONDITIONING_STATUS):
        if c > 0:
            m = valid & (code == c)
            out[name] = {"pixels": float(m.sum() / n), "mse": float(err[m].sum() / n)}
    return out


def revisit_error_split(per_pair: list[dict], round_of_frame: np.ndarray) -> dict:
    """Where revisit errors come from: the later frame's pixels split by what the generator did.

    A revisited pixel is either *followed* (the generator copied the memory; an error there is the
    memory's colour or placement), *depth_rejected* (the memory covered it but put its surface
    elsewhere than the scene's, so the generator re-sampled it) or *uncovered* (a hole in the
    memory: re-sampled). Re-sampled pixels carry new appearance, so a small share of them weighs
    heavily in the mean squared error.

    Args:
        per_pair: ``revisit_consistency(..., conditioning_status=...)["per_pair"]``.
        round_of_frame: ``(N,)`` round index of every frame.

    Returns:
        ``{"all": group, "by_first_round": {"0": group, ...}}`` where a group is ``{"pairs": n,
        "mse": mean MSE (8-bit units), "<status>": {"pixels": mean share, "mse": mean part of the
        MSE}}``: the parts add up to ``mse``, and ``10 log10(255^2 / mse)`` is a PSNR. ``{}``
        without pairs or status.
    """
    rows = [p for p in per_pair if "split" in p]
    if not rows:
        return {}

    def group(sel: list[dict]) -> dict:
        names = list(sel[0]["split"])
        out: dict = {"pairs": len(sel), "mse": float(np.mean([sum(v["mse"] for v in p["split"].values()) for p in sel]))}
        for name in names:
            out[name] = {k: float(np.mean([p["split"][name][k] for p in sel])) for k in ("pixels", "mse")}
        return out

    by = _by_first_round(rows, round_of_frame)
    return {"all": group(rows), "by_first_round": {str(r): group(v) for r, v in by.items()}}


def _by_first_round(per_pair: list[dict], round_of_frame: np.ndarray) -> dict[int, list[dict]]:
    """Pairs grouped by the round of their first visit, rounds in order."""
    groups: dict[int, list[dict]] = {}
    for p in per_pair:
        groups.setdefault(int(round_of_frame[p["first"]]), []).append(p)
    return dict(sorted(groups.items()))


def revisit_psnr_by_first_round(per_pair: list[dict], round_of_frame: np.ndarray) -> dict[str, float]:
    """Mean revisit PSNR grouped by the round of the *first* visit (``{"0": dB, "1": dB, ...}``).

    Separates two causes of a revisit gap: pairs first seen in round 0 also measure where SLAM
    placed the first clip in the world (its cameras come from the commanded path, which the
    generator missed by its clip-mean control error), while pairs first seen later compare two
    frames that both followed the memory. Infinite pairs are capped at ``PSNR_CAP_DB``, as in
    :func:`revisit_consistency`.

    Args:
        per_pair: ``revisit_consistency(...)["per_pair"]``.
        round_of_frame: ``(N,)`` round index of every frame of the run.
    """
    return {str(r): float(np.mean([_capped_psnr(p) for p in v]))
            for r, v in _by_first_round(per_pair, round_of_frame).items()}


def ate_rmse(T_est: np.ndarray, T_gt: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Absolute trajectory error: RMSE in metres of camera centres, no alignment.

    No similarity alignment is applied: the estimate lives in the world frame and metric scale
    of the commanded path, exactly like the ground truth, so any offset or scale drift counts.
    """
    d = np.linalg.norm(T_est[:, :3, 3] - T_gt[:, :3, 3], axis=1)
    if valid is not None:
        d = d[valid]
    return float(np.sqrt(np.mean(d**2))) if len(d) else float("nan")


def rotation_errors_deg(T_est: np.ndarray, T_gt: np.ndarray) -> np.ndarray:
    """Per-frame angle (degrees) of the relative rotation between estimated and true cameras."""
    return np.array([rotation_angle_deg(a[:3, :3], b[:3, :3]) for a, b in zip(T_est, T_gt, strict=True)])


def depth_errors(depth_est: np.ndarray, depth_gt: np.ndarray, static_mask: np.ndarray) -> dict:
    """Median absolute relative error and coverage of an estimated depth on static pixels.

    Args:
        depth_est: ``(..., H, W)`` 0 = unknown.
        depth_gt: ``(..., H, W)`` 0 = no geometry (sky).
        static_mask: ``(..., H, W)`` pixels that show the static world.

    Returns:
        ``{"absrel_median", "coverage", "pixels"}``; coverage = covered / static pixels with truth.
    """
    ref = static_mask & (depth_gt > 0)
    cov = ref & (depth_est > 0)
    n_ref = int(ref.sum())
    if n_ref == 0:
        return {"absrel_median": float("nan"), "coverage": float("nan"), "pixels": 0}
    absrel = np.abs(depth_est[cov] - depth_gt[cov]) / depth_gt[cov]
    return {"absrel_median": float(np.median(absrel)) if absrel.size else float("nan"),
            "coverage": float(cov.sum() / n_ref), "pixels": n_ref}


def dynamic_leak_fraction(points: np.ndarray, actor_positions: np.ndarray, actor_radii: np.ndarray,
                          margin: float = 0.0) -> dict:
    """Fraction of memory points lying inside any actor's volume at any time of the run.

    Args:
        points: ``(P, 3)`` memory points.
        actor_positions: ``(T, A, 3)`` actor centres over the run's frames.
        actor_radii: ``(A,)`` bounding-sphere radii.
        margin: added to the radii (e.g. one voxel, for points fused at an actor's silhouette).

    Returns:
        ``{"fraction", "leaked", "points"}``.
    """
    P = len(points)
    if P == 0 or actor_positions.size == 0:
        return {"fraction": 0.0, "leaked": 0, "points": P}
    from scipy.spatial import cKDTree

    tree = cKDTree(points)
    leaked = np.zeros(P, dtype=bool)
    for a in range(actor_positions.shape[1]):
        centers = actor_positions[:, a]
        r = float(actor_radii[a]) + margin
        # Sub-sample the path so consecutive samples are at most r/2 apart, then query spheres.
        for idx in tree.query_ball_point(centers, r):
            if idx:
                leaked[idx] = True
    return {"fraction": float(leaked.sum() / P), "leaked": int(leaked.sum()), "points": P}


def mask_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two boolean masks pooled over all frames (nan if both empty)."""
    inter = np.logical_and(pred, truth).sum()
    union = np.logical_or(pred, truth).sum()
    return float(inter / union) if union else float("nan")


def finite_or_none(x: float) -> float | None | str:
    """JSON-safe number: ``inf`` → ``"inf"``, ``nan`` → ``None``."""
    if x is None:
        return None
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x
