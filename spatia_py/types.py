"""Data contracts passed between the renderer, the generator, SLAM and the memory (DESIGN.md).

Images are ``uint8 (N, H, W, 3)`` at these boundaries; depth is metric z in metres, 0 = empty.
All arrays are numpy; torch stays inside the modules that compute with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from spatia_py.geometry import Camera

__all__ = [
    "ReferenceFrame",
    "ConditioningMaps",
    "GroundTruth",
    "CONDITIONING_STATUS",
    "Clip",
    "GenerationRequest",
    "VideoGenerator",
    "SlamResult",
]


@dataclass
class ReferenceFrame:
    """A past generated frame retrieved for its visibility overlap with the next segment."""

    image: np.ndarray
    """``uint8 (H, W, 3)``."""
    camera: Camera
    """Its estimated camera."""
    frame_index: int
    """Global frame index in the run."""
    overlap: float
    """Fraction of the segment's rendered memory pixels also seen by this frame, in [0, 1]."""


@dataclass
class ConditioningMaps:
    """The memory rendered along the next segment, one entry per frame."""

    rgb: np.ndarray
    """``uint8 (N, H, W, 3)``."""
    depth: np.ndarray
    """``float32 (N, H, W)`` metric z-depth, 0 where empty."""
    validity: np.ndarray
    """``float32 (N, H, W)`` in [0, 1]: how much the generator should keep the rendered rgb."""
    reference_frames: list[ReferenceFrame] = field(default_factory=list)

    def __post_init__(self) -> None:
        n, h, w = self.depth.shape
        if self.rgb.shape != (n, h, w, 3) or self.validity.shape != (n, h, w):
            raise ValueError(
                f"ConditioningMaps shapes disagree: rgb {self.rgb.shape}, depth {self.depth.shape}, "
                f"validity {self.validity.shape}; expected (N,H,W,3), (N,H,W), (N,H,W)"
            )


@dataclass
class GroundTruth:
    """What the procedural world knows; for metrics only — SLAM and the memory never read it."""

    T_world_cam: np.ndarray
    """``float64 (N, 4, 4)`` the cameras actually used (commanded + control error)."""
    depth: np.ndarray
    """``float32 (N, H, W)`` z-depth of the rendered frame (static scene and actors)."""
    dynamic_masks: np.ndarray
    """``bool (N, H, W)`` pixels showing a dynamic actor."""
    actor_positions: np.ndarray
    """``float32 (N, A, 3)`` actor centres per frame (A may be 0)."""
    actor_radii: np.ndarray
    """``float32 (A,)`` bounding-sphere radius of each actor."""
    static_depth: np.ndarray | None = None
    """``float32 (N, H, W)`` z-depth of the static scene alone (actors removed), if known."""
    conditioning_status: np.ndarray | None = None
    """``uint8 (N, H, W)`` what the generator did with each pixel, if known (``CONDITIONING_STATUS``
    names the codes): 0 not a static surface (actor or sky), 1 followed the conditioning, 2 the
    conditioning covered it but its depth disagreed with the scene (re-sampled), 3 no valid
    conditioning (re-sampled). Splits revisit errors by cause (``metrics.revisit_error_split``)."""

    @property
    def static_or_depth(self) -> np.ndarray:
        """:attr:`static_depth` where known, else :attr:`depth` (runs saved before it existed)."""
        return self.static_depth if self.static_depth is not None else self.depth


CONDITIONING_STATUS = ("not_static", "followed", "depth_rejected", "uncovered")
"""Names of the :attr:`GroundTruth.conditioning_status` codes 0-3."""


@dataclass
class Clip:
    """A generated clip: frames for the commanded cameras."""

    frames: np.ndarray
    """``uint8 (N, H, W, 3)``."""
    cameras: list[Camera]
    """The commanded cameras (a video model does not follow them exactly)."""
    depth: np.ndarray | None = None
    """Optional ``float32 (N, H, W)`` depth a backend produces itself (``depth_source: generator``)."""
    ground_truth: GroundTruth | None = None
    """Evaluation-only truth from generators that have it (the procedural world)."""


@dataclass
class GenerationRequest:
    """Everything a generator gets for one segment."""

    cameras: list[Camera]
    """Commanded cameras of the segment, ``N`` of them."""
    conditioning: ConditioningMaps | None
    """Rendered memory; ``None`` when memory is off or empty."""
    history_frames: np.ndarray | None = None
    """``uint8 (M, H, W, 3)`` the last generated frames (M may be 0)."""
    prompt: str = ""
    seed: int = 0
    round_index: int = 0
    frame_offset: int = 0
    """Global index of the segment's first frame (drives time for dynamic actors)."""
    fps: float = 24.0


class VideoGenerator(Protocol):
    """A video model: conditioning in, clip out."""

    name: str

    def generate(self, request: GenerationRequest) -> Clip:
        ...


@dataclass
class SlamResult:
    """What visual SLAM estimated for one clip (from pixels, never ground truth)."""

    T_world_cam: np.ndarray
    """``float64 (N, 4, 4)`` estimated camera-to-world per frame."""
    tracked: np.ndarray
    """``bool (N,)`` False where tracking failed; such frames are reported and never fused."""
    tracking_quality: np.ndarray
    """``float32 (N,)`` e.g. inlier ratio in [0, 1] (0 when untracked)."""
    keyframes: list[int]
    """Indices (within the clip) of the keyframes with dense depth."""
    depth: np.ndarray
    """``float32 (N, H, W)`` dense depth; 0 where unknown and on non-keyframes if not estimated."""
    depth_confidence: np.ndarray
    """``float32 (N, H, W)`` in [0, 1], 0 where depth is 0."""
    dynamic_masks: np.ndarray
    """``bool (N, H, W)`` pixels that rigid camera motion cannot explain (moving content)."""
    timings_s: dict[str, float] = field(default_factory=dict)
    """Stage name -> seconds for this clip (e.g. ``track``, ``depth``, ``masks``)."""
    info: dict = field(default_factory=dict)
    """Free-form diagnostics (per-frame inlier counts, failure reasons), JSON-serialisable."""
