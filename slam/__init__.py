"""Visual SLAM from generated pixels: tracking, dense depth, dynamic masks and fusion (DESIGN.md, SLAM).

SLAM never reads ground truth and never imports generator internals (only the evaluation and
diagnostic scripts ``slam.evaluate`` and ``slam.diagnose`` compare its output with the procedural
world's ground truth). ``VisualSlam`` and ``fuse_clip`` load lazily so that importing the config
(``spatia_py.config`` does) stays free of torch/pycolmap.
"""

from slam.config import SlamConfig

__all__ = ["SlamConfig", "VisualSlam", "fuse_clip"]


def __getattr__(name: str):
    if name == "VisualSlam":
        from slam.visual_slam import VisualSlam

        return VisualSlam
    if name == "fuse_clip":
        from slam.fusion import fuse_clip

        return fuse_clip
    raise AttributeError(f"module 'slam' has no attribute {name!r}")
