"""The run directory: the unit users inspect, edit, resume and export (DESIGN.md "Run directory").

```
RUN/
  config.yaml                 resolved config
  cameras.json                per frame: commanded T_world_cam, K, width, height, fps +
                              T_world_cam_estimated, round, tracked, keyframe, tracking_quality
  rounds/r000/                one committed round (written as rounds/.r000.tmp, then renamed)
    round.json                round index, frame range, timings, memory stats, references, slam mode
    clip.mp4                  generated frames (H.264, for viewing)
    conditioning_rgb.mp4      rendered memory the generator was given
    conditioning_validity.mp4
    frames.npz                frames uint8 (N,H,W,3), lossless (metrics and resume read these)
    conditioning.npz          rgb uint8 (N,H,W,3), depth float16 (N,H,W), validity float16 (N,H,W)
    slam.json                 estimated T_world_cam, tracked, tracking_quality, keyframes, timings, info
    slam.npz                  depth float16 (N,H,W) (0 = unknown), depth_confidence float16
    masks.npz                 dynamic_masks bool (N,H,W)
    visibility.npz            reference index of the round's tracked frames (memory cells each sees)
    ground_truth.npz          (procedural world only) T_world_cam, depth, static_depth, dynamic_masks,
                              actor_positions, actor_radii, conditioning_status (runs from 2026-11-21
                              on) — evaluation only
  memory/v000.npz …           memory after each round (SpatialMemory.save)
  memory/edits.jsonl          append-only edit log (empty until edits are made)
  walkthrough.mp4             all generated frames
  memory.ply                  final memory
  metrics.json                see spatia_py.pipeline.compute_metrics
  run.rrd                     Rerun recording (when enabled)
```
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from spatia_py.geometry import Camera
from spatia_py.types import ConditioningMaps, GroundTruth, SlamResult

__all__ = ["RunDirError", "RunDir", "RoundRecord", "atomic_write_text", "atomic_write_json"]


class RunDirError(RuntimeError):
    """A run directory is missing, unwritable or inconsistent."""


# What reading a truncated, foreign or hand-edited file raises (json, numpy's .npz, zip and zlib).
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, EOFError, zipfile.BadZipFile,
                zlib.error)


def _check_lengths(n: int, **arrays: np.ndarray) -> None:
    """Raise ValueError unless every array holds one entry per frame of the round (``n``)."""
    for name, a in arrays.items():
        if a.ndim == 0 or len(a) != n:
            raise ValueError(f"'{name}' has {0 if a.ndim == 0 else len(a)} entries for a round of {n} frames")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _json_safe(o):
    """Replace non-finite floats (JSON has none) with ``None`` / ``"inf"``."""
    if isinstance(o, float):
        if o != o:
            return None
        if o in (float("inf"), float("-inf")):
            return "inf" if o > 0 else "-inf"
        return o
    if isinstance(o, dict):
        return {k: _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    if isinstance(o, np.ndarray):
        return _json_safe(o.tolist())
    if isinstance(o, np.floating):
        return _json_safe(float(o))
    return o


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(_json_safe(obj), indent=1, default=_json_default))


@dataclass
class RoundRecord:
    """Everything one round produced (in memory; :class:`RunDir` reads and writes it)."""

    round_index: int
    frame_offset: int
    cameras: list[Camera]
    """Commanded cameras of the segment."""
    frames: np.ndarray
    """``uint8 (N, H, W, 3)``."""
    conditioning: ConditioningMaps | None
    slam: SlamResult
    slam_mode: str
    ground_truth: GroundTruth | None = None
    timings_s: dict = field(default_factory=dict)
    memory_stats: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.frames)


class RunDir:
    """Paths and atomic reads/writes of a run directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # paths -----------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def cameras_path(self) -> Path:
        return self.root / "cameras.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    @property
    def memory_dir(self) -> Path:
        return self.root / "memory"

    @property
    def rounds_dir(self) -> Path:
        return self.root / "rounds"

    def round_dir(self, i: int) -> Path:
        return self.rounds_dir / f"r{i:03d}"

    def memory_version_path(self, i: int) -> Path:
        return self.memory_dir / f"v{i:03d}.npz"

    # setup -----------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the folders, failing early with a clear error when the location is unwritable."""
        try:
            self.rounds_dir.mkdir(parents=True, exist_ok=True)
            self.memory_dir.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise RunDirError(
                f"cannot write the run directory {self.root}: {e.strerror or e}. "
                "Choose an --out folder you can write to."
            ) from None
        edits = self.memory_dir / "edits.jsonl"
        if not edits.exists():
            edits.touch()

    def exists(self) -> bool:
        return self.config_path.is_file()

    def completed_rounds(self) -> list[int]:
        """Indices of committed rounds whose memory version also exists, in order, contiguous from 0."""
        done = []
        i = 0
        while (self.round_dir(i) / "round.json").is_file() and self.memory_version_path(i).is_file():
            done.append(i)
            i += 1
        return done

    def clean_incomplete(self) -> list[Path]:
        """Remove leftovers of an interrupted round (temp folders, rounds past the last complete one)."""
        removed = []
        done = set(self.completed_rounds())
        if self.rounds_dir.is_dir():
            for p in sorted(self.rounds_dir.iterdir()):
                if p.name.startswith(".") or (p.name.startswith("r") and p.name[1:].isdigit()
                                              and int(p.name[1:]) not in done):
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
        if self.memory_dir.is_dir():
            for p in sorted(self.memory_dir.glob("v*.npz")):
                stem = p.stem[1:]
                if stem.isdigit() and int(stem) not in done:
                    p.unlink()
                    removed.append(p)
            for p in self.memory_dir.glob(".*"):
                p.unlink(missing_ok=True)
                removed.append(p)
        return removed

    # rounds ----------------------------------------------------------------------------------
    def write_round(self, rec: RoundRecord, *, fps: float = 24.0, videos: bool = True,
                    visibility: dict | None = None) -> Path:
        """Write a round to ``rounds/.rNNN.tmp`` and rename it into place (the commit point).

        ``visibility``: the round's reference index as arrays (``ReferenceIndex.to_arrays``), saved
        as ``visibility.npz`` with the round."""
        final = self.round_dir(rec.round_index)
        tmp = self.rounds_dir / f".r{rec.round_index:03d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if visibility is not None:
            np.savez_compressed(tmp / "visibility.npz", **visibility)
        np.savez_compressed(tmp / "frames.npz", frames=rec.frames)
        if rec.conditioning is not None:
            c = rec.conditioning
            np.savez_compressed(tmp / "conditioning.npz", rgb=c.rgb, depth=c.depth.astype(np.float16),
                                validity=c.validity.astype(np.float16))
        s = rec.slam
        np.savez_compressed(tmp / "slam.npz", depth=s.depth.astype(np.float16),
                            depth_confidence=s.depth_confidence.astype(np.float16))
        np.savez_compressed(tmp / "masks.npz", dynamic_masks=s.dynamic_masks.astype(bool))
        slam_json = {
            "mode": rec.slam_mode,
            "T_world_cam_estimated": s.T_world_cam,
            "tracked": s.tracked,
            "tracking_quality": s.tracking_quality,
            "keyframes": list(map(int, s.keyframes)),
            "timings_s": s.timings_s,
            "info": s.info,
        }
        atomic_write_json(tmp / "slam.json", slam_json)
        if rec.ground_truth is not None:
            g = rec.ground_truth
            arrays = {f.name: getattr(g, f.name) for f in fields(g) if getattr(g, f.name) is not None}
            arrays["static_depth"] = g.static_or_depth
            np.savez_compressed(tmp / "ground_truth.npz", **arrays)
        if videos:
            from render.video import write_video

            write_video(tmp / "clip.mp4", rec.frames, fps)
            if rec.conditioning is not None:
                write_video(tmp / "conditioning_rgb.mp4", rec.conditioning.rgb, fps)
                val = (np.clip(rec.conditioning.validity, 0, 1) * 255).astype(np.uint8)
                write_video(tmp / "conditioning_validity.mp4", np.repeat(val[..., None], 3, -1), fps)
        refs = [] if rec.conditioning is None else [
            {"frame_index": r.frame_index, "overlap": r.overlap} for r in rec.conditioning.reference_frames]
        atomic_write_json(tmp / "round.json", {
            "round_index": rec.round_index,
            "frame_offset": rec.frame_offset,
            "n_frames": rec.n_frames,
            "cameras": [c.to_dict() for c in rec.cameras],
            "slam_mode": rec.slam_mode,
            "timings_s": rec.timings_s,
            "memory_stats": rec.memory_stats,
            "reference_frames": refs,
        })
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return final

    # reading back ------------------------------------------------------------------------------
    def recovery_hint(self, path: Path, *, missing: bool = False) -> str:
        """How to recover from an unreadable (or ``missing``) ``path`` of this run: the fix named in
        read errors."""
        path = Path(path)
        resume = f"'spatia run --out {self.root} --resume'"
        for digits, owner in ((path.parent.name[1:], self.round_dir), (path.stem[1:], self.memory_version_path)):
            if digits.isdigit() and owner(int(digits)) in (path, path.parent):
                regenerate = (f"{resume} generates round {int(digits)} and the rounds after it again (earlier "
                              "rounds are kept)")
                return regenerate if missing and owner == self.memory_version_path else (
                    f"delete {owner(int(digits))}; then {regenerate}")
        if path in (self.metrics_path, self.cameras_path):
            return f"{resume} writes it again"
        return "restore it from a copy, or start a new run"

    @contextlib.contextmanager
    def reading(self, path: Path):
        """Context manager: errors of reading ``path`` or the data read from it (missing file,
        truncated, malformed, a key or type that is not there) become a :class:`RunDirError` that
        names the file and the fix."""
        try:
            yield
        except FileNotFoundError:
            raise RunDirError(f"{path} is missing; {self.recovery_hint(path, missing=True)}") from None
        except _READ_ERRORS as e:
            raise RunDirError(f"{path} is damaged or unreadable ({type(e).__name__}: {e}); "
                              f"{self.recovery_hint(path)}") from None

    def read_json(self, path: Path):
        """A JSON file of this run; a missing or malformed file raises :class:`RunDirError`."""
        with self.reading(path):
            return json.loads(Path(path).read_text())

    def read_npz(self, path: Path) -> dict[str, np.ndarray]:
        """All arrays of an ``.npz`` file of this run, read eagerly (the file is closed on return);
        a missing, truncated or malformed file raises :class:`RunDirError`."""
        with self.reading(path), np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def read_config_dict(self) -> dict:
        """The raw mapping of ``config.yaml`` (not validated: ``pipeline.load_run_config`` does)."""
        import yaml

        with self.reading(self.config_path):
            try:
                data = yaml.safe_load(self.config_path.read_text())
            except yaml.YAMLError as e:
                raise ValueError(f"not valid YAML: {e}") from None
        return data or {}

    def read_frames(self, i: int) -> np.ndarray:
        """Round ``i``'s frames, ``uint8 (N, H, W, 3)``."""
        path = self.round_dir(i) / "frames.npz"
        with self.reading(path):
            return self.read_npz(path)["frames"]  # the key may be missing

    def memory_versions(self) -> list[int]:
        """Round indices of the saved memory versions (``memory/vNNN.npz``), in order."""
        return sorted(int(p.stem[1:]) for p in self.memory_dir.glob("v*.npz") if p.stem[1:].isdigit())

    def latest_memory_version(self) -> int | None:
        """The memory version to show by default: the last committed round's (a version past it
        belongs to an interrupted round), else the newest saved one; ``None`` without any."""
        done = self.completed_rounds()
        versions = self.memory_versions()
        return done[-1] if done else (versions[-1] if versions else None)

    def load_memory(self, i: int):
        """The memory after round ``i`` (``memory/vNNN.npz``), as a ``SpatialMemory``; a missing or
        unreadable version raises :class:`RunDirError` naming it and the fix."""
        from spatia_py.memory import MemoryFormatError, SpatialMemory

        path = self.memory_version_path(i)
        with self.reading(path):  # a missing file
            try:
                return SpatialMemory.load(path)
            except MemoryFormatError as e:
                raise RunDirError(f"{e}; {self.recovery_hint(path)}") from None

    def read_round(self, i: int, *, with_frames: bool = True) -> RoundRecord:
        """Load a committed round back (frames, conditioning, SLAM result, ground truth). A missing,
        truncated or malformed file raises :class:`RunDirError` naming it and the fix."""
        d = self.round_dir(i)
        if not (d / "round.json").is_file():
            raise RunDirError(f"round {i} of {self.root} is missing or incomplete ({d}/round.json not found)")
        with self.reading(d / "round.json"):
            meta = self.read_round_meta(i)
            cams = [Camera.from_dict(c, f"{d}/round.json camera {k}") for k, c in enumerate(meta["cameras"])]
            n = int(meta["n_frames"])
            index, offset, mode = int(meta["round_index"]), int(meta["frame_offset"]), str(meta["slam_mode"])
        frames = np.zeros((n, 0, 0, 3), np.uint8)
        if with_frames:
            with self.reading(d / "frames.npz"):
                frames = self.read_frames(i)
                _check_lengths(n, frames=frames)
        cond = None
        if (d / "conditioning.npz").is_file():
            with self.reading(d / "conditioning.npz"):
                z = self.read_npz(d / "conditioning.npz")
                cond = ConditioningMaps(z["rgb"], z["depth"].astype(np.float32), z["validity"].astype(np.float32))
        with self.reading(d / "slam.json"):
            sj = self.read_json(d / "slam.json")
            T, tracked = np.asarray(sj["T_world_cam_estimated"], np.float64), np.asarray(sj["tracked"], bool)
            quality, keyframes = np.asarray(sj["tracking_quality"], np.float32), list(sj["keyframes"])
            _check_lengths(n, T_world_cam_estimated=T, tracked=tracked, tracking_quality=quality)
        with self.reading(d / "slam.npz"):
            sz = self.read_npz(d / "slam.npz")
            depth, confidence = sz["depth"].astype(np.float32), sz["depth_confidence"].astype(np.float32)
            _check_lengths(n, depth=depth, depth_confidence=confidence)
        with self.reading(d / "masks.npz"):
            dynamic = self.read_npz(d / "masks.npz")["dynamic_masks"]
            _check_lengths(n, dynamic_masks=dynamic)
        slam = SlamResult(T_world_cam=T, tracked=tracked, tracking_quality=quality, keyframes=keyframes, depth=depth,
                          depth_confidence=confidence, dynamic_masks=dynamic, timings_s=sj.get("timings_s", {}),
                          info=sj.get("info", {}))
        gt = None
        if (d / "ground_truth.npz").is_file():
            with self.reading(d / "ground_truth.npz"):
                gt = GroundTruth(**self.read_npz(d / "ground_truth.npz"))  # arrays a run saved before a field existed stay None
        return RoundRecord(round_index=index, frame_offset=offset, cameras=cams, frames=frames, conditioning=cond,
                           slam=slam, slam_mode=mode, ground_truth=gt, timings_s=meta.get("timings_s", {}),
                           memory_stats=meta.get("memory_stats", {}))

    def read_visibility(self, i: int) -> dict | None:
        """Round ``i``'s reference index arrays (``visibility.npz``), or ``None`` if it has none."""
        path = self.round_dir(i) / "visibility.npz"
        if not path.is_file():
            return None
        return self.read_npz(path)

    def read_round_meta(self, i: int) -> dict:
        """Round ``i``'s ``round.json``."""
        return self.read_json(self.round_dir(i) / "round.json")
