"""Benchmark the point splatter against Open3D's ``project_to_rgbd_image`` on a realistic memory.

Scene: the surfaces of a 6 x 5 x 3 m box room sampled at ~1 cm (1M points by default), seen from
inside; splat radius 0.75 cm (``0.75 * voxel_size``), ``max_radius_px=3`` — what the round loop
renders. Both renderers get the same points, intrinsics and world-to-camera transform in one run;
times are medians after warm-up. The scene's points are stored face by face, like a fused memory
(spatially coherent), which lets whole blocks of points be culled; ``ms_median_shuffled`` times the
same points in random order, where none can. ``two_thread_renders`` is the fraction of our renders
in which a second thread took part (only while a second core is free, see ``render/splat.py``).
The fast path is also checked to be identical to ``render.reference`` on a subset of the visible
points (the reference is a Python loop).

    python -m render.benchmark [--points 1000000] [--repeats 20] [--width 512 --height 320]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from render import splat
from render.reference import render_points_reference
from render.splat import render_points

ROOM_SIZE_M = (6.0, 5.0, 3.0)
VOXEL_SIZE_M = 0.01


def box_room_points(
    n_points: int, size: tuple[float, float, float] = ROOM_SIZE_M, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n_points`` on the six inner faces of an axis-aligned box ``[0, size]``, on a grid.

    The grid spacing is chosen so the faces hold at least ``n_points``; a seeded random subset of
    exactly ``n_points`` is kept (about 1.1 cm spacing for 1M points in a 6 x 5 x 3 m room).
    Colours: a per-face base colour, a 25 cm checkerboard and per-point noise.

    Returns:
        ``xyz float32 (n_points, 3)`` and ``rgb uint8 (n_points, 3)``.
    """
    sx, sy, sz = size
    # (axis held fixed, its value, the two free axes) for floor, ceiling and four walls.
    faces = [(2, 0.0, 0, 1), (2, sz, 0, 1), (1, 0.0, 0, 2), (1, sy, 0, 2), (0, 0.0, 1, 2), (0, sx, 1, 2)]
    base = np.array(
        [[150, 120, 90], [235, 235, 225], [200, 90, 80], [80, 150, 200], [120, 190, 110], [220, 200, 120]],
        dtype=np.float32,
    )
    area = 2 * (sx * sy + sx * sz + sy * sz)
    spacing = math.sqrt(area / n_points)
    while True:
        counts = [math.floor(size[a] / spacing) * math.floor(size[b] / spacing) for _, _, a, b in faces]
        if sum(counts) >= n_points:
            break
        spacing *= 0.99
    xyz_parts, rgb_parts = [], []
    for face_index, (fixed, value, a, b) in enumerate(faces):
        na, nb = math.floor(size[a] / spacing), math.floor(size[b] / spacing)
        ga, gb = np.meshgrid((np.arange(na) + 0.5) * size[a] / na, (np.arange(nb) + 0.5) * size[b] / nb, indexing="ij")
        p = np.empty((na * nb, 3), dtype=np.float32)
        p[:, fixed], p[:, a], p[:, b] = value, ga.ravel(), gb.ravel()
        xyz_parts.append(p)
        checker = ((np.floor(ga.ravel() / 0.25) + np.floor(gb.ravel() / 0.25)) % 2) * 0.35 + 0.65
        rgb_parts.append(base[face_index] * checker[:, None].astype(np.float32))
    xyz = np.concatenate(xyz_parts)
    rgb_f = np.concatenate(rgb_parts)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(xyz), size=n_points, replace=False))
    noise = rng.normal(0.0, 12.0, size=(n_points, 3)).astype(np.float32)
    rgb = np.clip(rgb_f[keep] + noise, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(xyz[keep]), rgb


def room_camera(width: int, height: int, fov_x_deg: float = 70.0) -> tuple[np.ndarray, np.ndarray]:
    """``K (3, 3)`` and ``T_cam_world (4, 4)`` of a camera in the room centre looking into a corner."""
    f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
    K = np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
    eye = np.array([3.0, 2.5, 1.5])
    forward = np.array([6.0, 5.0, 1.2]) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])  # OpenCV: x right, y down (world z is up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    T_world_cam = np.eye(4)
    T_world_cam[:3, 0], T_world_cam[:3, 1], T_world_cam[:3, 2], T_world_cam[:3, 3] = right, down, forward, eye
    R = T_world_cam[:3, :3]
    T_cam_world = np.eye(4)
    T_cam_world[:3, :3], T_cam_world[:3, 3] = R.T, -R.T @ eye
    return K, T_cam_world


