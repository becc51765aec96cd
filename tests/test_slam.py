"""Unit tests of visual SLAM on tiny synthetic scenes (a textured box room ray-cast in numpy).

Each test builds its frames from known cameras, so the expected pose / depth / mask is exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from slam import SlamConfig, VisualSlam, fuse_clip
from slam.bundle import BaProblem, bundle_adjust, triangulate_tracks
from slam.features import to_gray
from slam.mvs import refine_depth_edges, resize_area, sweep_coarse_to_fine
from slam.photometric import align_to_template, build_pyramid, prepare_template, scale_K
from spatia_py.geometry import Camera, intrinsics_from_fov, invert_pose, look_at, pose_distance, se3_exp
from spatia_py.memory import SpatialMemory
from spatia_py.types import SlamResult

W, H = 160, 120
K = intrinsics_from_fov(W, H, 70.0)
ROOM_LO = np.array([-3.0, -2.5, 0.0])
ROOM_HI = np.array([3.0, 2.5, 3.0])


_TABLE = np.random.default_rng(123).random((3, 4096))


def _value_noise(X: np.ndarray, cell: float, channel: int) -> np.ndarray:
    """Trilinearly interpolated hashed random values on a grid of ``cell`` metres (non-periodic)."""
    g = X / cell
    i0 = np.floor(g).astype(np.int64)
    f = g - i0
    f = f * f * (3 - 2 * f)
    out = np.zeros(X.shape[:-1])
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                idx = (i0[..., 0] + dx) * 73856093 ^ (i0[..., 1] + dy) * 19349663 ^ (i0[..., 2] + dz) * 83492791
                w = (
                    (f[..., 0] if dx else 1 - f[..., 0])
                    * (f[..., 1] if dy else 1 - f[..., 1])
                    * (f[..., 2] if dz else 1 - f[..., 2])
                )
                out += w * _TABLE[channel, idx % 4096]
    return out


def _texture(X: np.ndarray) -> np.ndarray:
    """Non-repeating two-scale colour noise of world points ``(..., 3)`` -> rgb in [0, 1]."""
    return np.stack([0.5 * _value_noise(X, 0.04, c) + 0.5 * _value_noise(X, 0.15, (c + 1) % 3) for c in range(3)], -1)


def render_room(T_world_cam: np.ndarray, blob: tuple[np.ndarray, float] | None = None, size: tuple[int, int] = (W, H)):
    """Ray-cast the inside of the box room (and an optional sphere ``(centre, radius)``).

    Returns ``rgb uint8 (H, W, 3)``, static ``depth float32 (H, W)`` and the blob mask ``bool (H, W)``.
    """
    w, h = size
    Kr = intrinsics_from_fov(w, h, 70.0)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays_c = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(Kr).T
    R, o = T_world_cam[:3, :3], T_world_cam[:3, 3]
    d = rays_c @ R.T
    with np.errstate(divide="ignore", invalid="ignore"):
        t_hi = np.where(d > 0, (ROOM_HI - o) / d, (ROOM_LO - o) / d)
    t = np.min(np.where(np.isfinite(t_hi) & (t_hi > 0), t_hi, np.inf), axis=-1)
    X = o + d * t[..., None]
    rgb = _texture(X)
    depth = t * rays_c[..., 2]  # rays have z = 1 in the camera
    mask = np.zeros((h, w), bool)
    if blob is not None:
        c, r = blob
        oc = o - c
        bq = (d * oc).sum(-1)
        cq = (oc * oc).sum() - r * r
        aq = (d * d).sum(-1)
        disc = bq * bq - aq * cq
        ts = (-bq - np.sqrt(np.maximum(disc, 0))) / aq
        mask = (disc > 0) & (ts > 0) & (ts < t)
        Xs = o + d * ts[..., None]
        checker = ((np.floor(Xs[..., 0] * 12) + np.floor(Xs[..., 1] * 12) + np.floor(Xs[..., 2] * 12)) % 2)[..., None]
        rgb = np.where(
            mask[..., None], checker * np.array([1.0, 0.1, 0.1]) + (1 - checker) * np.array([0.1, 0.2, 1.0]), rgb
        )
    return (rgb * 255).round().astype(np.uint8), depth.astype(np.float32), mask


def orbit_cameras(
    n: int, start_deg: float = 0.0, step_deg: float = 3.0, radius: float = 1.2, size: tuple[int, int] = (W, H)
) -> list[Camera]:
    cams = []
    Kc = intrinsics_from_fov(size[0], size[1], 70.0)
    for i in range(n):
        a = math.radians(start_deg + step_deg * i)
        eye = np.array([radius * math.cos(a), radius * math.sin(a), 1.4])
        cams.append(Camera(Kc, size[0], size[1], look_at(eye, np.array([0.0, 0.0, 1.3]))))
    return cams


def follow_conditioning(cond_rgb: np.ndarray, cmd: Camera, T_actual: np.ndarray) -> np.ndarray:
    """What a conditioned video model shows at its actual camera: each pixel's true surface point
    is looked up in the conditioning rendered at the commanded camera (as the procedural world does)."""
    _, depth, _ = render_room(T_actual)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    X = (np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T) * depth[..., None]
    Xw = X @ T_actual[:3, :3].T + T_actual[:3, 3]
    Tc = cmd.T_cam_world
    p = (Xw @ Tc[:3, :3].T + Tc[:3, 3]) @ K.T
    uc = np.clip(p[..., 0] / p[..., 2], 0, W - 1.001)
    vc = np.clip(p[..., 1] / p[..., 2], 0, H - 1.001)
    u0, v0 = uc.astype(int), vc.astype(int)
    fu, fv = (uc - u0)[..., None], (vc - v0)[..., None]
    c = cond_rgb.astype(np.float64)
    out = (
        (1 - fu) * (1 - fv) * c[v0, u0]
        + fu * (1 - fv) * c[v0, u0 + 1]
        + (1 - fu) * fv * c[v0 + 1, u0]
        + fu * fv * c[v0 + 1, u0 + 1]
    )
    return out.round().astype(np.uint8)


def memory_from_views(cams: list[Camera], voxel: float = 0.01) -> SpatialMemory:
    mem = SpatialMemory(voxel)
    for c in cams:
        rgb, depth, _ = render_room(c.T_world_cam)
        mem.fuse_depth(depth, rgb, c, round_index=0)
    return mem


def small_cfg(**kw) -> SlamConfig:
    base = dict(
        track_min_pixels=200,
        track_max_pixels=4000,
        dynamic_min_area_px=20,
        dynamic_dilate_px=1,
        sift_max_features=1000,
        sfm_min_inliers=20,
    )
    base.update(kw)
    return SlamConfig(**base)


# ---------------------------------------------------------------------------------------------


def test_direct_alignment_recovers_known_perturbation():
    cam = orbit_cameras(1)[0]
    rgb_t, depth_t, _ = render_room(cam.T_world_cam)
    delta = se3_exp(np.array([np.radians(0.4), np.radians(-0.3), np.radians(0.2), 0.015, -0.01, 0.008]))
    T_actual = cam.T_world_cam @ delta
    rgb_f, _, _ = render_room(T_actual)
    res = align_to_template(to_gray(rgb_f), to_gray(rgb_t), depth_t, K, levels=3, max_pixels=8000, min_pixels=200)
    assert res.ok
    T_est = cam.T_world_cam @ invert_pose(res.T_frame_tmpl)
    dt, dr = pose_distance(T_est, T_actual)
    dt0, dr0 = pose_distance(cam.T_world_cam, T_actual)
    assert dt < 0.003 and dr < 0.05, (dt, dr)
    assert dt < 0.2 * dt0 and dr < 0.2 * dr0
    # A template prepared ahead (SLAM prepares a clip's templates in parallel) aligns bit for bit alike.
    tmpl = prepare_template(to_gray(rgb_t), depth_t, K, levels=3, max_pixels=8000, min_pixels=200)
    pre = align_to_template(to_gray(rgb_f), None, None, K, levels=3, max_pixels=8000, min_pixels=200, template=tmpl,
                            frame_pyr=build_pyramid(to_gray(rgb_f), 3))
    np.testing.assert_array_equal(pre.T_frame_tmpl, res.T_frame_tmpl)
    assert (pre.ok, pre.n_pixels, pre.inlier_fraction, pre.info) == (res.ok, res.n_pixels, res.inlier_fraction, res.info)
    with pytest.raises(ValueError, match="prepared with levels=3, min_level=0"):
        align_to_template(to_gray(rgb_f), None, None, K, levels=3, min_level=1, template=tmpl)
    with pytest.raises(ValueError, match="needs tmpl_gray and tmpl_depth"):
        align_to_template(to_gray(rgb_f), None, None, K)


def test_pnp_registration_in_clip_sfm_recovers_poses():
    """First round (empty memory): SIFT + two-view init + PnP + BA, placed by the commanded path."""
    size = (320, 240)  # SIFT needs more than the other tests' 160x120 pixels
    cams = orbit_cameras(8, step_deg=4.0, size=size)
    rng = np.random.default_rng(0)
    actual = [c.T_world_cam @ se3_exp(np.r_[rng.normal(0, np.radians(0.1), 3), rng.normal(0, 0.005, 3)]) for c in cams]
    frames = np.stack([render_room(T, size=size)[0] for T in actual])
    res, serial = (VisualSlam(small_cfg(workers=w), 0.01).process(frames, cams, SpatialMemory(0.01), 0)
                   for w in (2, 1))
    assert res.tracked.all(), res.info["failures"]
    assert set(res.info["tracked_by"]) == {"clip"}
    # Pairs are verified on threads (pycolmap releases the GIL), each with its own RANSAC seed.
    np.testing.assert_array_equal(res.T_world_cam, serial.T_world_cam)
    assert res.info["sfm"] == serial.info["sfm"]
    err = np.array([pose_distance(a, b) for a, b in zip(res.T_world_cam, actual, strict=True)])
    cmd = np.array([pose_distance(c.T_world_cam, b) for c, b in zip(cams, actual, strict=True)])
    # Relative poses come from the images; the placement (7 dof) from all commanded cameras.
    assert np.median(err[:, 0]) < 0.015 and np.median(err[:, 1]) < 0.3, err
    rel_est = [invert_pose(res.T_world_cam[0]) @ T for T in res.T_world_cam]
    rel_gt = [invert_pose(actual[0]) @ T for T in actual]
    rel_err = np.array([pose_distance(a, b) for a, b in zip(rel_est, rel_gt, strict=True)])
    assert rel_err[:, 1].max() < 0.1 and rel_err[:, 0].max() < 0.01, rel_err
    assert cmd[:, 0].mean() > 0  # the commanded cameras were indeed off


def test_memory_tracking_recovers_control_error():
    cams = orbit_cameras(6, start_deg=10.0)
    mem = memory_from_views(orbit_cameras(7, start_deg=4.0, step_deg=3.0))
    delta = se3_exp(np.array([0.0, np.radians(0.3), 0.0, 0.012, 0.0, -0.006]))
    actual = [c.T_world_cam @ delta for c in cams]
    slam = VisualSlam(small_cfg(), 0.01)
    mx, mr = slam._visible_memory(mem, cams)
    # Frames as a memory-conditioned video model makes them: the conditioning (memory rendered at
    # the commanded camera) re-projected into the camera it actually used.
    frames = np.stack(
        [
            follow_conditioning(slam._render(mx, mr, K, c.T_world_cam, W, H)[0], c, T)
            for c, T in zip(cams, actual, strict=True)
        ]
    )
    res = slam.process(frames, cams, mem, 1)
    assert res.tracked.all(), res.info["failures"]
    assert set(res.info["tracked_by"]) == {"memory"}
    err = np.array([pose_distance(a, b) for a, b in zip(res.T_world_cam, actual, strict=True)])
    assert err[:, 0].max() < 0.004 and err[:, 1].max() < 0.08, err
    assert set(res.timings_s) >= {"render", "track", "depth", "masks"}


def test_memory_tracking_against_given_templates():
    # The conditioning a clip was generated from can look unlike a fresh memory render (e.g. colours
    # from past frames); tracking against it recovers the control error from those very colours.
    cams = orbit_cameras(4, start_deg=10.0)
    mem = memory_from_views(orbit_cameras(7, start_deg=4.0, step_deg=3.0))
    delta = se3_exp(np.array([0.0, np.radians(0.3), 0.0, 0.012, 0.0, -0.006]))
    actual = [c.T_world_cam @ delta for c in cams]
    truth = [render_room(c.T_world_cam) for c in cams]
    templates = (np.stack([t[0] for t in truth]), np.stack([t[1] for t in truth]).astype(np.float32))
    frames = np.stack([follow_conditioning(t[0], c, T) for t, c, T in zip(truth, cams, actual, strict=True)])
    slam = VisualSlam(small_cfg(), 0.01)
    with pytest.raises(ValueError, match="templates must be"):
        slam.process(frames, cams, mem, 1, templates=(templates[0][:2], templates[1]))
    res = slam.process(frames, cams, mem, 1, templates=templates)
    assert res.tracked.all(), res.info["failures"]
    err = np.array([pose_distance(a, b) for a, b in zip(res.T_world_cam, actual, strict=True)])
    assert err[:, 0].max() < 0.004 and err[:, 1].max() < 0.08, err


@pytest.mark.parametrize("smooth_window", [0, 7])
def test_mvs_recovers_plane_depth(smooth_window):
    """A textured wall 2.5 m in front of the camera, sources moving sideways by 0.2-0.4 m; with
    and without the second (tent) box filter of the ZNCC maps."""
    Hm, Wm = 120, 160
    Kp = intrinsics_from_fov(Wm, Hm, 60.0)

    def view(tx: float):
        v, u = np.mgrid[0:Hm, 0:Wm].astype(np.float64)
        z = 2.5
        X = np.stack([(u - Kp[0, 2]) / Kp[0, 0] * z + tx, (v - Kp[1, 2]) / Kp[1, 1] * z, np.full_like(u, z)], -1)
        return to_gray((_texture(X) * 255).round().astype(np.uint8))

    offsets = [-0.4, -0.2, 0.2, 0.4]
    ref = view(0.0)
    srcs = np.stack([view(o) for o in offsets])
    T_src_ref = np.stack([np.array([[1, 0, 0, -o], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]) for o in offsets])
    sw = sweep_coarse_to_fine(ref, srcs, Kp, T_src_ref, 0.8, 8.0, scale=0.5, coarse_scale=0.25, window=7,
                              smooth_window=smooth_window)
    d = sw.depth.numpy()[4:-4, 4:-4]
    rel = np.abs(d - 2.5) / 2.5
    # At the 80x60 working resolution one pixel of disparity at the widest baseline is ~9% of
    # depth; sub-plane refinement must get well below that.
    assert np.median(rel) < 0.02, np.median(rel)
    assert (rel < 0.05).mean() > 0.9, (rel < 0.05).mean()


def test_edge_refinement_stops_a_textured_surface_fattening():
    """A yellow square 1.5 m away in front of a blue wall at 3 m, sources moving sideways: the
    sweep's window runs the square's depth across the edge; colour-weighted ZNCC re-decides the
    pixels next to the jump, halving the wrong ones, and touches nothing else."""
    Hm, Wm = 160, 240
    Kp = intrinsics_from_fov(Wm, Hm, 60.0)

    def view(tx, K=Kp, h=Hm, w=Wm):
        v, u = np.mgrid[0:h, 0:w].astype(np.float64)
        rx, ry = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
        front = (np.abs(rx * 1.5 + tx) < 0.35) & (np.abs(ry * 1.5) < 0.35)
        z = np.where(front, 1.5, 3.0)
        rgb = _texture(np.stack([rx * z + tx, ry * z, z], -1))
        rgb = rgb * np.where(front[..., None], [1.0, 0.85, 0.2], [0.2, 0.6, 1.0])
        return (rgb * 255).round().astype(np.uint8), z

    offsets = [-0.2, -0.1, 0.1, 0.2]
    ref_rgb, _ = view(0.0)
    src = np.stack([to_gray(view(o)[0]) for o in offsets])
    T = np.stack([np.array([[1, 0, 0, -o], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]) for o in offsets])
    sw = sweep_coarse_to_fine(to_gray(ref_rgb), src, Kp, T, 0.8, 8.0, scale=0.5, window=7, smooth_window=7)
    h, w = sw.depth.shape
    Ks = scale_K(Kp, w / Wm)
    truth = view(0.0, Ks, h, w)[1]

    images = (resize_area(to_gray(ref_rgb), h, w), resize_area(ref_rgb.transpose(2, 0, 1) / 255.0, h, w).permute(1, 2, 0),
              resize_area(src, h, w), Ks, T)
    new, refined = refine_depth_edges(sw.depth, sw.depth > 0, *images)
    wrong_before = int((np.abs(sw.depth.numpy() / truth - 1) > 0.05).sum())
    wrong_after = int((np.abs(new.numpy() / truth - 1) > 0.05).sum())
    assert wrong_before > 300, wrong_before  # the sweep does fatten here
    assert wrong_after < 0.6 * wrong_before, (wrong_before, wrong_after)
    assert refined.any() and torch.equal(new[~refined], sw.depth[~refined])
    # Only pixels next to the jump are re-decided (the sweep's ramp plus the refinement radius)...
    jump = np.zeros((h, w), bool)
    jump[:, 1:] |= truth[:, 1:] != truth[:, :-1]
    jump[1:] |= truth[1:] != truth[:-1]
    assert not (refined.numpy() & ~ndimage.binary_dilation(jump, iterations=10)).any()
    # ... and only candidates.
    left = torch.zeros((h, w), dtype=torch.bool)
    left[:, : w // 2] = True
    new_l, refined_l = refine_depth_edges(sw.depth, left & (sw.depth > 0), *images)
    assert refined_l.any() and not refined_l[:, w // 2 :].any()
    assert torch.equal(new_l[:, w // 2 :], sw.depth[:, w // 2 :])
    # Far from any jump (a flat wall) nothing is refined.
    flat, none = refine_depth_edges(torch.full((h, w), 3.0), torch.ones((h, w), dtype=torch.bool), *images)
    assert not none.any() and torch.equal(flat, torch.full((h, w), 3.0))


def blob_clip(n: int = 10):
    """A clip of ``n`` orbit frames with a ball moving 3 cm per frame, a memory of the room around
    it, and the ball's true masks."""
    cams = orbit_cameras(n, start_deg=20.0)
    mem = memory_from_views(orbit_cameras(12, start_deg=12.0, step_deg=3.0))
    frames, masks = [], []
    for i, c in enumerate(cams):
        centre = np.array([0.2 + 0.03 * i, -0.1, 1.3])  # moves 3 cm per frame
        rgb, _, m = render_room(c.T_world_cam, blob=(centre, 0.25))
        frames.append(rgb)
        masks.append(m)
    return cams, mem, np.stack(frames), np.stack(masks)


