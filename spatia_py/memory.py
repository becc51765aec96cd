"""The spatial memory: the static world as a voxel-hashed point cloud (struct of arrays).

One point per occupied voxel of edge ``voxel_size`` metres. Each point is the running weighted
mean of everything fused into its voxel, so revisiting a surface refines it instead of growing
the memory: memory size follows explored area, not frame count (DESIGN.md, "Scale").

Layout (all numpy, contiguous, one row per voxel, rows sorted by ``keys``):

- ``keys int64 (P,)`` packed integer voxel coordinates (see :func:`pack_voxel_coords`), strictly
  increasing, so every lookup is a ``np.searchsorted`` and a fuse is one sorted merge.
- ``xyz float32 (P,3)`` weighted mean position in world metres; always inside its voxel
  (``keys == voxel_keys(xyz, voxel_size)`` is an invariant, which makes PLY round trips exact).
- ``rgb uint8 (P,3)`` weighted mean colour.
- ``confidence float32 (P,)`` accumulated fusion weight, saturating at :data:`CONFIDENCE_MAX`
  so that a surface seen thousands of times can still slowly follow a changed appearance.
- ``n_obs int32 (P,)`` number of fuse calls that touched the voxel.
- ``first_round int32 (P,)`` round that created the voxel, ``last_round int32 (P,)`` round of the
  latest fuse that touched it.
- ``origin uint8 (P,)`` :data:`ORIGIN_OBSERVED` (fused from SLAM), :data:`ORIGIN_INSERTED`
  (imported / inserted by an edit) or :data:`ORIGIN_EDITED`.
- ``features float16 (P,F)`` or ``None``: optional per-point descriptors, kept in sync by every
  operation (weighted running mean like the colour).

Voxel ``(i, j, k)`` is centred on ``(i, j, k) * voxel_size`` (see :func:`voxel_coords`).

Per-call cost depends on the new data and the visible part of memory plus at most one linear
copy when new voxels are inserted; nothing is ever rebuilt from scratch. Fusion updates rows in
place and insertion/removal replaces the arrays, so an array taken from a memory is only valid
until its next mutating call: use :meth:`SpatialMemory.copy` for a snapshot (e.g. per round).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spatia_py.geometry import Camera

__all__ = [
    "ORIGIN_OBSERVED",
    "ORIGIN_INSERTED",
    "ORIGIN_EDITED",
    "ORIGIN_NAMES",
    "CONFIDENCE_MAX",
    "SNAP_RADIUS",
    "FORMAT_VERSION",
    "MemoryFormatError",
    "FuseStats",
    "SpatialMemory",
    "pack_voxel_coords",
    "unpack_voxel_keys",
    "voxel_coords",
    "voxel_keys",
]

ORIGIN_OBSERVED = 0
"""Fused from observations (SLAM on generated clips)."""
ORIGIN_INSERTED = 1
"""Inserted from outside (PLY import, an edit that adds content)."""
ORIGIN_EDITED = 2
"""Modified by an edit (recoloured, moved)."""
ORIGIN_NAMES = {ORIGIN_OBSERVED: "observed", ORIGIN_INSERTED: "inserted", ORIGIN_EDITED: "edited"}

SNAP_RADIUS = 0.5
"""In voxels: a point that would open a new voxel joins an existing face neighbour instead when
that neighbour's point is closer than this (see :meth:`SpatialMemory.fuse`)."""

CONFIDENCE_MAX = 1.0e4
"""``confidence`` saturates here; the running means keep using the unsaturated sum per update."""

FORMAT_VERSION = 1
_FORMAT_NAME = "spatia.memory"

_BITS = 21
_BIAS = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1
_COORD_MIN, _COORD_MAX = -_BIAS, _BIAS - 1

_ARRAYS = ("keys", "xyz", "rgb", "confidence", "n_obs", "first_round", "last_round", "origin")
_DTYPES = {
    "keys": np.int64,
    "xyz": np.float32,
    "rgb": np.uint8,
    "confidence": np.float32,
    "n_obs": np.int32,
    "first_round": np.int32,
    "last_round": np.int32,
    "origin": np.uint8,
}


class MemoryFormatError(ValueError):
    """A memory file (``.npz`` or PLY) that cannot be read; the message says what is wrong."""


@dataclass
class FuseStats:
    """What one fuse changed."""

    added: int
    """New voxels appended."""
    updated: int
    """Existing voxels merged with new observations."""
    removed: int = 0
    """Voxels removed (by carving, when the caller reports it here)."""


# --------------------------------------------------------------------------------------------
# voxel keys
# --------------------------------------------------------------------------------------------


def voxel_coords(xyz: np.ndarray, voxel_size: float) -> np.ndarray:
    """Integer voxel coordinates ``int64 (N, 3)`` of points ``xyz (N, 3)``: ``floor(xyz / voxel_size + 0.5)``.

    Voxel ``i`` spans ``[(i - 0.5) * voxel_size, (i + 0.5) * voxel_size)``: voxel *centres* lie on
    multiples of ``voxel_size``, so surfaces at round coordinates (a floor at z = 0, a wall at
    x = 3) sit in the middle of a voxel layer instead of flickering between two.
    """
    return np.floor(np.asarray(xyz, dtype=np.float64) / voxel_size + 0.5).astype(np.int64)


def pack_voxel_coords(ijk: np.ndarray) -> np.ndarray:
    """Pack ``int (N, 3)`` voxel coordinates into ``int64 (N,)`` keys, 21 bits per axis.

    Each coordinate must lie in ``[-2**20, 2**20 - 1]`` (about +-10 km at 1 cm voxels). Keys sort
    lexicographically by ``(i, j, k)`` and are always non-negative.
    """
    ijk = np.asarray(ijk, dtype=np.int64)
    if ijk.ndim != 2 or ijk.shape[1] != 3:
        raise ValueError(f"voxel coordinates must be (N, 3), got shape {ijk.shape}")
    if ijk.size and (ijk.min() < _COORD_MIN or ijk.max() > _COORD_MAX):
        raise ValueError(
            f"voxel coordinates out of range [{_COORD_MIN}, {_COORD_MAX}] (got {ijk.min()}..{ijk.max()}); "
            "points are too far from the origin for this voxel size — recentre the scene or use larger voxels"
        )
    b = ijk + _BIAS
    return (b[:, 0] << (2 * _BITS)) | (b[:, 1] << _BITS) | b[:, 2]


