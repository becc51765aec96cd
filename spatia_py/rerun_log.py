"""Rerun recordings of runs: live logging from the round loop, re-creation from a run directory,
and ``spatia view``.

Every entity path, timeline and logging choice is listed in the README ("Inspecting runs in
Rerun"); keep the two in sync. In short:

- two sequence timelines: ``frame`` (global frame index, ``rec.frame_offset + i``) and ``round``;
  per-frame data carries both, per-round data (memory, timings) is stamped at the round's *last*
  frame on the ``frame`` timeline and the round's inputs (reference frames) at its *first*;
- ``world/...``: the 3D scene (memory, paths, camera frustums; ground truth under
  ``world/ground_truth``), world axes right-handed with z up (the path builders' convention);
- ``frames/...``: 2D images per frame (generated, conditioning, depth, masks, references);
- ``metrics/...``: scalar plots; ``config`` and ``summary``: text documents; ``log``: one line per round.

Cameras are OpenCV (x right, y down, z forward) and poses are ``T_world_cam``; both are stated again
at the log site (``rr.ViewCoordinates.RDF``, ``TransformRelation.ParentFromChild``).

Rerun is imported lazily so that importing this module costs nothing when recording is off.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spatia_py.geometry import CameraPath
from spatia_py.rundir import RoundRecord, RunDir, RunDirError
from spatia_py.types import ReferenceFrame

if TYPE_CHECKING:
    from spatia_py.memory import SpatialMemory

__all__ = ["RerunLogger", "RerunLogError", "record_run_dir", "view", "default_blueprint", "DEFAULT_GRPC_URL"]

log = logging.getLogger("spatia")

DEFAULT_GRPC_URL = "rerun+http://127.0.0.1:9876/proxy"
"""Where a locally started viewer (``rerun``) listens; used for ``connect_addr=""``."""

_ORIGIN_CLASSES = ((0, "observed", (150, 150, 150)), (1, "inserted", (255, 140, 0)), (2, "edited", (220, 0, 220)))
"""``SpatialMemory.origin`` values, their labels and colours in ``world/memory/by_origin``."""

_DYNAMIC_CLASSES = ((0, "static", (0, 0, 0, 0)), (1, "dynamic", (255, 40, 40, 255)))
"""Class ids of the dynamic-mask segmentation images (static pixels are transparent)."""

_ROUND_PALETTE = np.array([  # tab10: colour of ``first_round % 10`` in world/memory/by_round
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)], np.uint8)

_VIRIDIS = np.array([  # anchors of matplotlib's viridis, interpolated linearly
    (68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142),
    (31, 158, 137), (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37)], np.float64)

_CONFIDENCE_LOG10_MAX = 3.0
"""``world/memory/by_confidence`` maps ``log10(1 + confidence)`` over ``[0, 3]`` (1 … 1000) to viridis."""

_ADDED_RGB = (40, 220, 60)
_REMOVED_RGB = (230, 30, 30)
_COMMANDED_RGB = (60, 120, 255)
_ESTIMATED_RGB = (255, 200, 0)
_GROUND_TRUTH_RGB = (40, 200, 120)


class RerunLogError(ValueError):
    """Bad arguments to the Rerun logger / viewer helpers; the message says how to fix them."""


def _rr():
    try:
        import rerun as rr
    except ImportError as e:  # pragma: no cover - rerun-sdk is a hard dependency
        raise RerunLogError(f"Rerun logging needs the rerun-sdk package ({e}); pip install rerun-sdk") from None
    return rr


def _grpc_url(addr: str) -> str:
    """``""`` → the local default viewer; ``host:port`` → its proxy URL; a full URL stays as is."""
    addr = addr.strip()
    if not addr:
        return DEFAULT_GRPC_URL
    if "://" in addr:
        return addr
    return f"rerun+http://{addr}/proxy"


def _check_viewer_reachable(url: str, timeout_s: float = 2.0) -> None:
    """Fail early with a clear message when no viewer listens at ``url`` (Rerun itself would retry in
    the background and make :meth:`RerunLogger.close` wait for it)."""
    u = urllib.parse.urlparse(url.replace("rerun+", "", 1))
    host, port = u.hostname or "127.0.0.1", u.port or 9876
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        raise RerunLogError(
            f"no Rerun viewer is listening at {host}:{port} ({e.strerror or e}); start one with `rerun` "
            "(or `rerun --serve-grpc` on a machine without a display), or record to a file with --rerun FILE.rrd"
        ) from None


def _viridis_lut() -> np.ndarray:
    t = np.linspace(0.0, 1.0, 256) * (len(_VIRIDIS) - 1)
    i = np.minimum(t.astype(np.int64), len(_VIRIDIS) - 2)
    f = (t - i)[:, None]
    return (_VIRIDIS[i] * (1 - f) + _VIRIDIS[i + 1] * f + 0.5).astype(np.uint8)


_VIRIDIS_LUT = _viridis_lut()


def _colormap(x_0_1: np.ndarray) -> np.ndarray:
    """Viridis colours ``uint8 (N, 3)`` of values ``x_0_1 (N,)`` (clipped to [0, 1])."""
    x = np.clip(np.nan_to_num(np.asarray(x_0_1, dtype=np.float32), nan=0.0), 0.0, 1.0)
    return _VIRIDIS_LUT[(x * 255.0 + 0.5).astype(np.uint8)]


def _subsample(n: int, max_points: int) -> np.ndarray | slice:
    """Indices of at most ``max_points`` of ``n`` rows, evenly strided (rows are in voxel-key order,
    so a stride thins space roughly uniformly). A full slice when nothing needs dropping."""
    if max_points <= 0 or n <= max_points:
        return slice(None)
    return np.linspace(0, n - 1, max_points).astype(np.int64)


def _mosaic(images: list[np.ndarray], stride: int) -> np.ndarray:
    """Side-by-side strip ``uint8 (H, sum W, 3)`` of ``(H_k, W_k, 3)`` images thinned by ``stride``
    (one image in one 2D view: several images in one view would be drawn on top of each other)."""
    tiles = [np.ascontiguousarray(im[::stride, ::stride]) for im in images]
    h = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, h - t.shape[0]), (0, 0), (0, 0))) for t in tiles]
    return np.concatenate(tiles, axis=1)


def _flatten_numbers(d: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict as ``{"a/b": value}`` (lists, strings and bools skipped)."""
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten_numbers(v, key + "/"))
        elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)):
            if math.isfinite(float(v)):
                out[key] = float(v)
    return out