_WARMUP = 3


def _median_ms(fn: Callable[[], object], repeats: int, warmup: int = _WARMUP) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def run(
    points: int = 1_000_000,
    repeats: int = 20,
    width: int = 512,
    height: int = 320,
    reference_points: int = 20_000,
    seed: int = 0,
) -> dict:
    """Run the benchmark and return the result dict (the JSON line)."""
    import open3d as o3d

    xyz, rgb = box_room_points(points, seed=seed)
    K, T_cam_world = room_camera(width, height)
    radius = 0.75 * VOXEL_SIZE_M
    max_radius_px = 3
    far = 100.0
    xyz_t, rgb_t = torch.from_numpy(xyz), torch.from_numpy(rgb)

    def ours():
        return render_points(
            xyz_t, rgb_t, K, T_cam_world, width, height, radius=radius, max_radius_px=max_radius_px, far=far
        )

    helped_before = splat._HELPER.renders_helped
    ms = _median_ms(ours, repeats)
    helped = splat._HELPER.renders_helped - helped_before
    out = ours()
    # The same points in random order: no block of points can be culled as a whole.
    order = np.random.default_rng(seed + 2).permutation(points)
    xyz_shuffled, rgb_shuffled = torch.from_numpy(xyz[order]), torch.from_numpy(rgb[order])
    helped_before = splat._HELPER.renders_helped
    ms_shuffled = _median_ms(
        lambda: render_points(
            xyz_shuffled,
            rgb_shuffled,
            K,
            T_cam_world,
            width,
            height,
            radius=radius,
            max_radius_px=max_radius_px,
            far=far,
        ),
        repeats,
    )
    helped_shuffled = splat._HELPER.renders_helped - helped_before

    pcd = o3d.t.geometry.PointCloud(o3d.core.Tensor(xyz))
    pcd.point.colors = o3d.core.Tensor(rgb.astype(np.float32) / 255.0)
    intrinsics = o3d.core.Tensor(K)
    extrinsics = o3d.core.Tensor(T_cam_world)

    def open3d_project():
        return pcd.project_to_rgbd_image(width, height, intrinsics, extrinsics, depth_scale=1.0, depth_max=far)

    open3d_ms = _median_ms(open3d_project, repeats)
    open3d_depth = np.asarray(open3d_project().depth.as_tensor().numpy()).squeeze()

    # Identity check on a random subset of the points whose pixel is in view (dense enough to occlude).
    visible = np.unique(out.point_ids.numpy())
    visible = visible[visible >= 0]
    rng = np.random.default_rng(seed + 1)
    subset = np.sort(rng.choice(visible, size=min(reference_points, len(visible)), replace=False))
    weights = rng.uniform(0.0, 1.0, size=len(subset)).astype(np.float32)
    kwargs = dict(radius=radius, weights=weights, max_radius_px=max_radius_px, far=far)
    fast = render_points(xyz[subset], rgb[subset], K, T_cam_world, width, height, **kwargs).numpy()
    start = time.perf_counter()
    ref = render_points_reference(xyz[subset], rgb[subset], K, T_cam_world, width, height, **kwargs).numpy()
    reference_s = time.perf_counter() - start
    identical = all(np.array_equal(fast[k], ref[k]) for k in fast)

    return {
        "benchmark": "render_points",
        "points": points,
        "width": width,
        "height": height,
        "radius_m": radius,
        "max_radius_px": max_radius_px,
        "ms_median": round(ms, 3),
        "open3d_ms_median": round(open3d_ms, 3),
        "speedup": round(open3d_ms / ms, 3),
        "ms_median_shuffled": round(ms_shuffled, 3),
        "speedup_shuffled": round(open3d_ms / ms_shuffled, 3),
        "covered_fraction": round(float((out.point_ids >= 0).float().mean()), 4),
        "open3d_covered_fraction": round(float((open3d_depth > 0).mean()), 4),
        "identical_to_reference": bool(identical),
        "reference_points": int(len(subset)),
        "reference_s": round(reference_s, 3),
        "repeats": repeats,
        "two_thread_renders": round(helped / (repeats + _WARMUP), 2),
        "two_thread_renders_shuffled": round(helped_shuffled / (repeats + _WARMUP), 2),
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m render.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument(
        "--reference-points",
        type=int,
        default=20_000,
        help="visible points rendered by both paths for the identity check",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.points <= 0 or args.repeats <= 0:
        parser.error("--points and --repeats must be positive")
    print(json.dumps(run(args.points, args.repeats, args.width, args.height, args.reference_points, args.seed)))


if __name__ == "__main__":
    main()