def test_moving_blob_is_masked_and_never_fused():
    cams, mem, frames, masks = blob_clip()
    cfg = small_cfg(keyframe_stride=3)
    res = VisualSlam(cfg, 0.01).process(frames, cams, mem, 1)
    assert res.tracked.all(), res.info["failures"]
    inter = (res.dynamic_masks & masks).sum()
    union = (res.dynamic_masks | masks).sum()
    assert inter / union > 0.5, inter / union
    before = len(mem)
    fuse_clip(mem, frames, res, cams, 1, cfg)
    assert len(mem) >= before
    # No fused point inside the blob's swept volume.
    new = mem.first_round == 1
    pts = mem.xyz[new]
    for i in range(len(cams)):
        centre = np.array([0.2 + 0.03 * i, -0.1, 1.3])
        assert (np.linalg.norm(pts - centre, axis=1) < 0.25 - 0.02).sum() == 0


def test_worker_threads_give_the_serial_result():
    # Keyframe sweeps, consistency, hole filling and masks run on threads; each task is
    # deterministic and results are gathered in order, so the threads must not change anything.
    # With the memory (reuse, snapping) and without it (everything swept, with poses given).
    cams, mem, frames, _ = blob_clip(7)
    for memory, known in ((mem, False), (SpatialMemory(0.01), True)):
        out = [VisualSlam(small_cfg(keyframe_stride=2, workers=w), 0.01).process(frames, cams, memory, 1,
                                                                               poses_known=known)
               for w in (1, 2)]
        assert out[0].keyframes == out[1].keyframes and len(out[0].keyframes) >= 3
        assert any(e.get("swept_fraction", 0) > 0 for e in out[0].info["keyframes"])
        assert (out[0].depth > 0).mean() > 0.1 and out[0].dynamic_masks.any()
        for name in ("T_world_cam", "depth", "depth_confidence", "dynamic_masks"):
            np.testing.assert_array_equal(getattr(out[0], name), getattr(out[1], name), err_msg=name)
        for key in ("keyframes", "transient_keyframe_fraction", "depth_fill_fraction", "dynamic_fraction"):
            assert out[0].info[key] == out[1].info[key], key
    # Without memory the edge refinement moves pixels at the ball's silhouette, on threads too.
    assert any(e.get("edge_refined_fraction", 0) > 0 for e in out[1].info["keyframes"])


