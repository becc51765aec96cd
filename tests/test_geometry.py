"""Round trips and invariants of the conventions module."""

import json
import math

import numpy as np
import pytest

from spatia_py import geometry as G


def random_pose(rng) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = G.so3_exp(rng.normal(size=3))
    T[:3, 3] = rng.normal(size=3)
    return T


def test_invert_pose_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(10):
        T = random_pose(rng)
        np.testing.assert_allclose(G.invert_pose(T) @ T, np.eye(4), atol=1e-12)
        np.testing.assert_allclose(G.invert_pose(G.invert_pose(T)), T, atol=1e-12)


def test_compose_and_transform_points():
    rng = np.random.default_rng(1)
    T_a_b, T_b_c = random_pose(rng), random_pose(rng)
    p_c = rng.normal(size=(5, 3))
    direct = G.transform_points(G.compose(T_a_b, T_b_c), p_c)
    chained = G.transform_points(T_a_b, G.transform_points(T_b_c, p_c))
    np.testing.assert_allclose(direct, chained, atol=1e-12)


def test_so3_exp_log_round_trip():
    rng = np.random.default_rng(2)
    for w in [rng.normal(size=3) * s for s in (1e-9, 1e-3, 0.5, 2.0, 3.0)]:
        R = G.so3_exp(w)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(G.so3_exp(G.so3_log(R)), R, atol=1e-9)


def test_project_unproject_round_trip():
    rng = np.random.default_rng(3)
    K = G.intrinsics_from_fov(64, 48, 60)
    T_world_cam = random_pose(rng)
    depth = rng.uniform(0.5, 5.0, size=(48, 64))
    pts = G.unproject_depth(depth, K, T_world_cam).reshape(-1, 3)
    uv, z = G.project(pts, K, G.invert_pose(T_world_cam))
    v, u = np.mgrid[0:48, 0:64]
    np.testing.assert_allclose(uv[:, 0], u.ravel(), atol=1e-8)
    np.testing.assert_allclose(uv[:, 1], v.ravel(), atol=1e-8)
    np.testing.assert_allclose(z, depth.ravel(), atol=1e-9)


def test_principal_point_is_pixel_centre_convention():
    K = G.intrinsics_from_fov(64, 48, 90)
    # The optical axis goes through the middle of the image: between pixels 31 and 32.
    assert K[0, 2] == pytest.approx(31.5)
    assert K[1, 2] == pytest.approx(23.5)
    uv, z = G.project(np.array([[0.0, 0.0, 2.0]]), K, np.eye(4))
    np.testing.assert_allclose(uv[0], [31.5, 23.5])


def test_look_at_is_opencv():
    T = G.look_at([0, 0, 0], [1, 0, 0], up=[0, 0, 1])
    np.testing.assert_allclose(T[:3, 2], [1, 0, 0], atol=1e-12)  # z forward
    np.testing.assert_allclose(T[:3, 1], [0, 0, -1], atol=1e-12)  # y down = against world up
    np.testing.assert_allclose(T[:3, 0], [0, -1, 0], atol=1e-12)  # x right
    assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0)


def test_points_behind_camera_project_to_nan():
    uv, z = G.project(np.array([[0.0, 0.0, -1.0]]), np.eye(3), np.eye(4))
    assert np.isnan(uv).all() and z[0] < 0


def test_interpolate_pose_endpoints_and_midpoint():
    rng = np.random.default_rng(4)
    A, B = random_pose(rng), random_pose(rng)
    np.testing.assert_allclose(G.interpolate_pose(A, B, 0.0), A, atol=1e-9)
    np.testing.assert_allclose(G.interpolate_pose(A, B, 1.0), B, atol=1e-9)
    M = G.interpolate_pose(A, B, 0.5)
    full = G.rotation_angle_deg(A[:3, :3], B[:3, :3])
    assert G.rotation_angle_deg(A[:3, :3], M[:3, :3]) == pytest.approx(full / 2, abs=1e-6)


def test_camera_scaled_keeps_pixel_centres():
    cam = G.Camera(G.intrinsics_from_fov(64, 48, 60), 64, 48)
    half = cam.scaled(0.5)
    assert (half.width, half.height) == (32, 24)
    # A 3D point projecting to pixel centre (u, v) at full res lands on (u + 0.5) / 2 - 0.5.
    X = np.array([[0.3, -0.2, 2.0]])
    uv_full, _ = G.project(X, cam.K, np.eye(4))
    uv_half, _ = G.project(X, half.K, np.eye(4))
    np.testing.assert_allclose(uv_half, (uv_full + 0.5) / 2 - 0.5, atol=1e-9)


@pytest.mark.parametrize(
    "T, message",
    [
        (np.full((4, 4), np.nan), "non-finite"),
        (np.diag([2.0, 1, 1, 1]), "not rigid"),
        (np.diag([-1.0, 1, 1, 1]), "not rigid"),
        (np.eye(3), "4x4"),
    ],
)
def test_bad_poses_are_rejected(T, message):
    with pytest.raises(G.GeometryError, match=message):
        G.validate_pose(T)


