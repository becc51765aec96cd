"""Constants the test modules share (imported as ``from helpers import ...``; pytest puts this
folder on ``sys.path`` because the tests are not a package)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository root."""

DEMO = ROOT / "configs" / "demo.yaml"
"""The demo preset, which the CLI, pipeline and diagnose tests shrink with ``TINY``."""

# Visual SLAM needs some resolution to find features: 320x200 is the smallest that tracks reliably.
TINY = ["path.width=320", "path.height=200", "path.n_frames=16", "frames_per_round=8", "memory.voxel_size=0.03",
        "generator.procedural.n_actors=1"]
"""Overrides for a tiny round loop (2 rounds of 8 frames at 320x200) that still tracks."""
