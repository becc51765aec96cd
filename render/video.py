"""Video and image I/O, and a depth colormap.

Videos are H.264 mp4 (yuv420p) through the ffmpeg binary that ``imageio-ffmpeg`` ships; frames are
``uint8 (N, H, W, 3)`` RGB at this boundary. Files are written under a temporary name in the
target directory and renamed into place, so a reader never sees a half-written file.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_video", "read_video", "write_png", "read_png", "colorize_depth"]

# imageio-ffmpeg starts ffmpeg with ``preexec_fn=os.setpgrp`` (to keep Ctrl-C from it) unless this
# variable is set, and a ``preexec_fn`` makes Python fork() rather than vfork(). fork() runs
# OpenBLAS's pthread_atfork handler, which stops numpy's BLAS worker threads even while another
# thread's matrix product is waiting on them; that thread then spins forever. The round loop writes
# its videos on the checkpoint thread while the main thread renders with numpy, and this hung a run
# (reproduced in isolation: one thread starting processes with a preexec_fn, another multiplying
# 3 x 150k matrices, hangs within seconds; without it, 24k products in 20 s complete). Without the
# preexec_fn, ffmpeg shares the process group: Ctrl-C stops it too, which the atomic writes below
# turn into no file rather than a partial one. Set unconditionally: a 0 inherited from the
# environment would bring the hang back.
os.environ["IMAGEIO_FFMPEG_NO_PREVENT_SIGINT"] = "1"


def _as_uint8_array(a: Any, name: str) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor, without importing torch here
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.dtype != np.uint8:
        raise ValueError(
            f"{name} must be uint8 (0-255), got dtype {a.dtype}; convert float images with "
            "(image_0_1 * 255).round().astype(np.uint8)"
        )
    return a


def _temporary_sibling(path: Path) -> Path:
    """A hidden name next to ``path`` keeping its suffix (ffmpeg and imageio pick the format by it)."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create the output directory {parent}: {e}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"output directory {parent} is not writable; choose another path or fix its permissions")
    return parent / f".{path.stem}.{os.getpid()}.tmp{path.suffix}"


@contextmanager
def _replaced_atomically(path: Path):
    """Yield a temporary sibling of ``path`` to write; rename it onto ``path`` on success, remove it on any error."""
    tmp = _temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_video(path: str | Path, frames: Any, fps: float, *, crf: int = 18) -> Path:
    """Write ``frames`` as an H.264 mp4 (yuv420p), atomically.

    Args:
        path: output file, normally ``*.mp4``; missing parent directories are created.
        frames: ``uint8 (N, H, W, 3)`` RGB, ``N >= 1``. yuv420p needs even sizes, so an odd height
            or width is padded by repeating the last row or column (:func:`read_video` then returns
            the padded size).
        fps: frames per second, > 0.
        crf: x264 constant rate factor (0 = lossless luma, 18 = visually lossless, 23 = default).

    Returns:
        The written path.

    Raises:
        ValueError: bad frames or fps. OSError (PermissionError when not writable): the directory
            cannot be created or written.
        OSError / RuntimeError: from ffmpeg (its message included); no partial file is left.
    """
    import imageio_ffmpeg

    frames = _as_uint8_array(frames, "frames")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must have shape (N, H, W, 3) with N >= 1, got {frames.shape}")
    if not (isinstance(fps, (int, float, np.number)) and np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if not (0 <= int(crf) <= 51):
        raise ValueError(f"crf must be in [0, 51], got {crf}")
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    height, width = frames.shape[1:3]

    path = Path(path)
    with _replaced_atomically(path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            (width, height),
            fps=float(fps),
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            quality=None,
            macro_block_size=1,
            ffmpeg_log_level="error",
            output_params=["-crf", str(int(crf)), "-movflags", "+faststart"],
        )
        writer.send(None)  # start ffmpeg
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
    return path


def read_video(path: str | Path) -> np.ndarray:
    """Decode a video to ``uint8 (N, H, W, 3)`` RGB frames."""
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3) for buf in reader]
    if not frames:
        return np.zeros((0, height, width, 3), dtype=np.uint8)
    return np.stack(frames)


def write_png(path: str | Path, image: Any) -> Path:
    """Write ``uint8 (H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` as a PNG, atomically."""
    import imageio.v3 as iio

    image = _as_uint8_array(image, "image")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))):
        raise ValueError(f"image must have shape (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"write_png writes .png files, got {path}")
    with _replaced_atomically(path) as tmp:
        iio.imwrite(tmp, image)
    return path


def read_png(path: str | Path) -> np.ndarray:
    """Read a PNG as stored: ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA (uint8 for 8-bit files)."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    return np.asarray(iio.imread(path))


# Polynomial fit of Google's Turbo colormap (coefficients of 1, x, ..., x^5 per channel).
_TURBO = np.array(
    [
        [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
        [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
        [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
    ]
)


def colorize_depth(depth: Any, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Colour a depth map with a turbo-like colormap: near is red, far is blue, empty is black.

    Args:
        depth: ``(H, W)`` metric depth; ``<= 0`` or non-finite means empty.
        vmin, vmax: depth range mapped to the colormap ends (defaults: min and max of valid depth).

    Returns:
        ``uint8 (H, W, 3)``.
    """
    if hasattr(depth, "detach"):
        depth = depth.detach().cpu().numpy()
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must have shape (H, W), got {depth.shape}")
    valid = np.isfinite(depth) & (depth > 0)
    out = np.zeros((*depth.shape, 3), dtype=np.uint8)
    if not valid.any():
        return out
    d = depth[valid]
    lo = float(d.min()) if vmin is None else float(vmin)
    hi = float(d.max()) if vmax is None else float(vmax)
    t = np.clip((d - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.full_like(d, 0.5)
    x = 0.95 - 0.9 * t  # near -> warm end; both ends of the fit are trimmed, they are nearly black
    powers = x[:, None] ** np.arange(6)
    out[valid] = np.clip(powers @ _TURBO.T * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out
