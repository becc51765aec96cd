"""Sparse features: SIFT keypoints (pycolmap, CPU) and mutual-nearest-neighbour matching (torch).

Measured on this project's 2-core CPU at 512x320, one thread (``python -m slam.benchmark``):
pycolmap SIFT with ``first_octave=0`` takes ~45-70 ms per image, with COLMAP's default
``first_octave=-1`` (2x upsampling) ~230 ms, and kornia's ``SIFTFeature`` ~1 s; so pycolmap SIFT
without upsampling is the default. Matching is a dense descriptor product, cheap for a few
thousand features.

Keypoints are returned in this project's pixel convention (integer = pixel centre); COLMAP puts
the centre of the top-left pixel at (0.5, 0.5), so 0.5 is subtracted at this boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Features", "extract_sift", "match_features", "to_gray"]

_EXTRACTORS: dict = {}


@dataclass
class Features:
    """Keypoints of one image."""

    xy: np.ndarray
    """``float64 (M, 2)`` pixel coordinates (column, row; integer = pixel centre)."""
    desc: np.ndarray
    """``float32 (M, 128)`` L2-normalised descriptors."""

    def __len__(self) -> int:
        return len(self.xy)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """``uint8 (..., H, W, 3)`` -> ``float32 (..., H, W)`` luminance in [0, 1]."""
    w = np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255.0
    return np.asarray(rgb, dtype=np.float32) @ w


def _extractor(max_features: int, first_octave: int, peak_threshold: float):
    import pycolmap

    key = (max_features, first_octave, peak_threshold)
    if key not in _EXTRACTORS:
        opts = pycolmap.FeatureExtractionOptions()
        opts.num_threads = 1
        opts.sift.max_num_features = int(max_features)
        opts.sift.first_octave = int(first_octave)
        opts.sift.peak_threshold = float(peak_threshold)
        _EXTRACTORS[key] = pycolmap.FeatureExtractor.create(opts, pycolmap.Device.cpu)
    return _EXTRACTORS[key]


def extract_sift(
    gray_0_1: np.ndarray, max_features: int = 2000, first_octave: int = 0, peak_threshold: float = 0.0066
) -> Features:
    """SIFT features of a grayscale image ``float32 (H, W)`` in [0, 1]."""
    import pycolmap

    if gray_0_1.ndim != 2:
        raise ValueError(f"extract_sift expects a (H, W) grayscale image, got shape {gray_0_1.shape}")
    ext = _extractor(max_features, first_octave, peak_threshold)
    kp, desc = ext.extract_from_float32_array(np.ascontiguousarray(gray_0_1, dtype=np.float32))
    km = np.asarray(pycolmap.keypoints_to_matrix(kp), dtype=np.float64).reshape(-1, 4)
    d = np.asarray(desc.to_float().data if hasattr(desc, "to_float") else desc.data, dtype=np.float32)
    d = d.reshape(len(km), -1).copy()
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    # COLMAP keypoints have the top-left pixel centre at (0.5, 0.5); ours at (0, 0).
    return Features(km[:, :2] - 0.5, d)


def match_features(a: Features, b: Features, max_ratio: float = 0.8, max_distance: float = 0.7) -> np.ndarray:
    """Mutual nearest neighbours passing Lowe's ratio test; ``int64 (K, 2)`` index pairs (a, b)."""
    if len(a) < 2 or len(b) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    da = torch.from_numpy(a.desc)
    db = torch.from_numpy(b.desc)
    sim = da @ db.T
    # max() is several times faster than topk() on CPU for these shapes.
    s1, j = sim.max(dim=1)
    back = sim.max(dim=0).indices
    i = torch.arange(len(a))
    sim[i, j] = -2.0
    s2 = sim.max(dim=1).values
    # Unit vectors: squared distance = 2 - 2 cos.
    d1 = torch.sqrt(torch.clamp(2 - 2 * s1, min=0))
    d2 = torch.sqrt(torch.clamp(2 - 2 * s2, min=0))
    ok = (back[j] == i) & (d1 < max_ratio * d2) & (d1 < max_distance)
    return torch.stack([i[ok], j[ok]], dim=1).numpy().astype(np.int64)
