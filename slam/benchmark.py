"""Measurements behind the SLAM design choices, on the procedural world (ground truth for scoring only).

Prints a table per question and one JSON line at the end:

1. features: pycolmap SIFT (``first_octave`` 0 and -1) against kornia SIFT at the clip size.
2. tracking against the memory: direct photometric alignment to the memory rendered at the
   commanded camera vs SIFT on that rendering + PnP/RANSAC with its depth
   (``pycolmap.estimate_and_refine_absolute_pose``), errors against the generator's actual cameras.
3. plane-sweep settings: source offsets and ZNCC window, depth error against true static depth.

    .venv/bin/python -m slam.benchmark [--width 512 --height 320]

The memory for (2) is fused from the first clip's true static depth at its true cameras, so the
comparison isolates the tracker, not the quality of earlier SLAM rounds.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _clip(gen, cams, conditioning, round_index, frame_offset, seed):
    from spatia_py.types import GenerationRequest

    return gen.generate(
        GenerationRequest(
            cameras=cams,
            conditioning=conditioning,
            seed=seed,
            round_index=round_index,
            frame_offset=frame_offset,
            fps=24.0,
        )
    )


def bench_features(gray: np.ndarray) -> list[dict]:
    import torch

    from slam.features import extract_sift

    rows = []
    for fo in (0, -1):
        extract_sift(gray, 2000, first_octave=fo)
        t = time.process_time()
        n = len(extract_sift(gray, 2000, first_octave=fo))
        rows.append(
            {
                "extractor": f"pycolmap SIFT first_octave={fo}",
                "cpu_ms": 1000 * (time.process_time() - t),
                "keypoints": n,
            }
        )
    import kornia.feature as KF

    sk = KF.SIFTFeature(num_features=2000)
    x = torch.from_numpy(gray)[None, None]
    with torch.no_grad():
        sk(x)
        t = time.process_time()
        lafs, _, _ = sk(x)
    rows.append(
        {"extractor": "kornia SIFTFeature", "cpu_ms": 1000 * (time.process_time() - t), "keypoints": int(lafs.shape[1])}
    )
    return rows


def _pnp_track(frame_gray, tmpl_gray, tmpl_depth, cam):
    """SIFT on the frame and on the rendered memory, 2D-3D from the rendered depth, PnP + RANSAC."""
    import pycolmap

    from slam.features import extract_sift, match_features
    from slam.sfm import pycolmap_camera, rigid_to_T

    ff = extract_sift(frame_gray, 2000)
    ft = extract_sift(tmpl_gray, 2000)
    m = match_features(ff, ft)
    uv = ft.xy[m[:, 1]]
    ui = np.clip(np.rint(uv).astype(int), 0, [cam.width - 1, cam.height - 1])
    z = tmpl_depth[ui[:, 1], ui[:, 0]]
    ok = z > 0
    if ok.sum() < 6:
        return None, 0
    rays = np.c_[uv[ok], np.ones(ok.sum())] @ np.linalg.inv(cam.K).T
    Xw = (rays * z[ok, None]) @ cam.T_world_cam[:3, :3].T + cam.T_world_cam[:3, 3]
    opts = pycolmap.AbsolutePoseEstimationOptions()
    opts.ransac.max_error = 2.0
    res = pycolmap.estimate_and_refine_absolute_pose(
        ff.xy[m[ok, 0]], Xw, pycolmap_camera(cam.K, cam.width, cam.height), opts
    )
    if res is None:
        return None, 0
    from spatia_py.geometry import invert_pose

    return invert_pose(rigid_to_T(res["cam_from_world"])), int(np.sum(res["inlier_mask"]))


def bench_tracking(clip1, cond, memory, voxel) -> list[dict]:
    from slam.config import SlamConfig
    from slam.features import to_gray
    from slam.photometric import align_to_template
    from slam.visual_slam import VisualSlam
    from spatia_py.geometry import invert_pose, pose_distance

    cfg = SlamConfig()
    slam = VisualSlam(cfg, voxel)
    mx, mr = slam._visible_memory(memory, clip1.cameras)
    gt = clip1.ground_truth.T_world_cam
    out = {"direct": [], "sift+pnp": [], "commanded": []}
    cpu = {"direct": 0.0, "sift+pnp": 0.0}
    for i, cam in enumerate(clip1.cameras):
        rgb_t, dep_t = slam._render(mx, mr, cam.K, cam.T_world_cam, cam.width, cam.height)
        fg, tg = to_gray(clip1.frames[i]), to_gray(rgb_t)
        t = time.process_time()
        res = align_to_template(
            fg,
            tg,
            dep_t,
            cam.K,
            levels=cfg.track_levels,
            max_pixels=cfg.track_max_pixels,
            prior_T_frame_tmpl=np.eye(4),
            prior_sigma_deg=cfg.track_prior_sigma_deg,
            prior_sigma_m=cfg.track_prior_sigma_m,
        )
        cpu["direct"] += time.process_time() - t
        out["direct"].append(pose_distance(cam.T_world_cam @ invert_pose(res.T_frame_tmpl), gt[i]))
        t = time.process_time()
        T_pnp, _ = _pnp_track(fg, tg, dep_t, cam)
        cpu["sift+pnp"] += time.process_time() - t
        out["sift+pnp"].append(pose_distance(T_pnp, gt[i]) if T_pnp is not None else (np.inf, np.inf))
        out["commanded"].append(pose_distance(cam.T_world_cam, gt[i]))
    rows = []
    n = len(clip1.cameras)
    for k, v in out.items():
        e = np.array(v)
        rows.append(
            {
                "tracker": k,
                "median_mm": 1000 * float(np.median(e[:, 0])),
                "max_mm": 1000 * float(e[:, 0].max()),
                "median_deg": float(np.median(e[:, 1])),
                "cpu_ms_per_frame": 1000 * cpu.get(k, 0.0) / n,
            }
        )
    return rows


def bench_mvs(clip) -> list[dict]:
    from slam.features import to_gray
    from slam.mvs import sweep_coarse_to_fine
    from slam.visual_slam import _resize_nearest
    from spatia_py.geometry import invert_pose

    g = clip.ground_truth
    T = g.T_world_cam
    K = clip.cameras[0].K
    gray = to_gray(clip.frames)
    ref = len(gray) // 2
    z = g.static_depth[ref][g.static_depth[ref] > 0]
    dmin, dmax = 0.6 * np.percentile(z, 1), 1.5 * np.percentile(z, 99)  # search range, outside the timing
    rows = []
    for offsets, window, smooth in (
        ([-4, -2, 2, 4], 5, 0), ([-4, -2, 2, 4], 7, 0), ([-6, -3, 3, 6], 5, 0), ([-6, -3, 3, 6], 7, 0),
        ([-6, -3, 3, 6], 7, 7),
    ):
        srcs = [ref + o for o in offsets if 0 <= ref + o < len(gray)]
        T_sr = np.stack([invert_pose(T[s]) @ T[ref] for s in srcs])
        t = time.process_time()
        sw = sweep_coarse_to_fine(
            gray[ref], gray[srcs], K, T_sr, dmin, dmax, window=window,
            smooth_window=smooth,
        )
        ms = 1000 * (time.process_time() - t)
        d = sw.depth.numpy()
        h, w = d.shape
        gt = _resize_nearest(g.static_depth[ref], h, w)
        dyn = _resize_nearest(g.dynamic_masks[ref], h, w) > 0
        st = ~dyn & (gt > 0)
        rel = np.abs(d - gt)[st] / gt[st]
        rows.append(
            {
                "sources": offsets,
                "window": window,
                "smooth_window": smooth,
                "median_absrel": float(np.median(rel)),
                "beyond_8pct": float((rel > 0.08).mean()),
                "within_2pct": float((rel < 0.02).mean()),
                "cpu_ms": ms,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    import torch

    from spatia_py.conditioning import MemoryRenderer, render_conditioning
    from spatia_py.config import ProceduralConfig
    from spatia_py.generators.procedural import ProceduralGenerator
    from spatia_py.geometry import orbit_path
    from spatia_py.memory import SpatialMemory

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=320)
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    voxel = 0.01
    path = orbit_path([0.0, 0.0, 1.2], 1.5, 1.4, 128, width=args.width, height_px=args.height, degrees=450)
    gen = ProceduralGenerator(ProceduralConfig(n_actors=3), seed=args.seed)
    clip0 = _clip(gen, path.cameras[:16], None, 0, 0, args.seed)
    g = clip0.ground_truth
    mem = SpatialMemory(voxel)
    for k in range(0, 16, 2):
        cam = clip0.cameras[k].with_pose(g.T_world_cam[k])
        mem.fuse_depth(np.where(g.dynamic_masks[k], 0, g.static_depth[k]), clip0.frames[k], cam, round_index=0)
    cond = render_conditioning(MemoryRenderer(mem, radius_scale=0.5), path.cameras[16:32])
    clip1 = _clip(gen, path.cameras[16:32], cond, 1, 16, args.seed)

    from slam.features import to_gray

    results = {
        "features": bench_features(to_gray(clip0.frames[0])),
        "tracking": bench_tracking(clip1, cond, mem, voxel),
        "mvs": bench_mvs(clip0),
    }
    for name, rows in results.items():
        print(f"\n== {name}")
        keys = list(rows[0])
        print("  ".join(f"{k:>18s}" for k in keys))
        for r in rows:
            print("  ".join(f"{v:>18.4g}" if isinstance(v, float) else f"{str(v):>18s}" for v in r.values()))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
