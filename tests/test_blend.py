"""The soft colour resolve (render/blend.py) against hand-computed cases."""

import numpy as np

from render.blend import blend_front_colours
from render.splat import render_points
from spatia_py.geometry import Camera


def _cam(W=32, H=24, f=20.0):
    K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]])
    return Camera(K=K, T_world_cam=np.eye(4), width=W, height=H)


def _render(xyz, rgb, cam, radius):
    out = render_points(xyz, rgb, cam.K, cam.T_cam_world, cam.width, cam.height, radius=radius, max_radius_px=3)
    return out, blend_front_colours(xyz, rgb, cam.K, cam.T_cam_world, out.depth.numpy(), radius=radius,
                                    max_radius_px=3)


def test_single_point_keeps_its_colour_over_its_footprint():
    cam = _cam()
    xyz = np.array([[0.0, 0.0, 2.0]], np.float32)
    rgb = np.array([[200, 100, 50]], np.uint8)
    out, blended = _render(xyz, rgb, cam, radius=0.1)  # footprint half-size round(20 * 0.1 / 2) = 1
    covered = out.mask.numpy()
    assert covered.sum() == 9
    assert (blended[covered] == rgb[0]).all()
    assert (blended[~covered] == 0).all()


def test_two_points_on_one_surface_mix_by_distance_and_occluded_points_do_not():
    cam = _cam()
    # Two points on the same plane one pixel apart, a third far behind (hidden by them).
    u0 = 15.5 - 0.5
    x0 = (u0 - cam.K[0, 2]) / 20.0 * 2.0
    xyz = np.array([[x0, 0.0, 2.0], [x0 + 0.1, 0.0, 2.0], [x0 + 0.05, 0.0, 6.0]], np.float32)
    rgb = np.array([[255, 0, 0], [0, 0, 255], [0, 255, 0]], np.uint8)
    out, blended = _render(xyz, rgb, cam, radius=0.1)
    row = int(round(cam.K[1, 2]))
    a, b = blended[row, 15].astype(int), blended[row, 16].astype(int)
    # Each of the two pixels leans towards the point centred on it, and both see a mix of the two.
    assert a[0] > a[2] > 0 and b[2] > b[0] > 0
    # The far point never contributes green where the near surface covers the pixel.
    near = out.depth.numpy() < 3.0
    assert (blended[near][:, 1] == 0).all()


def test_empty_inputs():
    cam = _cam()
    depth = np.zeros((cam.height, cam.width), np.float32)
    out = blend_front_colours(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), cam.K, cam.T_cam_world, depth,
                              radius=0.01, max_radius_px=3)
    assert out.shape == (cam.height, cam.width, 3) and not out.any()
