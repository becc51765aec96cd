"""The alternatives a user would pick, measured on the same inputs as ours in the same run.

Each peer is a plain function returning a dict of figures; times are in seconds. Where noise on
a shared machine matters, ours and the peer are timed *interleaved* (round-robin calls) so a load
spike hits both alike, and results are compared as ratios.

- :func:`incremental_vs_rebuild` — our incremental memory update against rebuilding the memory
  from all history each round (what Spatia does: reconstruct from all history frames, then
  voxel-downsample).
- :func:`colmap_peer` — pycolmap incremental mapping (SIFT, matching, mapping on CPU) on a run's
  frames; Sim(3)-aligned to ground truth with :func:`umeyama` because COLMAP has no metric frame.
- :func:`render_peer` — Open3D ``project_to_rgbd_image`` against our point splatting.
- :func:`tsdf_peer` — Open3D ``VoxelBlockGrid`` TSDF integration against ``SpatialMemory.fuse_depth``.
- :func:`voxel_downsample_peer` — Open3D ``voxel_down_sample`` (legacy and tensor) against
  ``SpatialMemory.fuse`` on the same points.
- :func:`frame_update_peer` — one new frame into a large memory: our ``fuse`` against Open3D
  re-downsampling everything (what a point map without incremental update does per frame).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spatia_py.geometry import Camera, apply_similarity, rotation_angle_deg, umeyama
from spatia_py.memory import SpatialMemory

__all__ = [
    "time_interleaved",
    "sim3_aligned_errors",
    "incremental_vs_rebuild",
    "colmap_peer",
    "render_peer",
    "tsdf_peer",
    "voxel_downsample_peer",
    "frame_update_peer",
]


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------


def time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, dict]:
    """Time several callables round-robin: ``{name: {"median_s", "min_s", "repeats"}}``.

    Calls alternate (a, b, a, b, ...) so that load from other processes on a shared machine
    affects every contender alike; the median is the headline, the minimum the best case.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "repeats": repeats} for name, t in times.items()}


def _ratio(peer: float | None, ours: float | None) -> float | None:
    if peer is None or ours is None or not np.isfinite(peer) or not np.isfinite(ours) or ours <= 0:
        return None
    return float(peer / ours)


# --------------------------------------------------------------------------------------------
# similarity alignment (evaluation of trajectories without a metric frame)
# --------------------------------------------------------------------------------------------


def sim3_aligned_errors(T_world_cam_est: np.ndarray, T_world_cam_gt: np.ndarray) -> dict:
    """ATE (RMSE of camera centres, metres) and median rotation error after a Sim(3) alignment of
    the estimated trajectory ``(N, 4, 4)`` onto the ground truth ``(N, 4, 4)`` (camera-to-world)."""
    c_est, c_gt = T_world_cam_est[:, :3, 3], T_world_cam_gt[:, :3, 3]
    s, R, t = umeyama(c_est, c_gt)
    d = np.linalg.norm(apply_similarity(s, R, t, c_est) - c_gt, axis=1)
    rot = [rotation_angle_deg(R @ a[:3, :3], b[:3, :3]) for a, b in zip(T_world_cam_est, T_world_cam_gt, strict=True)]
    return {"ate_rmse_m": float(np.sqrt(np.mean(d**2))), "rot_err_median_deg": float(np.median(rot)),
            "scale": s}


# --------------------------------------------------------------------------------------------
# incremental memory vs rebuild-everything
# --------------------------------------------------------------------------------------------


