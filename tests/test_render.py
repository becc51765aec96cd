"""render/: the fast splatter against the reference, edge cases, errors, and video/PNG I/O."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import torch

import render.splat as splat
from render import (
    RenderOutput,
    colorize_depth,
    read_png,
    read_video,
    render_points,
    render_points_batch,
    write_png,
    write_video,
)
from render.benchmark import box_room_points, room_camera
from render.reference import render_points_reference

W, H = 64, 48


def _K(width: int = W, height: int = H, f: float = 50.0, skew: float = 0.0) -> np.ndarray:
    return np.array([[f, skew, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def _look_at_T_cam_world(eye, target) -> np.ndarray:
    """World-to-camera of an OpenCV camera at ``eye`` looking at ``target`` (world z up)."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R_world_cam = np.stack([right, down, forward], axis=1)
    T = np.eye(4)
    T[:3, :3] = R_world_cam.T
    T[:3, 3] = -R_world_cam.T @ eye
    return T


def _assert_identical(a: RenderOutput, b: RenderOutput) -> None:
    a, b = a.numpy(), b.numpy()
    for key in ("rgb", "depth", "validity", "point_ids"):
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _random_scene(seed: int, n: int):
    """Points in front of an identity camera: random depths plus stacked layers that occlude."""
    rng = np.random.default_rng(seed)
    scattered = np.column_stack([rng.uniform(-3, 3, n), rng.uniform(-2, 2, n), rng.uniform(-1, 6, n)])
    layers = []
    for depth in (1.5, 2.5, 4.0):
        m = n // 6
        layers.append(np.column_stack([rng.uniform(-1, 1, m), rng.uniform(-0.8, 0.8, m), np.full(m, depth)]))
    xyz = np.concatenate([scattered, *layers]).astype(np.float32)
    xyz[-5:] = xyz[:5]  # exact duplicates: equal depth, tie broken by the lower index
    rgb = rng.integers(0, 256, (len(xyz), 3), dtype=np.uint8)
    radius = rng.uniform(0.0, 0.12, len(xyz)).astype(np.float32)
    weights = rng.uniform(0.0, 1.0, len(xyz)).astype(np.float32)
    return xyz, rgb, radius, weights


# --------------------------------------------------------------------------------------------
# fast path == reference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_matches_reference_on_random_scenes(seed):
    xyz, rgb, radius, weights = _random_scene(seed, 1500)
    rng = np.random.default_rng(100 + seed)
    K = _K(f=float(rng.uniform(30, 80)), skew=0.4 if seed % 2 else 0.0)
    T = np.eye(4) if seed < 3 else _look_at_T_cam_world(rng.normal(0, 0.5, 3) + [0, 0, -1.0], [0, 0, 3.0])
    kwargs = dict(
        radius=radius if seed % 3 else 0.05,
        weights=weights,
        max_radius_px=int(rng.integers(0, 5)),
        near=0.1,
        far=None if seed % 2 else 5.0,
    )
    fast = render_points(xyz, rgb, K, T, W, H, **kwargs)
    _assert_identical(fast, render_points_reference(xyz, rgb, K, T, W, H, **kwargs))
    assert (fast.point_ids >= 0).float().mean() > 0.1  # the scene actually covers the image


@pytest.mark.parametrize("block", [1, 7, 256])
def test_matches_reference_with_small_blocks(monkeypatch, block):
    """Many blocks, each culled (or not) from its bounding box — down to single points."""
    monkeypatch.setattr(splat, "_BLOCK_POINTS", block)
    xyz, rgb = box_room_points(3000, size=(3.0, 2.5, 2.0), seed=1)
    K = _K()
    T = _look_at_T_cam_world([1.5, 1.25, 1.0], [3.0, 2.0, 0.8])
    kwargs = dict(radius=0.04, max_radius_px=3, near=0.3, far=2.5)
    _assert_identical(
        render_points(xyz, rgb, K, T, W, H, **kwargs), render_points_reference(xyz, rgb, K, T, W, H, **kwargs)
    )