def test_untracked_frame_is_reported_and_not_fused():
    cams = orbit_cameras(6, start_deg=10.0)
    mem = memory_from_views(orbit_cameras(7, start_deg=4.0, step_deg=3.0))
    frames = np.stack([render_room(c.T_world_cam)[0] for c in cams])
    rng = np.random.default_rng(1)
    frames[3] = rng.integers(0, 256, frames[3].shape, dtype=np.uint8)  # a frame no rigid motion explains
    cfg = small_cfg(keyframe_stride=1, keyframe_end_margin=0, keyframe_min_new_coverage=0.0)
    res = VisualSlam(cfg, 0.01).process(frames, cams, mem, 1)
    assert not res.tracked[3]
    assert "3" in res.info["failures"] and isinstance(res.info["failures"]["3"], str)
    assert res.tracked[[0, 1, 2, 4, 5]].all()
    assert 3 not in res.keyframes
    # Even if a caller marks it as a keyframe, fusion skips untracked frames.
    res.keyframes = sorted(set(res.keyframes) | {3})
    res.depth[3] = 2.0
    res.depth_confidence[3] = 1.0
    m = SpatialMemory(0.01)
    stats = fuse_clip(m, frames, res, cams, 1, cfg)
    only3 = SlamResult(
        res.T_world_cam, res.tracked, res.tracking_quality, [3], res.depth, res.depth_confidence, res.dynamic_masks
    )
    m3 = SpatialMemory(0.01)
    assert fuse_clip(m3, frames, only3, cams, 1, cfg)["added"] == 0
    assert stats["keyframes_fused"] == len(res.keyframes) - 1