def incremental_vs_rebuild(rounds: Sequence[Any], fuse_round: Callable[[SpatialMemory, Any, int], Any],
                           voxel_size: float, rebuild_at: Sequence[int] | None = None,
                           progress: Callable[[str], None] | None = None) -> dict:
    """Per-round cost of our incremental update against rebuilding the memory from all history.

    Incremental (ours): round ``r`` fuses only its own observations into the memory kept from
    round ``r - 1``. Rebuild-everything (the peer): round ``r`` starts from an empty memory and
    re-fuses the observations of rounds ``0..r`` — a reconstruction from all history, then voxel
    downsampling — which is what Spatia does every round. Both use the same ``fuse_round``, so
    the rebuilt memory must equal the incremental one (checked per measured round).

    Args:
        rounds: per-round observations (anything ``fuse_round`` understands), oldest first.
        fuse_round: ``fuse_round(memory, rounds[r], r)`` fuses one round into ``memory``.
        voxel_size: memory voxel edge in metres.
        rebuild_at: rounds at which the (quadratic-cost) rebuild is measured; default all.
        progress: optional callback for one line per measured round.

    Returns:
        ``{"round", "incremental_s", "incremental_points", "rebuild_round", "rebuild_s",
        "rebuild_points", "identical", "ratio_last", "cumulative_incremental_s",
        "cumulative_rebuild_s_measured"}``.
    """
    n = len(rounds)
    todo = set(range(n)) if rebuild_at is None else {r for r in rebuild_at if 0 <= r < n}
    inc = SpatialMemory(voxel_size)
    inc_s, inc_pts, reb_r, reb_s, reb_pts = [], [], [], [], []
    identical = True
    for r in range(n):
        t0 = time.perf_counter()
        fuse_round(inc, rounds[r], r)
        inc_s.append(time.perf_counter() - t0)
        inc_pts.append(len(inc))
        if r in todo:
            fresh = SpatialMemory(voxel_size)
            t0 = time.perf_counter()
            for q in range(r + 1):
                fuse_round(fresh, rounds[q], q)
            reb_s.append(time.perf_counter() - t0)
            reb_r.append(r)
            reb_pts.append(len(fresh))
            identical &= bool(len(fresh) == len(inc) and np.array_equal(fresh.keys, inc.keys))
            if progress is not None:
                progress(f"round {r}: incremental {inc_s[-1]:.3f}s, rebuild {reb_s[-1]:.3f}s, {len(inc):,} pts")
    last = reb_r[-1] if reb_r else None
    return {
        "round": list(range(n)),
        "incremental_s": inc_s,
        "incremental_points": inc_pts,
        "rebuild_round": reb_r,
        "rebuild_s": reb_s,
        "rebuild_points": reb_pts,
        "identical": identical,
        "ratio_last": _ratio(reb_s[-1], inc_s[last]) if last is not None else None,
        "cumulative_incremental_s": float(sum(inc_s)),
        "cumulative_rebuild_s_measured": float(sum(reb_s)),
    }


# --------------------------------------------------------------------------------------------
# pycolmap incremental mapping
# --------------------------------------------------------------------------------------------


