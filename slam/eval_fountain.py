"""SLAM on real pixels: fountain-p11 (Strecha et al. 2008), 11 photos with laser-calibrated cameras.

(a) Depth + fusion with the given cameras, then held-out view synthesis: for each held-out view,
    a memory is built from the *other* views only (MVS over them with the given poses, fusion of
    static consistent depth) and rendered at the held-out camera; PSNR on covered pixels and
    coverage are reported.
(b) Pose estimation without the given cameras: SIFT, two-view initialisation, PnP, bundle
    adjustment (the clip-SfM path of :class:`slam.VisualSlam`); the result is placed by the first
    image's given pose and scaled by the given distance between the first two cameras, then
    compared with all given cameras (rotation error in degrees, camera-centre error in metres).

    .venv/bin/python -m slam.eval_fountain [--data ../shared/data/fountain-p11] [--holdout 1,5,9]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fountain-p11"


def load_capture(folder: str | Path, scale: float = 1.0):
    """Images ``uint8 (N, H, W, 3)`` and cameras of a folder capture (``images/``, ``cameras/``)."""
    import imageio.v3 as iio
    import torch
    import torch.nn.functional as F

    from spatia_py.geometry import Camera

    root = Path(folder)
    if not (root / "images").is_dir():
        raise FileNotFoundError(f"{root}/images not found; pass --data pointing at the fountain-p11 folder")
    names = sorted(p.stem for p in (root / "images").iterdir() if p.suffix.lower() in (".jpg", ".png"))
    imgs, cams = [], []
    for n in names:
        im = np.asarray(
            iio.imread(
                root / "images" / f"{n}.jpg"
                if (root / "images" / f"{n}.jpg").exists()
                else root / "images" / f"{n}.png"
            )
        )[..., :3]
        K = np.loadtxt(root / "cameras" / f"{n}_K.txt")
        # The folder format stores camera-to-world in OpenCV axes: our T_world_cam as is.
        T = np.loadtxt(root / "cameras" / f"{n}_T_world_cam.txt")
        cam = Camera(K, im.shape[1], im.shape[0], T)
        if scale != 1.0:
            cam = cam.scaled(scale)
            t = torch.from_numpy(im).permute(2, 0, 1)[None].float()
            im = F.interpolate(t, size=(cam.height, cam.width), mode="area")[0].permute(1, 2, 0).round().byte().numpy()
        imgs.append(im)
        cams.append(cam)
    return names, np.stack(imgs), cams


def fountain_config():
    """SLAM config for a sparse still capture: every image is a keyframe, neighbours by index."""
    from slam.config import SlamConfig

    return SlamConfig(
        keyframe_stride=1,
        keyframe_end_margin=0,
        keyframe_min_new_coverage=0.0,
        mvs_source_offsets=[-2, -1, 1, 2],
        sift_max_features=4000,
        sfm_pair_offsets=[1, 2, 3],
    )


def novel_views(frames, cams, holdout: list[int], voxel_size: float = 0.01) -> dict:
    """Part (a): PSNR / coverage of each held-out view rendered from a memory built without it."""
    from render.splat import render_points
    from slam import VisualSlam, fuse_clip
    from spatia_py.memory import SpatialMemory
    from spatia_py.metrics import psnr

    cfg = fountain_config()
    per = []
    for h in holdout:
        keep = [i for i in range(len(frames)) if i != h]
        t0 = time.perf_counter()
        slam = VisualSlam(cfg, voxel_size)
        mem = SpatialMemory(voxel_size)
        res = slam.process(frames[keep], [cams[i] for i in keep], mem, 0, poses_known=True)
        stats = fuse_clip(mem, frames[keep], res, [cams[i] for i in keep], 0, cfg)
        cam = cams[h]
        # Splats one voxel wide: at this capture's ~8 m a 1 cm voxel is about one pixel, so
        # smaller splats would leave pinholes between neighbouring points.
        out = render_points(
            mem.xyz,
            mem.rgb,
            cam.K,
            cam.T_cam_world,
            cam.width,
            cam.height,
            radius=voxel_size,
            max_radius_px=cfg.render_max_radius_px,
        )
        covered = out.depth.numpy() > 0
        p = psnr(frames[h], out.rgb.numpy(), covered)
        kf_cov = [float((res.depth[k] > 0).mean()) for k in res.keyframes]
        per.append(
            {
                "view": int(h),
                "psnr_db": round(float(p), 3),
                "coverage": round(float(covered.mean()), 4),
                "memory_points": int(len(mem)),
                "fused_pixels": int(stats["pixels_fused"]),
                "keyframe_depth_coverage": round(float(np.mean(kf_cov)), 4),
                "dynamic_fraction": round(float(res.dynamic_masks.mean()), 4),
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
    return {
        "psnr_db_mean": round(float(np.mean([v["psnr_db"] for v in per])), 3),
        "psnr_db_min": round(float(np.min([v["psnr_db"] for v in per])), 3),
        "coverage_mean": round(float(np.mean([v["coverage"] for v in per])), 4),
        "coverage_min": round(float(np.min([v["coverage"] for v in per])), 4),
        "per_view": per,
    }


def estimate_poses(frames, cams) -> dict:
    """Part (b): poses from pixels only; first pose and scale from the given cameras."""
    from slam.features import extract_sift, to_gray
    from slam.sfm import incremental_sfm, verify_pairs
    from spatia_py.geometry import invert_pose, rotation_angle_deg

    cfg = fountain_config()
    N = len(frames)
    H, W = frames.shape[1:3]
    Ks = np.stack([c.K for c in cams])
    t0 = time.perf_counter()
    feats = [extract_sift(g, cfg.sift_max_features, first_octave=-1) for g in to_gray(frames)]
    pairs = [(i, j) for i in range(N) for j in range(i + 1, N)]
    ver = verify_pairs(feats, Ks, (W, H), pairs, max_error_px=2.0, min_inliers=cfg.sfm_min_inliers)
    rec = incremental_sfm(feats, Ks, (W, H), ver, min_pnp_inliers=cfg.sfm_min_inliers, max_reproj_px=2.0)
    seconds = time.perf_counter() - t0
    T_gt = np.stack([c.T_world_cam for c in cams])
    if not rec.registered[0] or not rec.registered[1]:
        return {"error": "image 0 or 1 not registered", "registered": int(rec.registered.sum())}
    T_est = invert_pose(rec.T_cam_world)
    # Anchor: the first image's given pose; scale: the given distance between cameras 0 and 1.
    s = np.linalg.norm(T_gt[1, :3, 3] - T_gt[0, :3, 3]) / np.linalg.norm(T_est[1, :3, 3] - T_est[0, :3, 3])
    A = T_gt[0] @ invert_pose(T_est[0])
    out = []
    for i in range(N):
        T = T_est[i].copy()
        T[:3, 3] = T_est[0, :3, 3] + s * (T[:3, 3] - T_est[0, :3, 3])
        out.append(A @ T)
    out = np.stack(out)
    reg = rec.registered
    rot = np.array([rotation_angle_deg(a[:3, :3], b[:3, :3]) for a, b in zip(out, T_gt, strict=True)])[reg]
    tr = np.linalg.norm(out[:, :3, 3] - T_gt[:, :3, 3], axis=1)[reg]
    extent = float(np.linalg.norm(np.ptp(T_gt[:, :3, 3], axis=0)))
    return {
        "registered": int(reg.sum()),
        "images": N,
        "rot_err_deg_median": round(float(np.median(rot)), 4),
        "rot_err_deg_max": round(float(rot.max()), 4),
        "trans_err_m_median": round(float(np.median(tr)), 4),
        "trans_err_m_max": round(float(tr.max()), 4),
        "camera_extent_m": round(extent, 3),
        "trans_err_max_percent_of_extent": round(100 * float(tr.max()) / extent, 3),
        "reproj_rmse_px": round(float(rec.info.get("reproj_rmse_px", float("nan"))), 4),
        "points": int(rec.info.get("points", 0)),
        "seconds": round(seconds, 2),
        "per_view_rot_deg": [round(float(x), 4) for x in rot],
        "per_view_trans_m": [round(float(x), 4) for x in tr],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="fountain-p11 folder (default: %(default)s)")
    ap.add_argument("--holdout", default="1,3,5,7,9", help="held-out views for (a), comma-separated, or 'all'")
    ap.add_argument("--voxel-size", type=float, default=0.01, help="memory voxel edge in metres")
    ap.add_argument("--skip", choices=["a", "b"], default=None, help="skip one part")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    names, frames, cams = load_capture(args.data)
    hold = list(range(len(frames))) if args.holdout == "all" else [int(x) for x in args.holdout.split(",")]
    out: dict = {"data": str(args.data), "images": len(frames), "size": [int(frames.shape[2]), int(frames.shape[1])]}
    t0 = time.perf_counter()
    if args.skip != "a":
        out["novel_view"] = novel_views(frames, cams, hold, args.voxel_size)
    if args.skip != "b":
        out["poses"] = estimate_poses(frames, cams)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
