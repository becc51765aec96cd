"""SpatialMemory: fusion, voxel hashing, visibility, carving and file round trips on tiny scenes."""

from __future__ import annotations

import numpy as np
import pytest

from spatia_py.geometry import Camera, intrinsics_from_fov, look_at, project
from spatia_py.memory import (
    ORIGIN_EDITED,
    ORIGIN_INSERTED,
    ORIGIN_NAMES,
    ORIGIN_OBSERVED,
    FuseStats,
    MemoryFormatError,
    SpatialMemory,
    pack_voxel_coords,
    unpack_voxel_keys,
    voxel_coords,
    voxel_keys,
)

W, H = 64, 48


def camera_at(eye=(0.0, 0.0, 0.0), target=(0.0, 1.0, 0.0)) -> Camera:
    """A 64x48 camera at ``eye`` looking at ``target`` (world z up)."""
    return Camera(intrinsics_from_fov(W, H, 70.0), W, H, look_at(eye, target))


def random_points(n: int, seed: int = 0, lo=-1.0, hi=1.0):
    rng = np.random.default_rng(seed)
    return rng.uniform(lo, hi, (n, 3)), rng.integers(0, 256, (n, 3), dtype=np.uint8)


def check_invariants(mem: SpatialMemory) -> None:
    P = len(mem)
    assert mem.keys.dtype == np.int64 and mem.keys.shape == (P,)
    assert np.all(np.diff(mem.keys) > 0), "keys must stay strictly sorted"
    assert mem.xyz.dtype == np.float32 and mem.xyz.shape == (P, 3)
    assert mem.rgb.dtype == np.uint8 and mem.rgb.shape == (P, 3)
    for name, dt in (
        ("confidence", np.float32),
        ("n_obs", np.int32),
        ("first_round", np.int32),
        ("last_round", np.int32),
        ("origin", np.uint8),
    ):
        a = getattr(mem, name)
        assert a.dtype == dt and a.shape == (P,), name
    np.testing.assert_array_equal(voxel_keys(mem.xyz, mem.voxel_size), mem.keys)
    if mem.features is not None:
        assert mem.features.dtype == np.float16 and len(mem.features) == P


# ---- keys and fusion --------------------------------------------------------------------------


def test_keys_round_trip_with_negative_coordinates():
    ijk = np.array([[0, 0, 0], [-1, -1, -1], [-(2**20), 2**20 - 1, 5], [123, -456, 789]])
    keys = pack_voxel_coords(ijk)
    assert keys.dtype == np.int64 and np.all(keys >= 0)
    np.testing.assert_array_equal(unpack_voxel_keys(keys), ijk)
    # key order is lexicographic (i, j, k)
    assert np.array_equal(np.argsort(keys), np.lexsort(ijk.T[::-1]))
    # voxel centres sit on multiples of the voxel size
    np.testing.assert_array_equal(voxel_coords([[-0.006, 0.0049, 0.0151]], 0.01), [[-1, 0, 2]])
    with pytest.raises(ValueError, match="out of range"):
        pack_voxel_coords([[2**20, 0, 0]])


def test_fuse_running_means():
    mem = SpatialMemory(0.1)
    st = mem.fuse([[0.01, 0.02, 0.03]], np.array([[100, 0, 50]], np.uint8), [1.0], round_index=0)
    assert st == FuseStats(added=1, updated=0)
    st = mem.fuse([[0.03, 0.04, 0.01]], np.array([[201, 100, 50]], np.uint8), [3.0], round_index=2)
    assert st == FuseStats(added=0, updated=1)
    assert len(mem) == 1
    np.testing.assert_allclose(mem.xyz[0], [0.025, 0.035, 0.015], atol=1e-6)  # weights 1 and 3
    np.testing.assert_array_equal(mem.rgb[0], [176, 75, 50])  # (100 + 3*201)/4 = 175.75
    assert mem.n_obs[0] == 2 and mem.confidence[0] == pytest.approx(4.0)
    assert mem.first_round[0] == 0 and mem.last_round[0] == 2
    assert mem.origin[0] == ORIGIN_OBSERVED
    check_invariants(mem)


