"""Configuration of the visual SLAM module (a dataclass; presets live in ``configs/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SlamConfig:
    mode: str = "visual"
    """``visual`` estimates poses, depth and dynamic masks from pixels; ``oracle`` reads the
    generator's ground truth instead (an explicit upper bound for ablations, never the default)."""
    depth_source: str = "pixels"
    """``pixels`` runs multi-view stereo; ``generator`` uses depth a backend hands over with its clip."""
    carve: bool = True
    """Remove memory points that new, confident observations see through (free-space carving)."""
