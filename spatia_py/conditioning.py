"""Conditioning maps for the next segment and reference-frame retrieval by visibility overlap.

The memory is rendered along the segment's commanded cameras (rgb, depth, validity and the
point-id buffer). Past frames are retrieved like Context-as-Memory retrieves them by field-of-view
overlap, but on the memory itself: every indexed past frame stores the cells it saw (memory voxel
keys from the same point-id buffers, coarsened to cells of ``CELL_VOXELS``^3 voxels so that two
views of one surface agree even where different points of it win the z-test), and a candidate's
overlap is the fraction of the segment's visible cells it also saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from spatia_py.geometry import Camera
from spatia_py.memory import ORIGIN_OBSERVED, SpatialMemory, pack_voxel_coords, unpack_voxel_keys
from spatia_py.parallel import serial_map
from spatia_py.types import ConditioningMaps, ReferenceFrame

if TYPE_CHECKING:
    from render.transfer import ColourSource

__all__ = ["MemoryRenderer", "ReferenceIndex", "render_conditioning", "fill_enclosed_holes", "visibility_cells",
           "frame_colour_sources", "colour_from_frames", "CELL_VOXELS", "FILL_VALIDITY"]

CELL_VOXELS = 4
"""Edge of a visibility cell in voxels."""

FILL_VALIDITY = 0.75
"""Validity of conditioning pixels filled by :func:`fill_enclosed_holes` (rendered memory is 1)."""


def _nearest_valid_along(valid: np.ndarray, axis: int, reverse: bool) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel, the index along ``axis`` of the nearest valid pixel strictly before it
    (after it with ``reverse``), and whether there is one. ``valid (H, W)`` bool."""
    n = valid.shape[axis]
    pos = np.arange(n).reshape((-1, 1) if axis == 0 else (1, -1))
    if not reverse:
        idx = np.where(valid, pos, -1)
        idx = np.maximum.accumulate(idx, axis=axis)
        # strictly before: shift by one
        idx = np.concatenate([np.full_like(idx.take([0], axis), -1), idx.take(range(n - 1), axis)], axis)
        return idx, idx >= 0
    idx = np.where(valid, pos, n)
    idx = np.flip(np.minimum.accumulate(np.flip(idx, axis), axis=axis), axis)
    idx = np.concatenate([idx.take(range(1, n), axis), np.full_like(idx.take([0], axis), n)], axis)
    return idx, idx < n


def fill_enclosed_holes(rgb: np.ndarray, depth: np.ndarray, validity: np.ndarray, *, max_gap_px: int = 64,
                        plane_rel_tol: float = 0.03, fill_validity: float = FILL_VALIDITY):
    """Conservative screen-space fill of holes the memory leaves inside a continuous surface.

    A splatted point cloud has holes: 1-voxel gaps between splats, and larger ones where stereo
    found no depth (low-texture patches of an otherwise mapped surface). An empty pixel is filled
    only when it is enclosed by rendered memory on both sides along the row and along the column
    (each within ``max_gap_px``) and both line interpolations of inverse depth — exact for a plane,
    inverse depth being affine in the pixel coordinates of a plane — agree within
    ``plane_rel_tol``: a hole across a depth edge (a pillar in front of a wall, a silhouette) gives
    two different surfaces and is left empty, as are holes open to the image border or to unmapped
    space. The filled colour is the distance-weighted mean of the four enclosing pixels' colours,
    and the fill is marked with the lower ``fill_validity``.

    Args:
        rgb: ``uint8 (H, W, 3)``; depth: ``float32 (H, W)`` (0 = empty); validity: ``float32 (H, W)``.

    Returns:
        ``(rgb, depth, validity)`` with the filled pixels set (new arrays).
    """
    valid = depth > 0
    if valid.all() or not valid.any():
        return rgb, depth, validity
    H, W = depth.shape
    # Enclosure along rows and columns first; the interpolations then only at the enclosed pixels.
    ends, ok = [], ~valid
    for axis in (1, 0):
        a, ha = _nearest_valid_along(valid, axis, False)
        b, hb = _nearest_valid_along(valid, axis, True)
        pos = np.arange(W)[None, :] if axis == 1 else np.arange(H)[:, None]
        da, db = pos - a, b - pos
        ok &= ha & hb & (da + db <= max_gap_px)
        ends.append((a, b, da, db))
    vs, us = np.nonzero(ok)
    if len(vs) == 0:
        return rgb, depth, validity
    ests, cs = [], []
    for axis, (a, b, da, db) in zip((1, 0), ends, strict=True):
        a, b, da, db = a[vs, us], b[vs, us], da[vs, us], db[vs, us]
        ends_a, ends_b = ((vs, a), (vs, b)) if axis == 1 else ((a, us), (b, us))
        # Inverse depth and colour of the two enclosing pixels (valid ones: depth > 0).
        ia, ib = ((1.0 / np.maximum(depth[e], 1e-6)).astype(np.float32) for e in (ends_a, ends_b))
        ca, cb = (rgb[e].astype(np.float32) for e in (ends_a, ends_b))
        wa = db / np.maximum(da + db, 1)  # linear interpolation weights
        ests.append(wa * ia + (1 - wa) * ib)
        # colour: nearer endpoints weigh more (inverse distance)
        ua, ub = 1.0 / np.maximum(da, 1), 1.0 / np.maximum(db, 1)
        cs.append((ua[..., None] * ca + ub[..., None] * cb, ua + ub))
    e0, e1 = ests
    keep = (e0 > 0) & (e1 > 0) & (np.abs(e0 - e1) <= plane_rel_tol * np.maximum(e0, e1))
    if not keep.any():
        return rgb, depth, validity
    vs, us = vs[keep], us[keep]
    est = 0.5 * (e0[keep] + e1[keep])
    c = (cs[0][0][keep] + cs[1][0][keep]) / (cs[0][1][keep] + cs[1][1][keep])[..., None]
    rgb, depth, validity = rgb.copy(), depth.copy(), validity.copy()
    rgb[vs, us] = np.clip(np.rint(c), 0, 255).astype(np.uint8)
    depth[vs, us] = (1.0 / est).astype(depth.dtype)
    validity[vs, us] = fill_validity
    return rgb, depth, validity