def _safe_name(key: str) -> str:
    return "/".join(part.replace(" ", "_") for part in key.split("/"))


def default_blueprint(*, with_ground_truth: bool = True):
    """The layout sent with every recording: the 3D world on the left; on the right a grid of the
    per-frame images over tabs of metric plots, references and the config.

    The alternative colourings of the memory (``by_confidence``, ``by_round``, ``by_origin``), the
    added/removed overlays and the ground truth start hidden in the 3D view: toggle them with the
    eye icon in the blueprint panel.
    """
    import rerun.blueprint as rrb

    hidden = rrb.EntityBehavior(visible=False)
    overrides = {p: hidden for p in ("world/memory/by_confidence", "world/memory/by_round",
                                     "world/memory/by_origin", "world/memory/added", "world/memory/removed")}
    if with_ground_truth:
        overrides["world/ground_truth"] = hidden
    world = rrb.Spatial3DView(name="world", origin="world", contents="+ world/**", overrides=overrides)
    images = rrb.Grid(
        rrb.Spatial2DView(name="generated", origin="frames/generated"),
        rrb.Spatial2DView(name="conditioning rgb", origin="frames/conditioning/rgb"),
        rrb.Spatial2DView(name="validity", origin="frames/conditioning/validity"),
        rrb.Spatial2DView(name="conditioning depth", origin="frames/conditioning/depth"),
        rrb.Spatial2DView(name="estimated depth", origin="frames/slam/depth"),
        rrb.Spatial2DView(name="dynamic mask", origin="frames",  # mask over the frame
                          contents=["+ frames/generated", "+ frames/slam/dynamic_mask"]),
        grid_columns=3,
        name="frames",
    )
    plots = rrb.Tabs(
        rrb.TimeSeriesView(name="tracking", origin="metrics/slam"),
        rrb.TimeSeriesView(name="timings", origin="metrics/timings"),
        rrb.TimeSeriesView(name="memory", origin="metrics/memory"),
        rrb.TimeSeriesView(name="quality", origin="metrics/quality"),
        rrb.Spatial2DView(name="references", origin="frames/references/images"),
        rrb.TextDocumentView(name="reference table", origin="frames/references/info"),
        rrb.Spatial2DView(name="true dynamic mask", origin="frames",
                          contents=["+ frames/generated", "+ frames/ground_truth/dynamic_mask"]),
        rrb.TextDocumentView(name="summary", origin="summary"),
        rrb.TextDocumentView(name="config", origin="config"),
        rrb.TextLogView(name="log", origin="log"),
        name="metrics",
    )
    return rrb.Blueprint(
        rrb.Horizontal(world, rrb.Vertical(images, plots, row_shares=[3, 2]), column_shares=[3, 2]),
        collapse_panels=False,
    )


