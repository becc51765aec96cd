"""The round loop: render memory → generate a clip → SLAM → fuse the static part → checkpoint.

Read :meth:`RoundLoop.run_round` top to bottom to see one round. Everything a round produces is
committed atomically to the run directory (see :mod:`spatia_py.rundir`), so an interrupted run
resumes from its last complete round.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from spatia_py.conditioning import MemoryRenderer, ReferenceIndex, render_conditioning, visibility_cells
from spatia_py.config import ConfigError, RunConfig, config_from_dict, config_to_dict, validate_config
from spatia_py.geometry import Camera, CameraPath, GeometryError, build_path
from spatia_py.memory import ORIGIN_OBSERVED, SpatialMemory
from spatia_py.parallel import Workers
from spatia_py.rundir import RoundRecord, RunDir, atomic_write_json, atomic_write_text
from spatia_py.types import Clip, ConditioningMaps, GenerationRequest, SlamResult

__all__ = ["PipelineError", "RoundLoop", "build_commanded_path", "make_generator", "oracle_slam",
           "compute_metrics", "keyframe_depth_errors", "run", "summary_line", "load_run_config"]

log = logging.getLogger("spatia")


class PipelineError(RuntimeError):
    """The loop cannot proceed (bad setup, inconsistent run directory); the message says why."""


def build_commanded_path(cfg: RunConfig) -> CameraPath:
    """The whole commanded camera path of a run (``path.laps`` repetitions of one lap)."""
    p = cfg.path
    try:
        lap = build_path(p.kind, p.n_frames, p.width, p.height, p.fov_x_deg, p.fps, dict(p.params))
    except GeometryError as e:
        raise ConfigError(f"path: {e}") from None
    sizes = {(c.width, c.height) for c in lap.cameras}
    if len(sizes) != 1:
        raise ConfigError(f"path: all cameras must share one image size, got {sorted(sizes)}")
    return CameraPath(lap.cameras * p.laps, lap.fps)


def _sync_render_settings(cfg: RunConfig) -> RunConfig:
    """SLAM's tracking template must be rendered exactly like the conditioning (measured: a 0.75 vs
    0.5 splat-size mismatch biases tracking by 25 mm / 0.45 deg), so ``render.*`` decides both."""
    return dataclasses.replace(cfg, slam=dataclasses.replace(
        cfg.slam, render_radius_scale=cfg.render.radius_scale, render_max_radius_px=cfg.render.max_radius_px))


def load_run_config(rd: RunDir) -> RunConfig:
    """The resolved config saved in a run directory."""
    data = rd.read_config_dict()
    try:
        return config_from_dict(RunConfig, data, str(rd.config_path))
    except ConfigError as e:
        raise PipelineError(f"the config saved in {rd.config_path} is unreadable: {e}; "
                            f"{rd.recovery_hint(rd.config_path)}") from None


def segments(n_frames: int, per_round: int) -> list[tuple[int, int]]:
    """``[start, stop)`` frame ranges of the rounds; a 1-frame remainder joins the last round."""
    bounds = list(range(0, n_frames, per_round)) + [n_frames]
    segs = list(zip(bounds[:-1], bounds[1:], strict=True))
    if len(segs) > 1 and segs[-1][1] - segs[-1][0] < 2:
        segs[-2] = (segs[-2][0], n_frames)
        segs.pop()
    return segs


def make_generator(cfg: RunConfig):
    """The configured :class:`~spatia_py.types.VideoGenerator`."""
    if cfg.generator.backend == "procedural":
        from spatia_py.generators.procedural import ProceduralGenerator

        return ProceduralGenerator(cfg.generator.procedural, seed=cfg.seed)
    raise ConfigError(f"unknown generator.backend {cfg.generator.backend!r}")


def oracle_slam(clip: Clip, keyframe_stride: int = 2) -> SlamResult:
    """The explicit upper bound ``slam: oracle``: poses, depth and dynamic masks from ground truth.

    Never the default; metrics and logs say ``slam: oracle`` whenever it is used.
    """
    gt = clip.ground_truth
    if gt is None:
        raise PipelineError("slam: oracle needs a generator that returns ground truth (the procedural world); "
                            "use slam.mode=visual for this backend")
    n = len(clip.frames)
    keyframes = sorted(set(range(0, n, keyframe_stride)) | {n - 1})
    static = gt.static_or_depth
    depth = np.zeros_like(gt.depth, dtype=np.float32)
    depth[keyframes] = np.where(gt.dynamic_masks[keyframes], 0.0, static[keyframes])
    return SlamResult(
        T_world_cam=gt.T_world_cam.copy(), tracked=np.ones(n, bool), tracking_quality=np.ones(n, np.float32),
        keyframes=keyframes, depth=depth, depth_confidence=(depth > 0).astype(np.float32),
        dynamic_masks=gt.dynamic_masks.copy(), timings_s={}, info={"mode": "oracle (ground truth)"},
    )


def _head(obj, n: int, *fields: str):
    """``obj`` (a dataclass) with the named per-frame fields cut to their first ``n`` frames
    (``None`` stays ``None``). Copies, so the dropped look-ahead frames are not kept alive."""
    return dataclasses.replace(
        obj, **{f: None if getattr(obj, f) is None else getattr(obj, f)[:n].copy() for f in fields})


def _commit(clip: Clip, n: int) -> Clip:
    """The first ``n`` frames of ``clip`` (look-ahead frames dropped), ground truth included."""
    gt = clip.ground_truth
    if gt is not None:
        gt = _head(gt, n, *(f.name for f in dataclasses.fields(gt) if f.name != "actor_radii"))  # all per frame
    return dataclasses.replace(_head(clip, n, "frames", "depth"), cameras=clip.cameras[:n], ground_truth=gt)


def _commit_slam(result: SlamResult, n: int) -> SlamResult:
    """SLAM's estimate for the first ``n`` frames; what it said about the look-ahead frames stays
    in ``info["lookahead"]`` (their keyframes were fused, see :meth:`RoundLoop.run_round`)."""
    failures = result.info.get("failures", {})
    info = {**result.info, "failures": {k: v for k, v in failures.items() if int(k) < n}}
    info["lookahead"] = {
        "frames": int(len(result.tracked) - n),
        "keyframes_fused": [int(k) for k in result.keyframes if k >= n],
        "failures": {k: v for k, v in failures.items() if int(k) >= n},
    }
    return dataclasses.replace(
        _head(result, n, "T_world_cam", "tracked", "tracking_quality", "depth", "depth_confidence", "dynamic_masks"),
        keyframes=[k for k in result.keyframes if k < n], info=info)


def _commit_conditioning(cond: ConditioningMaps | None, n: int) -> ConditioningMaps | None:
    """The conditioning maps of the first ``n`` frames (reference frames are per clip and stay)."""
    return None if cond is None else _head(cond, n, "rgb", "depth", "validity")


@dataclass
class _RoundTimer:
    timings: dict

    def __call__(self, name: str):
        timer = self

        class _T:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.timings[name] = timer.timings.get(name, 0.0) + time.perf_counter() - self.t0

        return _T()


class RoundLoop:
    """Drives the rounds of one run into a run directory.

    Args:
        cfg: the resolved run config.
        out: the run directory.
        resume: continue an interrupted run in ``out`` (its saved config is used).
        logger: optional Rerun logger (``spatia_py.rerun_log.RerunLogger``).
        progress: show a progress bar.
    """

    def __init__(self, cfg: RunConfig | None, out: str | Path, *, resume: bool = False, logger=None,
                 progress: bool = True):
        self.run_dir = RunDir(out)
        self.logger = logger
        self.progress = progress
        if cfg is not None:
            cfg = _sync_render_settings(cfg)
        if resume:
            cfg = self._config_for_resume(cfg)
        elif cfg is None:
            raise PipelineError("a config is needed to start a run (spatia run --config configs/demo.yaml)")
        else:
            self._check_fresh()
        validate_config(cfg)
        self.cfg = cfg
        self.path = build_commanded_path(cfg)
        self.segments = segments(len(self.path), cfg.frames_per_round)
        self.records: list[RoundRecord] = []
        self.estimated_cameras: dict[int, Camera] = {}
        """Global frame index -> camera at its SLAM-estimated pose."""
        self.frames_by_index: dict[int, np.ndarray] = {}
        self.memory = SpatialMemory(cfg.memory.voxel_size)
        self.reference_index = ReferenceIndex()
        self._generator = None
        self._slam = None
        self._writer: ThreadPoolExecutor | None = None
        self._render_workers = Workers(cfg.render.workers, "render_views")
        self._pending: Future | None = None
        """The checkpoint of the last round while it is written (see :meth:`wait_checkpoint`)."""
        self._saved_memory: SpatialMemory | None = None
        """The memory as the last checkpoint saves it (read-only: the writer and the logger read it)."""
        self._camera_list: list[dict] = []
        """``cameras.json`` entries of every round so far, extended by :meth:`_add_record`."""
        self._first_round: int | None = None
        """The first round :meth:`start` left to run (``None`` before it ran)."""
        self._setup_failed = False

    # setup -------------------------------------------------------------------------------------
    def _check_fresh(self) -> None:
        rd = self.run_dir
        if rd.exists() or rd.completed_rounds():
            raise PipelineError(
                f"{rd.root} already holds a run; pass --resume to continue it, or choose a new --out "
                "(nothing was overwritten)"
            )

    def _config_for_resume(self, cfg: RunConfig | None) -> RunConfig:
        rd = self.run_dir
        if not rd.exists():
            raise PipelineError(f"nothing to resume: {rd.config_path} not found (start the run without --resume)")
        saved = load_run_config(rd)
        if cfg is not None and config_to_dict(cfg) != config_to_dict(saved):
            raise PipelineError(
                f"--resume uses the config saved in {rd.config_path}; the given config/overrides differ from it. "
                "Resume without --config/overrides, or start a new run with a new --out."
            )
        return saved

    @property
    def generator(self):
        if self._generator is None:
            self._generator = make_generator(self.cfg)
        return self._generator

    @property
    def slam(self):
        if self._slam is None and self.cfg.slam.mode == "visual":
            from slam import VisualSlam

            self._slam = VisualSlam(self.cfg.slam, self.cfg.memory.voxel_size)
        return self._slam

    def _restore(self) -> int:
        """Load completed rounds of an interrupted run; returns the next round index."""
        rd = self.run_dir
        removed = rd.clean_incomplete()
        if removed:
            log.info("resume: removed leftovers of an interrupted round: %s", ", ".join(p.name for p in removed))
        done = rd.completed_rounds()
        for i in done:
            rec = rd.read_round(i)
            self._add_record(rec)
            vis = rd.read_visibility(i)
            if vis is not None:
                self.reference_index.add_arrays(vis, self.estimated_cameras)
        if done:
            self.memory = rd.load_memory(done[-1])
            if self.slam is not None:  # the state visual SLAM carries from the last clip to the next
                last = self.records[-1]
                self.slam.restore(last.frames, last.slam.T_world_cam, last.slam.tracked)
            log.info("resume: %d completed round(s) restored from %s", len(done), rd.root)
        return len(done)

    # helpers -----------------------------------------------------------------------------------
    def _add_record(self, rec: RoundRecord) -> None:
        """Keep a round and index its frames and estimated cameras for retrieval (O(frames of the round))."""
        self.records.append(rec)
        kf = set(rec.slam.keyframes)
        for k, cam in enumerate(rec.cameras):
            d = cam.to_dict()  # its cameras.json entry
            d["T_world_cam_estimated"] = rec.slam.T_world_cam[k].tolist()
            d["round"] = rec.round_index
            d["frame"] = rec.frame_offset + k
            d["tracked"] = bool(rec.slam.tracked[k])
            d["tracking_quality"] = float(rec.slam.tracking_quality[k])
            d["keyframe"] = k in kf
            self._camera_list.append(d)
            self.estimated_cameras[rec.frame_offset + k] = cam.with_pose(rec.slam.T_world_cam[k])
            self.frames_by_index[rec.frame_offset + k] = rec.frames[k]

    def _history(self) -> np.ndarray | None:
        k = self.cfg.generator.history_frames
        if k <= 0 or not self.records:
            return None
        frames = np.concatenate([r.frames for r in self.records[-2:]])
        return frames[-k:]

    def _lookahead(self, start: int, stop: int) -> int:
        """Look-ahead frames of segment ``[start, stop)``: up to ``cfg.lookahead_frames`` within the
        path, stopping at the first camera back at one of the segment's own centres (where the path
        turns back, look-ahead frames would see nothing new and only give the segment's last
        keyframes stereo sources on one side)."""
        centres = self.path[start:stop].centers
        steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
        near = 0.5 * float(np.median(steps)) if len(steps) else 0.0
        extra = 0
        for centre in self.path[stop:stop + self.cfg.lookahead_frames].centers:
            if near > 0 and np.linalg.norm(centres - centre, axis=1).min() < near:
                break
            extra += 1
        return extra

    # one round ---------------------------------------------------------------------------------
    def run_round(self, r: int, start: int, stop: int) -> RoundRecord:
        """One round: frames ``[start, stop)`` are committed; ``cfg.lookahead_frames`` more (within
        the path) are generated, tracked and fused from, then discarded (see ``RunConfig``). Rounds
        run in order: ``r`` must be the next one (``len(self.records)`` after :meth:`start`)."""
        self.start()
        if r != len(self.records):
            raise PipelineError(f"round {r} cannot run next: {len(self.records)} round(s) of this run are done, "
                                f"so the next one is round {len(self.records)}")
        cfg = self.cfg
        n = stop - start
        cams = self.path.cameras[start:stop + self._lookahead(start, stop)]
        timings: dict[str, float] = {}
        timer = _RoundTimer(timings)

        # 1. Render the memory along the segment (conditioning + reference frames).
        conditioning = None
        renderer = None
        with timer("render"):
            if cfg.memory.enabled and len(self.memory):
                renderer = MemoryRenderer.from_config(self.memory, cfg)
                history = set(range(max(0, start - cfg.generator.history_frames), start))
                conditioning = render_conditioning(
                    renderer, cams, reference_index=self.reference_index,
                    n_reference_frames=cfg.render.n_reference_frames, frames_by_index=self.frames_by_index.__getitem__,
                    estimated_cameras=self.estimated_cameras, exclude=history,
                    colour_frames=cfg.render.colour_frames, colour_depth_tol_rel=cfg.render.colour_depth_tol_rel,
                    colour_max_diff=cfg.render.colour_max_diff, map_fn=self._render_workers.map)

        # 2. Generate the clip.
        with timer("generate"):
            request = GenerationRequest(cameras=cams, conditioning=conditioning, history_frames=self._history(),
                                        prompt=cfg.prompt, seed=cfg.seed, round_index=r, frame_offset=start,
                                        fps=self.path.fps)
            clip = self.generator.generate(request)
        if clip.frames.shape[0] != len(cams):
            raise PipelineError(f"generator returned {clip.frames.shape[0]} frames for {len(cams)} cameras")

        # 3. SLAM: poses, depth and dynamic masks from the pixels (or the explicit oracle). The last
        # round's checkpoint, written during rendering and generation, must not compete with its threads.
        self.wait_checkpoint()
        with timer("slam"):
            if cfg.slam.mode == "oracle":
                result = oracle_slam(clip)
            else:
                depth = None
                if cfg.slam.depth_source == "generator":
                    if clip.depth is None:
                        raise PipelineError("slam.depth_source=generator, but the generator returned no depth; "
                                            "use slam.depth_source=pixels")
                    depth = clip.depth
                templates = None
                if conditioning is not None and cfg.slam.track_conditioning:
                    templates = (conditioning.rgb, conditioning.depth)
                result = self.slam.process(clip.frames, cams, self.memory, r, depth=depth, templates=templates,
                                           commit=n)
        # 4. Fuse the static part into the memory (the same fusion for visual and oracle SLAM).
        previous = None
        if self.logger is not None:  # the memory before this round's fusion: the last checkpoint's copy
            previous = self._saved_memory if self._saved_memory is not None else self.memory.copy()
        with timer("fuse"):
            from slam.fusion import fuse_clip

            fuse_stats = fuse_clip(self.memory, clip.frames, result, cams, r, cfg.slam)
        if len(cams) > n:  # look-ahead frames have served SLAM and fusion; only the segment is kept
            clip, result, conditioning = _commit(clip, n), _commit_slam(result, n), _commit_conditioning(conditioning, n)
            cams = cams[:n]
        n_untracked = int((~result.tracked).sum())
        if n_untracked:
            log.warning("round %d: %d of %d frames could not be tracked and are not fused (%s)", r, n_untracked,
                        len(cams), result.info.get("failures", "see slam.json"))

        # Index the tracked frames of this round by the memory cells they see (reference retrieval
        # later) and, for colour transfer, by the depth they saw and their static pixels.
        with timer("render"):
            after = MemoryRenderer(self.memory, radius_scale=cfg.render.radius_scale,
                                   max_radius_px=cfg.render.max_radius_px)
            def seen_by(k: int) -> tuple[Camera, np.ndarray, np.ndarray]:
                cam = cams[k].with_pose(result.T_world_cam[k])
                seen = after.render(cam, colours=False)
                return cam, visibility_cells(self.memory, seen["point_ids"]), seen["depth"]

            tracked = np.flatnonzero(result.tracked)
            vis_index = ReferenceIndex()
            for k, (cam, keys, depth) in zip(tracked, self._render_workers.map(seen_by, tracked), strict=True):
                vis_index.add(start + int(k), cam, keys, depth=depth, usable=~result.dynamic_masks[k])
            self.reference_index.entries.extend(vis_index.entries)

        stats = {"points": len(self.memory), **{k: int(v) for k, v in fuse_stats.items()}}
        rec = RoundRecord(round_index=r, frame_offset=start, cameras=cams, frames=clip.frames,
                          conditioning=conditioning, slam=result, slam_mode=cfg.slam.mode,
                          ground_truth=clip.ground_truth if cfg.eval.ground_truth_metrics else None,
                          timings_s=timings, memory_stats=stats)

        # 5. Checkpoint, written on a background thread while the next round renders and generates
        # (compression and video encoding were a fifth of a run's wall time): the memory version
        # first, then the round folder rename commits the round, then cameras.json. At most one
        # round is in flight, with its own copy of the memory.
        # (The wait before SLAM emptied the writer.)
        self._add_record(rec)
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._saved_memory = self.memory.copy()
        self._pending = self._writer.submit(self._checkpoint, rec, self._saved_memory, vis_index,
                                            list(self._camera_list))
        if self.logger is not None:
            self.logger.log_round(rec, self.memory, previous, None)
        return rec

    def _checkpoint(self, rec: RoundRecord, memory: SpatialMemory, visibility: ReferenceIndex,
                    cameras: list[dict]) -> None:
        memory.save(self.run_dir.memory_version_path(rec.round_index))
        self.run_dir.write_round(rec, fps=self.path.fps, visibility=visibility.to_arrays())
        atomic_write_json(self.run_dir.cameras_path, self._cameras_json(cameras))

    def _cameras_json(self, cameras: list[dict] | None = None) -> dict:
        """``cameras.json``: ``cameras`` (default: every round so far), with the fps and SLAM mode."""
        return {"fps": self.path.fps, "slam": self.cfg.slam.mode,
                "cameras": self._camera_list if cameras is None else cameras}

    def wait_checkpoint(self) -> None:
        """Block until the last round's checkpoint is on disk; re-raises its error (e.g. a full disk)."""
        pending = self._pending
        if pending is None:
            return
        try:
            pending.result()
        finally:
            if pending.done():  # an interrupted wait (Ctrl-C) leaves it for close()
                self._pending = None

    # whole run ---------------------------------------------------------------------------------
    def start(self) -> int:
        """Set the run up once: create the run directory, restore the committed rounds of an
        interrupted run (``resume=True``), write ``config.yaml`` and log the setup (and restored
        rounds) to the logger (so set ``logger`` before). Returns the first round still to run.
        :meth:`run`, :meth:`finish` and the first :meth:`run_round` call it; later calls return the
        same index. After a failed setup (a damaged run directory) the loop refuses further calls:
        make a new one once the cause is fixed."""
        if self._first_round is not None:
            return self._first_round
        if self._setup_failed:
            raise PipelineError(f"the setup of the run in {self.run_dir.root} failed earlier (see that error); "
                                "make a new RoundLoop once it is fixed")
        try:
            rd = self.run_dir
            rd.prepare()
            if rd.exists():
                first = self._restore()
            else:
                first = 0
                atomic_write_text(rd.config_path, yaml.safe_dump(config_to_dict(self.cfg), sort_keys=False))
            if self.cfg.slam.mode == "oracle":
                log.warning("slam: oracle — poses, depth and masks are read from the generator's ground truth "
                            "(an upper bound, not a measurement)")
            if self.cfg.generator.backend == "procedural":
                log.info("generator: procedural stand-in world model (ray-cast scene, no weights)")
            if self.logger is not None:
                self.logger.log_setup(self.path, config_to_dict(self.cfg))
                previous = None
                for rec in self.records:  # restored rounds, each with its own memory version (the last is loaded)
                    mem = self.memory if rec is self.records[-1] else rd.load_memory(rec.round_index)
                    self.logger.log_round(rec, mem, previous, None)
                    previous = mem
        except BaseException:
            self._setup_failed = True  # a half-restored loop must not restore again
            raise
        self._first_round = first
        return first

    def run(self) -> dict:
        """Run (or resume) all rounds, then write walkthrough, final memory and metrics."""
        self.start()
        first = len(self.records)  # rounds run by hand before run() count too
        todo = self.segments[first:]
        bar = None
        if self.progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(self.segments), initial=first, unit="round", desc=f"{self.cfg.name}",
                       dynamic_ncols=True)
        try:
            for r, (start, stop) in enumerate(self.segments[first:], start=first):
                rec = self.run_round(r, start, stop)
                if bar is not None:
                    t = rec.timings_s
                    bar.set_postfix_str(f"mem {len(self.memory) / 1e6:.2f}M pts | render {t.get('render', 0):.1f}s "
                                        f"gen {t.get('generate', 0):.1f}s slam {t.get('slam', 0):.1f}s "
                                        f"fuse {t.get('fuse', 0):.1f}s")
                    bar.update(1)
        except BaseException:
            self.close(quiet=True)  # the rounds before the failed one stay committed
            raise
        finally:
            if bar is not None:
                bar.close()
        return self.finish()

    def close(self, quiet: bool = False) -> None:
        """Wait for the checkpoint in flight, then stop the checkpoint writer and the render and
        SLAM worker threads (a later round starts them again). :meth:`run` and :meth:`finish` call
        it; call it yourself when driving :meth:`run_round` without :meth:`finish`. ``quiet``: log
        a write error instead of raising it (another error is on its way)."""
        try:
            self.wait_checkpoint()
        except Exception:
            if not quiet:
                raise
            log.error("the last round's checkpoint could not be written either", exc_info=True)
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None
            try:
                self._render_workers.close()
            finally:
                if self._slam is not None:
                    self._slam.close()

    def finish(self) -> dict:
        """Write the walkthrough, the final memory and ``metrics.json`` once the rounds are done
        (:meth:`close` runs first)."""
        from render.video import write_video

        self.start()  # a loop made with resume=True and finished at once restores the rounds first
        self.close()
        rd = self.run_dir
        frames = np.concatenate([r.frames for r in self.records])
        write_video(rd.root / "walkthrough.mp4", frames, self.path.fps)
        self.memory.export_ply(rd.root / "memory.ply")
        memory_points = [int(r.memory_stats.get("points", 0)) for r in self.records]
        metrics = compute_metrics(self.records, self.memory, self.cfg, memory_points)
        atomic_write_json(rd.metrics_path, metrics)
        # The last checkpoint wrote it already; again here, so that --resume of a finished run
        # restores every file derived from the rounds.
        atomic_write_json(rd.cameras_path, self._cameras_json())
        if self.logger is not None:
            self.logger.log_final(metrics)
        return metrics


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def keyframe_depth_errors(records: list[RoundRecord]) -> dict | None:
    """SLAM's depth on its tracked keyframes against the generator's static depth (dynamic pixels
    excluded): :func:`spatia_py.metrics.depth_errors` over all ``records``, which must carry ground
    truth; None when no round has a tracked keyframe."""
    from spatia_py import metrics as M

    kf_est, kf_gt, kf_static = [], [], []
    for r in records:
        g = r.ground_truth
        kfs = [k for k in r.slam.keyframes if r.slam.tracked[k]]
        if not kfs:
            continue
        kf_est.append(r.slam.depth[kfs])
        kf_gt.append(g.static_or_depth[kfs])
        kf_static.append(~g.dynamic_masks[kfs])
    if not kf_est:
        return None
    return M.depth_errors(np.concatenate(kf_est), np.concatenate(kf_gt), np.concatenate(kf_static))