@pytest.mark.parametrize("helper", [False, True])
@pytest.mark.parametrize("shuffled", [False, True])
def test_matches_reference_with_two_threads_culling_backoff_and_batches(monkeypatch, helper, shuffled):
    """Blocks shared by two threads (or not), culled or (shuffled: culling given up) not, splatted in
    several batches whose slots must keep the point order."""
    monkeypatch.setattr(splat, "_BLOCK_POINTS", 64)
    monkeypatch.setattr(splat, "_CULL_POINTS", 16)
    monkeypatch.setattr(splat, "_FLUSH_POINTS", 100)
    monkeypatch.setattr(splat, "_MIN_PARALLELISM", 0.0)  # keep the helper on whatever it measures
    monkeypatch.setattr(splat, "_HELPER", splat._HelperThread())
    monkeypatch.setattr(splat._HELPER, "enabled", helper)
    threads = set()
    project = splat._Projector.project

    def recording_project(self, *args):
        if not threads:
            time.sleep(0.01)  # let the helper thread start and claim blocks
        threads.add(threading.current_thread().name)
        return project(self, *args)

    monkeypatch.setattr(splat._Projector, "project", recording_project)
    xyz, rgb = box_room_points(3000, size=(3.0, 2.5, 2.0), seed=2)
    if shuffled:
        order = np.random.default_rng(0).permutation(len(xyz))
        xyz, rgb = xyz[order], rgb[order]
    xyz[::5] = xyz[1::5]  # duplicates: equal depths, tie broken by the lower index
    K = _K()
    T = _look_at_T_cam_world([1.5, 1.25, 1.0], [3.0, 2.0, 0.8])
    rng = np.random.default_rng(1)
    radius = rng.uniform(0.0, 0.06, len(xyz)).astype(np.float32)
    weights = rng.uniform(0.0, 1.0, len(xyz)).astype(np.float32)
    for kwargs in (dict(radius=0.04, near=0.3, far=2.5), dict(radius=radius, weights=weights, near=0.3)):
        fast = render_points(xyz, rgb, K, T, W, H, **kwargs)
        _assert_identical(fast, render_points_reference(xyz, rgb, K, T, W, H, **kwargs))
        assert (fast.point_ids >= 0).float().mean() > 0.5
    assert len(threads) == (2 if helper else 1)


def test_rint_bounds_agree_with_rounding():
    """The quotient bounds the fast path tests stand for ``lo <= round(u) <= hi``, half to even."""
    rng = np.random.default_rng(0)
    for lo, hi in [(-3, 66), (0, 0), (-1, 4), (2, 9), (-4, -2), (-3, 2**23 + 7)]:
        a, b = splat._rint_bounds(lo, hi)
        u = [rng.uniform(lo - 3, hi + 3, 1000).astype(np.float32)]
        for edge in np.array([lo - 0.5, lo, hi, hi + 0.5], np.float32):
            up = down = edge
            u.append(np.array([edge], np.float32))
            for _ in range(4):  # the floats next to each edge
                up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, np.float32(-np.inf))
                u.append(np.array([up, down], np.float32))
        u = np.concatenate(u)
        in_range = (lo <= np.rint(u)) & (np.rint(u) <= hi)
        np.testing.assert_array_equal(in_range, (a <= u) & (u <= b), err_msg=str((lo, hi)))


def test_matches_reference_on_box_room_subset():
    xyz, rgb = box_room_points(40_000, seed=3)
    K, T = room_camera(W, H)
    kwargs = dict(radius=0.0075, max_radius_px=3, far=100.0)
    _assert_identical(
        render_points(xyz, rgb, K, T, W, H, **kwargs), render_points_reference(xyz, rgb, K, T, W, H, **kwargs)
    )