def colmap_peer(frames: np.ndarray, K: np.ndarray, T_world_cam_gt: np.ndarray, workdir: Path, *,
                matcher: str = "auto", exhaustive_max_images: int = 80, sequential_overlap: int = 10,
                seed: int = 0) -> dict:
    """Run pycolmap's incremental mapping on ``frames`` and score it against ground truth.

    Frames are written as PNGs, SIFT features extracted, pairs matched (exhaustive for up to
    ``exhaustive_max_images`` frames, else sequential with ``sequential_overlap``), then
    ``pycolmap.incremental_mapping``; intrinsics are given and kept fixed, as our SLAM knows them
    too. The largest model is Sim(3)-aligned (:func:`umeyama`) to the ground-truth camera centres
    of the frames it registered — COLMAP has no metric frame, so its ATE is after alignment.

    Args:
        frames: ``uint8 (N, H, W, 3)``.
        K: ``(3, 3)`` intrinsics in our convention (integer pixel = pixel centre).
        T_world_cam_gt: ``(N, 4, 4)`` ground-truth cameras (evaluation only).
        workdir: an empty folder for the images, database and models.

    Returns:
        ``{"images", "registered", "registered_fraction", "registered_frames", "T_world_cam" (R, 4, 4)
        (registered frames, COLMAP's frame and scale), "ate_rmse_m_sim3", "rot_err_median_deg_sim3", "write_s",
        "extract_s", "match_s", "map_s", "total_s", "matcher", "models"}``.
    """
    import pycolmap
    from PIL import Image

    N, H, W = frames.shape[:3]
    if matcher == "auto":
        matcher = "exhaustive" if N <= exhaustive_max_images else "sequential"
    if matcher not in ("exhaustive", "sequential"):
        raise ValueError(f"colmap_peer: matcher must be auto, exhaustive or sequential, got {matcher!r}")
    images = workdir / "images"
    images.mkdir(parents=True, exist_ok=True)
    db = workdir / "database.db"
    models = workdir / "sparse"
    models.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    names = [f"{i:06d}.png" for i in range(N)]
    for name, frame in zip(names, frames, strict=True):
        Image.fromarray(frame).save(images / name)
    write_s = time.perf_counter() - t0

    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "PINHOLE"
    # COLMAP puts the centre of the top-left pixel at (0.5, 0.5); ours at (0, 0): shift cx, cy.
    reader.camera_params = ",".join(str(float(v)) for v in (K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5))
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.use_gpu = False
    device = pycolmap.Device.cpu
    t0 = time.perf_counter()
    pycolmap.extract_features(db, images, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                              extraction_options=extraction, device=device)
    extract_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if matcher == "exhaustive":
        pycolmap.match_exhaustive(db, device=device)
    else:
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = int(sequential_overlap)
        pycolmap.match_sequential(db, pairing_options=pairing, device=device)
    match_s = time.perf_counter() - t0
    opts = pycolmap.IncrementalPipelineOptions()
    opts.ba_refine_focal_length = False
    opts.ba_refine_principal_point = False
    opts.ba_refine_extra_params = False
    opts.random_seed = int(seed)
    t0 = time.perf_counter()
    recs = pycolmap.incremental_mapping(db, images, models, options=opts)
    map_s = time.perf_counter() - t0

    out: dict[str, Any] = {"images": N, "matcher": matcher, "write_s": write_s, "extract_s": extract_s,
                           "match_s": match_s, "map_s": map_s, "total_s": extract_s + match_s + map_s,
                           "models": len(recs), "registered": 0, "registered_fraction": 0.0, "registered_frames": [],
                           "ate_rmse_m_sim3": float("nan"), "rot_err_median_deg_sim3": float("nan")}
    if not recs:
        return out
    rec = max(recs.values(), key=lambda r: r.num_reg_images())
    index = {name: i for i, name in enumerate(names)}
    reg, T_est = [], []
    for image in rec.images.values():
        if not image.has_pose:
            continue
        T_cam_world = np.eye(4)
        T_cam_world[:3, :] = np.asarray(image.cam_from_world().matrix())  # COLMAP cam_from_world = our T_cam_world
        reg.append(index[image.name])
        T_est.append(np.linalg.inv(T_cam_world))
    order = np.argsort(reg)
    reg = np.asarray(reg)[order]
    out["registered"] = len(reg)
    out["registered_fraction"] = len(reg) / N
    out["registered_frames"] = reg.tolist()
    out["T_world_cam"] = np.asarray(T_est).reshape(-1, 4, 4)[order]  # in COLMAP's frame and scale
    if len(reg) >= 3:
        err = sim3_aligned_errors(np.asarray(T_est)[order], T_world_cam_gt[reg])
        out["ate_rmse_m_sim3"] = err["ate_rmse_m"]
        out["rot_err_median_deg_sim3"] = err["rot_err_median_deg"]
        out["sim3_scale"] = err["scale"]
    return out


# --------------------------------------------------------------------------------------------
# Open3D peers
# --------------------------------------------------------------------------------------------