class RerunLogger:
    """Writes a run into a Rerun recording (a file, a running viewer, or both).

    Args:
        save_path: write the recording to this ``.rrd`` file (no viewer needed).
        connect_addr: also stream to a running viewer: ``""`` = the local default
            (``rerun`` started on this machine), ``host:port``, or a full ``rerun+http://…/proxy`` URL.
        application_id: Rerun application id (the viewer keys stored layouts by it).
        recording_name: shown in the viewer's recordings list.
        jpeg_quality: colour images (generated, conditioning, references) are logged JPEG-compressed.
        depth_stride: depth maps are logged at ``1/depth_stride`` resolution (nearest pixel, float16:
            float depth hardly compresses); images, validity and masks stay at full resolution
            (masks and validity compress well), so they line up with the frames.
        max_overlay_points: the alternative memory colourings and the added/removed overlays are
            evenly thinned to at most this many points per round (``world/memory/points`` is
            always complete); 0 = no limit.

    Use as a context manager or call :meth:`close`; the file is complete only after closing.
    """

    def __init__(self, *, save_path: str | Path | None = None, connect_addr: str | None = None,
                 application_id: str = "spatia", recording_name: str = "run", jpeg_quality: int = 85,
                 depth_stride: int = 2, max_overlay_points: int = 250_000):
        if save_path is None and connect_addr is None:
            raise RerunLogError("RerunLogger needs save_path (an .rrd file) and/or connect_addr "
                                "(\"\" for a viewer on this machine)")
        if not 1 <= int(jpeg_quality) <= 100:
            raise RerunLogError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
        if int(depth_stride) < 1:
            raise RerunLogError(f"depth_stride must be >= 1, got {depth_stride}")
        if save_path is not None and Path(save_path).suffix != ".rrd":
            raise RerunLogError(f"save_path must end in .rrd, got {save_path}")
        rr = _rr()
        self._rr = rr
        self.jpeg_quality = int(jpeg_quality)
        self.depth_stride = int(depth_stride)
        self.max_overlay_points = int(max_overlay_points)
        self.save_path = None if save_path is None else Path(save_path)
        self.rec = rr.RecordingStream(application_id)
        # Only our two sequence timelines: wall-clock log_time / log_tick would make re-created
        # recordings differ from live ones and clutter the time panel.
        self.rec.set_log_time_enabled(False)
        self.rec.set_log_tick_enabled(False)
        blueprint = default_blueprint()
        sinks = []
        if self.save_path is not None:
            self.save_path.parent.mkdir(parents=True, exist_ok=True)
            sinks.append(rr.FileSink(str(self.save_path)))
        self.connect_url = None
        if connect_addr is not None:
            self.connect_url = _grpc_url(connect_addr)
            _check_viewer_reachable(self.connect_url)
            sinks.append(rr.GrpcSink(self.connect_url))
        self.rec.set_sinks(*sinks, default_blueprint=blueprint)
        self.rec.send_recording_name(recording_name)
        self._closed = False
        self._frustum_m = 0.2
        self._est_centres: list[np.ndarray] = []
        self._gt_centres: list[np.ndarray] = []
        self._keyframe_centres: list[np.ndarray] = []
        self._last_stamp = (0, 0)
        self._static_setup()

    # ---- plumbing ----------------------------------------------------------------------------

    def __enter__(self) -> RerunLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _log(self, path: str, *archetypes, static: bool = False) -> None:
        self.rec.log(path, *archetypes, static=static)

    def _stamp(self, frame: int, round_index: int) -> None:
        self.rec.set_time("frame", sequence=int(frame))
        self.rec.set_time("round", sequence=int(round_index))
        self._last_stamp = (int(frame), int(round_index))

    def _jpeg(self, rgb: np.ndarray, color_model: str = "RGB"):
        rr = self._rr
        return rr.Image(np.ascontiguousarray(rgb), color_model=color_model).compress(jpeg_quality=self.jpeg_quality)

    def _small(self, a: np.ndarray) -> np.ndarray:
        s = self.depth_stride
        return np.ascontiguousarray(a[::s, ::s]) if s > 1 else a

    def _static_setup(self) -> None:
        rr = self._rr
        # World axes: the path builders put z up (spatia_py.geometry.look_at's default `up`).
        self._log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
        self._log("world/memory/by_origin", rr.AnnotationContext(
            [rr.AnnotationInfo(id=i, label=name, color=c) for i, name, c in _ORIGIN_CLASSES]), static=True)
        # Applies to every segmentation image below `frames` (slam and ground-truth masks).
        self._log("frames", rr.AnnotationContext(
            [rr.AnnotationInfo(id=i, label=name, color=c) for i, name, c in _DYNAMIC_CLASSES]), static=True)
        for name, color in (("tracking_quality", (255, 200, 0)), ("tracked", (120, 120, 120))):
            self._log(f"metrics/slam/{name}", rr.SeriesLines(colors=[color], names=[name]), static=True)

    # ---- API ---------------------------------------------------------------------------------

    def log_setup(self, commanded_path: CameraPath, config: dict) -> None:
        """The planned commanded path (``world/paths/commanded``, static) and the config (``config``)."""
        rr = self._rr
        centres = commanded_path.centers
        if len(centres):
            extent = float(np.linalg.norm(centres.max(0) - centres.min(0)))
            # Frustums sized to the path so that they neither vanish nor hide the scene.
            self._frustum_m = float(np.clip(0.08 * extent, 0.05, 1.0)) if extent > 0 else 0.2
            self._log("world/paths/commanded", rr.LineStrips3D([centres], colors=[_COMMANDED_RGB],
                                                               radii=[rr.Radius.ui_points(1.5)]), static=True)
        import yaml

        try:
            text = yaml.safe_dump(config, sort_keys=False)
        except yaml.YAMLError:  # values YAML cannot represent: JSON with str() fallbacks instead
            text = json.dumps(config, indent=1, default=str)
        self._log("config", rr.TextDocument(f"```yaml\n{text}```", media_type=rr.MediaType.MARKDOWN), static=True)

    def log_round(self, rec: RoundRecord, memory: SpatialMemory, previous_memory: SpatialMemory | None,
                  metrics: dict | None = None) -> None:
        """Everything one round produced.

        Args:
            rec: the round (frames, conditioning, SLAM result, ground truth, timings).
            memory: the memory after this round (logged once, at the round's last frame).
            previous_memory: the memory before this round, for ``world/memory/added|removed``;
                ``None`` when unknown (then the overlays are cleared for this round).
            metrics: optional per-round numbers, plotted under ``metrics/quality/<key>``.
        """
        if self._closed:
            raise RerunLogError("log_round after close()")
        n = rec.n_frames
        if n == 0:
            return
        if rec.slam.T_world_cam.shape[0] != n or len(rec.cameras) != n:
            raise RerunLogError(f"round {rec.round_index}: {n} frames but {len(rec.cameras)} cameras and "
                                f"{rec.slam.T_world_cam.shape[0]} estimated poses")
        self._log_inputs(rec)
        for i in range(n):
            self._log_frame(rec, i)
        self._log_memory(rec, memory, previous_memory)
        self._log_round_scalars(rec, memory, metrics)

    def log_final(self, metrics: dict) -> None:
        """The run's ``metrics.json`` as a ``summary`` text table (static) and its numeric values as
        ``metrics/final/<key>`` scalars at the last logged frame/round."""
        rr = self._rr
        if self._closed:
            raise RerunLogError("log_final after close()")
        rows = ["| metric | value |", "|---|---|"]
        for k, v in metrics.items():
            if isinstance(v, float):
                v = f"{v:.4g}"
            elif isinstance(v, (list, dict)):
                v = json.dumps(v, default=str)
                v = v if len(v) <= 120 else v[:117] + "..."
            rows.append(f"| {k} | {v} |")
        self._log("summary", rr.TextDocument("\n".join(rows), media_type=rr.MediaType.MARKDOWN), static=True)
        self._stamp(*self._last_stamp)
        for key, value in _flatten_numbers(metrics).items():
            self._log(f"metrics/final/{_safe_name(key)}", rr.Scalars(value))

    def close(self) -> None:
        """Flush and finish the recording (writes the file footer). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.connect_url is None:
            self.rec.flush()
        else:
            try:  # a viewer that went away must not hang the run; the file sink is flushed regardless
                self.rec.flush(timeout_sec=60.0)
            except RuntimeError as e:
                log.warning("Rerun: could not deliver everything to the viewer at %s (%s)%s", self.connect_url, e,
                            f"; the recording file {self.save_path} is complete" if self.save_path else "")
        self.rec.disconnect()

    # ---- one round ---------------------------------------------------------------------------

    def _log_inputs(self, rec: RoundRecord) -> None:
        """Reference frames retrieved for the round, at its first frame."""
        rr = self._rr
        self._stamp(rec.frame_offset, rec.round_index)
        self._log("frames/references", rr.Clear(recursive=True))
        refs = [] if rec.conditioning is None else rec.conditioning.reference_frames
        if not refs:
            self._log("world/references", rr.Clear(recursive=False))
            return
        labels = [f"#{r.frame_index} ({r.overlap:.0%})" for r in refs]
        images = [r.image for r in refs if r.image is not None and r.image.size]
        if images:
            self._log("frames/references/images", self._jpeg(_mosaic(images, 2)))
        self._log("world/references", rr.Points3D(np.stack([r.camera.center for r in refs]), labels=labels,
                                                  colors=[(255, 255, 255)], radii=[rr.Radius.ui_points(6.0)],
                                                  show_labels=True))
        table = "\n".join(["| slot | frame | overlap |", "|---|---|---|"] +
                          [f"| {k} | {r.frame_index} | {r.overlap:.3f} |" for k, r in enumerate(refs)])
        self._log("frames/references/info", rr.TextDocument(table, media_type=rr.MediaType.MARKDOWN))

    def _log_camera(self, path: str, T_world_cam: np.ndarray, cam, plane_distance: float, color, image=None) -> None:
        """A camera frustum at ``path``. Poses are ``T_world_cam`` (camera-to-world), hence
        ParentFromChild (world <- camera); cameras are OpenCV: x right, y down, z forward (RDF)."""
        rr = self._rr
        T = np.asarray(T_world_cam, dtype=np.float64)
        self._log(path, rr.Transform3D(translation=T[:3, 3], mat3x3=T[:3, :3],
                                       relation=rr.TransformRelation.ParentFromChild))
        pinhole = rr.Pinhole(image_from_camera=cam.K, width=cam.width, height=cam.height,
                             camera_xyz=rr.ViewCoordinates.RDF, image_plane_distance=plane_distance, color=color)
        if image is None:
            self._log(f"{path}/image", pinhole)
        else:
            self._log(f"{path}/image", pinhole, image)

    def _log_frame(self, rec: RoundRecord, i: int) -> None:
        rr = self._rr
        g = rec.frame_offset + i
        self._stamp(g, rec.round_index)
        cam = rec.cameras[i]
        T_est = np.asarray(rec.slam.T_world_cam[i], dtype=np.float64)

        # The estimated camera, with its frame, as a frustum.
        jpeg = self._jpeg(rec.frames[i])
        self._log_camera("world/camera", T_est, cam, self._frustum_m, _ESTIMATED_RGB, jpeg)
        self._log("frames/generated", jpeg)
        # The commanded camera (what the generator was asked for), frustum only.
        self._log_camera("world/commanded_camera", cam.T_world_cam, cam, 0.6 * self._frustum_m, _COMMANDED_RGB)

        self._est_centres.append(T_est[:3, 3].copy())
        self._log("world/paths/estimated", rr.LineStrips3D([np.stack(self._est_centres)], colors=[_ESTIMATED_RGB],
                                                           radii=[rr.Radius.ui_points(1.5)]))
        if i in rec.slam.keyframes:
            self._keyframe_centres.append(T_est[:3, 3].copy())
            self._log("world/keyframes", rr.Points3D(np.stack(self._keyframe_centres), colors=[_ESTIMATED_RGB],
                                                     radii=[rr.Radius.ui_points(4.0)]))

        c = rec.conditioning
        if c is not None:
            self._log("frames/conditioning/rgb", self._jpeg(c.rgb[i]))
            val = (np.clip(c.validity[i], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            self._log("frames/conditioning/validity", rr.Image(val, color_model="L"))
            self._log("frames/conditioning/depth", rr.DepthImage(self._small(c.depth[i]).astype(np.float16), meter=1.0))
        elif i == 0:
            self._log("frames/conditioning", rr.Clear(recursive=True))

        s = rec.slam
        depth = s.depth[i]
        if depth.any():
            self._log("frames/slam/depth", rr.DepthImage(self._small(depth).astype(np.float16), meter=1.0))
        else:  # non-keyframes have no dense depth: clear rather than show a stale keyframe's
            self._log("frames/slam/depth", rr.Clear(recursive=False))
        self._log("frames/slam/dynamic_mask", rr.SegmentationImage(s.dynamic_masks[i].astype(np.uint8)))
        self._log("metrics/slam/tracking_quality", rr.Scalars(float(s.tracking_quality[i])))
        self._log("metrics/slam/tracked", rr.Scalars(float(bool(s.tracked[i]))))

        gt = rec.ground_truth
        if gt is not None:
            T_gt = np.asarray(gt.T_world_cam[i], dtype=np.float64)
            self._log_camera("world/ground_truth/camera", T_gt, cam, 0.8 * self._frustum_m, _GROUND_TRUTH_RGB)
            self._gt_centres.append(T_gt[:3, 3].copy())
            self._log("world/ground_truth/path", rr.LineStrips3D([np.stack(self._gt_centres)],
                                                                 colors=[_GROUND_TRUTH_RGB],
                                                                 radii=[rr.Radius.ui_points(1.5)]))
            if gt.actor_positions.size:
                self._log("world/ground_truth/actors", rr.Points3D(gt.actor_positions[i], radii=gt.actor_radii,
                                                                   colors=[(255, 60, 60)]))
            self._log("frames/ground_truth/dynamic_mask",
                      rr.SegmentationImage(gt.dynamic_masks[i].astype(np.uint8)))

    def _log_memory(self, rec: RoundRecord, memory: SpatialMemory, previous: SpatialMemory | None) -> None:
        """The memory after the round, its colourings and the round's diff, at the round's last frame."""
        rr = self._rr
        self._stamp(rec.frame_offset + rec.n_frames - 1, rec.round_index)
        radius = 0.6 * float(memory.voxel_size)
        # Copies: Rerun may hold on to the numpy buffers until its batcher flushes, and the caller
        # keeps fusing into the memory's arrays (in place) after we return.
        self._log("world/memory/points", rr.Points3D(memory.xyz.copy(), colors=memory.rgb.copy(), radii=[radius]))
        sub = _subsample(len(memory), self.max_overlay_points)
        xyz = memory.xyz[sub] if isinstance(sub, np.ndarray) else memory.xyz.copy()  # never a view (see above)
        conf = np.log10(1.0 + memory.confidence[sub]) / np.float32(_CONFIDENCE_LOG10_MAX)
        self._log("world/memory/by_confidence", rr.Points3D(xyz, colors=_colormap(conf), radii=[radius]))
        self._log("world/memory/by_round", rr.Points3D(
            xyz, colors=_ROUND_PALETTE[memory.first_round[sub] % len(_ROUND_PALETTE)], radii=[radius]))
        self._log("world/memory/by_origin", rr.Points3D(xyz, class_ids=memory.origin[sub].astype(np.uint16),
                                                        radii=[radius]))
        if previous is None:
            self._log("world/memory/added", rr.Clear(recursive=False))
            self._log("world/memory/removed", rr.Clear(recursive=False))
            return
        added_keys, removed_keys = memory.diff_keys(previous)
        added = memory.xyz[np.searchsorted(memory.keys, added_keys)]
        removed = previous.xyz[np.searchsorted(previous.keys, removed_keys)]
        self._log("world/memory/added", rr.Points3D(added[_subsample(len(added), self.max_overlay_points)],
                                                    colors=[_ADDED_RGB], radii=[radius]))
        self._log("world/memory/removed", rr.Points3D(removed[_subsample(len(removed), self.max_overlay_points)],
                                                      colors=[_REMOVED_RGB], radii=[radius]))
        self._log("metrics/memory/added", rr.Scalars(float(len(added_keys))))
        self._log("metrics/memory/removed", rr.Scalars(float(len(removed_keys))))

    def _log_round_scalars(self, rec: RoundRecord, memory: SpatialMemory, metrics: dict | None) -> None:
        rr = self._rr
        self._stamp(rec.frame_offset + rec.n_frames - 1, rec.round_index)
        self._log("metrics/memory/points", rr.Scalars(float(len(memory))))
        for stage, seconds in rec.timings_s.items():
            self._log(f"metrics/timings/{_safe_name(stage)}", rr.Scalars(float(seconds)))
        for stage, seconds in rec.slam.timings_s.items():
            self._log(f"metrics/slam_stages/{_safe_name(stage)}", rr.Scalars(float(seconds)))
        if metrics:
            for key, value in _flatten_numbers(metrics).items():
                self._log(f"metrics/quality/{_safe_name(key)}", rr.Scalars(value))
        t = rec.timings_s
        timing = " ".join(f"{k} {v:.2f}s" for k, v in t.items())
        kf = len(rec.slam.keyframes)
        tracked = int(np.asarray(rec.slam.tracked).sum())
        self._log("log", rr.TextLog(
            f"round {rec.round_index}: frames {rec.frame_offset}-{rec.frame_offset + rec.n_frames - 1}, "
            f"memory {len(memory):,} pts, tracked {tracked}/{rec.n_frames}, {kf} keyframes, slam={rec.slam_mode}"
            + (f", {timing}" if timing else ""), level="INFO"))


# --------------------------------------------------------------------------------------------
# re-creating a recording from a run directory
# --------------------------------------------------------------------------------------------


class _FrameStore:
    """Frames of earlier rounds by global index (reference images), read lazily per round."""

    def __init__(self, rd: RunDir, ranges: list[tuple[int, int, int]]):
        """``ranges``: ``(round, first global frame, end)`` per round."""
        self.rd = rd
        self.ranges = ranges
        self._cache: dict[int, np.ndarray] = {}

    def frame(self, index: int) -> np.ndarray | None:
        for i, lo, hi in self.ranges:
            if lo <= index < hi:
                if i not in self._cache:
                    if len(self._cache) > 4:
                        self._cache.pop(next(iter(self._cache)))
                    self._cache[i] = self.rd.read_frames(i)
                return self._cache[i][index - lo]
        return None


def _is_stale(rrd: Path, rd: RunDir) -> bool:
    """Whether a run's ``run.rrd`` predates its newest round, memory version or metrics."""
    t = rrd.stat().st_mtime
    newest = [p.stat().st_mtime for p in (rd.metrics_path,) if p.is_file()]
    newest += [p.stat().st_mtime for p in rd.memory_dir.glob("v*.npz")]
    newest += [p.stat().st_mtime for p in rd.rounds_dir.glob("r*/round.json")]
    return bool(newest) and max(newest) > t