def test_torch_and_numpy_inputs_agree_and_float64_is_cast():
    xyz, rgb, radius, weights = _random_scene(7, 500)
    K = _K()
    a = render_points(xyz, rgb, K, np.eye(4), W, H, radius=radius, weights=weights)
    b = render_points(
        torch.from_numpy(xyz),
        torch.from_numpy(rgb),
        torch.from_numpy(K),
        torch.eye(4),
        W,
        H,
        radius=torch.from_numpy(radius),
        weights=torch.from_numpy(weights),
    )
    c = render_points(xyz.astype(np.float64), rgb, K, np.eye(4), W, H, radius=radius, weights=weights)
    _assert_identical(a, b)
    _assert_identical(a, c)


def test_batch_is_a_loop_over_cameras():
    xyz, rgb, radius, _ = _random_scene(8, 400)
    Ts = np.stack([np.eye(4), _look_at_T_cam_world([0.3, 0.1, -0.5], [0, 0, 3])])
    out = render_points_batch(xyz, rgb, _K(), Ts, W, H, radius=radius)
    assert out.rgb.shape == (2, H, W, 3) and out.point_ids.shape == (2, H, W)
    for i in range(2):
        single = render_points(xyz, rgb, _K(), Ts[i], W, H, radius=radius)
        np.testing.assert_array_equal(out.point_ids[i].numpy(), single.point_ids.numpy())
        np.testing.assert_array_equal(out.depth[i].numpy(), single.depth.numpy())


# --------------------------------------------------------------------------------------------
# edge cases with known answers
# --------------------------------------------------------------------------------------------


def _assert_empty(out: RenderOutput) -> None:
    assert out.rgb.shape == (H, W, 3) and out.rgb.dtype == torch.uint8
    assert out.depth.dtype == torch.float32 and out.validity.dtype == torch.float32
    assert out.point_ids.dtype == torch.int64
    assert (out.point_ids == -1).all() and (out.depth == 0).all()
    assert (out.rgb == 0).all() and (out.validity == 0).all()


def test_empty_input():
    _assert_empty(
        render_points(
            np.zeros((0, 3), np.float32),
            np.zeros((0, 3), np.uint8),
            _K(),
            np.eye(4),
            W,
            H,
            radius=0.1,
            weights=np.zeros(0, np.float32),
        )
    )


def test_all_points_behind_camera_or_before_near():
    xyz, rgb, radius, _ = _random_scene(9, 300)
    behind = xyz.copy()
    behind[:, 2] = -np.abs(behind[:, 2]) - 0.01
    _assert_empty(render_points(behind, rgb, _K(), np.eye(4), W, H, radius=radius))
    too_close = xyz.copy()
    too_close[:, 2] = 0.04
    _assert_empty(render_points(too_close, rgb, _K(), np.eye(4), W, H, radius=radius, near=0.05))


def test_non_finite_points_are_skipped():
    xyz = np.array([[0, 0, 2], [np.nan, 0, 2], [0, np.inf, 2], [0, 0, np.inf]], dtype=np.float32)
    rgb = np.full((4, 3), 200, np.uint8)
    out = render_points(xyz, rgb, _K(), np.eye(4), W, H)
    assert set(np.unique(out.point_ids.numpy())) == {-1, 0}


@pytest.mark.filterwarnings("ignore:overflow encountered")  # the reference's float32 projection overflows
def test_infinite_depth_is_never_rendered():
    """``z_c`` overflows to inf while ``h_0, h_1`` stay 0: the reference's z-buffer starts at inf."""
    K = np.array([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 1.0]])
    T = np.diag([1.0, 1.0, 4.0, 1.0])
    xyz = np.array([[0.0, 0.0, 3e38], [0.0, 0.0, 1.0]], np.float32)
    for far in (None, 1e39):
        out = render_points(xyz, np.ones((2, 3), np.uint8), K, T, 8, 4, far=far)
        _assert_identical(out, render_points_reference(xyz, np.ones((2, 3), np.uint8), K, T, 8, 4, far=far))
        assert out.point_ids.numpy().tolist() == [[1] + [-1] * 7] + [[-1] * 8] * 3