def test_fusion_skips_dynamic_pixels():
    cam = orbit_cameras(1)[0]
    rgb, depth, _ = render_room(cam.T_world_cam)
    dyn = np.zeros((1, H, W), bool)
    dyn[0, :, : W // 2] = True
    res = SlamResult(
        T_world_cam=cam.T_world_cam[None],
        tracked=np.ones(1, bool),
        tracking_quality=np.ones(1, np.float32),
        keyframes=[0],
        depth=depth[None],
        depth_confidence=np.ones((1, H, W), np.float32),
        dynamic_masks=dyn,
    )
    mem = SpatialMemory(0.01)
    stats = fuse_clip(mem, rgb[None], res, [cam], 0, SlamConfig(carve=False))
    assert stats["added"] > 0
    uv = (mem.xyz @ cam.T_cam_world[:3, :3].T + cam.T_cam_world[:3, 3]) @ K.T
    u = uv[:, 0] / uv[:, 2]
    assert (u < W // 2 - 1).sum() == 0  # nothing from the dynamic half


def test_fusion_adds_a_conflicting_surface_only_when_confident():
    # The memory holds the room; a keyframe claims a surface 20 % nearer on a patch. An uncertain
    # depth there (a likely stereo outlier) adds nothing; a confident one (it may carve) does.
    cam = orbit_cameras(1)[0]
    rgb, depth, _ = render_room(cam.T_world_cam)
    mem = SpatialMemory(0.01)
    mem.fuse_depth(depth, rgb, cam, round_index=0)
    claimed = depth.copy()
    claimed[20:40, 30:60] *= 0.8

    def fuse(conf_value):
        conf = np.ones((1, H, W), np.float32)
        conf[0, 20:40, 30:60] = conf_value
        res = SlamResult(T_world_cam=cam.T_world_cam[None], tracked=np.ones(1, bool),
                         tracking_quality=np.ones(1, np.float32), keyframes=[0], depth=claimed[None],
                         depth_confidence=conf, dynamic_masks=np.zeros((1, H, W), bool))
        m = mem.copy()
        return fuse_clip(m, rgb[None], res, [cam], 1, SlamConfig(carve=False))["added"]

    cfg = SlamConfig()
    assert fuse(0.5 * cfg.carve_min_confidence) == 0
    assert fuse(1.0) > 100


def test_weak_depth_is_fused_only_far_from_anything_moving():
    # A weakly matched depth (smooth texture) is fused where nothing moves nearby; near a region
    # masked dynamic in a neighbouring frame (a mask may miss the actor in the keyframe) it is not.
    cam = orbit_cameras(1)[0]
    rgb, depth, _ = render_room(cam.T_world_cam)
    cfg = SlamConfig(carve=False, fuse_dynamic_margin_px=10, fuse_dynamic_frames=1)
    weak = 0.5 * (cfg.fuse_min_confidence + cfg.fuse_min_confidence_far)

    def fuse(dyn):
        res = SlamResult(T_world_cam=np.stack([cam.T_world_cam] * 3), tracked=np.ones(3, bool),
                         tracking_quality=np.ones(3, np.float32), keyframes=[1],
                         depth=np.stack([depth] * 3), depth_confidence=np.full((3, H, W), weak, np.float32),
                         dynamic_masks=dyn)
        mem = SpatialMemory(0.01)
        fuse_clip(mem, np.stack([rgb] * 3), res, [cam] * 3, 0, cfg)
        uv = (mem.xyz @ cam.T_cam_world[:3, :3].T + cam.T_cam_world[:3, 3]) @ K.T
        return uv[:, 0] / uv[:, 2], len(mem)

    _, n_all = fuse(np.zeros((3, H, W), bool))
    assert n_all > 0.5 * H * W
    dyn = np.zeros((3, H, W), bool)
    dyn[0, :, :20] = True  # only the previous frame saw something moving on the left
    u, n = fuse(dyn)
    assert 0 < n < n_all
    assert (u < 20 + 10 - 1).sum() == 0
    assert (u > 40).sum() > 0.5 * (W - 40) * H
    # With the lower threshold off, weak depth is not fused at all.
    cfg.fuse_min_confidence_far = cfg.fuse_min_confidence
    assert fuse(np.zeros((3, H, W), bool))[1] == 0


def test_bundle_adjust_and_triangulation_round_trip():
    rng = np.random.default_rng(2)
    cams = orbit_cameras(5, step_deg=6.0)
    T_cw = invert_pose(np.stack([c.T_world_cam for c in cams]))
    X = np.array([0.0, 0.0, 1.3]) + rng.uniform(-0.4, 0.4, (200, 3))  # in front of every camera
    obs_c, obs_p, obs_xy = [], [], []
    for ci in range(5):
        p = X @ T_cw[ci, :3, :3].T + T_cw[ci, :3, 3]
        uv = p @ K.T
        uv = uv[:, :2] / uv[:, 2:]
        obs_c += [ci] * len(X)
        obs_p += list(range(len(X)))
        obs_xy.append(uv)
    obs_xy = np.concatenate(obs_xy)
    Xt, ok = triangulate_tracks(
        np.stack([K] * 5), T_cw, [np.arange(5)] * len(X), [obs_xy[np.arange(5) * len(X) + i] for i in range(len(X))]
    )
    assert ok.all() and np.abs(Xt - X).max() < 1e-6
    noisy = T_cw.copy()
    for ci in range(1, 5):
        noisy[ci] = se3_exp(np.r_[rng.normal(0, 0.01, 3), rng.normal(0, 0.02, 3)]) @ noisy[ci]
    prob = BaProblem(
        np.stack([K] * 5), noisy, X + rng.normal(0, 0.02, X.shape), np.array(obs_c), np.array(obs_p), obs_xy
    )
    const = np.zeros(5, bool)
    const[0] = True
    # Scale gauge: fix a second camera's position with a tight centre prior.
    prior = np.full((5, 3), np.nan)
    prior[1] = cams[1].center
    T_ba, X_ba, info = bundle_adjust(prob, const_cams=const, center_prior=prior, center_prior_sigma_m=1e-4)
    assert info["cost_after"] < 1e-6 * max(info["cost_before"], 1)
    for a, b in zip(T_ba, T_cw, strict=True):
        dt, dr = pose_distance(a, b)
        assert dt < 1e-4 and dr < 1e-3
    # Only points free (every camera fixed at the truth) and only cameras free (points fixed).
    _, X_only, info = bundle_adjust(BaProblem(prob.K, T_cw, prob.points, prob.obs_cam, prob.obs_pt, obs_xy),
                                    const_cams=np.ones(5, bool))
    assert np.abs(X_only - X).max() < 1e-6 and info["cost_after"] < 1e-9
    T_only, X_same, info = bundle_adjust(BaProblem(prob.K, noisy, X, prob.obs_cam, prob.obs_pt, obs_xy),
                                         const_points=np.ones(len(X), bool))
    assert np.array_equal(X_same, X) and info["cost_after"] < 1e-9
    assert max(pose_distance(a, b)[0] for a, b in zip(T_only, T_cw, strict=True)) < 1e-6


def test_bundle_adjust_sums_and_schur_reduction_match_direct_computation():
    from slam.bundle import _RowSums, _SchurReducer

    rng = np.random.default_rng(5)
    n_cams, n_pts = 4, 37
    obs_cam = rng.integers(0, n_cams, 300)
    obs_pt = rng.integers(0, n_pts, 300)  # repeated (camera, point) pairs must add up too
    vals = rng.normal(size=(300, 6, 3))
    ref = np.zeros((n_cams, 6, 3))
    np.add.at(ref, obs_cam, vals)
    assert np.array_equal(_RowSums(obs_cam, n_cams)(vals), ref)  # same order of summation
    Hinv = rng.normal(size=(n_pts, 3, 3))
    dense = np.zeros((6 * n_cams, 3 * n_pts))
    for c, p, v in zip(obs_cam, obs_pt, vals, strict=True):
        dense[6 * c : 6 * c + 6, 3 * p : 3 * p + 3] += v
    binv = np.zeros((3 * n_pts, 3 * n_pts))
    for p in range(n_pts):
        binv[3 * p : 3 * p + 3, 3 * p : 3 * p + 3] = Hinv[p]
    expected = dense @ binv @ dense.T
    HcpHinv = vals @ Hinv[obs_pt]
    # One chunk, chunks of 5 points, one point per chunk.
    for max_entries, n_chunks in ((1 << 22, 1), (18 * n_cams * 5, 8), (1, n_pts)):
        red = _SchurReducer(n_cams, n_pts, obs_cam, obs_pt, max_entries=max_entries)
        assert len(red.chunks) == n_chunks
        np.testing.assert_allclose(red.reduce(vals, HcpHinv), expected, rtol=1e-10, atol=1e-10)


def test_process_validates_inputs():
    cams = orbit_cameras(3)
    frames = np.zeros((3, H, W, 3), np.uint8)
    slam = VisualSlam(SlamConfig(), 0.01)
    with pytest.raises(ValueError, match="cameras"):
        slam.process(frames, cams[:2], SpatialMemory(0.01), 0)
    with pytest.raises(ValueError, match="uint8"):
        slam.process(frames.astype(np.float32), cams, SpatialMemory(0.01), 0)
    with pytest.raises(ValueError, match="depth_source"):
        slam.process(frames, cams, SpatialMemory(0.01), 0, depth=np.ones((3, H, W), np.float32))
    with pytest.raises(ValueError, match="oracle"):
        VisualSlam(SlamConfig(mode="oracle"), 0.01)
    with pytest.raises(ValueError, match="fuse_dynamic_margin_px"):
        VisualSlam(SlamConfig(fuse_dynamic_margin_px=-1), 0.01)
    # Configs built directly (slam.benchmark, slam.eval_fountain, the API) get the run config's checks.
    for bad, field in [({"mvs_edge_planes": 2}, "mvs_edge_planes"), ({"workers": -1}, "workers"),
                       ({"mvs_edge_radius": -1}, "mvs_edge_radius")]:
        with pytest.raises(ValueError, match=f"slam.{field} must be"):
            VisualSlam(SlamConfig(**bad), 0.01)
    with pytest.raises(ValueError, match="commit"):
        slam.process(frames, cams, SpatialMemory(0.01), 0, commit=4)


def test_stereo_sources_skip_frames_at_the_keyframes_centre():
    """A path that stops or turns back puts frames at the keyframe's own centre: such a source
    matches at every depth, so it is replaced by the nearest frame with a baseline."""
    T = np.stack([se3_exp(np.array([0.0, 0.0, 0.0, 0.1 * i, 0.0, 0.0])) for i in range(8)])
    T[5] = T[4]  # frame 5 stands where keyframe 4 stands
    slam = VisualSlam(SlamConfig(mvs_source_offsets=[-1, 1]), 0.01)
    tracked = np.ones(8, bool)
    assert slam._sources(4, 8, tracked, T) == [3, 6]
    assert VisualSlam(SlamConfig(mvs_source_offsets=[-1, 1], mvs_min_baseline_frac=0.0), 0.01)._sources(
        4, 8, tracked, T) == [3, 5]


def test_generator_depth_source_uses_given_depth():
    cams = orbit_cameras(6, start_deg=10.0)
    mem = memory_from_views(orbit_cameras(7, start_deg=4.0, step_deg=3.0))
    rendered = [render_room(c.T_world_cam) for c in cams]
    frames = np.stack([r[0] for r in rendered])
    depth = np.stack([r[1] for r in rendered])
    res = VisualSlam(small_cfg(depth_source="generator"), 0.01).process(frames, cams, mem, 1, depth=depth)
    for k in res.keyframes:
        valid = res.depth[k] > 0
        assert valid.mean() > 0.9
        assert np.allclose(res.depth[k][valid], depth[k][valid])


def test_cost_at_depth_prefers_true_depth():
    """The photometric check of filled depth: the true depth of a textured plane scores a lower
    1 - ZNCC than a depth 20 % off."""
    import numpy as np
    from scipy import ndimage

    from slam.mvs import cost_at_depth

    rng = np.random.default_rng(0)
    H, W, f = 64, 96, 100.0
    ref = ndimage.gaussian_filter(rng.random((H, W)), 1.0).astype(np.float32)
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    src = np.roll(ref, -5, axis=1)[None]  # fronto-parallel plane at 2 m, source 0.1 m to the right
    K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]])
    T = np.eye(4)[None].copy()
    T[0, 0, 3] = -0.1
    inner = (slice(8, -8), slice(16, -16))
    c_true, tex = cost_at_depth(ref, src, K, T, np.full((H, W), 2.0, np.float32), window=7, top_k=1)
    c_off, _ = cost_at_depth(ref, src, K, T, np.full((H, W), 2.4, np.float32), window=7, top_k=1)
    assert float(c_true[inner].mean()) < 0.2 < float(c_off[inner].mean())
    assert float(tex[inner].mean()) > 0.01
    c_none, _ = cost_at_depth(ref, src, K, T, np.zeros((H, W), np.float32))
    assert bool((c_none == 2.0).all())