def record_run_dir(run_dir: str | Path, out_rrd: str | Path | None = None, *, progress: bool = True) -> Path:
    """Re-create a run's Rerun recording from its run directory alone.

    Reads ``config.yaml``, every committed round (:meth:`RunDir.read_round`), the memory versions
    ``memory/vNNN.npz`` and ``metrics.json``, and logs them exactly as the live logger does. The
    commanded path is the one of the committed rounds. Reference images come from the rounds'
    ``frames.npz`` (by the frame indices in ``round.json``).

    Args:
        run_dir: the run directory.
        out_rrd: the recording to write (default ``RUN/run.rrd``); written to a temporary file
            and renamed, so an existing recording is replaced only by a complete one.
        progress: show a progress bar over rounds.

    Returns:
        The path of the written recording.
    """
    from spatia_py.memory import SpatialMemory

    rd = RunDir(run_dir)
    if not rd.root.is_dir():
        raise RunDirError(f"run directory not found: {rd.root}")
    rounds = rd.completed_rounds()
    if not rounds:
        raise RunDirError(f"{rd.root} has no committed round (expected rounds/r000/round.json and "
                          "memory/v000.npz); is it a run directory written by `spatia run`?")
    out = Path(out_rrd) if out_rrd is not None else rd.root / "run.rrd"
    if out.suffix != ".rrd":
        raise RerunLogError(f"the recording must be an .rrd file, got {out}")
    config = rd.read_config_dict() if rd.config_path.is_file() else {}
    fps = 24.0
    if rd.cameras_path.is_file():
        with rd.reading(rd.cameras_path):
            fps = float(rd.read_json(rd.cameras_path).get("fps", fps))
    metas = [rd.read_round_meta(i) for i in rounds]
    from spatia_py.geometry import Camera

    cams, ranges = [], []
    for i, m in zip(rounds, metas, strict=True):
        with rd.reading(rd.round_dir(i) / "round.json"):
            cams += [Camera.from_dict(c, f"{rd.round_dir(i)}/round.json") for c in m["cameras"]]
            ranges.append((i, int(m["frame_offset"]), int(m["frame_offset"]) + int(m["n_frames"])))
    frames = _FrameStore(rd, ranges)
    # Global frame index -> SLAM T_world_cam of the rounds read so far: a round's reference frames
    # were retrieved before it was generated, so they all come from earlier rounds.
    estimated: dict[int, np.ndarray] = {}

    tmp = out.with_name(f".{out.name}.tmp.rrd")
    tmp.unlink(missing_ok=True)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(rounds), unit="round", desc="rerun", dynamic_ncols=True)
    try:
        with RerunLogger(save_path=tmp, recording_name=rd.root.resolve().name) as logger:
            logger.log_setup(CameraPath(cams, fps), config)
            previous = None
            for i, meta in zip(rounds, metas, strict=True):
                rec = rd.read_round(i)
                if rec.conditioning is not None:
                    refs = []
                    for r in meta.get("reference_frames", []):
                        k = int(r["frame_index"])
                        if k in estimated:
                            est = cams[k].with_pose(estimated[k])
                            img = frames.frame(k)
                            refs.append(ReferenceFrame(img if img is not None else np.zeros((0, 0, 3), np.uint8),
                                                       est, k, float(r["overlap"])))
                    rec.conditioning.reference_frames = refs
                estimated.update({rec.frame_offset + k: T for k, T in enumerate(rec.slam.T_world_cam)})
                memory = rd.load_memory(i)
                # Round 0 starts from an empty memory: everything it holds was added by round 0.
                before = previous if previous is not None else SpatialMemory(memory.voxel_size) if i == 0 else None
                logger.log_round(rec, memory, before, None)
                previous = memory
                if bar is not None:
                    bar.update(1)
            if rd.metrics_path.is_file():
                logger.log_final(rd.read_json(rd.metrics_path))
        os.replace(tmp, out)
    finally:
        if bar is not None:
            bar.close()
        tmp.unlink(missing_ok=True)
    return out