def visibility_cells(memory: SpatialMemory, point_ids: np.ndarray) -> np.ndarray:
    """Sorted unique visibility-cell keys of the memory points ``point_ids`` (any shape, -1 = none)."""
    ids = np.asarray(point_ids).ravel()
    ids = ids[ids >= 0]
    if ids.size == 0:
        return np.zeros(0, np.int64)
    ijk = unpack_voxel_keys(memory.keys[ids]) // CELL_VOXELS
    return np.unique(pack_voxel_coords(ijk))


class MemoryRenderer:
    """Renders one memory state from many cameras, converting its arrays to torch once."""

    def __init__(self, memory: SpatialMemory, *, radius_scale: float = 0.5, max_radius_px: int = 3,
                 min_confidence: float = 0.0, blend_colours: bool = False, blend_depth_tol_rel: float = 0.03):
        """``blend_colours``: colour pixels by :func:`render.blend.blend_front_colours` (occlusion,
        depth, validity and ids stay those of the hard z-buffer render)."""
        import torch

        keep = None
        if min_confidence > 0 and len(memory):
            keep = np.nonzero(memory.confidence >= min_confidence)[0]
        self.memory = memory
        self.index = keep  # maps rendered ids back to memory rows when filtered
        xyz = memory.xyz if keep is None else memory.xyz[keep]
        rgb = memory.rgb if keep is None else memory.rgb[keep]
        self.xyz = torch.from_numpy(np.ascontiguousarray(xyz, dtype=np.float32))
        self.rgb = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.uint8))
        self.radius = float(radius_scale * memory.voxel_size)
        self.max_radius_px = int(max_radius_px)
        self.blend_colours = bool(blend_colours)
        self.blend_depth_tol_rel = float(blend_depth_tol_rel)

    @classmethod
    def from_config(cls, memory: SpatialMemory, cfg, *, blend_colours: bool | None = None) -> MemoryRenderer:
        """The renderer a run's config asks for (``cfg``: a :class:`~spatia_py.config.RunConfig`;
        its ``render`` section and ``memory.min_confidence``); ``blend_colours`` overrides
        ``cfg.render.blend_colours``."""
        r = cfg.render
        return cls(memory, radius_scale=r.radius_scale, max_radius_px=r.max_radius_px,
                   min_confidence=cfg.memory.min_confidence,
                   blend_colours=r.blend_colours if blend_colours is None else blend_colours,
                   blend_depth_tol_rel=r.blend_depth_tol_rel)

    def render(self, camera: Camera, *, colours: bool = True) -> dict:
        """``{"rgb" uint8 (H,W,3), "depth" float32 (H,W), "validity" float32 (H,W), "point_ids" int64 (H,W)}``;
        ``point_ids`` index rows of the memory (-1 = empty). ``colours=False`` skips the colour
        blend (for callers that only need geometry or ids)."""
        from render.splat import render_points

        H, W = camera.height, camera.width
        if len(self.xyz) == 0:
            return {"rgb": np.zeros((H, W, 3), np.uint8), "depth": np.zeros((H, W), np.float32),
                    "validity": np.zeros((H, W), np.float32), "point_ids": np.full((H, W), -1, np.int64)}
        out = render_points(self.xyz, self.rgb, camera.K, camera.T_cam_world, W, H, radius=self.radius,
                            max_radius_px=self.max_radius_px)
        ids = out.point_ids.numpy()
        if self.index is not None:
            ids = np.where(ids >= 0, self.index[np.clip(ids, 0, None)], -1)
        rgb = out.rgb.numpy()
        if colours and self.blend_colours:
            from render.blend import blend_front_colours

            rgb = blend_front_colours(self.xyz.numpy(), self.rgb.numpy(), camera.K, camera.T_cam_world,
                                      out.depth.numpy(), radius=self.radius, max_radius_px=self.max_radius_px,
                                      depth_tol_rel=self.blend_depth_tol_rel)
        return {"rgb": rgb, "depth": out.depth.numpy(), "validity": out.validity.numpy(), "point_ids": ids}

    def visible_keys(self, camera: Camera) -> np.ndarray:
        """Sorted unique visibility cells (:func:`visibility_cells`) of the memory seen in ``camera``."""
        return visibility_cells(self.memory, self.render(camera, colours=False)["point_ids"])


