"""Bundle adjustment and multi-view triangulation in numpy/scipy.

A small, explicit Levenberg-Marquardt BA (analytic Jacobians, Schur complement, Huber loss) is
enough for one clip (tens of images, thousands of points) and lets SLAM add what pycolmap's BA
would make awkward here: constant cameras, constant points (memory anchors) and camera-centre
priors (the commanded path).

Poses are ``T_cam_world (4, 4)`` (world-to-camera) inside this module because that is what the
projection needs; callers convert with :func:`spatia_py.geometry.invert_pose`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = ["BaProblem", "bundle_adjust", "triangulate_tracks", "reprojection_errors"]


@dataclass
class BaProblem:
    """Observations of 3D points in cameras.

    Attributes:
        K: ``(C, 3, 3)`` intrinsics per camera.
        T_cam_world: ``(C, 4, 4)`` initial world-to-camera poses.
        points: ``(P, 3)`` initial world points.
        obs_cam: ``int (O,)`` camera of each observation.
        obs_pt: ``int (O,)`` point of each observation.
        obs_xy: ``(O, 2)`` observed pixel (integer = pixel centre).
    """

    K: np.ndarray
    T_cam_world: np.ndarray
    points: np.ndarray
    obs_cam: np.ndarray
    obs_pt: np.ndarray
    obs_xy: np.ndarray


def _project(K, R, t, X):
    p = np.einsum("oij,oj->oi", R, X) + t
    z = p[:, 2:3]
    uv = p[:, :2] / np.where(np.abs(z) < 1e-9, 1e-9, z)
    return np.stack(
        [K[:, 0, 0] * uv[:, 0] + K[:, 0, 1] * uv[:, 1] + K[:, 0, 2], K[:, 1, 1] * uv[:, 1] + K[:, 1, 2]], axis=1
    ), z[:, 0]


def reprojection_errors(
    prob: BaProblem, T_cam_world: np.ndarray | None = None, points: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-observation reprojection error in pixels and depth in the observing camera."""
    T = prob.T_cam_world if T_cam_world is None else T_cam_world
    X = prob.points if points is None else points
    c, p = prob.obs_cam, prob.obs_pt
    uv, z = _project(prob.K[c], T[c, :3, :3], T[c, :3, 3], X[p])
    return np.linalg.norm(uv - prob.obs_xy, axis=1), z


def _skew(v: np.ndarray) -> np.ndarray:
    """``(..., 3)`` -> ``(..., 3, 3)`` cross-product matrices."""
    z = np.zeros(v.shape[:-1])
    return np.stack(
        [
            np.stack([z, -v[..., 2], v[..., 1]], -1),
            np.stack([v[..., 2], z, -v[..., 0]], -1),
            np.stack([-v[..., 1], v[..., 0], z], -1),
        ],
        -2,
    )


def _so3_exp_batch(w: np.ndarray) -> np.ndarray:
    return Rotation.from_rotvec(w).as_matrix().reshape(-1, 3, 3)


class _RowSums:
    """``out[k] = sum of values[index == k]`` for ``values (M, ...)``, ``out (n, ...)``, with the
    bin indices built once per ``index`` and row size.

    Sums in the order of ``values``, like ``np.add.at``, at a fraction of its cost.
    """

    def __init__(self, index: np.ndarray, n: int) -> None:
        self.index, self.n = index, n
        self._bins: dict[int, np.ndarray] = {}

    def __call__(self, values: np.ndarray) -> np.ndarray:
        k = int(np.prod(values.shape[1:]))
        bins = self._bins.get(k)
        if bins is None:
            bins = self._bins[k] = (self.index[:, None] * k + np.arange(k)).ravel()
        out = np.bincount(bins, weights=values.reshape(len(self.index), k).ravel(), minlength=self.n * k)
        # bincount of no rows is int64
        return out.astype(np.float64, copy=False).reshape((self.n,) + values.shape[1:])