def test_points_in_one_voxel_merge_first_and_count_one_observation():
    mem = SpatialMemory(1.0)
    xyz = np.array([[0.2, 0.2, 0.2], [0.4, 0.4, 0.4], [1.2, 0.3, 0.3]])
    rgb = np.array([[0, 0, 0], [100, 200, 10], [7, 7, 7]], np.uint8)
    st = mem.fuse(xyz, rgb, round_index=0)
    assert st == FuseStats(added=2, updated=0)
    i = int(np.searchsorted(mem.keys, voxel_keys([[0.3, 0.3, 0.3]], 1.0)[0]))
    np.testing.assert_allclose(mem.xyz[i], [0.3, 0.3, 0.3], atol=1e-6)
    np.testing.assert_array_equal(mem.rgb[i], [50, 100, 5])
    assert mem.n_obs[i] == 1 and mem.confidence[i] == 2.0


def test_refusing_same_points_does_not_grow():
    xyz, rgb = random_points(5000, lo=-2.0, hi=2.0)  # negative coordinates too
    mem = SpatialMemory(0.05)
    mem.fuse(xyz, rgb, round_index=0)
    n = len(mem)
    for r in (1, 2):
        st = mem.fuse(xyz + 1e-4, rgb, round_index=r)
        assert st.updated > 0
    assert len(mem) <= n * 1.01
    check_invariants(mem)
    assert mem.n_obs.min() >= 1 and mem.last_round.max() == 2


def test_incremental_fusion_matches_one_shot():
    # points near voxel centres (no neighbour snapping), several per voxel
    rng = np.random.default_rng(1)
    xyz = (rng.integers(-10, 10, (3000, 3)) + rng.uniform(-0.2, 0.2, (3000, 3))) * 0.1
    rgb = rng.integers(0, 256, (3000, 3), dtype=np.uint8)
    a = SpatialMemory(0.1)
    a.fuse(xyz, rgb, round_index=0)
    b = SpatialMemory(0.1)
    for chunk in np.array_split(np.arange(3000), 7):
        b.fuse(xyz[chunk], rgb[chunk], round_index=0)
    np.testing.assert_array_equal(a.keys, b.keys)
    np.testing.assert_allclose(a.xyz, b.xyz, atol=1e-6)
    np.testing.assert_allclose(a.confidence, b.confidence)
    check_invariants(b)


def test_noise_across_a_voxel_face_joins_the_existing_voxel():
    mem = SpatialMemory(0.1)
    black = np.zeros((1, 3), np.uint8)
    mem.fuse([[0.045, 0.0, 0.0]], black, round_index=0)  # near the face x = 0.05 of voxel 0
    st = mem.fuse([[0.055, 0.0, 0.0]], black, round_index=1)  # just across it
    assert st == FuseStats(added=0, updated=1) and len(mem) == 1
    assert mem.n_obs[0] == 2 and 0.045 <= mem.xyz[0, 0] < 0.05
    check_invariants(mem)
    # far from the existing point: a new voxel
    assert mem.fuse([[0.14, 0.0, 0.0]], black, round_index=2).added == 1
    # both sides seen in the same call: two voxels (a real second layer)
    two = SpatialMemory(0.1)
    two.fuse([[0.045, 0.0, 0.0], [0.055, 0.0, 0.0]], np.zeros((2, 3), np.uint8), round_index=0)
    assert len(two) == 2


def test_origin_and_features_kept_in_sync():
    xyz, rgb = random_points(400, seed=2)
    feats = np.random.default_rng(0).normal(size=(400, 4))
    mem = SpatialMemory(0.2)
    mem.fuse(xyz, rgb, round_index=0, features=feats)
    assert mem.features.shape == (len(mem), 4)
    mem.fuse(xyz[:10] + 5.0, rgb[:10], round_index=1, origin=ORIGIN_INSERTED, features=feats[:10])
    check_invariants(mem)
    assert (mem.origin == ORIGIN_INSERTED).sum() == len(np.unique(voxel_keys(xyz[:10] + 5.0, 0.2)))
    sub = mem.select(mem.origin == ORIGIN_INSERTED)
    check_invariants(sub)
    assert sub.features.shape == (len(sub), 4)
    with pytest.raises(ValueError, match="features"):
        mem.fuse(xyz, rgb, round_index=2)
    # observing an edited voxel keeps its origin; fusing an edit marks it
    mem.fuse(xyz[:1], rgb[:1], round_index=3, origin=ORIGIN_EDITED, features=feats[:1])
    i = int(np.searchsorted(mem.keys, voxel_keys(xyz[:1], 0.2)[0]))
    mem.fuse(xyz[:1], rgb[:1], round_index=4, features=feats[:1])
    assert mem.origin[i] == ORIGIN_EDITED