# --------------------------------------------------------------------------------------------
# spatia view
# --------------------------------------------------------------------------------------------


def _has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def view(path: str | Path, *, launch: bool = True) -> int:
    """``spatia view RUN_DIR | FILE.rrd``: open a recording in the Rerun viewer.

    For a run directory, ``RUN/run.rrd`` is (re-)created with :func:`record_run_dir` when it is
    missing or older than the run's newest round, memory version or metrics. Without a display
    (or with ``launch=False``), prints where the recording is and how to open it, and returns 0.

    Returns:
        The process exit code: 0 on success, 2 for a path that is neither a run directory nor an
        ``.rrd`` file, else the viewer's exit code.
    """
    p = Path(path)
    if p.is_dir():
        rd = RunDir(p)
        if not rd.completed_rounds():
            print(f"spatia view: {p} is not a run directory with committed rounds (no rounds/r000/round.json "
                  "with memory/v000.npz); pass a run directory written by `spatia run` or an .rrd file",
                  file=sys.stderr)
            return 2
        rrd = p / "run.rrd"
        if not rrd.is_file() or _is_stale(rrd, rd):
            try:
                record_run_dir(p, rrd)
            except (RunDirError, RerunLogError, OSError, ValueError) as e:
                print(f"spatia view: could not create a recording for {p}: {e}", file=sys.stderr)
                return 2
            print(f"recorded {rrd} ({rrd.stat().st_size / 1e6:.1f} MB)")
    elif p.is_file() and p.suffix == ".rrd":
        rrd = p
    else:
        what = "does not exist" if not p.exists() else "is neither a run directory nor an .rrd file"
        print(f"spatia view: {p} {what}; usage: spatia view RUN_DIR | FILE.rrd", file=sys.stderr)
        return 2
    if not launch or not _has_display():
        print(f"{'No display available. ' if launch else ''}The recording is {rrd.resolve()}\n"
              f"Open it on a machine with a display with `rerun {rrd}` (pip install rerun-sdk=={_rr().__version__}), "
              f"or serve it to a browser with `rerun {rrd} --web-viewer` (then open http://localhost:9090).")
        return 0
    # The viewer of the installed rerun-sdk (same version as the recording's writer).
    return subprocess.call([sys.executable, "-m", "rerun", str(rrd)])
