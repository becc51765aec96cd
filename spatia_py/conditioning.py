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

import numpy as np

from spatia_py.geometry import Camera
from spatia_py.memory import SpatialMemory, pack_voxel_coords, unpack_voxel_keys
from spatia_py.types import ConditioningMaps, ReferenceFrame

__all__ = ["MemoryRenderer", "ReferenceIndex", "render_conditioning", "visibility_cells", "CELL_VOXELS"]

CELL_VOXELS = 4
"""Edge of a visibility cell in voxels."""


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
                 min_confidence: float = 0.0):
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

    def render(self, camera: Camera) -> dict:
        """``{"rgb" uint8 (H,W,3), "depth" float32 (H,W), "validity" float32 (H,W), "point_ids" int64 (H,W)}``;
        ``point_ids`` index rows of the memory (-1 = empty)."""
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
        return {"rgb": out.rgb.numpy(), "depth": out.depth.numpy(), "validity": out.validity.numpy(),
                "point_ids": ids}

    def visible_keys(self, camera: Camera) -> np.ndarray:
        """Sorted unique visibility cells (:func:`visibility_cells`) of the memory seen in ``camera``."""
        return visibility_cells(self.memory, self.render(camera)["point_ids"])


@dataclass
class _Entry:
    frame_index: int
    camera: Camera
    keys: np.ndarray


@dataclass
class ReferenceIndex:
    """Past frames indexed by the memory cells they saw, for retrieval by overlap.

    Only a bounded number of candidates nearest the segment are scored, so retrieval cost does
    not grow with the length of the history.
    """

    max_candidates: int = 64
    entries: list[_Entry] = field(default_factory=list)

    def add(self, frame_index: int, camera: Camera, keys: np.ndarray) -> None:
        self.entries.append(_Entry(int(frame_index), camera, np.asarray(keys, dtype=np.int64)))

    def to_arrays(self) -> dict:
        """Flat arrays for saving (``np.savez``) — frame indices, offsets into one key array."""
        if not self.entries:
            return {"frame_index": np.zeros(0, np.int64), "offsets": np.zeros(1, np.int64),
                    "keys": np.zeros(0, np.int64)}
        lens = [len(e.keys) for e in self.entries]
        return {"frame_index": np.array([e.frame_index for e in self.entries], np.int64),
                "offsets": np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                "keys": np.concatenate([e.keys for e in self.entries])}

    def add_arrays(self, arrays: dict, cameras: dict[int, Camera]) -> None:
        """Re-add entries saved with :meth:`to_arrays` (``cameras`` maps frame index → camera)."""
        off = arrays["offsets"]
        for k, fi in enumerate(arrays["frame_index"]):
            self.add(int(fi), cameras[int(fi)], arrays["keys"][off[k]:off[k + 1]])

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
                        exclude: set[int] | None = None) -> ConditioningMaps:
    """Render the memory along ``cameras`` and retrieve reference frames.

    Args:
        renderer: the memory state to render.
        cameras: commanded cameras of the next segment.
        reference_index: past frames indexed by visible voxels (None: no retrieval).
        n_reference_frames: how many to retrieve.
        frames_by_index: callable ``frame_index -> uint8 (H, W, 3)`` giving a past frame.
        estimated_cameras: frame index → estimated camera of past frames.
        exclude: frame indices not to retrieve (e.g. the history frames already given).
    """
    outs = [renderer.render(c) for c in cameras]
    refs: list[ReferenceFrame] = []
    if reference_index is not None and n_reference_frames > 0 and frames_by_index is not None:
        seg_keys = visibility_cells(renderer.memory, np.concatenate([o["point_ids"].ravel() for o in outs]))
        for fi, ov in reference_index.retrieve(seg_keys, cameras, n_reference_frames, exclude):
            cam = (estimated_cameras or {}).get(fi)
            if cam is None:
                continue
            refs.append(ReferenceFrame(image=frames_by_index(fi), camera=cam, frame_index=fi, overlap=ov))
    return ConditioningMaps(
        rgb=np.stack([o["rgb"] for o in outs]),
        depth=np.stack([o["depth"] for o in outs]),
        validity=np.stack([o["validity"] for o in outs]),
        reference_frames=refs,
    )