def test_select_remove_copy_diff_stats():
    xyz, rgb = random_points(1000, seed=3)
    mem = SpatialMemory(0.1)
    mem.fuse(xyz, rgb, round_index=0)
    before = mem.copy()
    n = len(mem)
    sub = mem.select(np.array([5, 1, 1, 3]))
    assert len(sub) == 3
    np.testing.assert_array_equal(sub.keys, mem.keys[[1, 3, 5]])
    assert mem.remove(np.array([0, 2])) == 2 and len(mem) == n - 2
    assert mem.remove(mem.xyz[:, 0] > 0.5) > 0
    check_invariants(mem)
    assert len(before) == n  # copies are independent
    mem.fuse(np.array([[9.0, 9.0, 9.0]]), np.zeros((1, 3), np.uint8), round_index=1)
    added, removed = mem.diff_keys(before)
    np.testing.assert_array_equal(added, voxel_keys([[9.0, 9.0, 9.0]], 0.1))
    assert len(removed) == n - (len(mem) - 1)
    s = mem.stats()
    assert s["points"] == len(mem) and s["by_origin"]["observed"] == len(mem)
    assert s["bounds"][1][0] == pytest.approx(9.0, abs=0.1)
    lo, hi = mem.bounds()
    assert lo.shape == (3,) and np.all(hi >= lo)
    with pytest.raises(ValueError, match="indices"):
        mem.remove(np.array([len(mem)]))
    with pytest.raises(ValueError, match="empty"):
        SpatialMemory().bounds()


# ---- depth maps, visibility, carving -----------------------------------------------------------


def test_fuse_depth_plane_at_known_depth():
    cam = camera_at(eye=(0.5, -1.0, 1.0), target=(0.5, 1.0, 1.0))  # looks along +y
    depth = np.full((H, W), 2.0, np.float32)
    depth[:4] = 0.0  # empty rows are skipped
    mask = np.ones((H, W), bool)
    mask[:, :8] = False
    rgb = np.full((H, W, 3), 90, np.uint8)
    mem = SpatialMemory(0.02)
    st = mem.fuse_depth(depth, rgb, cam, mask=mask, round_index=0)
    assert st.added == len(mem) > 0
    # z-depth 2 along +y from y = -1: the plane y = 1
    np.testing.assert_allclose(mem.xyz[:, 1], 1.0, atol=0.02)
    assert np.all(mem.rgb == 90)
    # masked-out columns (left of the image = smaller x for this camera) were not fused
    uv, _ = project(mem.xyz.astype(np.float64), cam.K, cam.T_cam_world)
    assert uv[:, 0].min() > 7.0 - 1.0 and uv[:, 1].min() > 3.0 - 1.0
    check_invariants(mem)
    # the same view again does not grow the memory
    n = len(mem)
    mem.fuse_depth(depth, rgb, cam, mask=mask, round_index=1, stride=2)
    assert len(mem) == n
    # revisiting with slightly noisy depth (mm) barely grows it
    rng = np.random.default_rng(0)
    for r in (2, 3):
        noisy = depth + rng.normal(0, 0.0005, depth.shape).astype(np.float32) * (depth > 0)
        mem.fuse_depth(noisy, rgb, cam, mask=mask, round_index=r)
    assert len(mem) <= 1.01 * n
    with pytest.raises(ValueError, match="camera"):
        mem.fuse_depth(depth[:, :32], rgb[:, :32], cam, round_index=0)
    with pytest.raises(ValueError, match="uint8"):
        mem.fuse_depth(depth, rgb.astype(np.float32), cam, round_index=0)


def test_visible_matches_brute_force_projection():
    cam = camera_at(eye=(0.1, -0.2, 0.3), target=(1.0, 2.0, 0.0))
    xyz, rgb = random_points(20000, seed=4, lo=-4.0, hi=4.0)
    mem = SpatialMemory(0.01)
    mem.fuse(xyz, rgb, round_index=0)
    p = mem.xyz.astype(np.float64)
    uv, z = project(p, cam.K, cam.T_cam_world)
    inside = (z > 1e-6) & (uv[:, 0] >= -0.5) & (uv[:, 0] < W - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < H - 0.5)
    idx = mem.visible(cam)
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    # float32 vs float64 may disagree only for points on a frustum boundary
    assert len(np.setxor1d(idx, np.flatnonzero(inside))) <= 2
    assert abs(len(idx) - inside.sum()) <= 2 and inside.sum() > 100
    near = mem.visible(cam, max_depth=2.0)
    assert set(near.tolist()) <= set(idx.tolist())
    assert np.all(z[near] <= 2.0 + 1e-4)
    assert len(SpatialMemory().visible(cam)) == 0