def test_consistency_mean_averages_agreeing_views_only():
    import torch

    from slam.mvs import consistency_count

    K = np.array([[50.0, 0, 15.5], [0, 50.0, 11.5], [0, 0, 1]])
    d = torch.full((24, 32), 2.0)
    agree = torch.full((24, 32), 2.04)  # 2 % deeper: within rel_tol 0.03
    far = torch.full((24, 32), 3.0)  # seen through: a violation, not part of the mean
    n_ok, n_bad, mean = consistency_count(d, K, [(agree, np.eye(4)), (far, np.eye(4))], rel_tol=0.03)
    assert (n_ok == 1).all() and (n_bad[1:-1, 1:-1] == 1).all()  # the border ring lacks a full neighbourhood
    assert torch.allclose(mean, torch.full_like(d, 2.02), atol=1e-5)


def test_fallback_sources_count_only_where_the_regular_ones_are_blind():
    """A fallback source enters the best top_k only where fewer than top_k regular sources see a
    hypothesis: a short baseline matches at wrong depths too, so it must not outvote them."""
    import torch

    from slam.mvs import normalize_local, plane_sweep

    rng = np.random.default_rng(0)
    H = W = 32
    K = np.array([[20.0, 0, 16], [0, 20.0, 16], [0, 0, 1]])
    ref = torch.from_numpy(rng.random((H, W), dtype=np.float32))
    noise = [torch.from_numpy(rng.random((H, W), dtype=np.float32)) for _ in range(2)]
    src_n = torch.stack([normalize_local(x, 5)[0] for x in [*noise, ref, ref]])
    ref_n = normalize_local(ref, 5)[0]
    lo, hi = torch.full((H, W), 0.5), torch.full((H, W), 1.0)
    fallback = np.array([False, False, True, True])
    inner = (slice(8, -8), slice(8, -8))

    def cost(T_src_ref, fb):
        return plane_sweep(ref_n, src_n, K, T_src_ref, lo, hi, 3, window=5, top_k=2, fallback=fb)[1][inner]

    T = np.stack([np.eye(4)] * 4)  # every source sees every pixel (identity warp)
    assert float(cost(T, None).mean()) < 0.05  # unranked, the two copies of the reference win
    assert float(cost(T, fallback).mean()) > 0.7  # ranked, the two regular (noise) sources count
    T[:2, 0, 3] = 100.0  # the regular sources now see nothing of the reference
    assert float(cost(T, fallback).mean()) < 0.05