class _SchurReducer:
    """``sum_p Hcp_p Hpp_p^-1 Hcp_p^T`` over points, as a dense ``(6C, 6C)`` matrix.

    The camera-point blocks of a chunk of points are scattered into dense ``(6C, 3 * chunk)``
    matrices and reduced with one matrix product, a few BLAS calls per chunk. That costs about
    ``108 C^2`` flops per point whatever the sparsity: right for a clip's tens of cameras, not
    for thousands. Chunks keep each dense matrix near ``max_entries`` floats whatever the
    number of points.
    """

    def __init__(self, n_cams: int, n_points: int, obs_cam: np.ndarray, obs_pt: np.ndarray,
                 max_entries: int = 1 << 22):
        self.nc = n_cams
        order = np.argsort(obs_pt, kind="stable")
        pts = obs_pt[order]
        chunk = max(1, max_entries // max(18 * n_cams, 1))
        self.chunks = []
        for p0 in range(0, n_points, chunk):
            p1 = min(p0 + chunk, n_points)
            lo, hi = np.searchsorted(pts, [p0, p1])
            o = order[lo:hi]
            # Row (camera c, parameter i) and column (point p - p0, coordinate j) of each entry.
            rows = (6 * obs_cam[o])[:, None, None] + np.arange(6)[None, :, None]
            cols = (3 * (pts[lo:hi] - p0))[:, None, None] + np.arange(3)[None, None, :]
            self.chunks.append((p0, p1, o, (rows * 3 * (p1 - p0) + cols).ravel()))

    def reduce(self, Hcp: np.ndarray, HcpHinv: np.ndarray) -> np.ndarray:
        """``Hcp (O, 6, 3)`` per observation and ``HcpHinv`` = ``Hcp @ Hpp^-1`` of its point."""
        n6 = 6 * self.nc
        S = np.zeros((n6, n6))
        if n6 == 0:
            return S
        for p0, p1, o, flat in self.chunks:
            if len(o) == 0:
                continue
            size = n6 * 3 * (p1 - p0)
            A = np.bincount(flat, weights=Hcp[o].ravel(), minlength=size).reshape(n6, -1)
            AB = np.bincount(flat, weights=HcpHinv[o].ravel(), minlength=size).reshape(n6, -1)
            S += AB @ A.T
        return S


def bundle_adjust(
    prob: BaProblem,
    const_cams: np.ndarray | None = None,
    const_points: np.ndarray | None = None,
    center_prior: np.ndarray | None = None,
    center_prior_sigma_m: float = 0.01,
    rotation_prior: np.ndarray | None = None,
    rotation_prior_sigma_deg: float = 0.15,
    huber_px: float = 1.5,
    max_iters: int = 20,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Refine poses and points by minimising Huber-robust reprojection error (Levenberg-Marquardt).

    Camera updates are left perturbations of ``T_cam_world`` (``R <- exp(w) R``, ``t <- exp(w) t + v``);
    points are eliminated by the Schur complement (reduced with dense matrix products, see
    :class:`_SchurReducer`), leaving one small dense ``6C x 6C`` solve per iteration.

    Args:
        prob: the problem (initial values are not modified).
        const_cams: ``bool (C,)`` cameras held fixed (one fixed camera, or a centre prior, fixes
            the gauge; otherwise LM damping keeps the free directions still).
        const_points: ``bool (P,)`` points held fixed (e.g. anchors from memory).
        center_prior: ``(C, 3)`` prior camera centres in world (NaN rows = none), residual
            ``(centre - prior) / center_prior_sigma_m`` next to pixel residuals of unit weight.
        rotation_prior: ``(C, 3, 3)`` prior world-to-camera rotations (NaN = none), residual
            ``log(R_prior^T R) / rotation_prior_sigma_deg`` (radians over radians).
        huber_px: Huber threshold in pixels.
        max_iters: LM iterations.

    Returns:
        ``T_cam_world (C, 4, 4)``, ``points (P, 3)`` and ``{"cost_before", "cost_after", "iters"}``.
    """
    C, P = len(prob.T_cam_world), len(prob.points)
    const_cams = np.zeros(C, bool) if const_cams is None else np.asarray(const_cams, bool)
    const_points = np.zeros(P, bool) if const_points is None else np.asarray(const_points, bool)
    cam_slot = -np.ones(C, np.int64)
    var_cams = np.nonzero(~const_cams)[0]
    cam_slot[var_cams] = np.arange(len(var_cams))
    pt_slot = -np.ones(P, np.int64)
    var_pts = np.nonzero(~const_points)[0]
    pt_slot[var_pts] = np.arange(len(var_pts))
    nc, npt = len(var_cams), len(var_pts)
    R = prob.T_cam_world[:, :3, :3].copy()
    t = prob.T_cam_world[:, :3, 3].copy()
    X = prob.points.copy()
    oc, op, oxy = prob.obs_cam, prob.obs_pt, prob.obs_xy
    Ko = prob.K[oc]
    prior_cams = np.zeros(0, np.int64)
    if center_prior is not None:
        prior_cams = np.nonzero(np.all(np.isfinite(center_prior), axis=1) & ~const_cams)[0]
    sig = float(center_prior_sigma_m)
    rot_cams = np.zeros(0, np.int64)
    if rotation_prior is not None:
        rot_cams = np.nonzero(np.all(np.isfinite(rotation_prior.reshape(C, -1)), axis=1) & ~const_cams)[0]
    sig_r = np.radians(float(rotation_prior_sigma_deg))

    def rot_res(R):
        E = np.einsum("cji,cjk->cik", rotation_prior[rot_cams], R[rot_cams])
        return Rotation.from_matrix(E).as_rotvec().reshape(-1, 3) / sig_r

    def cost_of(R, t, X):
        uv, z = _project(Ko, R[oc], t[oc], X[op])
        e = np.linalg.norm(uv - oxy, axis=1)
        rho = np.where(e <= huber_px, 0.5 * e**2, huber_px * (e - 0.5 * huber_px))
        c = float(rho.sum())
        if len(prior_cams):
            centers = -np.einsum("cji,cj->ci", R[prior_cams], t[prior_cams])
            c += 0.5 * float((((centers - center_prior[prior_cams]) / sig) ** 2).sum())
        if len(rot_cams):
            c += 0.5 * float((rot_res(R) ** 2).sum())
        return c

    cost = cost_before = cost_of(R, t, X)
    lam = 1e-3
    iters = 0
    rel = 1.0
    oc_s, op_s = cam_slot[oc], pt_slot[op]
    mc, mp = oc_s >= 0, op_s >= 0
    m = mc & mp
    oc_m, op_m = oc_s[m], op_s[m]  # observations linking a variable camera and a variable point
    schur = _SchurReducer(nc, npt, oc_m, op_m)
    sum_cam, sum_pt = _RowSums(oc_s[mc], nc), _RowSums(op_s[mp], npt)
    sum_cam_m, sum_pt_m = _RowSums(oc_m, nc), _RowSums(op_m, npt)
    for _ in range(max_iters):
        iters += 1
        Xc = np.einsum("oij,oj->oi", R[oc], X[op]) + t[oc]
        z = np.where(np.abs(Xc[:, 2]) < 1e-9, 1e-9, Xc[:, 2])
        x, y = Xc[:, 0] / z, Xc[:, 1] / z
        fx, s_, fy = Ko[:, 0, 0], Ko[:, 0, 1], Ko[:, 1, 1]
        r = np.stack([fx * x + s_ * y + Ko[:, 0, 2], fy * y + Ko[:, 1, 2]], 1) - oxy
        e = np.linalg.norm(r, axis=1)
        w = np.where(e <= huber_px, 1.0, huber_px / np.maximum(e, 1e-12))
        Jpi = np.zeros((len(oc), 2, 3))
        Jpi[:, 0, 0] = fx / z
        Jpi[:, 0, 1] = s_ / z
        Jpi[:, 0, 2] = -(fx * x + s_ * y) / z
        Jpi[:, 1, 1] = fy / z
        Jpi[:, 1, 2] = -fy * y / z
        Jc = np.concatenate([Jpi @ -_skew(Xc), Jpi], axis=2)  # (O, 2, 6)
        Jp = Jpi @ R[oc]  # (O, 2, 3)
        wJc = Jc * w[:, None, None]
        wJp = Jp * w[:, None, None]
        wJcT, wJpT = wJc.transpose(0, 2, 1), wJp.transpose(0, 2, 1)
        Hcc_o, Hpp_o, Hcp_o = wJcT @ Jc, wJpT @ Jp, wJcT @ Jp
        gc_o, gp_o = (wJcT @ r[:, :, None])[..., 0], (wJpT @ r[:, :, None])[..., 0]
        Hcc, gc = sum_cam(Hcc_o[mc]), sum_cam(gc_o[mc])
        Hpp, gp = sum_pt(Hpp_o[mp]), sum_pt(gp_o[mp])
        Hcp_m = Hcp_o[m]
        if len(prior_cams):
            centers = -np.einsum("cji,cj->ci", R[prior_cams], t[prior_cams])
            rc = (centers - center_prior[prior_cams]) / sig
            Jt = -np.transpose(R[prior_cams], (0, 2, 1)) / sig  # d centre / d v
            sl = cam_slot[prior_cams]
            Hcc[sl, 3:, 3:] += np.einsum("cki,ckj->cij", Jt, Jt)
            gc[sl, 3:] += np.einsum("cki,ck->ci", Jt, rc)
        if len(rot_cams):
            # R <- exp(w) R: R_p^T exp(w) R = R_p^T R exp(R^T w), so d log / d w ~ R^T (small errors).
            rr = rot_res(R)
            Jw = np.transpose(R[rot_cams], (0, 2, 1)) / sig_r
            sl = cam_slot[rot_cams]
            Hcc[sl, :3, :3] += np.einsum("cki,ckj->cij", Jw, Jw)
            gc[sl, :3] += np.einsum("cki,ck->ci", Jw, rr)
        improved = False
        for _ in range(8):
            Hcc_d = Hcc.copy()
            Hpp_d = Hpp.copy()
            idx6, idx3 = np.arange(6), np.arange(3)
            Hcc_d[:, idx6, idx6] *= 1 + lam
            Hcc_d[:, idx6, idx6] += 1e-9
            Hpp_d[:, idx3, idx3] *= 1 + lam
            Hpp_d[:, idx3, idx3] += 1e-9
            Hpp_inv = np.linalg.inv(Hpp_d)
            # Schur complement over points: S = Hcc - Hcp Hpp^-1 Hpc, then b = -gc + Hcp Hpp^-1 gp.
            HcpHinv = Hcp_m @ Hpp_inv[op_m]
            S = -schur.reduce(Hcp_m, HcpHinv)
            for c in range(nc):
                S[6 * c : 6 * c + 6, 6 * c : 6 * c + 6] += Hcc_d[c]
            b = -gc.ravel() + sum_cam_m((HcpHinv @ gp[op_m, :, None])[..., 0]).ravel()
            try:
                dc = np.linalg.solve(S, b) if nc else np.zeros(0)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            dcm = dc.reshape(-1, 6)
            rhs = -gp
            if nc:
                rhs = rhs - sum_pt_m((dcm[oc_m, None, :] @ Hcp_m)[:, 0])
            dp = np.einsum("pij,pj->pi", Hpp_inv, rhs) if npt else np.zeros((0, 3))
            R_new, t_new, X_new = R.copy(), t.copy(), X.copy()
            if nc:
                E = _so3_exp_batch(dcm[:, :3])
                R_new[var_cams] = E @ R[var_cams]
                t_new[var_cams] = np.einsum("cij,cj->ci", E, t[var_cams]) + dcm[:, 3:]
            if npt:
                X_new[var_pts] = X[var_pts] + dp
            new_cost = cost_of(R_new, t_new, X_new)
            if new_cost < cost:
                rel = (cost - new_cost) / max(cost, 1e-12)
                R, t, X, cost = R_new, t_new, X_new, new_cost
                lam = max(lam / 10, 1e-7)
                improved = True
                break
            lam *= 10
        if not improved or rel < 1e-7:
            break
    T = np.tile(np.eye(4), (C, 1, 1))
    T[:, :3, :3] = R
    T[:, :3, 3] = t
    return T, X, {"cost_before": cost_before, "cost_after": cost, "iters": iters}


def triangulate_tracks(
    K: np.ndarray,
    T_cam_world: np.ndarray,
    track_cam: list[np.ndarray],
    track_xy: list[np.ndarray],
    max_reproj_px: float = 2.0,
    min_angle_deg: float = 1.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Linear multi-view triangulation (DLT) of tracks, then validity checks.

    Args:
        K: ``(C, 3, 3)``; T_cam_world: ``(C, 4, 4)``.
        track_cam: per track, ``int (n,)`` cameras observing it (n >= 2).
        track_xy: per track, ``(n, 2)`` pixels.

    Returns:
        ``points (T, 3)`` and ``ok bool (T,)``: positive depth in all views, reprojection error
        below ``max_reproj_px`` in all views and a largest ray angle of at least ``min_angle_deg``.
    """
    n = len(track_cam)
    pts = np.zeros((n, 3))
    ok = np.zeros(n, bool)
    Pm = np.einsum("cij,cjk->cik", K, T_cam_world[:, :3, :])
    centers = -np.einsum("cji,cj->ci", T_cam_world[:, :3, :3], T_cam_world[:, :3, 3])
    # Group tracks by length so each group is one batched SVD.
    lengths = np.array([len(c) for c in track_cam])
    for L in np.unique(lengths):
        idx = np.nonzero(lengths == L)[0]
        if L < 2:
            continue
        cams = np.stack([track_cam[i] for i in idx])  # (G, L)
        xy = np.stack([track_xy[i] for i in idx])  # (G, L, 2)
        P = Pm[cams]  # (G, L, 3, 4)
        A = np.concatenate(
            [xy[..., 0:1] * P[..., 2, :] - P[..., 0, :], xy[..., 1:2] * P[..., 2, :] - P[..., 1, :]], axis=1
        )  # (G, 2L, 4)
        _, _, Vt = np.linalg.svd(A)
        Xh = Vt[:, -1]
        w = Xh[:, 3:4]
        good = np.abs(w[:, 0]) > 1e-12
        X = Xh[:, :3] / np.where(good[:, None], w, 1.0)
        pc = np.einsum("glij,gj->gli", T_cam_world[cams][..., :3, :3], X) + T_cam_world[cams][..., :3, 3]
        z = pc[..., 2]
        uv = np.einsum("glij,glj->gli", K[cams], pc)
        uv = uv[..., :2] / np.where(np.abs(uv[..., 2:3]) < 1e-12, 1e-12, uv[..., 2:3])
        err = np.linalg.norm(uv - xy, axis=-1)
        rays = X[:, None, :] - centers[cams]
        rays /= np.maximum(np.linalg.norm(rays, axis=-1, keepdims=True), 1e-12)
        cosm = np.einsum("gli,gmi->glm", rays, rays).min(axis=(1, 2))
        ang = np.degrees(np.arccos(np.clip(cosm, -1, 1)))
        g_ok = good & np.all(z > 0, axis=1) & np.all(err < max_reproj_px, axis=1) & (ang >= min_angle_deg)
        pts[idx] = X
        ok[idx] = g_ok
    return pts, ok
