"""Incremental structure from motion over a small image set (one clip, or a capture like fountain-p11).

Two-view initialisation (pycolmap's calibrated two-view geometry with relative pose), then
images are registered one at a time by PnP + RANSAC against the triangulated tracks
(``pycolmap.estimate_and_refine_absolute_pose``), new tracks are triangulated and everything is
refined by bundle adjustment (:mod:`slam.bundle`). The result is in the frame of the first
initial image with unit baseline; :func:`align_sim3` brings it into a metric world frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from slam.bundle import BaProblem, bundle_adjust, reprojection_errors, triangulate_tracks
from slam.features import Features, match_features
from spatia_py.parallel import serial_map

__all__ = [
    "pycolmap_camera",
    "Tracks",
    "build_tracks",
    "verify_pairs",
    "SfmResult",
    "incremental_sfm",
    "align_sim3",
]


def pycolmap_camera(K: np.ndarray, width: int, height: int):
    """A pycolmap PINHOLE camera with our ``K``.

    Keypoints handed to pycolmap next to it are in our convention too (integer = pixel centre),
    so the projection is consistent even though COLMAP images use the other half-pixel origin.
    """
    import pycolmap

    return pycolmap.Camera(
        model="PINHOLE", width=int(width), height=int(height), params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]]
    )


def rigid_to_T(r) -> np.ndarray:
    T = np.eye(4)
    T[:3, :] = np.asarray(r.matrix())
    return T


def T_to_rigid(T: np.ndarray):
    import pycolmap

    return pycolmap.Rigid3d(pycolmap.Rotation3d(T[:3, :3].copy()), T[:3, 3].copy())


def verify_pairs(
    features: list[Features],
    Ks: np.ndarray,
    size: tuple[int, int],
    pairs: list[tuple[int, int]],
    max_error_px: float = 2.0,
    min_inliers: int = 30,
    map_fn=None,
) -> dict:
    """Match and geometrically verify image pairs.

    Returns ``{(i, j): {"matches": int (K, 2), "T_j_i": (4, 4) unit-baseline relative pose or None,
    "tri_angle_deg": float}}`` for pairs with at least ``min_inliers`` geometric inliers; the pose
    is None (and the angle 0) when the pair is explained by a homography (too little parallax).

    ``map_fn(fn, items) -> list`` (results in input order) may run the pairs concurrently:
    pycolmap's two-view estimation releases the GIL, and its RANSAC is re-seeded with the fixed
    ``random_seed`` on every call, so the result does not depend on the threads. Default: one
    pair after another.
    """
    import pycolmap

    W, H = size
    opts = pycolmap.TwoViewGeometryOptions()
    opts.compute_relative_pose = True
    opts.ransac.max_error = float(max_error_px)
    opts.min_num_inliers = int(min_inliers)
    opts.ransac.random_seed = 0

    def verify(pair):
        i, j = pair
        m = match_features(features[i], features[j])
        if len(m) < min_inliers:
            return None
        geo = pycolmap.estimate_calibrated_two_view_geometry(
            pycolmap_camera(Ks[i], W, H),
            features[i].xy,
            pycolmap_camera(Ks[j], W, H),
            features[j].xy,
            m.astype(np.uint32),
            opts,
        )
        inl = np.asarray(geo.inlier_matches).reshape(-1, 2).astype(np.int64)
        C = pycolmap.TwoViewGeometryConfiguration
        usable = (C.CALIBRATED, C.UNCALIBRATED, C.PLANAR, C.PANORAMIC, C.PLANAR_OR_PANORAMIC)
        if len(inl) < min_inliers or geo.config not in usable:
            return None
        # Small baselines are explained by a homography (planar / panoramic): the matches are
        # good for tracks, but only a calibrated essential-matrix pose can initialise.
        calibrated = geo.config == C.CALIBRATED
        return {
            "matches": inl,
            "T_j_i": rigid_to_T(geo.cam2_from_cam1) if calibrated else None,
            "tri_angle_deg": float(np.degrees(geo.tri_angle)) if calibrated else 0.0,
        }

    pairs = list(pairs)
    results = (map_fn or serial_map)(verify, pairs)
    return {pair: r for pair, r in zip(pairs, results, strict=True) if r is not None}


@dataclass
class Tracks:
    """Feature tracks: connected components of verified matches."""

    cams: list[np.ndarray]
    """Per track, ``int (n,)`` image indices (each image at most once)."""
    kps: list[np.ndarray]
    """Per track, ``int (n,)`` keypoint indices in those images."""


def build_tracks(n_images: int, features: list[Features], verified: dict) -> Tracks:
    """Union-find over (image, keypoint) nodes; tracks seen twice by one image are split off."""
    offs = np.concatenate([[0], np.cumsum([len(f) for f in features])])
    parent = np.arange(offs[-1])

    def find(a):
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    for (i, j), v in verified.items():
        for a, b in v["matches"]:
            ra, rb = find(offs[i] + a), find(offs[j] + b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(a) for a in range(offs[-1])])
    img_of = np.repeat(np.arange(n_images), np.diff(offs))
    kp_of = np.arange(offs[-1]) - offs[img_of]
    order = np.argsort(roots, kind="stable")
    r_sorted = roots[order]
    bounds = np.nonzero(np.diff(r_sorted))[0] + 1
    cams, kps = [], []
    for grp in np.split(order, bounds):
        if len(grp) < 2:
            continue
        c = img_of[grp]
        if len(np.unique(c)) != len(c):
            # Inconsistent track (two keypoints of one image): keep the first per image.
            _, first = np.unique(c, return_index=True)
            grp = grp[np.sort(first)]
            c = img_of[grp]
            if len(grp) < 2:
                continue
        cams.append(c)
        kps.append(kp_of[grp])
    return Tracks(cams, kps)


@dataclass
class SfmResult:
    """Registered images and triangulated points of an incremental reconstruction."""

    T_cam_world: np.ndarray
    """``(N, 4, 4)`` world-to-camera; rows of unregistered images are identity."""
    registered: np.ndarray
    """``bool (N,)``."""
    points: np.ndarray
    """``(P, 3)`` triangulated track points."""
    point_track: np.ndarray
    """``int (P,)`` track index of each point."""
    info: dict = field(default_factory=dict)
    tracks: Tracks | None = None
    """The feature tracks the points index (``point_track``)."""


def incremental_sfm(
    features: list[Features],
    Ks: np.ndarray,
    size: tuple[int, int],
    verified: dict,
    min_init_angle_deg: float = 3.0,
    min_pnp_inliers: int = 30,
    max_reproj_px: float = 3.0,
    init_pair: tuple[int, int] | None = None,
    ba_every: int = 3,
) -> SfmResult:
    """Reconstruct cameras and points from verified pairwise matches.

    The initial pair maximises inliers among pairs with a triangulation angle of at least
    ``min_init_angle_deg`` (or is ``init_pair``); its first image is the world origin and the
    pair's baseline has unit length. Images are then registered by PnP in order of how many
    triangulated tracks they see; after each registration new tracks are triangulated, and every
    ``ba_every`` registrations (and at the end) a global BA runs and observations with a
    reprojection error above ``max_reproj_px`` are removed with their points.
    """
    import pycolmap

    N = len(features)
    W, H = size
    tracks = build_tracks(N, features, verified)
    T = np.tile(np.eye(4), (N, 1, 1))
    registered = np.zeros(N, bool)
    info: dict = {"tracks": len(tracks.cams), "pnp": {}}
    empty = SfmResult(T, registered, np.zeros((0, 3)), np.zeros(0, np.int64), info, tracks)
    if not verified:
        info["error"] = "no verified pairs"
        return empty
    if init_pair is None:
        posed = {k: v for k, v in verified.items() if v["T_j_i"] is not None}
        cands = [(len(v["matches"]), k) for k, v in posed.items() if v["tri_angle_deg"] >= min_init_angle_deg]
        if not cands:
            cands = [(v["tri_angle_deg"], k) for k, v in posed.items()]
        if not cands:
            info["error"] = "no image pair with enough parallax for a two-view initialisation"
            return empty
        init_pair = max(cands)[1]
    i0, j0 = init_pair
    if (i0, j0) not in verified or verified[(i0, j0)]["T_j_i"] is None:
        info["error"] = f"init pair {init_pair} has no calibrated two-view pose"
        return empty
    T[j0] = verified[(i0, j0)]["T_j_i"]
    registered[[i0, j0]] = True
    info["init_pair"] = [int(i0), int(j0)]

    # Flat track elements: track id, image, pixel.
    n_tracks = len(tracks.cams)
    if n_tracks == 0:
        info["error"] = "no tracks"
        return empty
    lens = np.array([len(c) for c in tracks.cams])
    e_track = np.repeat(np.arange(n_tracks), lens)
    e_cam = np.concatenate(tracks.cams)
    e_kp = np.concatenate(tracks.kps)
    offs = np.concatenate([[0], np.cumsum([len(f) for f in features])])
    all_xy = np.concatenate([f.xy for f in features])
    e_xy = all_xy[offs[e_cam] + e_kp]
    track_pt = -np.ones(n_tracks, np.int64)  # -1 = not triangulated, -2 = rejected
    points = np.zeros((0, 3))

    def observations():
        m = (track_pt[e_track] >= 0) & registered[e_cam]
        return BaProblem(Ks, T, points, e_cam[m], track_pt[e_track[m]], e_xy[m])

    def triangulate_new():
        nonlocal points
        m = registered[e_cam] & (track_pt[e_track] == -1)
        n_reg = np.bincount(e_track[m], minlength=n_tracks)
        cand = np.nonzero((n_reg >= 2) & (track_pt == -1))[0]
        if len(cand) == 0:
            return
        sel = m & np.isin(e_track, cand)
        order = np.argsort(e_track[sel], kind="stable")
        cams_s, xy_s, tr_s = e_cam[sel][order], e_xy[sel][order], e_track[sel][order]
        splits = np.nonzero(np.diff(tr_s))[0] + 1
        tc, tx = np.split(cams_s, splits), np.split(xy_s, splits)
        X, ok = triangulate_tracks(Ks, T, tc, tx, max_reproj_px=max_reproj_px, min_angle_deg=1.0)
        new = cand[ok]
        track_pt[new] = np.arange(len(points), len(points) + len(new))
        points = np.concatenate([points, X[ok]])

    def refine(iters: int):
        nonlocal points
        if len(points) == 0:
            return
        prob = observations()
        const = ~registered.copy()
        const[i0] = True
        T_new, X_new, _ = bundle_adjust(prob, const_cams=const, max_iters=iters)
        # Gauge: camera i0 stays the origin and the initial pair keeps a unit baseline.
        cj = -T_new[j0, :3, :3].T @ T_new[j0, :3, 3]
        s = 1.0 / max(np.linalg.norm(cj), 1e-12)
        T_new[:, :3, 3] *= s
        T[registered] = T_new[registered]
        points = X_new * s
        prob = observations()
        err, z = reprojection_errors(prob)
        bad = np.unique(prob.obs_pt[(err > max_reproj_px) | (z <= 0)])
        if len(bad):
            # Drop whole points with any bad observation; simple and conservative for small sets.
            keep = np.ones(len(points), bool)
            keep[bad] = False
            remap = -np.ones(len(points), np.int64)
            remap[keep] = np.arange(keep.sum())
            has = track_pt >= 0
            old = track_pt[has]
            track_pt[has] = np.where(keep[old], remap[old], -2)
            points = points[keep]

    triangulate_new()
    refine(15)
    failed = np.zeros(N, bool)
    since_ba = 0
    while not (registered | failed).all():
        has_pt = track_pt[e_track] >= 0
        counts = np.bincount(e_cam[has_pt], minlength=N)
        counts[registered | failed] = -1
        nxt = int(np.argmax(counts))
        if counts[nxt] < min_pnp_inliers:
            break
        m = has_pt & (e_cam == nxt)
        opts = pycolmap.AbsolutePoseEstimationOptions()
        opts.ransac.max_error = max_reproj_px
        opts.ransac.random_seed = 0
        res = pycolmap.estimate_and_refine_absolute_pose(
            e_xy[m], points[track_pt[e_track[m]]], pycolmap_camera(Ks[nxt], W, H), opts
        )
        n_inl = int(np.sum(res["inlier_mask"])) if res is not None else 0
        info["pnp"][int(nxt)] = n_inl
        if res is None or n_inl < min_pnp_inliers:
            failed[nxt] = True
            continue
        T[nxt] = rigid_to_T(res["cam_from_world"])
        registered[nxt] = True
        triangulate_new()
        since_ba += 1
        if since_ba >= ba_every:
            refine(8)
            since_ba = 0
    refine(20)
    prob = observations()
    err, _ = reprojection_errors(prob)
    info.update(
        points=len(points),
        reproj_rmse_px=float(np.sqrt(np.mean(err**2))) if len(err) else float("nan"),
        registered=int(registered.sum()),
    )
    point_track = np.full(len(points), -1, np.int64)
    has = track_pt >= 0
    point_track[track_pt[has]] = np.nonzero(has)[0]
    return SfmResult(T, registered, points, point_track, info, tracks)


def align_sim3(T_cam_world: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Map world-to-camera poses through the world similarity ``x' = s R x + t``."""
    out = T_cam_world.copy()
    # x_cam = Rc x + tc, x = (x' - t) / s R^T  ->  x_cam = Rc R^T x'/s - Rc R^T t/s + tc; rescale by s.
    Rc, tc = T_cam_world[..., :3, :3], T_cam_world[..., :3, 3]
    out[..., :3, :3] = Rc @ R.T
    out[..., :3, 3] = s * tc - np.einsum("...ij,j->...i", Rc @ R.T, t)
    return out