@dataclass
class _Entry:
    frame_index: int
    camera: Camera
    keys: np.ndarray
    depth: np.ndarray | None = None
    """``float16 (H, W)`` the memory's depth as this frame saw it when indexed (colour transfer)."""
    usable: np.ndarray | None = None
    """``bool (H, W)`` its pixels that may lend colour (static ones)."""


@dataclass
class ReferenceIndex:
    """Past frames indexed by the memory cells they saw, for retrieval by overlap.

    Only a bounded number of candidates nearest the segment are scored, so retrieval cost does
    not grow with the length of the history.
    """

    max_candidates: int = 64
    entries: list[_Entry] = field(default_factory=list)

    def add(self, frame_index: int, camera: Camera, keys: np.ndarray, *, depth: np.ndarray | None = None,
            usable: np.ndarray | None = None) -> None:
        """Index a frame by its visibility cells; with ``depth`` (what it saw) and ``usable`` (its
        static pixels) it can also lend colour (:func:`frame_colour_sources`)."""
        if (depth is None) != (usable is None):
            raise ValueError("ReferenceIndex.add: give depth and usable together (or neither)")
        if depth is not None and (np.shape(depth) != (camera.height, camera.width) or np.shape(usable) != np.shape(depth)):
            raise ValueError(f"ReferenceIndex.add: depth {np.shape(depth)} and usable {np.shape(usable)} must be "
                             f"({camera.height}, {camera.width}), the camera's image size")
        self.entries.append(_Entry(int(frame_index), camera, np.asarray(keys, dtype=np.int64),
                                   None if depth is None else np.asarray(depth, np.float16),
                                   None if usable is None else np.asarray(usable, bool)))

    def to_arrays(self) -> dict:
        """Flat arrays for saving (``np.savez_compressed``) — frame indices, offsets into one key
        array, and for colour sources ``depth float16 (E, H, W)`` with ``usable`` as packed bits."""
        if not self.entries:
            return {"frame_index": np.zeros(0, np.int64), "offsets": np.zeros(1, np.int64),
                    "keys": np.zeros(0, np.int64)}
        lens = [len(e.keys) for e in self.entries]
        out = {"frame_index": np.array([e.frame_index for e in self.entries], np.int64),
               "offsets": np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
               "keys": np.concatenate([e.keys for e in self.entries])}
        if all(e.depth is not None for e in self.entries) and len({e.depth.shape for e in self.entries}) == 1:
            out["depth"] = np.stack([e.depth for e in self.entries])
            out["usable_bits"] = np.packbits(np.stack([e.usable for e in self.entries]), axis=-1)
        return out

    def add_arrays(self, arrays: dict, cameras: dict[int, Camera]) -> None:
        """Re-add entries saved with :meth:`to_arrays` (``cameras`` maps frame index → camera)."""
        off = arrays["offsets"]
        depth = arrays.get("depth")
        for k, fi in enumerate(arrays["frame_index"]):
            cam = cameras[int(fi)]
            extra = {}
            if depth is not None:
                extra = {"depth": depth[k],
                         "usable": np.unpackbits(arrays["usable_bits"][k], axis=-1, count=cam.width).astype(bool)}
            self.add(int(fi), cam, arrays["keys"][off[k]:off[k + 1]], **extra)

    def retrieve(self, segment_keys: np.ndarray, segment_cameras: list[Camera], k: int,
                 exclude: set[int] | None = None) -> list[tuple[int, float]]:
        """Top-``k`` ``(frame_index, overlap)`` by the fraction of ``segment_keys`` each frame saw."""
        if k <= 0 or len(segment_keys) == 0 or not self.entries:
            return []
        exclude = exclude or set()
        cands = [e for e in self.entries if e.frame_index not in exclude]
        if len(cands) > self.max_candidates:
            centre = np.mean([c.center for c in segment_cameras], axis=0)
            d = np.array([np.linalg.norm(e.camera.center - centre) for e in cands])
            cands = [cands[i] for i in np.argsort(d)[: self.max_candidates]]
        scored = []
        for e in cands:
            scored.append((_count_common(segment_keys, e.keys) / len(segment_keys), e.frame_index))
        scored.sort(key=lambda t: (-t[0], t[1]))
        return [(fi, float(ov)) for ov, fi in scored[:k] if ov > 0]