def render_peer(memory: SpatialMemory, cameras: Sequence[Camera], *, radius_scale: float, max_radius_px: int,
                repeats: int) -> dict:
    """Our ``MemoryRenderer.render`` against Open3D ``PointCloud.project_to_rgbd_image`` (tensor API).

    Both get the same points, intrinsics and world-to-camera transforms; one-time conversions
    (our torch arrays, Open3D's tensor point cloud) are timed separately as ``*_setup_s``. Open3D
    draws one pixel per point, ours a depth-scaled square splat (``radius_scale * voxel_size``).
    Times are per rendered view, medians over ``repeats`` passes over ``cameras``.
    """
    import open3d as o3d

    from spatia_py.conditioning import MemoryRenderer

    t0 = time.perf_counter()
    renderer = MemoryRenderer(memory, radius_scale=radius_scale, max_radius_px=max_radius_px)
    ours_setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    pcd = o3d.t.geometry.PointCloud(o3d.core.Tensor(np.ascontiguousarray(memory.xyz)))
    pcd.point.colors = o3d.core.Tensor(memory.rgb.astype(np.float32) / 255.0)
    peer_setup = time.perf_counter() - t0
    intr = [o3d.core.Tensor(c.K) for c in cameras]
    extr = [o3d.core.Tensor(c.T_cam_world) for c in cameras]
    far = 1e3

    def ours():
        return [renderer.render(c) for c in cameras]

    def peer():
        return [pcd.project_to_rgbd_image(c.width, c.height, i, e, depth_scale=1.0, depth_max=far)
                for c, i, e in zip(cameras, intr, extr, strict=True)]

    t = time_interleaved({"ours": ours, "peer": peer}, repeats)
    ours_cov = float(np.mean([(o["point_ids"] >= 0).mean() for o in ours()]))
    peer_cov = float(np.mean([(np.asarray(o.depth.as_tensor().numpy()) > 0).mean() for o in peer()]))
    n = len(cameras)
    return {"points": len(memory), "views": n, "width": cameras[0].width, "height": cameras[0].height,
            "ours_s": t["ours"]["median_s"] / n, "peer_s": t["peer"]["median_s"] / n,
            "ratio": _ratio(t["peer"]["median_s"], t["ours"]["median_s"]),
            "ours_setup_s": ours_setup, "peer_setup_s": peer_setup,
            "ours_covered_fraction": ours_cov, "peer_covered_fraction": peer_cov}


def tsdf_peer(views: Sequence[tuple[np.ndarray, np.ndarray, Camera]], voxel_size: float, *,
              block_resolution: int = 8, trunc_voxels: float = 8.0) -> dict:
    """Open3D ``VoxelBlockGrid`` TSDF integration against ``SpatialMemory.fuse_depth`` on the same
    depth maps (each view ``(depth float32 (H, W) metres, rgb uint8 (H, W, 3), camera)``).

    Both start empty and integrate the views in order at the same voxel size; per-view times are
    interleaved (ours, then Open3D, for each view). Open3D's surface is extracted at the end
    (``extract_point_cloud`` with weight threshold 1, i.e. every observed surface voxel, like ours).
    """
    import open3d as o3d

    o3c = o3d.core
    grid = o3d.t.geometry.VoxelBlockGrid(("tsdf", "weight", "color"), (o3c.float32, o3c.float32, o3c.float32),
                                         ((1), (1), (3)), voxel_size=float(voxel_size),
                                         block_resolution=int(block_resolution), block_count=1000)
    memory = SpatialMemory(voxel_size)
    ours_s, peer_s = [], []
    depth_max = float(max(float(np.max(d)) for d, _, _ in views)) * 1.01 + 1e-3 if views else 1.0
    for i, (depth, rgb, cam) in enumerate(views):
        t0 = time.perf_counter()
        memory.fuse_depth(depth, rgb, cam, round_index=i)
        ours_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        d_img = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(depth, dtype=np.float32)))
        c_img = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(rgb, dtype=np.float32) / 255.0))
        K, T = o3c.Tensor(cam.K), o3c.Tensor(cam.T_cam_world)
        blocks = grid.compute_unique_block_coordinates(d_img, K, T, 1.0, depth_max, trunc_voxels)
        grid.integrate(blocks, d_img, c_img, K, T, 1.0, depth_max, trunc_voxels)
        peer_s.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    surface = grid.extract_point_cloud(weight_threshold=1.0)
    extract_s = time.perf_counter() - t0
    n = max(len(views), 1)
    return {"views": len(views), "voxel_size": voxel_size, "block_resolution": block_resolution,
            "trunc_voxels": trunc_voxels,
            "ours_s_per_view": float(np.median(ours_s)) if ours_s else float("nan"),
            "peer_s_per_view": float(np.median(peer_s)) if peer_s else float("nan"),
            "ours_total_s": float(sum(ours_s)), "peer_total_s": float(sum(peer_s)),
            "ratio": _ratio(sum(peer_s) / n, sum(ours_s) / n),
            "peer_extract_s": extract_s, "ours_points": len(memory),
            "peer_points": int(surface.point.positions.shape[0]), "peer_blocks": int(grid.hashmap().size())}