@pytest.mark.parametrize("fx", [0.0, -10.0])
def test_bad_intrinsics_are_rejected(fx):
    K = np.array([[fx, 0, 32], [0, 50, 24], [0, 0, 1]])
    with pytest.raises(G.GeometryError, match="focal"):
        G.Camera(K, 64, 48)


def test_path_file_round_trip(tmp_path):
    path = G.orbit_path([0, 0, 1], 1.0, 1.2, 8, width=64, height_px=48)
    f = tmp_path / "path.json"
    G.save_path(path, f)
    back = G.load_path(f)
    assert len(back) == 8 and back.fps == path.fps
    np.testing.assert_allclose(back.T_world_cam, path.T_world_cam)
    d = json.loads(f.read_text())
    assert set(d["cameras"][0]) == {"K", "width", "height", "T_world_cam"}


def test_path_file_errors(tmp_path):
    with pytest.raises(G.GeometryError, match="not found"):
        G.load_path(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(G.GeometryError, match="not valid JSON"):
        G.load_path(bad)
    cam = G.Camera(np.eye(3) * 50 + np.diag([0, 0, -49]), 64, 48).to_dict()
    cam["T_world_cam"][0][0] = float("nan")
    bad.write_text(json.dumps({"fps": 24, "cameras": [cam]}))
    with pytest.raises(G.GeometryError, match="camera 0.*non-finite"):
        G.load_path(bad)


def test_loop_path_returns_to_start_and_pairs_poses():
    p = G.loop_path([[0, 0, 1], [1, 0, 1], [1, 1, 1]], 20, width=64, height_px=48)
    T = p.T_world_cam
    np.testing.assert_allclose(T[0], T[-1], atol=1e-12)
    for i in range(10):
        np.testing.assert_allclose(T[i], T[19 - i], atol=1e-12)


def test_orbit_full_circle_revisits_start():
    p = G.orbit_path([0, 0, 1], 2.0, 1.5, 13, width=64, height_px=48)
    np.testing.assert_allclose(p.T_world_cam[0], p.T_world_cam[-1], atol=1e-9)
    d = np.linalg.norm(p.centers[:, :2], axis=1)
    np.testing.assert_allclose(d, 2.0)
    assert p.length_m() == pytest.approx(2 * math.pi * 2.0, rel=0.02)


def test_dolly_and_look_around():
    d = G.dolly_path([0, 0, 1], [1, 0, 1], [5, 0, 1], 5, width=64, height_px=48)
    np.testing.assert_allclose(d.centers[-1], [1, 0, 1])
    la = G.look_around_path([0, 0, 1], 5, width=64, height_px=48, yaw_span_deg=90)
    np.testing.assert_allclose(la.centers, np.tile([0, 0, 1], (5, 1)))
    assert G.rotation_angle_deg(la[0].T_world_cam[:3, :3], la[-1].T_world_cam[:3, :3]) == pytest.approx(90)


def test_build_path_errors():
    with pytest.raises(G.GeometryError, match="unknown path kind"):
        G.build_path("spiral", 8, 64, 48, 60, 24, {})
    with pytest.raises(G.GeometryError, match="bad parameters"):
        G.build_path("orbit", 8, 64, 48, 60, 24, {"centre": [0, 0, 0]})


def test_similarity_from_poses_is_rotation_first_and_rejects_degenerate_input():
    rng = np.random.default_rng(3)
    n = 8
    T = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        T[i, :3, :3] = G.so3_exp(rng.normal(scale=0.3, size=3))
    # Centres on an exact line: a centre-only fit (Umeyama) cannot fix the roll about it.
    T[:, :3, 3] = np.linspace(0, 1, n)[:, None] * [1.0, 0.0, 0.0]
    s0, R0, t0 = 0.98, G.so3_exp(np.array([0.3, -0.2, 0.1])), np.array([0.5, -1.0, 2.0])
    T2 = G.apply_similarity_to_poses(s0, R0, t0, T)
    assert np.allclose(T2[:, :3, :3], R0 @ T[:, :3, :3]) and np.allclose(T2[:, :3, 3], s0 * T[:, :3, 3] @ R0.T + t0)
    s, R, t = G.similarity_from_poses(T, T2)
    assert abs(s - s0) < 1e-9 and np.allclose(R, R0, atol=1e-9) and np.allclose(t, t0, atol=1e-9)
    with pytest.raises(G.GeometryError, match="coincide"):
        G.similarity_from_poses(np.tile(np.eye(4), (3, 1, 1)), np.tile(np.eye(4), (3, 1, 1)))
    with pytest.raises(G.GeometryError, match="N >= 2"):
        G.similarity_from_poses(T[:1], T2[:1])
