"""Conditioning maps and reference-frame retrieval by visibility overlap."""

import numpy as np

from spatia_py.conditioning import MemoryRenderer, ReferenceIndex, _count_common, render_conditioning
from spatia_py.geometry import Camera, intrinsics_from_fov, look_at
from spatia_py.memory import SpatialMemory


def two_walls_memory() -> SpatialMemory:
    """A wall at x=+2 (red) and a wall at x=-2 (blue), 4 x 2 m, 2 cm voxels."""
    s = np.arange(-2, 2, 0.02)
    h = np.arange(0, 2, 0.02)
    S, Hh = np.meshgrid(s, h)
    east = np.stack([np.full(S.size, 2.0), S.ravel(), Hh.ravel()], 1)
    west = np.stack([np.full(S.size, -2.0), S.ravel(), Hh.ravel()], 1)
    mem = SpatialMemory(0.02)
    rgb = np.concatenate([np.tile([200, 30, 30], (len(east), 1)), np.tile([30, 30, 200], (len(west), 1))])
    mem.fuse(np.concatenate([east, west]), rgb.astype(np.uint8), round_index=0)
    return mem


def cam_looking(direction) -> Camera:
    return Camera(intrinsics_from_fov(64, 48, 60), 64, 48, look_at([0, 0, 1], np.add([0, 0, 1], direction)))


def test_count_common_matches_intersect1d():
    rng = np.random.default_rng(0)
    a = np.unique(rng.integers(0, 1000, 300))
    b = np.unique(rng.integers(0, 1000, 500))
    assert _count_common(a, b) == np.intersect1d(a, b).size
    assert _count_common(a, np.zeros(0, np.int64)) == 0


def test_conditioning_renders_the_visible_wall():
    mem = two_walls_memory()
    cond = render_conditioning(MemoryRenderer(mem), [cam_looking([1, 0, 0]), cam_looking([-1, 0, 0])])
    assert cond.rgb.shape == (2, 48, 64, 3) and cond.validity.shape == (2, 48, 64)
    east, west = cond.rgb[0][cond.validity[0] > 0], cond.rgb[1][cond.validity[1] > 0]
    assert east[:, 0].mean() > 150 and west[:, 2].mean() > 150
    assert np.allclose(cond.depth[0][cond.validity[0] > 0], 2.0, atol=0.05)


def test_retrieval_picks_the_frame_that_saw_the_segment():
    mem = two_walls_memory()
    renderer = MemoryRenderer(mem)
    index = ReferenceIndex()
    past = {10: cam_looking([1, 0, 0]), 11: cam_looking([-1, 0, 0]), 12: cam_looking([1, 0.3, 0])}
    for fi, cam in past.items():
        index.add(fi, cam, renderer.visible_keys(cam))
    frames = {fi: np.full((48, 64, 3), fi, np.uint8) for fi in past}
    cond = render_conditioning(renderer, [cam_looking([1, 0.05, 0])], reference_index=index, n_reference_frames=2,
                               frames_by_index=frames.__getitem__, estimated_cameras=past)
    got = [r.frame_index for r in cond.reference_frames]
    assert got[0] == 10 and 11 not in got
    assert cond.reference_frames[0].overlap > 0.5
    assert (cond.reference_frames[0].image == 10).all()
    # Saved and restored index retrieves the same.
    restored = ReferenceIndex()
    restored.add_arrays(index.to_arrays(), past)
    seg = renderer.visible_keys(cam_looking([1, 0.05, 0]))
    assert restored.retrieve(seg, [cam_looking([1, 0, 0])], 2) == index.retrieve(seg, [cam_looking([1, 0, 0])], 2)


def test_fill_enclosed_holes_fills_a_plane_but_not_across_a_depth_edge():
    from spatia_py.conditioning import FILL_VALIDITY, fill_enclosed_holes

    # A slanted plane: inverse depth affine in the pixel coordinates; a hole inside it is filled.
    v, u = np.mgrid[0:40, 0:60].astype(np.float32)
    depth = (1.0 / (0.4 + 0.002 * u + 0.001 * v)).astype(np.float32)
    depth[10:20, 20:35] = 0
    depth[:, 55:] = 0  # open to the border: stays empty
    rgb = np.full((40, 60, 3), 120, np.uint8)
    val = (depth > 0).astype(np.float32)
    r2, d2, v2 = fill_enclosed_holes(rgb, depth, val)
    truth = 1.0 / (0.4 + 0.002 * u + 0.001 * v)
    assert np.allclose(d2[10:20, 20:35], truth[10:20, 20:35], rtol=1e-3)
    assert (v2[10:20, 20:35] == FILL_VALIDITY).all() and (r2[10:20, 20:35] == 120).all()
    assert (d2[:, 55:] == 0).all() and (v2[:, 55:] == 0).all()
    # A hole straddling a pillar's edge (2 m pillar in front of a 4 m wall) is left empty.
    depth = np.full((20, 30), 4.0, np.float32)
    depth[:, 10:15] = 2.0
    depth[5:10, 12:18] = 0
    _, d3, v3 = fill_enclosed_holes(rgb[:20, :30], depth, (depth > 0).astype(np.float32))
    assert (d3[5:10, 12:18] == 0).all() and (v3[5:10, 12:18] == 0).all()