def unpack_voxel_keys(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_voxel_coords`: ``int64 (N,)`` keys to ``int64 (N, 3)`` coordinates."""
    keys = np.asarray(keys, dtype=np.int64)
    out = np.empty((len(keys), 3), dtype=np.int64)
    out[:, 0] = (keys >> (2 * _BITS)) & _MASK
    out[:, 1] = (keys >> _BITS) & _MASK
    out[:, 2] = keys & _MASK
    out -= _BIAS
    return out


def voxel_keys(xyz: np.ndarray, voxel_size: float) -> np.ndarray:
    """Voxel keys ``int64 (N,)`` of points ``xyz (N, 3)``."""
    return pack_voxel_coords(voxel_coords(xyz, voxel_size))


def _into_voxels(xyz64: np.ndarray, ijk: np.ndarray, voxel_size: float) -> np.ndarray:
    """Clamp ``(N, 3)`` positions into their voxels ``ijk (N, 3)`` and cast to float32, nudging the
    rare coordinate that rounding put on the far face back inside, so that
    ``keys == voxel_keys(xyz)`` holds exactly."""
    x = np.clip(xyz64, (ijk - 0.5) * voxel_size, (ijk + 0.5) * voxel_size)
    x32 = x.astype(np.float32)
    centre = None
    for _ in range(4):
        bad = voxel_coords(x32, voxel_size) != ijk
        if not bad.any():
            return x32
        if centre is None:
            centre = (ijk * voxel_size).astype(np.float32)
        x32[bad] = np.nextafter(x32[bad], centre[bad])
    bad = voxel_coords(x32, voxel_size) != ijk
    x32[bad] = centre[bad]
    return x32


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group equal ``keys (M,)``. Returns ``order (M,)`` (sorting permutation), unique sorted keys
    ``(U,)``, group ``starts (U,)`` into the sorted order (for ``np.*.reduceat``) and ``inverse (M,)``
    (group of each point, for ``np.bincount``)."""
    order = np.argsort(keys)  # summation order inside a voxel does not matter
    sk = keys[order]
    flag = np.empty(len(sk), dtype=bool)
    flag[:1] = True
    np.not_equal(sk[1:], sk[:-1], out=flag[1:])
    starts = np.flatnonzero(flag)
    inverse = np.empty(len(sk), dtype=np.int64)
    inverse[order] = np.cumsum(flag) - 1
    return order, sk[starts], starts, inverse


def _weighted_means(
    inverse: np.ndarray, n_groups: int, weight: np.ndarray, wsum: np.ndarray, *arrays: np.ndarray
) -> list[np.ndarray]:
    """Per-group weighted means (float64 ``(U, C)``) of each ``(M, C)`` array (bincount: O(M))."""
    out = []
    for a in arrays:
        m = np.empty((n_groups, a.shape[1]))
        for j in range(a.shape[1]):
            m[:, j] = np.bincount(inverse, weights=a[:, j] * weight, minlength=n_groups)
        m /= wsum[:, None]
        out.append(m)
    return out


def _rows(a: np.ndarray) -> np.ndarray:
    """``(P, ...)`` C-contiguous array viewed as ``(P,)`` opaque rows: numpy gathers, scatters and
    masks whole rows of a 2-D array far faster this way (one item per row instead of per element)."""
    if a.ndim == 1:
        return a
    return a.view(np.dtype((np.void, a.itemsize * int(np.prod(a.shape[1:]))))).reshape(len(a))


def _take_rows(a: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """``a[sel]`` for an index or bool mask over rows; a new contiguous array."""
    return _rows(np.ascontiguousarray(a))[sel].view(a.dtype).reshape((-1,) + a.shape[1:])


def _put_rows(a: np.ndarray, idx: np.ndarray, values: np.ndarray) -> None:
    """``a[idx] = values`` in place (``a`` C-contiguous)."""
    _rows(a)[idx] = _rows(np.ascontiguousarray(values, dtype=a.dtype))


def _round_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# the memory
# --------------------------------------------------------------------------------------------


class SpatialMemory:
    """Voxel-hashed static point cloud; see the module docstring for the array layout.

    Args:
        voxel_size: voxel edge in metres (fixed for the lifetime of the memory).
    """

    def __init__(self, voxel_size: float = 0.01):
        voxel_size = float(voxel_size)
        if not (np.isfinite(voxel_size) and voxel_size > 0):
            raise ValueError(f"voxel_size must be a positive number of metres, got {voxel_size}")
        self.voxel_size = voxel_size
        self.keys = np.zeros(0, np.int64)
        self.xyz = np.zeros((0, 3), np.float32)
        self.rgb = np.zeros((0, 3), np.uint8)
        self.confidence = np.zeros(0, np.float32)
        self.n_obs = np.zeros(0, np.int32)
        self.first_round = np.zeros(0, np.int32)
        self.last_round = np.zeros(0, np.int32)
        self.origin = np.zeros(0, np.uint8)
        self.features: np.ndarray | None = None

    # ---- basics ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        f = "" if self.features is None else f", features={self.features.shape[1]}"
        return f"SpatialMemory(points={len(self)}, voxel_size={self.voxel_size}{f})"

    def _arrays(self) -> dict[str, np.ndarray]:
        d = {name: getattr(self, name) for name in _ARRAYS}
        if self.features is not None:
            d["features"] = self.features
        return d

    def _set_arrays(self, d: dict[str, np.ndarray]) -> None:
        for name in _ARRAYS:
            setattr(self, name, d[name])
        self.features = d.get("features")

    def _index(self, sel, what: str) -> np.ndarray:
        """Validate ``sel`` (bool ``(P,)`` mask or integer indices) into sorted unique int64 indices."""
        sel = np.asarray(sel)
        P = len(self)
        if sel.dtype == bool:
            if sel.shape != (P,):
                raise ValueError(f"{what}: boolean mask must have shape ({P},), got {sel.shape}")
            return np.flatnonzero(sel)
        if sel.size == 0:
            return np.zeros(0, np.int64)
        if not np.issubdtype(sel.dtype, np.integer) or sel.ndim != 1:
            raise ValueError(f"{what}: expected a bool mask ({P},) or 1-D integer indices, got {sel.dtype} {sel.shape}")
        if sel.min() < 0 or sel.max() >= P:
            raise ValueError(f"{what}: indices must lie in [0, {P}), got {sel.min()}..{sel.max()}")
        sel = sel.astype(np.int64)
        return sel if np.all(sel[1:] > sel[:-1]) else np.unique(sel)

    def select(self, sel) -> SpatialMemory:
        """A copy holding only the points ``sel`` (bool mask ``(P,)`` or integer indices)."""
        idx = self._index(sel, "select")
        out = SpatialMemory(self.voxel_size)
        out._set_arrays({k: _take_rows(v, idx) for k, v in self._arrays().items()})
        return out

    def remove(self, sel) -> int:
        """Remove the points ``sel`` (bool mask ``(P,)`` or integer indices); returns how many."""
        idx = self._index(sel, "remove")
        if len(idx) == 0:
            return 0
        keep = np.ones(len(self), dtype=bool)
        keep[idx] = False
        self._set_arrays({k: _take_rows(v, keep) for k, v in self._arrays().items()})
        return len(idx)

    def copy(self) -> SpatialMemory:
        out = SpatialMemory(self.voxel_size)
        out._set_arrays({k: v.copy() for k, v in self._arrays().items()})
        return out

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounds ``(min (3,), max (3,))`` of the point positions (float64)."""
        if len(self) == 0:
            raise ValueError("bounds() of an empty SpatialMemory; check len(memory) first")
        return self.xyz.min(axis=0).astype(np.float64), self.xyz.max(axis=0).astype(np.float64)

    def stats(self) -> dict:
        """JSON-serialisable summary: points, voxel_size, bounds, counts by origin, mean confidence."""
        counts = np.bincount(self.origin, minlength=len(ORIGIN_NAMES))
        bounds = None
        if len(self):
            lo, hi = self.bounds()
            bounds = [lo.tolist(), hi.tolist()]
        return {
            "points": len(self),
            "voxel_size": self.voxel_size,
            "bounds": bounds,
            "by_origin": {name: int(counts[o]) for o, name in ORIGIN_NAMES.items()},
            "mean_confidence": float(self.confidence.mean()) if len(self) else 0.0,
            "mean_n_obs": float(self.n_obs.mean()) if len(self) else 0.0,
            "feature_dim": 0 if self.features is None else int(self.features.shape[1]),
        }

    def diff_keys(self, other: SpatialMemory) -> tuple[np.ndarray, np.ndarray]:
        """``(added, removed)`` voxel keys: in ``self`` but not ``other``, and in ``other`` but not ``self``.

        With ``self`` the newer version this gives the points a round added and removed.
        """
        if not isinstance(other, SpatialMemory):
            raise ValueError(f"diff_keys expects a SpatialMemory, got {type(other).__name__}")
        if other.voxel_size != self.voxel_size:
            raise ValueError(f"diff_keys: voxel sizes differ ({self.voxel_size} vs {other.voxel_size})")
        return (
            np.setdiff1d(self.keys, other.keys, assume_unique=True),
            np.setdiff1d(other.keys, self.keys, assume_unique=True),
        )

    # ---- fusion ------------------------------------------------------------------------------

    def fuse(
        self, xyz, rgb, weight=None, *, round_index: int, origin: int = ORIGIN_OBSERVED, features=None
    ) -> FuseStats:
        """Fuse world points into the memory.

        Points falling in one voxel are first merged (weighted mean), then merged with the voxel
        already in memory: running weighted mean of position, colour (and features), ``confidence
        += weight`` (saturating), ``n_obs += 1`` per call, ``last_round = round_index``. New voxels
        are inserted in key order with ``first_round = round_index``. Fusing non-observed content
        (``origin`` inserted/edited) marks touched voxels with that origin; observing an inserted
        or edited voxel keeps its origin.

        Observations only: a would-be new voxel whose mean lies within ``SNAP_RADIUS`` voxels of
        the point of the existing neighbour across its nearest face joins that voxel instead, so
        depth noise straddling a voxel face refines the surface rather than thickening it.

        Args:
            xyz: ``float (M, 3)`` world points in metres, finite.
            rgb: ``uint8 (M, 3)``.
            weight: ``float (M,)`` > 0, default 1 per point.
            round_index: the round these observations come from.
            origin: one of ``ORIGIN_OBSERVED``, ``ORIGIN_INSERTED``, ``ORIGIN_EDITED``.
            features: ``float (M, F)``; required iff the memory already carries features (or is
                empty, in which case passing them enables features).

        Cost: ``O(M log M + M log P)`` plus one ``O(P)`` copy when new voxels are inserted.
        """
        xyz = np.asarray(xyz)
        if xyz.ndim != 2 or xyz.shape[1] != 3 or not np.issubdtype(xyz.dtype, np.number):
            raise ValueError(f"fuse: xyz must be a numeric (M, 3) array, got {xyz.dtype} {xyz.shape}")
        M = len(xyz)
        rgb = np.asarray(rgb)
        if rgb.shape != (M, 3) or rgb.dtype != np.uint8:
            raise ValueError(
                f"fuse: rgb must be uint8 ({M}, 3), got {rgb.dtype} {rgb.shape} "
                "(convert colours in [0, 1] with (rgb * 255).round().astype(np.uint8))"
            )
        if weight is None:
            weight = np.ones(M, np.float64)
        else:
            weight = np.asarray(weight, dtype=np.float64)
            if weight.shape != (M,):
                raise ValueError(f"fuse: weight must have shape ({M},), got {weight.shape}")
            if M and not (np.all(np.isfinite(weight)) and weight.min() > 0):
                raise ValueError("fuse: weights must be finite and > 0 (drop zero-weight points before fusing)")
        if origin not in ORIGIN_NAMES:
            raise ValueError(f"fuse: origin must be one of {ORIGIN_NAMES}, got {origin!r}")
        if int(round_index) != round_index:
            raise ValueError(f"fuse: round_index must be an integer, got {round_index!r}")
        round_index = int(round_index)
        if features is not None:
            features = np.asarray(features)
            if (
                features.ndim != 2
                or len(features) != M
                or features.shape[1] == 0
                or not np.issubdtype(features.dtype, np.number)
            ):
                raise ValueError(f"fuse: features must be numeric ({M}, F), got {features.dtype} {features.shape}")
            if self.features is None and len(self):
                raise ValueError(
                    "fuse: this memory has no features; fuse without features= (or start from an empty memory)"
                )
            if self.features is not None and features.shape[1] != self.features.shape[1]:
                raise ValueError(
                    f"fuse: features have {features.shape[1]} channels, memory has {self.features.shape[1]}"
                )
        elif self.features is not None:
            raise ValueError(
                f"fuse: this memory carries {self.features.shape[1]}-channel features; "
                "pass features=(M, F) with the points"
            )
        if M == 0:
            return FuseStats(0, 0)
        xyz64 = xyz.astype(np.float64, copy=False)
        if not np.all(np.isfinite(xyz64)):
            raise ValueError("fuse: xyz contains NaN/inf; drop invalid points first")

        # 1) merge points sharing a voxel
        keys = voxel_keys(xyz64, self.voxel_size)
        _, ukeys, _, inverse = _group(keys)
        wsum = np.bincount(inverse, weights=weight, minlength=len(ukeys))
        means = _weighted_means(
            inverse, len(ukeys), weight, wsum, xyz64, rgb, *(() if features is None else (features,))
        )
        m_xyz, m_rgb = means[0], means[1]
        m_feat = means[2] if features is not None else None
        if features is not None and self.features is None:
            self.features = np.zeros((0, features.shape[1]), np.float16)

        # 2) match with existing voxels (both key lists sorted); a would-be new voxel whose point
        #    lies within SNAP_RADIUS of the point of an existing face neighbour joins that voxel,
        #    so depth noise across a voxel face refines the surface instead of thickening it.
        P = len(self)
        pos = np.searchsorted(self.keys, ukeys)
        found = pos < P
        found[found] = self.keys[pos[found]] == ukeys[found]
        target = np.where(found, pos, -1)
        if P and origin == ORIGIN_OBSERVED and not found.all():  # edits place content exactly
            self._snap_to_neighbours(ukeys, m_xyz, target)
        merge = target >= 0
        n_upd = 0
        if merge.any():
            n_upd = self._merge_into(
                target[merge],
                wsum[merge],
                m_xyz[merge],
                m_rgb[merge],
                None if m_feat is None else m_feat[merge],
                round_index,
                origin,
            )

        # 3) insert new voxels at their sorted positions (one linear merge)
        new = ~merge
        N = int(new.sum())
        if N:
            nk = ukeys[new]
            new_rows = {
                "keys": nk,
                "xyz": _into_voxels(m_xyz[new], unpack_voxel_keys(nk), self.voxel_size),
                "rgb": _round_u8(m_rgb[new]),
                "confidence": np.minimum(wsum[new], CONFIDENCE_MAX).astype(np.float32),
                "n_obs": np.ones(N, np.int32),
                "first_round": np.full(N, round_index, np.int32),
                "last_round": np.full(N, round_index, np.int32),
                "origin": np.full(N, origin, np.uint8),
            }
            if m_feat is not None:
                new_rows["features"] = m_feat[new].astype(np.float16)
            self._insert_sorted(pos[new], new_rows)
        return FuseStats(added=N, updated=n_upd)

    def _snap_to_neighbours(self, ukeys: np.ndarray, m_xyz: np.ndarray, target: np.ndarray) -> None:
        """For unmatched voxels (``target == -1``), set ``target`` to the index of the existing
        neighbour across the nearest face when its point is within ``SNAP_RADIUS`` voxels of the new
        mean. A neighbour already matched in this call, or claimed by another candidate, is left
        alone (both sides of the face were observed at once: a real second layer), which also keeps
        the targets unique."""
        cand = np.flatnonzero(target < 0)
        ijk = unpack_voxel_keys(ukeys[cand])
        off = m_xyz[cand] / self.voxel_size - ijk  # in [-0.5, 0.5]
        # One lookup per candidate, across its nearest face: the face that noise most likely
        # pushed the point over (and only a face closer than the radius can qualify).
        axes = np.argmax(np.abs(off), axis=1)
        rows = np.flatnonzero(0.5 - np.abs(off[np.arange(len(cand)), axes]) < SNAP_RADIUS)
        axes = axes[rows]
        if len(rows) == 0:
            return
        nb = ijk[rows]
        nb[np.arange(len(rows)), axes] += np.where(off[rows, axes] >= 0, 1, -1)
        inside = np.all((nb >= _COORD_MIN) & (nb <= _COORD_MAX), axis=1)
        rows, nb = rows[inside], nb[inside]
        nkeys = pack_voxel_coords(nb)
        q = np.searchsorted(self.keys, nkeys)
        hit = q < len(self)
        hit[hit] = self.keys[q[hit]] == nkeys[hit]
        rows, q = rows[hit], q[hit]
        if len(rows) == 0:
            return
        dist = np.linalg.norm(_take_rows(self.xyz, q).astype(np.float64) - m_xyz[cand[rows]], axis=1)
        close = dist < SNAP_RADIUS * self.voxel_size
        rows, q = rows[close], q[close]
        if len(rows) == 0:
            return
        matched = target[target >= 0]  # sorted: the matches of sorted keys
        j = np.minimum(np.searchsorted(matched, q), max(len(matched) - 1, 0))
        free = matched[j] != q if len(matched) else np.ones(len(q), dtype=bool)
        rows, q = rows[free], q[free]
        _, first = np.unique(q, return_index=True)
        target[cand[rows[first]]] = q[first]

    def _merge_into(self, idx, w, m_xyz, m_rgb, m_feat, round_index: int, origin: int) -> int:
        """Running weighted mean of per-voxel observations into existing rows ``idx`` (unique, any
        order); returns the number of rows updated."""
        c = self.confidence[idx].astype(np.float64)
        tot = c + w
        a, b = (c / tot)[:, None], (w / tot)[:, None]
        ijk = unpack_voxel_keys(self.keys[idx])
        _put_rows(self.xyz, idx, _into_voxels(_take_rows(self.xyz, idx) * a + m_xyz * b, ijk, self.voxel_size))
        _put_rows(self.rgb, idx, _round_u8(_take_rows(self.rgb, idx) * a + m_rgb * b))
        if m_feat is not None:
            _put_rows(self.features, idx, (_take_rows(self.features, idx) * a + m_feat * b).astype(np.float16))
        self.confidence[idx] = np.minimum(tot, CONFIDENCE_MAX)
        self.n_obs[idx] += 1
        self.last_round[idx] = round_index
        if origin != ORIGIN_OBSERVED:
            self.origin[idx] = origin
        return len(idx)

    def _insert_sorted(self, ins: np.ndarray, rows: dict[str, np.ndarray]) -> None:
        """Insert ``rows`` before the existing rows ``ins`` (non-decreasing), keeping key order."""
        P, N = len(self), len(ins)
        new_dest = ins + np.arange(N)
        if P == 0:
            self._set_arrays({k: np.ascontiguousarray(v) for k, v in rows.items()})
            return
        is_new = np.zeros(P + N, dtype=bool)
        is_new[new_dest] = True
        is_old = ~is_new
        out = {}
        for name, old in self._arrays().items():
            merged = np.empty((P + N,) + old.shape[1:], dtype=old.dtype)
            mv = _rows(merged)
            mv[new_dest] = _rows(np.ascontiguousarray(rows[name], dtype=old.dtype))
            mv[is_old] = _rows(np.ascontiguousarray(old))
            out[name] = merged
        self._set_arrays(out)

    def fuse_depth(
        self,
        depth,
        rgb,
        camera: Camera,
        *,
        mask=None,
        weight=None,
        round_index: int,
        stride: int = 1,
        origin: int = ORIGIN_OBSERVED,
    ) -> FuseStats:
        """Unproject a depth map and fuse its valid pixels.

        Args:
            depth: ``float (H, W)`` metric z-depth; pixels with depth <= 0 or non-finite are skipped.
            rgb: ``uint8 (H, W, 3)``.
            camera: the camera that saw it (``width == W``, ``height == H``).
            mask: ``bool (H, W)`` pixels to fuse (e.g. static and consistent), default all.
            weight: ``float (H, W)`` per-pixel weight (e.g. depth confidence); pixels with weight <= 0
                are skipped. Default 1.
            round_index: the round of the observation.
            stride: fuse every ``stride``-th row and column.
            origin: as in :meth:`fuse`.
        """
        depth = np.asarray(depth)
        if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.number):
            raise ValueError(f"fuse_depth: depth must be a numeric (H, W) array, got {depth.dtype} {depth.shape}")
        H, W = depth.shape
        _check_camera(camera, H, W, "fuse_depth")
        rgb = np.asarray(rgb)
        if rgb.shape != (H, W, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"fuse_depth: rgb must be uint8 ({H}, {W}, 3), got {rgb.dtype} {rgb.shape}")
        if int(stride) != stride or stride < 1:
            raise ValueError(f"fuse_depth: stride must be a positive integer, got {stride!r}")
        s = int(stride)
        d = depth[::s, ::s].astype(np.float64)
        valid = np.isfinite(d) & (d > 0)
        if mask is not None:
            valid &= _check_map(mask, H, W, "mask", bool)[::s, ::s]
        w = None
        if weight is not None:
            w = _check_map(weight, H, W, "weight", None)[::s, ::s].astype(np.float64)
            valid &= np.isfinite(w) & (w > 0)
        vs, us = np.nonzero(valid)
        z = d[vs, us]
        pts = _unproject(us * s, vs * s, z, camera)
        return self.fuse(
            pts,
            rgb[::s, ::s][vs, us],
            None if w is None else w[vs, us],
            round_index=round_index,
            origin=origin,
            features=None,
        )

    # ---- visibility and carving ----------------------------------------------------------------

    def visible(self, camera: Camera, *, max_depth: float | None = None) -> np.ndarray:
        """Indices ``int64 (V,)`` (ascending) of points in the camera frustum: in front of the camera
        (``0 < z``, and ``z <= max_depth`` if given) and projecting inside the image
        (``-0.5 <= u < W - 0.5``, same for ``v``). Occlusion is not considered."""
        if not isinstance(camera, Camera):
            raise ValueError(f"visible: expected a Camera, got {type(camera).__name__}")
        if len(self) == 0:
            return np.zeros(0, np.int64)
        T = camera.T_cam_world
        K = camera.K
        # Without dividing by z: -0.5 <= u < W - 0.5  <=>  0 <= fx x + s y + (cx + 0.5) z < W z  (z > 0).
        A = np.zeros((3, 3))
        A[0] = K[0, 0] * T[0, :3] + K[0, 1] * T[1, :3] + (K[0, 2] + 0.5) * T[2, :3]
        A[1] = K[1, 1] * T[1, :3] + (K[1, 2] + 0.5) * T[2, :3]
        A[2] = T[2, :3]
        b = np.array(
            [
                K[0, 0] * T[0, 3] + K[0, 1] * T[1, 3] + (K[0, 2] + 0.5) * T[2, 3],
                K[1, 1] * T[1, 3] + (K[1, 2] + 0.5) * T[2, 3],
                T[2, 3],
            ]
        )
        A, b = A.astype(np.float32), b.astype(np.float32)
        W, H = np.float32(camera.width), np.float32(camera.height)
        zmax = None if max_depth is None else np.float32(max_depth)
        out = []
        chunk = 1 << 16  # keeps the temporaries in cache
        # Element-wise float32 arithmetic: predictable single-thread cost, unlike a threaded BLAS
        # call on a (n, 3) x (3, 3) product on shared cores.
        for s in range(0, len(self), chunk):
            c = self.xyz[s : s + chunk]
            x, y, zw = c[:, 0], c[:, 1], c[:, 2]
            uz = x * A[0, 0]
            uz += y * A[0, 1]
            uz += zw * A[0, 2]
            uz += b[0]
            vz = x * A[1, 0]
            vz += y * A[1, 1]
            vz += zw * A[1, 2]
            vz += b[1]
            z = x * A[2, 0]
            z += y * A[2, 1]
            z += zw * A[2, 2]
            z += b[2]
            ok = (z > 1e-6) & (uz >= 0) & (uz < W * z) & (vz >= 0) & (vz < H * z)
            if zmax is not None:
                ok &= z <= zmax
            out.append(np.flatnonzero(ok) + s)
        return np.concatenate(out)

    def carve(
        self,
        depth,
        camera: Camera,
        *,
        mask=None,
        margin_m: float | None = None,
        depth_conf=None,
        min_depth_conf: float | None = None,
        carve_edits: bool = False,
    ) -> int:
        """Free-space carving: remove points the camera sees through.

        A point in the frustum is removed when the observed depth at its pixel is valid and lies
        farther than the point by more than a margin (default ``3 * voxel_size + 0.02 * depth``).
        The observed depth is the minimum over the 3x3 pixel neighbourhood, and any invalid pixel in
        it blocks carving, so silhouettes and holes never erase points by half-pixel misalignment.

        Args:
            depth: ``float (H, W)`` observed metric z-depth (0 = unknown).
            camera: the observing camera (``width == W``, ``height == H``).
            mask: ``bool (H, W)`` pixels to trust (e.g. static); others never carve.
            margin_m: fixed margin in metres instead of the default.
            depth_conf: ``float (H, W)`` confidence of ``depth`` (e.g. ``SlamResult.depth_confidence``).
            min_depth_conf: pixels with ``depth_conf`` below this never carve (needs ``depth_conf``).
            carve_edits: also remove inserted/edited points (default: user edits are kept).

        Returns:
            Number of points removed.
        """
        depth = np.asarray(depth)
        if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.number):
            raise ValueError(f"carve: depth must be a numeric (H, W) array, got {depth.dtype} {depth.shape}")
        H, W = depth.shape
        _check_camera(camera, H, W, "carve")
        d = depth.astype(np.float64)
        valid = np.isfinite(d) & (d > 0)
        if mask is not None:
            valid &= _check_map(mask, H, W, "mask", bool)
        if min_depth_conf is not None:
            if depth_conf is None:
                raise ValueError("carve: min_depth_conf needs depth_conf=(H, W)")
            valid &= _check_map(depth_conf, H, W, "depth_conf", None) >= min_depth_conf
        elif depth_conf is not None:
            raise ValueError("carve: depth_conf given without min_depth_conf; pass the threshold too")
        if margin_m is not None and not (np.isfinite(margin_m) and margin_m >= 0):
            raise ValueError(f"carve: margin_m must be >= 0 metres, got {margin_m}")
        if not valid.any() or len(self) == 0:
            return 0
        d = np.where(valid, d, 0.0)
        dp = np.pad(d, 1, mode="edge")
        dmin = dp[1:-1, 1:-1].copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                np.minimum(dmin, dp[dy : dy + H, dx : dx + W], out=dmin)
        idx = self.visible(camera, max_depth=float(d.max()))
        if not carve_edits:
            idx = idx[self.origin[idx] == ORIGIN_OBSERVED]
        if len(idx) == 0:
            return 0
        q = _take_rows(self.xyz, idx).astype(np.float64)
        p = _affine(camera.T_cam_world, q[:, 0], q[:, 1], q[:, 2])
        z = p[:, 2]
        K = camera.K
        u = np.floor((K[0, 0] * p[:, 0] + K[0, 1] * p[:, 1]) / z + K[0, 2] + 0.5).astype(np.int64)
        v = np.floor(K[1, 1] * p[:, 1] / z + K[1, 2] + 0.5).astype(np.int64)
        obs = dmin[np.clip(v, 0, H - 1), np.clip(u, 0, W - 1)]
        margin = (3 * self.voxel_size + 0.02 * obs) if margin_m is None else float(margin_m)
        gone = (obs > 0) & (z < obs - margin)
        return self.remove(idx[gone])

    # ---- files -------------------------------------------------------------------------------

    def save(self, path) -> None:
        """Write an ``.npz`` (no pickle) atomically: a temporary file, then ``os.replace``."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        arrays = dict(self._arrays())
        arrays["voxel_size"] = np.float64(self.voxel_size)
        arrays["format"] = np.str_(_FORMAT_NAME)
        arrays["format_version"] = np.int64(FORMAT_VERSION)
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    @classmethod
    def load(cls, path) -> SpatialMemory:
        """Read a memory written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"memory file not found: {path} (write one with SpatialMemory.save)")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except Exception as e:  # zipfile/pickle/EOF errors of a truncated or foreign file
            raise MemoryFormatError(f"{path} is not a readable .npz memory file ({type(e).__name__}: {e})") from None
        if "format" not in data or str(data["format"]) != _FORMAT_NAME:
            raise MemoryFormatError(f"{path} is not a spatia memory file (no '{_FORMAT_NAME}' format tag)")
        version = int(data.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise MemoryFormatError(f"{path} has memory format version {version}; this code reads {FORMAT_VERSION}")
        missing = [k for k in ("voxel_size", *_ARRAYS) if k not in data]
        if missing:
            raise MemoryFormatError(f"{path} lacks array(s) {missing}")
        try:
            mem = cls(float(data["voxel_size"]))
        except (TypeError, ValueError) as e:
            raise MemoryFormatError(f"{path}: bad voxel_size ({e})") from None
        P = len(data["keys"])
        shapes = {"xyz": (P, 3), "rgb": (P, 3)}
        arrays = {}
        for name in _ARRAYS:
            a = data[name]
            want = shapes.get(name, (P,))
            if a.shape != want or a.dtype != _DTYPES[name]:
                raise MemoryFormatError(
                    f"{path}: array '{name}' is {a.dtype} {a.shape}, expected {np.dtype(_DTYPES[name])} {want}"
                )
            arrays[name] = np.ascontiguousarray(a)
        if "features" in data:
            f = data["features"]
            if f.ndim != 2 or len(f) != P or f.dtype != np.float16:
                raise MemoryFormatError(f"{path}: array 'features' is {f.dtype} {f.shape}, expected float16 ({P}, F)")
            arrays["features"] = np.ascontiguousarray(f)
        if P and np.any(np.diff(arrays["keys"]) <= 0):
            raise MemoryFormatError(f"{path}: voxel keys are not strictly increasing (corrupted file)")
        if P and not np.array_equal(voxel_keys(arrays["xyz"], mem.voxel_size), arrays["keys"]):
            raise MemoryFormatError(
                f"{path}: positions do not match their voxel keys at voxel_size {mem.voxel_size} (corrupted file)"
            )
        mem._set_arrays(arrays)
        return mem

    def export_ply(self, path, *, binary: bool = True) -> None:
        """Write a PLY point cloud: ``x y z`` (float), ``red green blue`` (uchar) and the extra
        properties ``confidence`` (float), ``n_obs first_round last_round`` (int), ``origin`` (uchar).

        Features are not exported. The file is written atomically.
        """
        path = Path(path)
        P = len(self)
        rec = np.empty(P, dtype=_PLY_DTYPE)
        rec["x"], rec["y"], rec["z"] = self.xyz[:, 0], self.xyz[:, 1], self.xyz[:, 2]
        rec["red"], rec["green"], rec["blue"] = self.rgb[:, 0], self.rgb[:, 1], self.rgb[:, 2]
        for name in ("confidence", "n_obs", "first_round", "last_round", "origin"):
            rec[name] = getattr(self, name)
        header = [
            "ply",
            f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
            f"comment spatia SpatialMemory voxel_size {self.voxel_size!r}",
            f"comment origin {' '.join(f'{k}={v}' for k, v in ORIGIN_NAMES.items())}",
            f"element vertex {P}",
        ]
        header += [f"property {_PLY_TYPE_NAMES[rec.dtype[n].str[1:]]} {n}" for n in rec.dtype.names]
        header.append("end_header")
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(("\n".join(header) + "\n").encode("ascii"))
                if binary:
                    f.write(rec.tobytes())
                else:
                    fmt = ["%.9g"] * 3 + ["%d"] * 3 + ["%.9g"] + ["%d"] * 4
                    cols = np.column_stack([rec[n].astype(np.float64) for n in rec.dtype.names])
                    np.savetxt(f, cols, fmt=fmt)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    @classmethod
    def from_ply(cls, path, voxel_size: float | None = None) -> SpatialMemory:
        """Read a PLY point cloud (ours, or any with ``x y z`` and optionally ``red green blue``) into a
        fresh memory.

        Points are voxelised at ``voxel_size`` (default: the value in a spatia PLY's header) and
        merged per voxel, weighted by ``confidence`` when the file has it. Per-voxel attributes
        the file carries are combined (``n_obs`` summed, ``first_round`` min, ``last_round`` max,
        ``origin`` the highest, i.e. edited > inserted > observed); otherwise ``n_obs = 1``, rounds 0
        and origin inserted. Files without colour get grey (128). Only the vertex element is read.
        """
        path = Path(path)
        v, comments = _read_ply_vertices(path)
        if voxel_size is None:
            m = next((re.search(r"voxel_size\s+(\S+)", c) for c in comments if "SpatialMemory" in c), None)
            if not m:
                raise ValueError(f"{path} does not record a voxel size; pass voxel_size=")
            voxel_size = float(m.group(1))
        mem = cls(voxel_size)
        names = v.dtype.names
        if not all(n in names for n in ("x", "y", "z")):
            raise MemoryFormatError(f"{path}: vertex element lacks x/y/z properties (has {list(names)})")
        n = len(v)
        if n == 0:
            return mem
        xyz = np.column_stack([v["x"], v["y"], v["z"]]).astype(np.float64)
        if not np.all(np.isfinite(xyz)):
            raise MemoryFormatError(f"{path}: vertex positions contain NaN/inf")
        rgb = np.full((n, 3), 128, np.uint8)
        for trio in (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue")):
            if all(t in names for t in trio):
                c = np.column_stack([v[t] for t in trio])
                if np.issubdtype(c.dtype, np.floating):
                    c = c * 255.0
                rgb = _round_u8(c.astype(np.float64))
                break
        w = np.ones(n)
        if "confidence" in names:
            w = v["confidence"].astype(np.float64)
            w = np.where(np.isfinite(w) & (w > 0), w, 1.0)

        keys = voxel_keys(xyz, mem.voxel_size)
        order, ukeys, starts, inverse = _group(keys)
        wsum = np.bincount(inverse, weights=w, minlength=len(ukeys))
        m_xyz, m_rgb = _weighted_means(inverse, len(ukeys), w, wsum, xyz, rgb)
        U = len(ukeys)

        def per_voxel(name, ufunc, default, dtype):
            if name not in names:
                return np.full(U, default, dtype)
            return ufunc.reduceat(v[name].astype(np.int64)[order], starts).astype(dtype)

        mem._set_arrays(
            {
                "keys": ukeys,
                "xyz": _into_voxels(m_xyz, unpack_voxel_keys(ukeys), mem.voxel_size),
                "rgb": _round_u8(m_rgb),
                "confidence": np.minimum(wsum, CONFIDENCE_MAX).astype(np.float32),
                "n_obs": per_voxel("n_obs", np.add, 1, np.int32),
                "first_round": per_voxel("first_round", np.minimum, 0, np.int32),
                "last_round": per_voxel("last_round", np.maximum, 0, np.int32),
                "origin": np.clip(
                    per_voxel("origin", np.maximum, ORIGIN_INSERTED, np.int64), 0, max(ORIGIN_NAMES)
                ).astype(np.uint8),
            }
        )
        return mem


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _check_camera(camera, H: int, W: int, where: str) -> None:
    if not isinstance(camera, Camera):
        raise ValueError(f"{where}: expected a Camera, got {type(camera).__name__}")
    if (camera.width, camera.height) != (W, H):
        raise ValueError(
            f"{where}: image is {W}x{H} but the camera is {camera.width}x{camera.height}; "
            "use camera.scaled() to match the depth map"
        )


def _check_map(a, H: int, W: int, name: str, dtype) -> np.ndarray:
    a = np.asarray(a)
    if a.shape != (H, W):
        raise ValueError(f"{name} must have shape ({H}, {W}), got {a.shape}")
    if dtype is bool and a.dtype != bool:
        raise ValueError(f"{name} must be a bool array, got {a.dtype}")
    if dtype is None and not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got {a.dtype}")
    return a


def _unproject(u: np.ndarray, v: np.ndarray, z: np.ndarray, camera: Camera) -> np.ndarray:
    """World points ``(N, 3)`` of pixels ``(u, v)`` (integer = pixel centre) at z-depth ``z``."""
    K = camera.K
    y = (v - K[1, 2]) / K[1, 1]
    x = (u - K[0, 2] - K[0, 1] * y) / K[0, 0]
    return _affine(camera.T_world_cam, x * z, y * z, z)


def _affine(T: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``T (4, 4)`` applied to points given as columns; returns ``(N, 3)``. Element-wise on purpose:
    numpy's ``(N, 3) @ (3, 3)`` can fall back to a slow or oversubscribed threaded path."""
    out = np.empty((len(x), 3), dtype=np.result_type(x, np.float32))
    for r in range(3):
        out[:, r] = x * T[r, 0] + y * T[r, 1] + z * T[r, 2] + T[r, 3]
    return out


_PLY_DTYPE = np.dtype(
    [
        ("x", "<f4"),
        ("y", "<f4"),
        ("z", "<f4"),
        ("red", "u1"),
        ("green", "u1"),
        ("blue", "u1"),
        ("confidence", "<f4"),
        ("n_obs", "<i4"),
        ("first_round", "<i4"),
        ("last_round", "<i4"),
        ("origin", "u1"),
    ]
)
_PLY_TYPE_NAMES = {
    "f4": "float",
    "f8": "double",
    "u1": "uchar",
    "i1": "char",
    "i2": "short",
    "u2": "ushort",
    "i4": "int",
    "u4": "uint",
}
_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}


def _read_ply_vertices(path: Path) -> tuple[np.ndarray, list[str]]:
    """The vertex element of a PLY file as a structured array, and the header comments."""
    if not path.is_file():
        raise FileNotFoundError(f"PLY file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise MemoryFormatError(f"{path} is not a PLY file (no 'ply' magic / 'end_header')")
    body = data.index(b"\n", end) + 1
    lines = data[:end].decode("ascii", errors="replace").splitlines()
    fmt, comments, elements = None, [], []  # elements: [name, count, [(type, name) | None for lists]]
    for line in lines[1:]:
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "format" and len(tok) >= 2:
            fmt = tok[1]
        elif tok[0] in ("comment", "obj_info"):
            comments.append(line)
        elif tok[0] == "element" and len(tok) == 3:
            elements.append([tok[1], int(tok[2]), []])
        elif tok[0] == "property" and elements:
            if tok[1] == "list":
                elements[-1][2].append(None)
            elif len(tok) == 3 and tok[1] in _PLY_TYPES:
                elements[-1][2].append((_PLY_TYPES[tok[1]], tok[2]))
            else:
                raise MemoryFormatError(f"{path}: unsupported PLY property line {line!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise MemoryFormatError(f"{path}: unsupported PLY format {fmt!r}")
    names = [e[0] for e in elements]
    if "vertex" not in names:
        raise MemoryFormatError(f"{path}: PLY file has no vertex element")
    vi = names.index("vertex")
    end_char = ">" if fmt == "binary_big_endian" else "<"
    offset = 0  # bytes (binary) or lines (ascii) of the elements before the vertices
    for name, count, props in elements[:vi]:
        if count and any(p is None for p in props):
            raise MemoryFormatError(f"{path}: element '{name}' with list properties precedes the vertices")
        offset += count * (sum(np.dtype(p[0]).itemsize for p in props) if fmt != "ascii" else 1)
    _, n, props = elements[vi]
    if any(p is None for p in props):
        raise MemoryFormatError(f"{path}: vertex element has list properties; expected scalar x y z [red green blue]")
    dtype = np.dtype([(name, end_char + t) for t, name in props])
    if fmt == "ascii":
        text = data[body:].decode("ascii", errors="replace").splitlines()[offset : offset + n]
        if len(text) < n:
            raise MemoryFormatError(f"{path}: truncated PLY (expected {n} vertices, found {len(text)} lines)")
        try:
            cols = np.loadtxt(text, dtype=np.float64, ndmin=2) if n else np.zeros((0, len(props)))
        except ValueError as e:
            raise MemoryFormatError(f"{path}: unreadable ASCII vertex data ({e})") from None
        if cols.shape[1] != len(props):
            raise MemoryFormatError(f"{path}: vertex lines have {cols.shape[1]} values, header says {len(props)}")
        out = np.empty(n, dtype=dtype.newbyteorder("="))
        for i, (_, name) in enumerate(props):
            out[name] = cols[:, i]
        return out, comments
    start = body + offset
    if len(data) - start < n * dtype.itemsize:
        raise MemoryFormatError(f"{path}: truncated PLY (expected {n} vertices of {dtype.itemsize} bytes)")
    return np.frombuffer(data, dtype=dtype, count=n, offset=start), comments