def _point_at_pixel(col: float, row: float, z: float, K: np.ndarray) -> list[float]:
    return [(col - K[0, 2]) * z / K[0, 0], (row - K[1, 2]) * z / K[1, 1], z]


def test_points_on_the_image_border():
    K = np.array([[40.0, 0.0, 0.0], [0.0, 40.0, 0.0], [0.0, 0.0, 1.0]])  # pixel (0, 0) on the optical axis
    z = 2.0
    pixels = [(0, 0), (W - 1, H - 1), (W - 1, 0), (0, H - 1), (-1, 10), (10, -2), (W, 20), (-5, 5)]
    xyz = np.array([_point_at_pixel(c, r, z, K) for c, r in pixels], dtype=np.float32)
    rgb = np.arange(len(xyz) * 3, dtype=np.uint8).reshape(-1, 3) + 1
    # radius 0: only the four corners are visible, each on exactly one pixel.
    ids = render_points(xyz, rgb, K, np.eye(4), W, H).point_ids.numpy()
    assert (ids >= 0).sum() == 4
    assert ids[0, 0] == 0 and ids[H - 1, W - 1] == 1 and ids[0, W - 1] == 2 and ids[H - 1, 0] == 3
    # r = 1 (fx * radius / z = 1): centres one pixel outside reach in; (10, -2) and (-5, 5) still do not.
    radius = np.float32(z / 40.0)
    out = render_points(xyz, rgb, K, np.eye(4), W, H, radius=radius, max_radius_px=1)
    ids = out.point_ids.numpy()
    assert (ids[9:12, 0] == 4).all() and ids[8, 0] != 4
    assert (ids[19:22, W - 1] == 6).all()
    assert not (ids == 5).any() and not (ids == 7).any()
    _assert_identical(out, render_points_reference(xyz, rgb, K, np.eye(4), W, H, radius=radius, max_radius_px=1))


def test_half_pixel_projections_round_half_to_even():
    K = np.array([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 1.0]])
    xyz = np.array([[0.25, 0.05, 1.0], [0.35, 0.15, 1.0]], dtype=np.float32)  # u = 2.5 / 3.5, v = 0.5 / 1.5
    ids = render_points(xyz, np.ones((2, 3), np.uint8), K, np.eye(4), 8, 4).point_ids.numpy()
    assert ids[0, 2] == 0 and ids[2, 4] == 1


def test_front_point_wins_in_either_order_and_ties_go_to_lower_index():
    K = _K()
    front, back = _point_at_pixel(20, 10, 1.0, K), _point_at_pixel(20, 10, 2.0, K)
    rgb = np.array([[255, 0, 0], [0, 255, 0]], np.uint8)
    for order in ([front, back], [back, front]):
        out = render_points(np.array(order, np.float32), rgb, K, np.eye(4), W, H)
        winner = 0 if order[0] is front else 1
        assert out.point_ids[10, 20] == winner
        assert out.depth[10, 20] == np.float32(1.0)
        assert out.rgb[10, 20].tolist() == rgb[winner].tolist()
    tied = render_points(
        np.array([back, back, front[:2] + [2.0]], np.float32), np.zeros((3, 3), np.uint8), K, np.eye(4), W, H
    )
    assert tied.point_ids[10, 20] == 0


def test_footprint_is_a_clamped_square():
    K = _K(f=50.0)
    z = 2.0
    xyz = np.array([_point_at_pixel(30, 20, z, K)], np.float32)
    rgb = np.array([[9, 8, 7]], np.uint8)
    for radius_px, max_radius_px, expected in [(2.0, 3, 2), (2.4, 3, 2), (2.6, 3, 3), (5.0, 3, 3), (0.4, 3, 0)]:
        out = render_points(xyz, rgb, K, np.eye(4), W, H, radius=radius_px * z / 50.0, max_radius_px=max_radius_px)
        hit = out.point_ids.numpy() == 0
        rows, cols = np.nonzero(hit)
        assert hit.sum() == (2 * expected + 1) ** 2, (radius_px, expected)
        assert rows.min() == 20 - expected and rows.max() == 20 + expected
        assert cols.min() == 30 - expected and cols.max() == 30 + expected


