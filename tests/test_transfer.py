"""Colour transfer from past frames (render/transfer.py) and its use in the conditioning."""

import numpy as np
import pytest

from render.transfer import ColourSource, transfer_colours
from spatia_py.conditioning import MemoryRenderer, ReferenceIndex, colour_from_frames, render_conditioning
from spatia_py.geometry import Camera, intrinsics_from_fov, look_at
from spatia_py.memory import ORIGIN_INSERTED, SpatialMemory
from spatia_py.parallel import Workers

W, H = 64, 48
K = intrinsics_from_fov(W, H, 60)


def wall_camera(x: float = 0.0) -> Camera:
    """Looking along +y at a wall y = 2 (depth 2 m everywhere), shifted by ``x`` metres."""
    return Camera(K, W, H, look_at([x, 0.0, 1.0], [x, 1.0, 1.0]))


def texture(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def wall_source(cam: Camera, image: np.ndarray, usable=None) -> ColourSource:
    return ColourSource(image, cam.K, cam.T_world_cam, np.full((H, W), 2.0, np.float32),
                        np.ones((H, W), bool) if usable is None else usable)


def test_same_camera_gives_the_source_back():
    cam, img = wall_camera(), texture()
    rgb, src = transfer_colours(np.full((H, W), 2.0, np.float32), cam.K, cam.T_world_cam, [wall_source(cam, img)])
    assert (src == 0).all()
    assert np.abs(rgb - img).max() < 1e-3


def test_shifted_camera_samples_the_projected_pixel():
    # A camera 0.1 m to the right sees the wall shifted by fx * 0.1 / 2 pixels to the left.
    src_cam, tgt_cam, img = wall_camera(0.0), wall_camera(0.1), texture()
    shift = K[0, 0] * 0.1 / 2.0
    rgb, src = transfer_colours(np.full((H, W), 2.0, np.float32), tgt_cam.K, tgt_cam.T_world_cam,
                                [wall_source(src_cam, img)])
    u = np.arange(W) + shift  # where each target column lands in the source
    inside = u <= W - 0.5
    assert (src[:, inside] == 0).all() and (src[:, ~inside] == -1).all()
    uc = np.minimum(u[inside], W - 1)
    u0 = np.minimum(np.floor(uc).astype(int), W - 2)
    f = (uc - u0)[None, :, None]
    u1 = np.minimum(u0 + 1, W - 1)
    expect = (1 - f) * img[:, u0] + f * img[:, u1]
    assert np.abs(rgb[:, inside] - expect).max() < 1e-2


def test_occluded_or_unusable_pixels_fall_to_the_next_source():
    cam = wall_camera()
    near = wall_source(cam, texture(1))
    near.depth = np.where(np.arange(W)[None, :] < W // 2, 1.0, 2.0).astype(np.float32) * np.ones((H, 1), np.float32)
    usable = np.ones((H, W), bool)
    usable[:10] = False  # e.g. an actor in the second source
    second = wall_source(cam, texture(2), usable)
    rgb, src = transfer_colours(np.full((H, W), 2.0, np.float32), cam.K, cam.T_world_cam, [near, second],
                                depth_tol_rel=0.03)
    left = np.arange(W) < W // 2
    # The first source saw a nearer surface on its left half: those pixels come from the second,
    # except where the second is not usable (its four bilinear taps must all be usable).
    assert (src[:, ~left][:, 1:] == 0).all()
    assert (src[11:, left][:, :-1] == 1).all()
    assert (src[:9, left] == -1).all()


def test_empty_target_pixels_are_never_coloured():
    cam = wall_camera()
    depth = np.zeros((H, W), np.float32)
    rgb, src = transfer_colours(depth, cam.K, cam.T_world_cam, [wall_source(cam, texture())])
    assert (src == -1).all() and (rgb == 0).all()
    with pytest.raises(ValueError, match="depth must be"):
        transfer_colours(np.zeros(5), cam.K, cam.T_world_cam, [])


def wall_memory(rgb=(120, 120, 120), origin=None) -> SpatialMemory:
    xs, zs = np.meshgrid(np.arange(-2, 2, 0.01), np.arange(-0.5, 2.5, 0.01))
    xyz = np.stack([xs.ravel(), np.full(xs.size, 2.0), zs.ravel()], 1)
    mem = SpatialMemory(0.01)
    kw = {} if origin is None else {"origin": origin}
    mem.fuse(xyz, np.tile(np.array(rgb, np.uint8), (len(xyz), 1)), round_index=0, **kw)
    return mem


def test_frames_sharpen_observed_points_only_where_they_agree():
    cam = wall_camera()
    mem = wall_memory()
    render = MemoryRenderer(mem, radius_scale=1.0).render(cam)
    assert (render["depth"] > 0).all()
    # A frame with fine texture around the memory's grey: taken everywhere.
    rng = np.random.default_rng(0)
    fine = np.clip(120 + rng.integers(-20, 21, (H, W, 3)), 0, 255).astype(np.uint8)
    out, took = colour_from_frames(render, cam, mem, [wall_source(cam, fine)], depth_tol_rel=0.03,
                                   max_colour_diff=0.06)
    assert took.all() and (out == fine).all()
    # A frame showing something else (a red patch the memory does not hold): not copied there.
    other = fine.copy()
    other[10:30, 10:30] = (230, 20, 20)
    out, took = colour_from_frames(render, cam, mem, [wall_source(cam, other)], depth_tol_rel=0.03,
                                   max_colour_diff=0.06)
    assert not took[14:26, 14:26].any() and (out[14:26, 14:26] == 120).all()
    assert took[40:, 40:].all()
    # Inserted content (an edit) keeps the memory's colours.
    mem_ins = wall_memory(origin=ORIGIN_INSERTED)
    r2 = MemoryRenderer(mem_ins, radius_scale=1.0).render(cam)
    out, took = colour_from_frames(r2, cam, mem_ins, [wall_source(cam, fine)], depth_tol_rel=0.03,
                                   max_colour_diff=0.06)
    assert not took.any() and (out == r2["rgb"]).all()


def test_conditioning_takes_colours_from_the_nearest_indexed_frame_and_index_round_trips():
    mem = wall_memory()
    renderer = MemoryRenderer(mem, radius_scale=1.0)
    index = ReferenceIndex()
    rng = np.random.default_rng(1)
    frames, cams = {}, {}
    for fi, x in ((3, 0.0), (4, 0.6)):
        cams[fi] = wall_camera(x)
        frames[fi] = np.clip(120 + rng.integers(-20, 21, (H, W, 3)), 0, 255).astype(np.uint8)
        seen = renderer.render(cams[fi], colours=False)
        index.add(fi, cams[fi], np.zeros(0, np.int64), depth=seen["depth"], usable=np.ones((H, W), bool))
    cond = render_conditioning(renderer, [wall_camera(0.0)], reference_index=index, frames_by_index=frames.__getitem__,
                               colour_frames=1)
    assert (cond.rgb[0] == frames[3]).all()
    # Views rendered on worker threads: the same maps, in camera order.
    views = [wall_camera(x) for x in (0.0, 0.6, 0.3, 0.1)]
    serial = render_conditioning(renderer, views, reference_index=index, frames_by_index=frames.__getitem__,
                                 colour_frames=1)
    workers = Workers(2, "test")
    try:
        threaded = render_conditioning(renderer, views, reference_index=index, frames_by_index=frames.__getitem__,
                                       colour_frames=1, map_fn=workers.map)
    finally:
        workers.close()
    assert (serial.rgb[1] == frames[4]).all() and not (serial.rgb[1] == serial.rgb[0]).all()
    for name in ("rgb", "depth", "validity"):
        assert np.array_equal(getattr(serial, name), getattr(threaded, name)), name
    plain = render_conditioning(renderer, [wall_camera(0.0)], colour_frames=0)
    assert (plain.rgb[0] == 120).all()
    restored = ReferenceIndex()
    restored.add_arrays(index.to_arrays(), cams)
    for a, b in zip(index.entries, restored.entries, strict=True):
        assert a.frame_index == b.frame_index
        assert (a.depth == b.depth).all() and (a.usable == b.usable).all()
    with pytest.raises(ValueError, match="together"):
        index.add(5, cams[3], np.zeros(0, np.int64), depth=np.zeros((H, W)))
    with pytest.raises(ValueError, match="image size"):
        index.add(5, cams[3], np.zeros(0, np.int64), depth=np.zeros((3, 3)), usable=np.ones((3, 3), bool))
