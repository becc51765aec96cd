"""Fusion of a clip's static, consistent keyframe depth into the memory (with optional carving)."""

from __future__ import annotations

import numpy as np

from slam.config import SlamConfig
from spatia_py.geometry import Camera
from spatia_py.types import SlamResult

__all__ = ["fuse_clip"]


def _splat(memory, cam: Camera, radius_scale: float, max_radius_px: int):
    from render.splat import render_points

    return render_points(memory.xyz, memory.rgb, cam.K, cam.T_cam_world, cam.width, cam.height,
                         radius=radius_scale * memory.voxel_size, max_radius_px=max_radius_px)


def _far_from(mask: np.ndarray, margin_px: int) -> np.ndarray:
    """``bool (H, W)``: pixels more than ``margin_px`` (Chebyshev distance) from any ``mask`` pixel."""
    from scipy import ndimage

    if not mask.any():
        return np.ones_like(mask, dtype=bool)
    return ~ndimage.maximum_filter(mask.astype(np.uint8), size=2 * margin_px + 1).astype(bool)


def fuse_clip(
    memory, frames: np.ndarray, result: SlamResult, cameras: list[Camera], round_index: int, cfg: SlamConfig
) -> dict:
    """Fuse the static part of a clip into ``memory`` (in place).

    Only keyframes that were tracked contribute, and of those only pixels with depth, depth
    confidence of at least ``cfg.fuse_min_confidence`` and not dynamic; pixels more than
    ``cfg.fuse_dynamic_margin_px`` from anything dynamic in the keyframe or its
    ``cfg.fuse_dynamic_frames`` neighbours need only ``cfg.fuse_min_confidence_far``. With ``cfg.carve``, each
    such keyframe first removes memory points it sees through (only from pixels at least
    ``cfg.carve_min_confidence`` confident), so stale or wrong geometry is cleaned before new
    points arrive.

    A pixel whose depth matches the memory's own surface there (within ``cfg.memory_snap_rel``)
    is a re-observation: if the frame also shows the memory's colour there, it is fused at the
    position of the memory point that covers it, refining that voxel (colour, confidence) instead
    of adding a neighbour; if the generator re-sampled the appearance there, it is not fused at all
    (mixing two appearances would speckle the memory). Only genuinely new surface opens voxels,
    which keeps the memory's size following explored area, not frames; where the memory already
    holds a different surface, only pixels at least ``cfg.carve_min_confidence`` confident (those
    that may also carve) add points.

    Args:
        memory: the :class:`~spatia_py.memory.SpatialMemory` to update.
        frames: ``uint8 (N, H, W, 3)`` the clip.
        result: SLAM's estimate for the clip (poses, keyframe depth, masks).
        cameras: the ``N`` commanded cameras (their intrinsics are used with the estimated poses).
        round_index: the round being fused.
        cfg: the SLAM config.

    Returns:
        ``{"added", "updated", "removed", "keyframes_fused", "pixels_fused", "pixels_reobserved"}``.
    """
    from render.transfer import local_colour_difference

    frames = np.asarray(frames)
    N = len(frames)
    if len(cameras) != N or result.T_world_cam.shape[0] != N:
        raise ValueError(
            f"fuse_clip: {N} frames, {len(cameras)} cameras and {result.T_world_cam.shape[0]} "
            "estimated poses must agree"
        )
    added = updated = removed = pixels = reobserved = 0
    used = 0
    for k in result.keyframes:
        if not (0 <= k < N) or not result.tracked[k]:
            continue
        depth = result.depth[k]
        conf = result.depth_confidence[k]
        static = ~result.dynamic_masks[k]
        cam = cameras[k].with_pose(result.T_world_cam[k])
        if cfg.carve and len(memory):
            removed += memory.carve(depth, cam, mask=static, depth_conf=conf, min_depth_conf=cfg.carve_min_confidence)
        valid = static & (depth > 0)
        m = valid & (conf >= cfg.fuse_min_confidence)
        if cfg.fuse_min_confidence_far < cfg.fuse_min_confidence:
            # Weakly matched depth (smooth texture) is fused only far from anything found moving
            # in this frame or its neighbours: a moving actor matches weakly too, and a mask can
            # miss it in one frame.
            lo, hi = max(0, k - cfg.fuse_dynamic_frames), min(N, k + cfg.fuse_dynamic_frames + 1)
            near = result.dynamic_masks[lo:hi].any(0)
            far = _far_from(near, cfg.fuse_dynamic_margin_px)
            m |= far & valid & (conf >= cfg.fuse_min_confidence_far)
        if not m.any():
            continue
        again = np.zeros_like(m)
        known = np.zeros_like(m)
        conflict = np.zeros_like(m)
        if len(memory):
            # The conditioning's splat size: pixels it leaves empty are holes worth filling.
            out = _splat(memory, cam, cfg.render_radius_scale, cfg.render_max_radius_px)
            md = out.depth.numpy()
            ids = out.point_ids.numpy()
            again = m & (md > 0) & (np.abs(depth - md) <= cfg.memory_snap_rel * md)
            # The surface under the splats of fuse_known_radius_scale counts as seen again (with
            # wider splats than the conditioning's, gaps between them are not fused as new).
            wide = md
            if cfg.fuse_known_radius_scale != cfg.render_radius_scale:
                wide = _splat(memory, cam, cfg.fuse_known_radius_scale, cfg.render_max_radius_px).depth.numpy()
            known = m & (wide > 0) & (np.abs(depth - wide) <= cfg.memory_snap_rel * wide)
            # Where the memory holds a different surface (under the conditioning's splats: wider
            # ones would fatten silhouettes into the surface behind), only a depth confident enough
            # to carve may add one: a less certain depth there is more likely a stereo outlier than
            # a change, and fusing it would grow the memory on every pass.
            conflict = (md > 0) & (conf < cfg.carve_min_confidence)  # (not again, not known: see `new`)
            # Re-observed surface refines the memory only where the frame shows what the memory
            # holds (the generator followed it). Where it re-sampled the appearance instead,
            # averaging the new colour in would speckle the surface with a mix of two appearances
            # that the next conditioning then shows; the memory keeps its own colour there.
            same_look = local_colour_difference(frames[k], out.rgb.numpy(), cfg.dynamic_window) < (
                0.5 * cfg.dynamic_threshold
            )
            # A re-observed point covers a splat of pixels: every other row and column suffices.
            sub = again & same_look
            sub[1::2, :] = False
            sub[:, 1::2] = False
            if sub.any():
                st = memory.fuse(
                    memory.xyz[ids[sub]].astype(np.float64),
                    frames[k][sub],
                    np.maximum(conf[sub], 1e-3).astype(np.float64),
                    round_index=round_index,
                )
                added += st.added
                updated += st.updated
                reobserved += int(again.sum())
        new = m & ~again & ~known & ~conflict
        if new.any():
            st = memory.fuse_depth(
                depth,
                frames[k],
                cam,
                mask=new,
                weight=np.maximum(conf, 1e-3),
                round_index=round_index,
                stride=cfg.fuse_stride,
            )
            added += st.added
            updated += st.updated
        pixels += int(m.sum())
        used += 1
    return {
        "added": int(added),
        "updated": int(updated),
        "removed": int(removed),
        "keyframes_fused": used,
        "pixels_fused": pixels,
        "pixels_reobserved": reobserved,
    }
