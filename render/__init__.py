"""Point splatting, conditioning buffers and video I/O — pure functions (see ``render/design.md``).

``render_points`` turns world points and one camera into rgb, depth, validity and point-id buffers;
``write_video`` / ``read_video`` move ``uint8 (N, H, W, 3)`` frames to and from H.264 mp4.
"""

from render.splat import RenderOutput, render_points, render_points_batch
from render.video import colorize_depth, read_png, read_video, write_png, write_video

__all__ = [
    "RenderOutput",
    "render_points",
    "render_points_batch",
    "write_video",
    "read_video",
    "write_png",
    "read_png",
    "colorize_depth",
]