def test_carve_removes_points_seen_through():
    cam = camera_at(eye=(0.0, 0.0, 0.0), target=(0.0, 1.0, 0.0))  # looks along +y
    depth = np.full((H, W), 3.0, np.float32)  # a wall at y = 3
    mem = SpatialMemory(0.02)
    pts = np.array(
        [
            [0.0, 1.5, 0.0],  # in front of the wall: the camera sees through it -> carved
            [0.0, 4.0, 0.0],  # behind the wall: occluded, kept
            [5.0, 1.5, 0.0],  # outside the frustum, kept
            [0.0, 2.98, 0.0],  # on the wall within the margin, kept
            [0.05, 1.0, 0.0],  # in front but inserted by an edit: kept by default
        ]
    )
    mem.fuse(pts[:4], np.zeros((4, 3), np.uint8), round_index=0)
    mem.fuse(pts[4:], np.zeros((1, 3), np.uint8), round_index=0, origin=ORIGIN_INSERTED)
    assert mem.carve(depth, cam) == 1
    kept = voxel_keys(pts[1:], 0.02)
    np.testing.assert_array_equal(np.sort(kept), mem.keys)
    # masked-out pixels, low-confidence depth and empty depth never carve
    mem2 = SpatialMemory(0.02)
    mem2.fuse(pts[:1], np.zeros((1, 3), np.uint8), round_index=0)
    assert mem2.carve(depth, cam, mask=np.zeros((H, W), bool)) == 0
    assert mem2.carve(depth, cam, depth_conf=np.full((H, W), 0.2), min_depth_conf=0.5) == 0
    assert mem2.carve(np.zeros((H, W)), cam) == 0
    assert mem2.carve(depth, cam, margin_m=2.0) == 0
    assert mem.carve(depth, cam, carve_edits=True) == 1
    check_invariants(mem)


