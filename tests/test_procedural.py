"""Tests of the procedural stand-in world model (spatia_py/generators/procedural.py) at tiny sizes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from spatia_py.config import ProceduralConfig
from spatia_py.generators.procedural import ProceduralGenerator, ProceduralWorld
from spatia_py.geometry import Camera, invert_pose, orbit_path, so3_log, unproject_depth
from spatia_py.types import ConditioningMaps, GenerationRequest

W, H = 96, 64


def _psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    if mask is not None:
        a, b = a[mask], b[mask]
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _cams(n: int = 6, width: int = W, height: int = H, degrees: float = 120.0) -> list[Camera]:
    return orbit_path([0, 0, 1.2], 1.5, 1.4, n, width=width, height_px=height, degrees=degrees).cameras


def _gen(**kw) -> ProceduralGenerator:
    return ProceduralGenerator(ProceduralConfig(**kw))


def _req(cams, cond=None, round_index=0, seed=0, frame_offset=0) -> GenerationRequest:
    return GenerationRequest(
        cameras=cams, conditioning=cond, seed=seed, round_index=round_index, frame_offset=frame_offset, fps=24.0
    )


def test_same_request_gives_identical_clip():
    cams = _cams(4)
    a = _gen().generate(_req(cams, round_index=3))
    b = _gen().generate(_req(cams, round_index=3))
    assert a.frames.dtype == np.uint8 and a.frames.shape == (4, H, W, 3)
    assert np.array_equal(a.frames, b.frames)
    for f in ("T_world_cam", "depth", "dynamic_masks", "actor_positions", "actor_radii", "static_depth"):
        assert np.array_equal(getattr(a.ground_truth, f), getattr(b.ground_truth, f)), f
    assert a.cameras is not cams and all(x is y for x, y in zip(a.cameras, cams, strict=True))
    assert a.depth is None


def test_hand_over_depth_returns_the_raycast_depth():
    cams = _cams(3)
    clip = _gen(hand_over_depth=True).generate(_req(cams, round_index=1))
    plain = _gen().generate(_req(cams, round_index=1))
    assert clip.depth is not None and clip.depth.dtype == np.float32 and clip.depth.shape == (3, H, W)
    # The frame's own depth (actors included), not the static scene behind them.
    assert np.array_equal(clip.depth, clip.ground_truth.depth)
    assert np.array_equal(clip.frames, plain.frames)


@pytest.mark.parametrize("scene", ["room", "courtyard"])
def test_ground_truth_depth_lies_on_the_scene_surfaces(scene):
    gen = _gen(scene=scene, control_error_m=0.03, control_error_deg=1.0)
    cams = _cams(3)
    clip = gen.generate(_req(cams))
    gt = clip.ground_truth
    assert gt.T_world_cam.shape == (3, 4, 4) and gt.static_depth.shape == (3, H, W)
    dist_actual, dist_commanded, floor = [], [], 0
    for i, cam in enumerate(cams):
        valid = gt.static_depth[i] > 0
        pts = unproject_depth(gt.static_depth[i], cam.K, gt.T_world_cam[i])[valid]
        dist_actual.append(gen.world.surface_distance(pts))
        dist_commanded.append(
            gen.world.surface_distance(unproject_depth(gt.static_depth[i], cam.K, cam.T_world_cam)[valid])
        )
        floor += int(np.sum(np.abs(pts[:, 2]) < 1e-3))
    dist_actual = np.concatenate(dist_actual)
    assert dist_actual.max() < 2e-3
    assert floor > 0.05 * dist_actual.size  # cameras look slightly down: the floor is in view
    # The ground truth is the *actual* camera: the commanded one misses the surfaces.
    assert np.median(np.concatenate(dist_commanded)) > 5 * np.median(dist_actual) + 1e-3
    if scene == "courtyard":
        sky = gt.static_depth == 0
        assert sky.any() and np.all(gt.depth[sky & ~gt.dynamic_masks] == 0)


def test_dynamic_mask_is_where_actors_are_in_front():
    cams = _cams(8, degrees=360)
    gen = _gen(n_actors=3)
    clip = gen.generate(_req(cams, frame_offset=10))
    gt = clip.ground_truth
    assert gt.actor_positions.shape == (8, 3, 3) and gt.actor_radii.shape == (3,)
    m = gt.dynamic_masks
    assert m.any(), "actors should be visible from the default orbit"
    sd = np.where(gt.static_depth > 0, gt.static_depth, np.inf)
    assert np.all(gt.depth[m] < sd[m])
    assert np.array_equal(gt.depth[~m], gt.static_depth[~m])
    for i, cam in enumerate(cams):
        pts = unproject_depth(gt.depth[i], cam.K, gt.T_world_cam[i])[m[i]]
        d = np.linalg.norm(pts[:, None] - gt.actor_positions[i][None], axis=-1) - gt.actor_radii
        assert np.all(d.min(axis=1) < 2e-3)
        assert np.allclose(gt.actor_positions[i], gen.world.actor_positions((10 + i) / 24.0))
    # Actors move between frames.
    assert np.linalg.norm(gt.actor_positions[-1] - gt.actor_positions[0], axis=1).min() > 0.02


def test_world_raycast_outputs_and_appearance_seeds():
    world = ProceduralWorld(ProceduralConfig())
    cam = _cams(1, width=128, height=80)[0]
    a = world.raycast(cam, 0.0, appearance_seed=1, actors=False)
    b = world.raycast(cam, 0.0, appearance_seed=2, actors=False)
    a2 = world.raycast(cam, 0.0, appearance_seed=1, actors=False)
    assert a["rgb"].dtype == np.uint8 and a["rgb"].shape == (80, 128, 3)
    assert a["surface_id"].dtype == np.int32 and a["depth"].dtype == np.float32
    assert not a["dynamic_mask"].any() and np.array_equal(a["depth"], a["static_depth"])
    assert np.array_equal(a["rgb"], a2["rgb"])
    # Geometry does not depend on the appearance; colours on the walls (surfaces 0-3) do, strongly.
    assert np.array_equal(a["static_depth"], b["static_depth"])
    wall = (a["surface_id"] >= 0) & (a["surface_id"] < 4)
    assert wall.mean() > 0.2
    assert _psnr(a["rgb"], b["rgb"], wall) < 16.0
    assert np.abs(a["rgb"][wall].mean(0) - b["rgb"][wall].mean(0)).max() > 10
    # Textures carry detail (SIFT needs contrast): local std of a wall is substantial.
    assert a["rgb"][wall].astype(float).std(0).mean() > 15


def test_conditioning_is_followed_without_control_error():
    gen = _gen(control_error_m=0.0, control_error_deg=0.0)
    cams = _cams(5)
    first = gen.generate(_req(cams, round_index=0))
    gt = first.ground_truth
    cond = ConditioningMaps(rgb=first.frames, depth=gt.depth, validity=np.ones_like(gt.depth))
    second = gen.generate(_req(cams, cond=cond, round_index=1))
    free = gen.generate(_req(cams, round_index=1))
    static = ~gt.dynamic_masks & ~second.ground_truth.dynamic_masks & (gt.static_depth > 0)
    followed = _psnr(first.frames, second.frames, static)
    resampled = _psnr(first.frames, free.frames, static)
    assert followed > 30.0, followed
    assert resampled < 16.0, resampled
    # Actors are never taken from the conditioning: they are where they are now.
    later = gen.generate(_req(cams, cond=cond, round_index=1, frame_offset=48))
    assert not np.array_equal(later.ground_truth.dynamic_masks, gt.dynamic_masks)


def test_conditioning_is_followed_with_control_error():
    gen = _gen(control_error_m=0.03, control_error_deg=1.0, noise_std=2.0)
    cams = _cams(5, width=128, height=96)
    req1 = _req(cams, round_index=0)
    app1 = gen.appearance_seed(req1)
    # What the world looked like in call 1, rendered at the commanded cameras (as memory would be).
    views = [gen.world.raycast(c, 0.0, app1, actors=False) for c in cams]
    cond = ConditioningMaps(
        rgb=np.stack([v["rgb"] for v in views]),
        depth=np.stack([v["static_depth"] for v in views]),
        validity=np.ones((5, 96, 128), np.float32),
    )
    clip = gen.generate(_req(cams, cond=cond, round_index=1))
    gt = clip.ground_truth
    expected = np.stack(
        [
            gen.world.raycast(c.with_pose(T), 0.0, app1, actors=False)["rgb"]
            for c, T in zip(cams, gt.T_world_cam, strict=True)
        ]
    )
    keep = ~gt.dynamic_masks & (gt.static_depth > 0)
    keep[:, :3], keep[:, -3:], keep[:, :, :3], keep[:, :, -3:] = False, False, False, False
    p = _psnr(expected, clip.frames, keep)
    assert p > 22.0, p  # bilinear resampling of texture at this tiny size; ~30 dB at 512x320
    # Against the commanded-camera conditioning itself the frames differ by the control error.
    assert _psnr(cond.rgb, clip.frames, keep) < p - 2.0


def test_small_holes_in_the_conditioning_are_filled():
    gen = _gen(control_error_m=0.0, control_error_deg=0.0, noise_std=0.0)
    cams = _cams(3)
    first = gen.generate(_req(cams))
    gt = first.ground_truth
    rng = np.random.default_rng(0)
    validity = (rng.random(gt.depth.shape) > 0.04).astype(np.float32)  # 4 % isolated holes
    static = ~gt.dynamic_masks & (gt.static_depth > 0)
    holes = static & (validity == 0)
    assert holes.sum() > 50
    # A flat red conditioning makes filled holes easy to tell from re-sampled texture.
    red = np.zeros_like(first.frames)
    red[...] = (200, 30, 30)
    clip = gen.generate(_req(cams, cond=ConditioningMaps(rgb=red, depth=gt.depth, validity=validity), round_index=1))
    is_red = np.all(np.abs(clip.frames.astype(int) - (200, 30, 30)) <= 1, axis=-1)
    assert is_red[static & (validity > 0)].mean() > 0.99
    assert is_red[holes].mean() > 0.9
    # With real content the followed clip stays close to call 1 despite the holes.
    cond = ConditioningMaps(rgb=first.frames, depth=gt.depth, validity=validity)
    second = gen.generate(_req(cams, cond=cond, round_index=1))
    assert _psnr(first.frames, second.frames, static) > 27.0


def test_invalid_or_inconsistent_conditioning_is_not_followed():
    gen = _gen(control_error_m=0.0, control_error_deg=0.0)
    cams = _cams(3)
    first = gen.generate(_req(cams))
    gt = first.ground_truth
    free = gen.generate(_req(cams, round_index=1))
    static = ~gt.dynamic_masks & (gt.static_depth > 0)
    low = ConditioningMaps(rgb=first.frames, depth=gt.depth, validity=np.full(gt.depth.shape, 0.4, np.float32))
    wrong_depth = ConditioningMaps(rgb=first.frames, depth=gt.depth * 1.2, validity=np.ones_like(gt.depth))
    for cond in (low, wrong_depth):
        clip = gen.generate(_req(cams, cond=cond, round_index=1))
        assert _psnr(free.frames, clip.frames, static) > 30.0  # same as no conditioning


def test_conditioning_status_says_what_the_generator_did():
    gen = _gen(control_error_m=0.0, control_error_deg=0.0)
    cams = _cams(3)
    first = gen.generate(_req(cams))
    gt = first.ground_truth
    static = ~gt.dynamic_masks & (gt.static_depth > 0)
    # No conditioning: every static pixel is new, the rest (actors) is not static.
    assert gt.conditioning_status.dtype == np.uint8
    assert np.array_equal(gt.conditioning_status == 3, static) and not np.isin(gt.conditioning_status, (1, 2)).any()
    # The left half valid with the right depth, the right half valid with a wrong one, the top rows a hole.
    depth = gt.depth.copy()
    depth[:, :, W // 2:] *= 1.3
    validity = np.ones_like(depth)
    validity[:, :8] = 0.0
    clip = gen.generate(_req(cams, cond=ConditioningMaps(rgb=first.frames, depth=depth, validity=validity),
                             round_index=1))
    s = clip.ground_truth.conditioning_status
    st = ~clip.ground_truth.dynamic_masks & (clip.ground_truth.static_depth > 0)
    left, right = np.zeros_like(st), np.zeros_like(st)
    left[:, 10:, 2:W // 2 - 2] = True
    right[:, 10:, W // 2 + 2:-2] = True
    assert (s[st & left] == 1).mean() > 0.98
    assert (s[st & right] == 2).mean() > 0.98
    assert (s[:, :6][st[:, :6]] == 3).all()
    assert (s[~st] == 0).all()


def test_control_error_statistics_and_smoothness():
    gen = _gen(control_error_m=0.02, control_error_deg=0.5)
    cams = _cams(48, width=32, height=24, degrees=360)
    trans, rot = [], []
    for r in range(12):
        T = gen.control_error(_req(cams, round_index=r))
        trans.append(T[:, :3, 3])
        rot.append(np.degrees([so3_log(R) for R in T[:, :3, :3]]))
    trans, rot = np.stack(trans), np.stack(rot)  # (rounds, frames, 3)
    assert 0.6 * 0.02 < trans.std() < 1.4 * 0.02
    assert 0.6 * 0.5 < rot.std() < 1.4 * 0.5
    # Smooth within a clip: frame-to-frame steps are a small fraction of the error itself.
    assert np.abs(np.diff(trans, axis=1)).std() < 0.25 * trans.std()
    # The clip's ground-truth poses are the commanded poses times these perturbations.
    small = cams[:3]
    clip = gen.generate(_req(small, round_index=5))
    T = gen.control_error(_req(small, round_index=5))
    for c, Ta, Tp in zip(small, clip.ground_truth.T_world_cam, T, strict=True):
        assert np.allclose(invert_pose(c.T_world_cam) @ Ta, Tp, atol=1e-9)
    # A longer request of the same round extends the sequence: a frame's error does not depend on
    # how many frames follow it (look-ahead frames, see RunConfig.lookahead_frames).
    assert np.allclose(gen.control_error(_req(cams[:20], round_index=3)),
                       gen.control_error(_req(cams[:24], round_index=3))[:20], atol=1e-12)


def test_no_control_error_means_commanded_poses():
    gen = _gen(control_error_m=0.0, control_error_deg=0.0)
    cams = _cams(2)
    clip = gen.generate(_req(cams))
    assert np.allclose(clip.ground_truth.T_world_cam, np.stack([c.T_world_cam for c in cams]))


def test_forget_layout_moves_only_uncovered_furniture():
    cfg = dict(control_error_m=0.0, control_error_deg=0.0, forget_layout=True, n_actors=0)
    gen = _gen(**cfg)
    cams = _cams(6, degrees=360)
    first = gen.generate(_req(cams))
    free = gen.generate(_req(cams, round_index=1))
    assert not np.array_equal(first.ground_truth.static_depth, free.ground_truth.static_depth)
    # Full conditioning: everything it sees stays where it was.
    gt = first.ground_truth
    cond = ConditioningMaps(rgb=first.frames, depth=gt.depth, validity=np.ones_like(gt.depth))
    second = gen.generate(_req(cams, cond=cond, round_index=1))
    assert np.allclose(second.ground_truth.static_depth, gt.static_depth, atol=1e-5)
    assert _psnr(first.frames, second.frames, gt.static_depth > 0) > 30.0


def _outside_pose() -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = (4.0, 0.0, 1.4)
    return T


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda r: dataclasses.replace(r, cameras=[]), "non-empty"),
        (lambda r: dataclasses.replace(r, cameras=r.cameras[:1] + _cams(2, width=64, height=48)[1:]), "image size"),
        (lambda r: dataclasses.replace(r, fps=0.0), "fps"),
        (
            lambda r: dataclasses.replace(
                r,
                conditioning=ConditioningMaps(
                    rgb=np.zeros((1, H, W, 3), np.uint8),
                    depth=np.zeros((1, H, W), np.float32),
                    validity=np.zeros((1, H, W), np.float32),
                ),
            ),
            "conditioning depth has shape",
        ),
        (
            lambda r: dataclasses.replace(
                r,
                conditioning=ConditioningMaps(
                    rgb=np.zeros((2, H, W, 3), np.float32),
                    depth=np.zeros((2, H, W), np.float32),
                    validity=np.zeros((2, H, W), np.float32),
                ),
            ),
            "uint8",
        ),
        (lambda r: dataclasses.replace(r, history_frames=np.zeros((1, 10, 10, 3), np.uint8)), "history_frames"),
        (
            lambda r: dataclasses.replace(r, cameras=[r.cameras[0].with_pose(_outside_pose())]),
            "outside the procedural room",
        ),
    ],
)
def test_bad_requests_raise_clear_errors(mutate, match):
    gen = _gen()
    with pytest.raises(ValueError, match=match):
        gen.generate(mutate(_req(_cams(2))))


def test_bad_config_raises():
    with pytest.raises(ValueError, match="scene"):
        ProceduralWorld(ProceduralConfig(scene="beach"))
    with pytest.raises(ValueError, match="validity_threshold"):
        ProceduralGenerator(ProceduralConfig(validity_threshold=1.5))


@pytest.mark.parametrize("world_seed", [0, 1, 2, 3])
def test_default_orbit_stays_in_free_space_and_sees_the_scene(world_seed):
    world = ProceduralWorld(ProceduralConfig(world_seed=world_seed))
    lo, hi = world.bounds
    assert np.allclose(lo, [-3, -2.5, 0]) and np.allclose(hi, [3, 2.5, 3])
    for cam in _cams(8, width=48, height=32, degrees=360):
        r = world.raycast(cam, 0.0, 0, actors=False)
        assert (r["static_depth"] > 0).all()
        # Not inside a box: the view holds several surfaces at a range of depths.
        assert len(np.unique(r["surface_id"])) >= 3 and r["static_depth"].min() > 0.5
    # Nothing static taller than 1 m comes within the free radius of the vertical axis.
    L = world.layout
    for c, h, yaw in zip(L.box_center, L.box_half, L.box_yaw, strict=True):
        if c[2] + h[2] <= 1.0:
            assert np.linalg.norm(c[:2]) > 1.5
            continue
        cs, sn = np.cos(yaw), np.sin(yaw)
        origin_local = np.array([cs * -c[0] + sn * -c[1], -sn * -c[0] + cs * -c[1]])
        assert np.linalg.norm(np.maximum(np.abs(origin_local) - h[:2], 0)) > world.free_radius
    for cxy, r in zip(L.cyl_center, L.cyl_radius, strict=True):
        assert np.linalg.norm(cxy) - r > world.free_radius