def test_confirming_keyframe_for_depth_no_other_keyframe_sees():
    """Swept depth inside no other keyframe's view gets a confirming keyframe: the non-keyframe
    (never next to a keyframe) within the stride that sees it, swept only around it."""
    import torch

    def pose(z, yaw_deg=0.0):
        a = math.radians(yaw_deg)
        T = np.eye(4)
        T[:3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
        T[2, 3] = z
        return T

    hs, ws = 40, 64
    Ks = np.array([[40.0, 0, 32], [0, 40.0, 20], [0, 0, 1]])
    # Forward motion; keyframe 1 still looks 40 deg to the right (the end of a turn).
    T_est = np.stack([pose(0.1 * i, 40.0 if i == 1 else 0.0) for i in range(10)])
    good = torch.zeros((hs, ws), dtype=torch.bool)
    good[:, 8:16] = True  # keyframe 5: depth only on a strip at its left border
    empty = {"raw": torch.zeros((hs, ws)), "good": torch.zeros((hs, ws), dtype=torch.bool), "mem_depth": None, "mem_small": None}
    per_kf = {1: empty, 5: {"raw": torch.full((hs, ws), 2.0), "good": good, "mem_depth": None, "mem_small": None}, 9: empty}
    tracked = np.ones(10, bool)
    slam = VisualSlam(SlamConfig(), 0.01)
    out = slam._confirming_keyframes(per_kf, [1, 5, 9], Ks, T_est, tracked, hs, ws, 2.0)
    assert [(c, of) for c, _, of in out] == [(3, 5)]
    y0, y1, x0, x1 = out[0][1]
    assert 0 <= y0 < y1 <= 2 * hs and 0 <= x0 < x1 <= 2 * ws and x1 - x0 < ws  # a box around the strip
    off = VisualSlam(SlamConfig(keyframe_confirm_min_fraction=0.0), 0.01)
    assert off._confirming_keyframes(per_kf, [1, 5, 9], Ks, T_est, tracked, hs, ws, 2.0) == []
    with pytest.raises(ValueError, match="keyframe_confirm_min_fraction"):
        VisualSlam(SlamConfig(keyframe_confirm_min_fraction=1.5), 0.01)
    with pytest.raises(ValueError, match="mvs_fallback_offsets"):
        VisualSlam(SlamConfig(mvs_fallback_offsets=[0, 1]), 0.01)


def test_state_for_the_next_clip_comes_from_committed_frames():
    """Look-ahead frames (``commit=``) are re-generated by the next clip, so the stereo history it
    inherits must hold only committed frames (the newest last) with their estimated poses."""
    cams = orbit_cameras(8, start_deg=10.0)
    mem = memory_from_views(orbit_cameras(10, start_deg=4.0, step_deg=3.0))
    frames = np.stack([render_room(c.T_world_cam)[0] for c in cams])
    gray = to_gray(frames)
    cfg = small_cfg()
    n_hist = max(-o for o in cfg.mvs_source_offsets if o < 0)
    slam = VisualSlam(cfg, 0.01)
    res = slam.process(frames, cams, mem, 1, commit=5)
    assert res.tracked.all() and len(res.T_world_cam) == 8  # look-ahead frames are still estimated
    hist = slam._history
    assert len(hist) == min(n_hist, 5)
    for (g, T), i in zip(hist, range(5 - len(hist), 5), strict=True):
        np.testing.assert_array_equal(g, gray[i])
        np.testing.assert_array_equal(T, res.T_world_cam[i])
    # A resumed run restores it from the committed frames only (what the run directory keeps).
    fresh = VisualSlam(cfg, 0.01)
    fresh.restore(frames[:5], res.T_world_cam[:5], res.tracked[:5])
    assert len(fresh._history) == len(hist)
    for (g0, T0), (g1, T1) in zip(hist, fresh._history, strict=True):
        np.testing.assert_array_equal(g0, g1)
        np.testing.assert_array_equal(T0, T1)
    # Without ``commit`` every frame is committed: the newest history frame is the clip's last.
    res = slam.process(frames, cams, mem, 1)
    assert len(slam._history) == min(n_hist, 8)
    np.testing.assert_array_equal(slam._history[-1][0], gray[-1])
    np.testing.assert_array_equal(slam._history[-1][1], res.T_world_cam[-1])
    # A resumed run rebuilds the same state from the committed clip (frames, poses, tracked flags).
    fresh = VisualSlam(cfg, 0.01)
    fresh.restore(frames, res.T_world_cam, res.tracked)
    assert len(fresh._history) == len(slam._history)
    for (g0, T0), (g1, T1) in zip(slam._history, fresh._history, strict=True):
        np.testing.assert_array_equal(g0, g1)
        np.testing.assert_array_equal(T0, T1)
    with pytest.raises(ValueError, match="uint8"):
        fresh.restore(gray, res.T_world_cam, res.tracked)
    with pytest.raises(ValueError, match=r"tracked \(N,\)"):
        fresh.restore(frames, res.T_world_cam, res.tracked[:3])


def test_first_clip_whose_commanded_camera_only_rotates_is_reported_untracked():
    """The first round takes its scale from the commanded path: when that path only rotates, no
    frame may be placed (even though the pixels have parallax) and nothing is fused."""
    size = (320, 240)
    actual = orbit_cameras(8, step_deg=4.0, size=size)
    frames = np.stack([render_room(c.T_world_cam, size=size)[0] for c in actual])
    centre = actual[0].T_world_cam[:3, 3]
    cmd = []
    for c in actual:
        T = c.T_world_cam.copy()
        T[:3, 3] = centre  # same orientations, no translation
        cmd.append(Camera(c.K, c.width, c.height, T))
    cfg = small_cfg()
    res = VisualSlam(cfg, 0.01).process(frames, cmd, SpatialMemory(0.01), 0)
    assert "init_pair" in res.info["sfm"] and "error" not in res.info["sfm"]  # the reconstruction itself worked
    assert not res.tracked.any()
    assert all("camera only rotates" in res.info["failures"][str(i)] for i in range(len(frames))), res.info["failures"]
    mem = SpatialMemory(0.01)
    assert fuse_clip(mem, frames, res, cmd, 0, cfg)["added"] == 0 and len(mem) == 0