def frame_colour_sources(index: ReferenceIndex, camera: Camera, frames_by_index, n: int,
                         scene_depth_m: float) -> list[ColourSource]:
    """The ``n`` indexed frames that view ``camera``'s scene most alike, as colour sources.

    Frames are ranked by how far their viewpoint is from the camera's: the distance between the
    camera centres plus the angle between the optical axes times ``scene_depth_m`` (both about how
    far a surface point at that depth appears to move). Only entries indexed with depth count.
    """
    from render.transfer import ColourSource

    cands = [e for e in index.entries if e.depth is not None]
    if n <= 0 or not cands:
        return []
    centres = np.stack([e.camera.center for e in cands])
    axes = np.stack([e.camera.T_world_cam[:3, 2] for e in cands])
    cos = np.clip(axes @ camera.T_world_cam[:3, 2], -1.0, 1.0)
    score = np.linalg.norm(centres - camera.center, axis=1) + scene_depth_m * np.arccos(cos)
    out = []
    for i in np.argsort(score, kind="stable")[:n]:
        e = cands[i]
        out.append(ColourSource(frames_by_index(e.frame_index), e.camera.K, e.camera.T_world_cam,
                                e.depth, e.usable))
    return out


def colour_from_frames(render: dict, camera: Camera, memory: SpatialMemory, sources: list[ColourSource], *,
                       depth_tol_rel: float, max_colour_diff: float, window: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Replace the colours of a memory render by past frames' where they saw the same surface.

    :func:`render.transfer.transfer_colours` lifts each rendered pixel with its depth and takes the
    colour of the first source that saw that surface. Two rules keep the memory in charge of *what*
    is shown (the frames only sharpen *how*): only points the memory observed (not inserted or
    edited ones) take frame colours, and only where the frame's local mean colour (``window``
    box, values in [0, 1]) is within ``max_colour_diff`` of the render's — a frame that shows
    something else there (an actor the masks missed, an appearance the memory did not keep) is
    not copied.

    Returns:
        ``rgb uint8 (H, W, 3)`` and ``bool (H, W)``: the pixels that took a frame's colour.
    """
    from render.transfer import local_colour_difference, transfer_colours

    rgb = render["rgb"]
    ids = render["point_ids"]
    t_rgb, src = transfer_colours(render["depth"], camera.K, camera.T_world_cam, sources,
                                  depth_tol_rel=depth_tol_rel)
    took = src >= 0
    took &= ids >= 0
    if not took.any():
        return rgb, took
    took[took] = memory.origin[ids[took]] == ORIGIN_OBSERVED
    mixed = np.where(took[..., None], t_rgb, rgb.astype(np.float32))
    took &= local_colour_difference(mixed, rgb, window) <= max_colour_diff
    out = rgb.copy()
    out[took] = np.clip(np.rint(t_rgb[took]), 0, 255).astype(np.uint8)
    return out, took


def _count_common(sorted_a: np.ndarray, sorted_b: np.ndarray) -> int:
    """Number of common values of two sorted unique int arrays: binary search of the smaller in
    the larger, O(m log n) without the re-sort ``np.intersect1d`` does on every call."""
    if len(sorted_a) > len(sorted_b):
        sorted_a, sorted_b = sorted_b, sorted_a
    if len(sorted_a) == 0:
        return 0
    pos = np.searchsorted(sorted_b, sorted_a)
    pos[pos == len(sorted_b)] = 0
    return int(np.count_nonzero(sorted_b[pos] == sorted_a))


def render_conditioning(renderer: MemoryRenderer, cameras: list[Camera], *,
                        reference_index: ReferenceIndex | None = None, n_reference_frames: int = 0,
                        frames_by_index=None, estimated_cameras: dict[int, Camera] | None = None,
                        exclude: set[int] | None = None, fill_holes: bool = True,
                        colour_frames: int = 0, colour_depth_tol_rel: float = 0.03,
                        colour_max_diff: float = 0.06, map_fn=None) -> ConditioningMaps:
    """Render the memory along ``cameras`` and retrieve reference frames.

    Args:
        renderer: the memory state to render.
        cameras: commanded cameras of the next segment.
        reference_index: past frames indexed by visible voxels (None: no retrieval).
        n_reference_frames: how many to retrieve.
        frames_by_index: callable ``frame_index -> uint8 (H, W, 3)`` giving a past frame.
        estimated_cameras: frame index → estimated camera of past frames.
        exclude: frame indices not to retrieve (e.g. the history frames already given).
        fill_holes: fill holes enclosed by one continuous surface (:func:`fill_enclosed_holes`,
            validity :data:`FILL_VALIDITY`).
        colour_frames: colour rendered pixels from up to this many past frames that saw them
            (:func:`colour_from_frames`; needs ``reference_index`` entries indexed with depth and
            ``frames_by_index``); 0 keeps the memory's own colours.
        colour_depth_tol_rel, colour_max_diff: see :func:`colour_from_frames`.
        map_fn: ``map_fn(fn, cameras) -> list`` in order, to render the views in parallel (e.g.
            :meth:`spatia_py.parallel.Workers.map`; ``frames_by_index`` must then be thread-safe for
            reading); None renders them one after another. The result does not depend on it.
    """
    colour = colour_frames > 0 and reference_index is not None and frames_by_index is not None

    def one_view(cam: Camera) -> tuple[dict, tuple]:
        o = renderer.render(cam)
        if colour:
            d = o["depth"][o["depth"] > 0]
            sources = frame_colour_sources(reference_index, cam, frames_by_index, colour_frames,
                                           float(np.median(d))) if d.size else []
            if sources:
                o["rgb"], _ = colour_from_frames(o, cam, renderer.memory, sources, depth_tol_rel=colour_depth_tol_rel,
                                                 max_colour_diff=colour_max_diff)
        maps = (o["rgb"], o["depth"], o["validity"])
        return o, fill_enclosed_holes(*maps) if fill_holes else maps

    views = (map_fn or serial_map)(one_view, cameras)
    outs, filled = [v[0] for v in views], [v[1] for v in views]
    refs: list[ReferenceFrame] = []
    if reference_index is not None and n_reference_frames > 0 and frames_by_index is not None:
        seg_keys = visibility_cells(renderer.memory, np.concatenate([o["point_ids"].ravel() for o in outs]))
        for fi, ov in reference_index.retrieve(seg_keys, cameras, n_reference_frames, exclude):
            cam = (estimated_cameras or {}).get(fi)
            if cam is None:
                continue
            refs.append(ReferenceFrame(image=frames_by_index(fi), camera=cam, frame_index=fi, overlap=ov))
    return ConditioningMaps(
        rgb=np.stack([f[0] for f in filled]),
        depth=np.stack([f[1] for f in filled]),
        validity=np.stack([f[2] for f in filled]),
        reference_frames=refs,
    )