def test_nearer_splat_covers_farther_point_but_not_beyond_its_square():
    K = _K(f=50.0)
    big_front = _point_at_pixel(30, 20, 1.0, K)  # r = 2 with radius 0.04
    behind_inside = _point_at_pixel(31, 21, 3.0, K)
    behind_outside = _point_at_pixel(33, 20, 3.0, K)
    xyz = np.array([behind_inside, behind_outside, big_front], np.float32)
    out = render_points(
        xyz, np.zeros((3, 3), np.uint8), K, np.eye(4), W, H, radius=np.array([0.0, 0.0, 0.04], np.float32)
    )
    assert out.point_ids[21, 31] == 2 and out.point_ids[20, 33] == 1


def test_weights_become_validity():
    K = _K()
    xyz = np.array(
        [_point_at_pixel(5, 5, 1.0, K), _point_at_pixel(5, 5, 2.0, K), _point_at_pixel(40, 30, 1.0, K)], np.float32
    )
    rgb = np.zeros((3, 3), np.uint8)
    weights = np.array([0.25, 0.9, 0.5], np.float32)
    out = render_points(xyz, rgb, K, np.eye(4), W, H, weights=weights)
    assert out.validity[5, 5] == np.float32(0.25) and out.validity[30, 40] == np.float32(0.5)
    assert out.validity.sum() == np.float32(0.75)
    plain = render_points(xyz, rgb, K, np.eye(4), W, H)
    assert plain.validity[5, 5] == 1.0 and plain.validity.sum() == 2.0
    assert torch.equal(plain.mask, plain.point_ids >= 0)


# --------------------------------------------------------------------------------------------
# errors name the bad argument
# --------------------------------------------------------------------------------------------


def _good_args():
    xyz, rgb, radius, weights = _random_scene(10, 50)
    return dict(xyz=xyz, rgb=rgb, K=_K(), T_cam_world=np.eye(4), width=W, height=H), radius, weights


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("xyz", np.zeros((5, 2), np.float32), "xyz"),
        ("xyz", np.zeros((50, 3), np.int32), "xyz"),
        ("rgb", np.zeros((49, 3), np.uint8), "rgb"),
        ("rgb", np.zeros((50, 3), np.float32), "rgb"),
        ("K", np.eye(2), "K"),
        ("K", np.array([[np.nan, 0, 1], [0, 1, 1], [0, 0, 1]]), "K"),
        ("K", np.array([[-5.0, 0, 1], [0, 5, 1], [0, 0, 1]]), "K"),
        ("T_cam_world", np.eye(3), "T_cam_world"),
        ("T_cam_world", np.full((4, 4), np.inf), "T_cam_world"),
        ("width", 0, "width"),
        ("height", -3, "height"),
        ("width", 64.5, "width"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(name, value, match):
    args, _, _ = _good_args()
    args[name] = value
    with pytest.raises(ValueError, match=match):
        render_points(**args)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(radius=-0.1), "radius"),
        (dict(radius=np.zeros(7)), "radius"),
        (dict(radius=np.full(50, np.nan)), "radius"),
        (dict(weights=np.zeros(3)), "weights"),
        (dict(weights=np.full(50, 1.5)), "weights"),
        (dict(max_radius_px=-1), "max_radius_px"),
        (dict(near=0.0), "near"),
        (dict(near=1.0, far=0.5), "far"),
    ],
)
def test_bad_keyword_arguments(kwargs, match):
    args, _, _ = _good_args()
    with pytest.raises(ValueError, match=match):
        render_points(**args, **kwargs)