def compute_metrics(records: list[RoundRecord], memory: SpatialMemory, cfg: RunConfig,
                    memory_points: list[int]) -> dict:
    """The ``metrics.json`` of a run (keys are a contract, see DESIGN.md and the README)."""
    from spatia_py import metrics as M

    n_frames = int(sum(r.n_frames for r in records))
    stages = ("render", "generate", "slam", "fuse")
    timings = {s: [float(r.timings_s.get(s, 0.0)) for r in records] for s in stages}
    slam_stage: dict[str, float] = {}
    for r in records:
        for k, v in r.slam.timings_s.items():
            slam_stage[k] = slam_stage.get(k, 0.0) + float(v)
    tracked = np.concatenate([r.slam.tracked for r in records])
    out = {
        "slam": cfg.slam.mode,
        "memory": bool(cfg.memory.enabled),
        "generator": cfg.generator.backend + (" (procedural stand-in world model)"
                                              if cfg.generator.backend == "procedural" else ""),
        "frames": n_frames,
        "rounds": len(records),
        "memory_points_per_round": [int(p) for p in memory_points],
        "timings_s": timings,
        "slam_fuse_ms_per_frame": 1000.0 * (sum(timings["slam"]) + sum(timings["fuse"])) / max(n_frames, 1),
        "slam_stage_ms_per_frame": {k: 1000.0 * v / max(n_frames, 1) for k, v in slam_stage.items()},
        "tracked_fraction": float(tracked.mean()) if len(tracked) else float("nan"),
        "revisit_psnr_db": float("nan"),
        "revisit_ssim": float("nan"),
        "revisit_pairs": 0,
        "revisit_psnr_db_by_first_round": {},
        "revisit_error_split": {},
    }
    if cfg.path.laps > 1 and cfg.path.n_frames:
        lap_ends = []
        for r_i, rec in enumerate(records):
            if (rec.frame_offset + rec.n_frames) % cfg.path.n_frames == 0:
                lap_ends.append(memory_points[r_i])
        if len(lap_ends) >= 2 and lap_ends[0] > 0:
            out["memory_growth_after_first_lap"] = float(lap_ends[-1] / lap_ends[0] - 1.0)
            out["memory_points_per_lap"] = lap_ends

    gts = [r.ground_truth for r in records]
    if not all(g is not None for g in gts) or not records:
        return out
    frames = np.concatenate([r.frames for r in records])
    T_cmd = np.concatenate([np.stack([c.T_world_cam for c in r.cameras]) for r in records])
    K = np.stack([c.K for r in records for c in r.cameras])
    round_of = np.concatenate([np.full(r.n_frames, r.round_index) for r in records])
    T_gt = np.concatenate([g.T_world_cam for g in gts])
    T_est = np.concatenate([r.slam.T_world_cam for r in records])
    static_depth = np.concatenate([g.static_or_depth for g in gts])
    dyn_gt = np.concatenate([g.dynamic_masks for g in gts])
    dyn_est = np.concatenate([r.slam.dynamic_masks for r in records])

    pairs = M.find_revisit_pairs(T_cmd, round_of, cfg.eval.revisit_max_translation_m,
                                 cfg.eval.revisit_max_rotation_deg)
    status = None
    if all(g.conditioning_status is not None for g in gts):
        status = np.concatenate([g.conditioning_status for g in gts])
    rev = M.revisit_consistency(frames, pairs, K, T_gt, static_depth, dyn_gt, conditioning_status=status)
    out["revisit_psnr_db"] = rev["psnr_db"]
    out["revisit_ssim"] = rev["ssim"]
    out["revisit_pairs"] = rev["pairs"]
    out["revisit_psnr_db_by_first_round"] = M.revisit_psnr_by_first_round(rev["per_pair"], round_of)
    out["revisit_error_split"] = M.revisit_error_split(rev["per_pair"], round_of)

    path_len = float(np.linalg.norm(np.diff(T_gt[:, :3, 3], axis=0), axis=1).sum())
    ate = M.ate_rmse(T_est, T_gt, tracked)
    rot = M.rotation_errors_deg(T_est[tracked], T_gt[tracked])
    out.update({
        "ate_rmse_m": ate,
        "path_length_m": path_len,
        "ate_rmse_percent_of_path": 100.0 * ate / path_len if path_len > 0 else float("nan"),
        "rot_err_median_deg": float(np.median(rot)) if len(rot) else float("nan"),
        "rot_err_max_deg": float(np.max(rot)) if len(rot) else float("nan"),
        "commanded_ate_rmse_m": M.ate_rmse(T_cmd, T_gt),
    })
    de = keyframe_depth_errors(records)
    if de is not None:
        out["depth_absrel_median"] = de["absrel_median"]
        out["depth_coverage"] = de["coverage"]
    actors = np.concatenate([g.actor_positions for g in gts])
    radii = gts[0].actor_radii
    observed = memory.xyz[memory.origin == ORIGIN_OBSERVED]
    leak = M.dynamic_leak_fraction(observed, actors, radii, margin=0.0)
    out["dynamic_leak_fraction"] = leak["fraction"]
    out["dynamic_leak_points"] = leak["leaked"]
    out["dynamic_mask_iou"] = M.mask_iou(dyn_est, dyn_gt)
    return out


def run(cfg: RunConfig | None, out: str | Path, *, resume: bool = False, logger=None,
        progress: bool = True) -> dict:
    """Run the round loop into ``out`` and return its metrics (the Python API of ``spatia run``)."""
    return RoundLoop(cfg, out, resume=resume, logger=logger, progress=progress).run()


def summary_line(metrics: dict, out: Path, seconds: float) -> str:
    """The one-line summary printed at the end of ``spatia run``."""
    parts = [f"{metrics['rounds']} rounds, {metrics['frames']} frames in {seconds:.1f}s",
             f"memory {metrics['memory_points_per_round'][-1] if metrics['memory_points_per_round'] else 0:,} pts",
             f"slam={metrics['slam']}"]
    rp = metrics.get("revisit_psnr_db")
    if isinstance(rp, float) and math.isfinite(rp):
        parts.append(f"revisit PSNR {rp:.1f} dB")
    if "ate_rmse_m" in metrics:
        parts.append(f"ATE {100 * metrics['ate_rmse_m']:.2f} cm")
    return f"spatia: {' | '.join(parts)} → {out}"