def test_carve_keeps_points_at_silhouettes():
    cam = camera_at()
    depth = np.full((H, W), 4.0, np.float32)
    depth[:, : W // 2] = 1.0  # a near object fills the left half
    mem = SpatialMemory(0.01)
    # a point on the near object's surface just past its silhouette edge, so it projects onto a
    # background pixel: the 3x3 neighbourhood minimum keeps it
    v, u = H // 2, W // 2 - 1
    ray = np.linalg.inv(cam.K) @ np.array([u + 0.55, v, 1.0])  # rounds onto the far pixel
    p_cam = ray / ray[2] * 1.0
    p_world = cam.T_world_cam[:3, :3] @ p_cam + cam.T_world_cam[:3, 3]
    mem.fuse(p_world[None], np.zeros((1, 3), np.uint8), round_index=0)
    assert mem.carve(depth, cam) == 0


# ---- files ---------------------------------------------------------------------------------------


def small_memory() -> SpatialMemory:
    xyz, rgb = random_points(2000, seed=5, lo=-3.0, hi=3.0)
    mem = SpatialMemory(0.05)
    mem.fuse(xyz, rgb, round_index=0)
    mem.fuse(xyz[:500] + 0.01, rgb[:500], np.full(500, 2.5), round_index=1)
    mem.fuse(xyz[500:600] + 7.0, rgb[500:600], round_index=2, origin=ORIGIN_INSERTED)
    mem.fuse(xyz[600:620] - 7.0, rgb[600:620], round_index=3, origin=ORIGIN_EDITED)
    return mem


def assert_same(a: SpatialMemory, b: SpatialMemory) -> None:
    assert a.voxel_size == b.voxel_size
    for name in ("keys", "xyz", "rgb", "confidence", "n_obs", "first_round", "last_round", "origin"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert getattr(a, name).dtype == getattr(b, name).dtype


def test_save_load_round_trip(tmp_path):
    mem = small_memory()
    path = tmp_path / "v000.npz"
    mem.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v000.npz"]  # no temporary left behind
    back = SpatialMemory.load(path)
    assert_same(mem, back)
    assert back.features is None
    check_invariants(back)
    # features survive too
    feat = SpatialMemory(0.1)
    feat.fuse(*random_points(50), round_index=0, features=np.ones((50, 3)))
    feat.save(tmp_path / "f.npz")
    np.testing.assert_array_equal(SpatialMemory.load(tmp_path / "f.npz").features, feat.features)
    empty = SpatialMemory(0.03)
    empty.save(tmp_path / "e.npz")
    assert len(SpatialMemory.load(tmp_path / "e.npz")) == 0


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        SpatialMemory.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(MemoryFormatError, match="not a readable"):
        SpatialMemory.load(bad)
    small_memory().save(bad)
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    with pytest.raises(MemoryFormatError):
        SpatialMemory.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(MemoryFormatError, match="not a spatia memory"):
        SpatialMemory.load(other)
    mem = small_memory()
    arrays = {k: getattr(mem, k) for k in ("keys", "xyz", "rgb", "confidence", "n_obs", "first_round", "last_round")}
    np.savez(other, **arrays, voxel_size=0.05, format="spatia.memory", format_version=1)
    with pytest.raises(MemoryFormatError, match="origin"):
        SpatialMemory.load(other)
    np.savez(other, **arrays, origin=mem.origin[:-1], voxel_size=0.05, format="spatia.memory", format_version=1)
    with pytest.raises(MemoryFormatError, match="origin"):
        SpatialMemory.load(other)


def test_ply_round_trip(tmp_path):
    mem = small_memory()
    for binary in (True, False):
        path = tmp_path / f"m_{binary}.ply"
        mem.export_ply(path, binary=binary)
        back = SpatialMemory.from_ply(path, voxel_size=mem.voxel_size)
        assert len(back) == len(mem)
        np.testing.assert_array_equal(back.keys, mem.keys)
        np.testing.assert_allclose(back.xyz, mem.xyz, atol=mem.voxel_size * 1e-5)
        np.testing.assert_array_equal(back.rgb, mem.rgb)
        np.testing.assert_array_equal(back.origin, mem.origin)
        np.testing.assert_array_equal(back.n_obs, mem.n_obs)
        np.testing.assert_array_equal(back.last_round, mem.last_round)
        np.testing.assert_allclose(back.confidence, mem.confidence)
    # the voxel size is recorded in our header
    assert SpatialMemory.from_ply(tmp_path / "m_True.ply").voxel_size == mem.voxel_size
    names = ORIGIN_NAMES.values()
    assert set(mem.stats()["by_origin"]) == set(names)


def test_plain_ply_via_trimesh(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    xyz, rgb = random_points(300, seed=6)
    colors = np.concatenate([rgb, np.full((300, 1), 255, np.uint8)], axis=1)
    path = tmp_path / "plain.ply"
    trimesh.PointCloud(xyz, colors=colors).export(path)
    mem = SpatialMemory.from_ply(path, voxel_size=0.5)
    assert np.all(mem.origin == ORIGIN_INSERTED) and mem.n_obs.sum() == len(mem)
    ref = SpatialMemory(0.5)
    ref.fuse(xyz, rgb, round_index=0)
    np.testing.assert_array_equal(mem.keys, ref.keys)
    np.testing.assert_array_equal(mem.rgb, ref.rgb)
    np.testing.assert_allclose(mem.xyz, ref.xyz, atol=1e-5)
    with pytest.raises(ValueError, match="voxel_size"):
        SpatialMemory.from_ply(path)


def test_ply_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        SpatialMemory.from_ply(tmp_path / "nope.ply", voxel_size=0.1)
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"not a ply at all")
    with pytest.raises(MemoryFormatError, match="not a PLY"):
        SpatialMemory.from_ply(bad, voxel_size=0.1)
    small_memory().export_ply(bad)
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(MemoryFormatError, match="truncated"):
        SpatialMemory.from_ply(bad, voxel_size=0.1)


def test_input_validation():
    mem = SpatialMemory(0.1)
    xyz, rgb = random_points(10)
    with pytest.raises(ValueError, match="voxel_size"):
        SpatialMemory(0.0)
    with pytest.raises(ValueError, match=r"\(M, 3\)"):
        mem.fuse(xyz[:, :2], rgb, round_index=0)
    with pytest.raises(ValueError, match="uint8"):
        mem.fuse(xyz, rgb.astype(np.float32) / 255, round_index=0)
    with pytest.raises(ValueError, match="weight"):
        mem.fuse(xyz, rgb, np.zeros(10), round_index=0)
    with pytest.raises(ValueError, match="NaN"):
        mem.fuse(np.full((10, 3), np.nan), rgb, round_index=0)
    with pytest.raises(ValueError, match="origin"):
        mem.fuse(xyz, rgb, round_index=0, origin=7)
    with pytest.raises(ValueError, match="out of range"):
        mem.fuse(xyz * 1e6, rgb, round_index=0)
    with pytest.raises(ValueError, match="mask"):
        mem.select(np.ones(3, bool))
    assert mem.fuse(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), round_index=0) == FuseStats(0, 0)
    assert len(mem) == 0