def test_batch_checks_its_shapes():
    args, _, _ = _good_args()
    with pytest.raises(ValueError, match="T_cam_world"):
        render_points_batch(args["xyz"], args["rgb"], _K(), np.eye(4), W, H)
    with pytest.raises(ValueError, match="K"):
        render_points_batch(args["xyz"], args["rgb"], np.stack([_K()] * 3), np.stack([np.eye(4)] * 2), W, H)


# --------------------------------------------------------------------------------------------
# video and images
# --------------------------------------------------------------------------------------------


def _smooth_frames(n: int, height: int, width: int) -> np.ndarray:
    v, u = np.mgrid[0:height, 0:width]
    frames = [np.stack([(u * 4 + 10 * i) % 256, (v * 5) % 256, np.full_like(u, 60 + 20 * i)], -1) for i in range(n)]
    return np.stack(frames).astype(np.uint8)


def test_video_round_trip(tmp_path):
    frames = _smooth_frames(6, 48, 64)
    path = write_video(tmp_path / "clip.mp4", frames, fps=12)
    back = read_video(path)
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - frames).mean() < 4.0
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]  # no temporary left behind


def test_ffmpeg_starts_without_preexec_fn(tmp_path, monkeypatch):
    # A preexec_fn makes Python fork(), which stops OpenBLAS's workers under another thread's
    # running matrix product (a hang: render/video.py). The checkpoint thread writes videos while
    # the main thread renders, so ffmpeg must be started the vfork way.
    import subprocess

    seen = []
    popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        seen.append(kwargs.get("preexec_fn"))
        return popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    read_video(write_video(tmp_path / "clip.mp4", _smooth_frames(2, 16, 16), fps=12))
    assert seen and all(fn is None for fn in seen)


def test_video_pads_odd_sizes(tmp_path):
    frames = _smooth_frames(3, 21, 33)
    back = read_video(write_video(tmp_path / "odd.mp4", frames, fps=24))
    assert back.shape == (3, 22, 34, 3)
    assert np.abs(back[:, :21, :33].astype(int) - frames).mean() < 6.0


def test_video_errors(tmp_path):
    with pytest.raises(ValueError, match="frames"):
        write_video(tmp_path / "a.mp4", np.zeros((2, 8, 8), np.uint8), fps=24)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "a.mp4", np.zeros((2, 8, 8, 3), np.float32), fps=24)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "a.mp4", np.zeros((2, 8, 8, 3), np.uint8), fps=0)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    with pytest.raises(OSError, match="directory"):
        write_video(blocker / "a.mp4", np.zeros((2, 8, 8, 3), np.uint8), fps=24)
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
def test_video_unwritable_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            write_video(locked / "a.mp4", np.zeros((2, 8, 8, 3), np.uint8), fps=24)
    finally:
        locked.chmod(0o700)


def test_png_round_trip(tmp_path):
    image = _smooth_frames(1, 10, 12)[0]
    np.testing.assert_array_equal(read_png(write_png(tmp_path / "a.png", image)), image)
    grey = image[..., 0]
    np.testing.assert_array_equal(read_png(write_png(tmp_path / "g.png", grey)), grey)
    with pytest.raises(ValueError, match="image"):
        write_png(tmp_path / "b.png", np.zeros((4, 4, 2), np.uint8))


def test_colorize_depth():
    depth = np.array([[0.0, 1.0, 2.0], [3.0, np.nan, -1.0]], np.float32)
    image = colorize_depth(depth)
    assert image.shape == (2, 3, 3) and image.dtype == np.uint8
    assert (image[0, 0] == 0).all() and (image[1, 1] == 0).all() and (image[1, 2] == 0).all()
    assert image[0, 1].sum() > 0 and image[1, 0].sum() > 0
    assert image[0, 1, 0] > image[0, 1, 2]  # near is warm
    assert image[1, 0, 2] > image[1, 0, 0]  # far is cool
    assert (colorize_depth(np.zeros((4, 4))) == 0).all()
    np.testing.assert_array_equal(colorize_depth(depth, vmin=1.0, vmax=3.0), image)