def voxel_downsample_peer(xyz: np.ndarray, rgb: np.ndarray, voxel_size: float, repeats: int) -> dict:
    """``SpatialMemory.fuse`` into an empty memory against Open3D ``voxel_down_sample`` (legacy and
    tensor point clouds) on the same ``xyz float32 (N, 3)``, ``rgb uint8 (N, 3)``.

    Open3D's point clouds are built once outside the timing (favouring it); ours gets the raw
    arrays. All three average colour per voxel; ours also keeps weights, counts and sorted keys.
    """
    import open3d as o3d

    legacy = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz.astype(np.float64)))
    legacy.colors = o3d.utility.Vector3dVector(rgb.astype(np.float64) / 255.0)
    tensor = o3d.t.geometry.PointCloud(o3d.core.Tensor(np.ascontiguousarray(xyz, dtype=np.float32)))
    tensor.point.colors = o3d.core.Tensor(rgb.astype(np.float32) / 255.0)
    counts: dict[str, int] = {}

    def ours():
        m = SpatialMemory(voxel_size)
        m.fuse(xyz, rgb, round_index=0)
        counts["ours"] = len(m)

    def peer_legacy():
        counts["legacy"] = len(legacy.voxel_down_sample(voxel_size).points)

    def peer_tensor():
        counts["tensor"] = int(tensor.voxel_down_sample(voxel_size).point.positions.shape[0])

    t = time_interleaved({"ours": ours, "legacy": peer_legacy, "tensor": peer_tensor}, repeats)
    return {"points_in": len(xyz), "voxel_size": voxel_size,
            "ours_s": t["ours"]["median_s"], "legacy_s": t["legacy"]["median_s"], "tensor_s": t["tensor"]["median_s"],
            "ratio_legacy": _ratio(t["legacy"]["median_s"], t["ours"]["median_s"]),
            "ratio_tensor": _ratio(t["tensor"]["median_s"], t["ours"]["median_s"]),
            "ours_voxels": counts["ours"], "legacy_voxels": counts["legacy"], "tensor_voxels": counts["tensor"]}


def frame_update_peer(memory: SpatialMemory, revisit: tuple[np.ndarray, np.ndarray],
                      novel: Callable[[int], tuple[np.ndarray, np.ndarray]], repeats: int) -> dict:
    """One frame's worth of points into a memory of ``P`` points.

    Ours: ``memory.fuse`` — a revisit (points in existing voxels: updates only) and a novel view
    (new voxels: inserts, one linear copy). The peer: a point map without incremental update
    concatenates the new points to all ``P`` and voxel-downsamples everything again (Open3D legacy
    point clouds, the faster of its two APIs in :func:`voxel_down_sample_peer`). ``novel(k)`` returns
    fresh unexplored points for repeat ``k`` so every timed insert really inserts; ``memory`` grows
    by them.
    """
    import open3d as o3d

    n_points = len(memory)
    xyz_r, rgb_r = revisit

    def legacy_cloud(xyz: np.ndarray, rgb: np.ndarray):
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz.astype(np.float64)))
        pcd.colors = o3d.utility.Vector3dVector(rgb.astype(np.float64) / 255.0)
        return pcd

    base = legacy_cloud(memory.xyz, memory.rgb)
    new = legacy_cloud(xyz_r, rgb_r)
    vs = memory.voxel_size
    k = [0]

    def ours_revisit():
        memory.fuse(xyz_r, rgb_r, round_index=1)

    def ours_novel():
        xyz_n, rgb_n = novel(k[0])
        k[0] += 1
        memory.fuse(xyz_n, rgb_n, round_index=1)

    def peer():
        (base + new).voxel_down_sample(vs)

    t = time_interleaved({"ours_revisit": ours_revisit, "ours_novel": ours_novel, "peer": peer}, repeats)
    return {"points": n_points, "frame_points": len(xyz_r),
            "ours_revisit_s": t["ours_revisit"]["median_s"], "ours_novel_s": t["ours_novel"]["median_s"],
            "peer_s": t["peer"]["median_s"],
            "ratio_revisit": _ratio(t["peer"]["median_s"], t["ours_revisit"]["median_s"]),
            "ratio_novel": _ratio(t["peer"]["median_s"], t["ours_novel"]["median_s"])}
