"""The benchmark scenarios: each a plain function ``scenario(ctx) -> dict`` (rows, curves, figures).

Every scenario that runs the round loop does so through a preset ``configs/bench-<name>.yaml``
(runnable as ``spatia run --config configs/bench-<name>.yaml``) with fixed seeds; ``--quick``
applies the overrides in :data:`QUICK_OVERRIDES` (small images, few rounds). Arms of a
scenario are the same preset with overrides (``memory.enabled=false``, ``slam.mode=oracle``).

- ``loop``: out and back to the start pose. Revisit PSNR/SSIM on static pixels with memory, with
  ``memory: off`` and with oracle SLAM; COLMAP against our tracking on the same frames; Open3D
  TSDF against our depth fusion on the same (ground-truth) depth maps.
- ``long``: >= 30 rounds over several laps. Memory size, per-round time and drift against round
  index; our incremental memory against rebuilding it from all history every round.
- ``dynamic``: several actors crossing the view. Dynamic leak and mask IoU, against oracle SLAM.
- ``scale``: synthetic memories of 1M, 4M, 16M points. Render, fusion and retrieval time, against
  Open3D's projection, re-downsampling and ``voxel_down_sample``.
"""

from __future__ import annotations

import gc
import json
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spatia_py.bench import peers
from spatia_py.bench.report import row
from spatia_py.bench.sysinfo import config_hash
from spatia_py.config import ConfigError, RunConfig, config_to_dict, load_config

__all__ = ["SCENARIOS", "QUICK_OVERRIDES", "PARAMS", "BenchContext", "ArmRun", "per_round_drift",
           "rooms_points", "scenario_loop", "scenario_long", "scenario_dynamic", "scenario_scale"]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

QUICK_OVERRIDES: dict[str, list[str]] = {
    # Small, but large enough for visual SLAM to initialise (SIFT on 128x80 finds too few matches).
    "loop": ["path.width=320", "path.height=200", "path.n_frames=16", "frames_per_round=8",
             "path.params.waypoints=[[-1.2, -0.9, 1.4], [0.0, -1.1, 1.45]]", "memory.voxel_size=0.03",
             "generator.procedural.n_actors=1"],
    "long": ["path.width=320", "path.height=200", "path.n_frames=32", "path.laps=2", "frames_per_round=8",
             "memory.voxel_size=0.03", "generator.procedural.n_actors=1"],
    "dynamic": ["path.width=320", "path.height=200", "path.n_frames=16", "frames_per_round=8",
                "path.params.degrees=60", "memory.voxel_size=0.03"],
    "scale": ["path.width=128", "path.height=80", "memory.voxel_size=0.05"],
}
"""Config overrides of ``--quick`` (CI smoke: small images, few rounds and frames)."""

PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "loop": {
        "full": {"colmap_exhaustive_max_images": 80, "colmap_sequential_overlap": 10},
        "quick": {"colmap_exhaustive_max_images": 40, "colmap_sequential_overlap": 10},
    },
    "long": {
        "full": {"rebuild_every": 1},
        "quick": {"rebuild_every": 1},
    },
    "dynamic": {"full": {}, "quick": {}},
    "scale": {
        # Memory sizes (points); voxel_down_sample inputs (raw points); views per timing pass;
        # timing passes; past frames in the reference index; rooms are 6 x 5 x 3 m.
        "full": {"points": [1_000_000, 4_000_000, 16_000_000], "voxel_points": [1_000_000, 4_000_000],
                 "views": 3, "repeats": 5, "index_entries": 32},
        "quick": {"points": [50_000, 200_000, 800_000], "voxel_points": [200_000],
                  "views": 2, "repeats": 3, "index_entries": 8},
    },
}
"""Benchmark parameters that are not part of a run config (sizes, repeats), full and quick."""


# --------------------------------------------------------------------------------------------
# context and running one arm
# --------------------------------------------------------------------------------------------


@dataclass
class ArmRun:
    """One run of the round loop inside a scenario."""

    name: str
    cfg: RunConfig
    out: Path
    loop: Any
    """The finished :class:`~spatia_py.pipeline.RoundLoop` (its ``records`` hold frames, SLAM, truth)."""
    metrics: dict
    wall_s: float
    round_wall_s: list[float]
    """Wall time of each round: its stages plus any wait for the previous round's checkpoint (a round's
    own checkpoint is written on a background thread during the next round's render and generate)."""


@dataclass
class BenchContext:
    """What a scenario needs: output folder, quick flag, a progress printer."""

    out: Path
    quick: bool = False
    stream: Any = field(default_factory=lambda: sys.stdout)
    t0: float = field(default_factory=time.perf_counter)
    configs: dict[str, dict] = field(default_factory=dict)
    """Filled by :meth:`config`: arm -> preset, overrides, sha256 of the resolved config."""

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"

    def log(self, scenario: str, msg: str) -> None:
        el = time.perf_counter() - self.t0
        print(f"[bench {int(el // 60):d}:{el % 60:04.1f}] {scenario}: {msg}", file=self.stream, flush=True)

    def params(self, scenario: str) -> dict:
        return dict(PARAMS[scenario][self.mode])

    def config(self, scenario: str, arm: str, *extra: str) -> RunConfig:
        """The resolved config of ``configs/bench-<scenario>.yaml`` (+ quick overrides + ``extra``)."""
        preset = CONFIG_DIR / f"bench-{scenario}.yaml"
        if not preset.is_file():
            raise ConfigError(f"benchmark preset {preset} not found (scenario {scenario!r} needs it)")
        overrides = (QUICK_OVERRIDES[scenario] if self.quick else []) + list(extra)
        cfg = load_config(preset, overrides)
        self.configs[arm] = {"preset": str(preset.relative_to(CONFIG_DIR.parent)), "overrides": overrides,
                             "sha256": config_hash(config_to_dict(cfg))}
        return cfg

    def run_arm(self, scenario: str, arm: str, cfg: RunConfig) -> ArmRun:
        """Run the round loop for one arm into ``out/runs/<scenario>/<arm>`` and time every round."""
        from spatia_py.pipeline import RoundLoop

        out = self.out / "runs" / scenario / arm
        loop = RoundLoop(cfg, out, progress=False)
        n_rounds = len(loop.segments)
        self.log(scenario, f"run '{arm}': {n_rounds} rounds x {cfg.frames_per_round} frames at "
                           f"{cfg.path.width}x{cfg.path.height}, slam={cfg.slam.mode}, "
                           f"memory={'on' if cfg.memory.enabled else 'off'}")
        round_wall: list[float] = []
        run_round = loop.run_round

        # Wall time of each whole round (stages plus any wait for the previous checkpoint), measured
        # around the loop's own method.
        def timed_round(r: int, start: int, stop: int):
            t = time.perf_counter()
            rec = run_round(r, start, stop)
            round_wall.append(time.perf_counter() - t)
            if n_rounds >= 10 and (r + 1) % max(n_rounds // 5, 1) == 0:
                self.log(scenario, f"  '{arm}' round {r + 1}/{n_rounds} ({len(loop.memory):,} memory points)")
            return rec

        loop.run_round = timed_round
        t = time.perf_counter()
        metrics = loop.run()
        wall = time.perf_counter() - t
        self.log(scenario, f"run '{arm}' done in {wall:.1f}s")
        return ArmRun(arm, cfg, out, loop, metrics, wall, round_wall)


def _f(x: Any) -> float:
    """A metric as float (NaN when missing or null)."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _median(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(statistics.median(xs)) if xs else float("nan")


def _div(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else float("nan")


def _curve(title: str, xlabel: str, ylabel: str, series: dict, **options: Any) -> dict:
    """A plot spec for :func:`spatia_py.bench.report.write_plots`."""
    return {"title": title, "xlabel": xlabel, "ylabel": ylabel, "series": series, **options}


def _series(x: list, y: list, scale: float = 1.0) -> dict:
    return {"x": list(x), "y": [None if v is None else scale * v for v in y]}


def _arm_figures(arm: ArmRun) -> dict:
    m = arm.metrics
    keys = ("revisit_psnr_db", "revisit_ssim", "revisit_pairs", "ate_rmse_m", "path_length_m", "rot_err_median_deg",
            "commanded_ate_rmse_m", "depth_absrel_median", "depth_coverage", "dynamic_leak_fraction",
            "dynamic_leak_points", "dynamic_mask_iou", "tracked_fraction", "frames", "rounds",
            "slam_fuse_ms_per_frame", "slam_stage_ms_per_frame", "memory_growth_after_first_lap")
    out = {k: m.get(k) for k in keys if k in m}
    out.update({"wall_s": arm.wall_s, "round_wall_s": arm.round_wall_s, "timings_s": m.get("timings_s"),
                "memory_points_per_round": m.get("memory_points_per_round"), "run_dir": str(arm.out),
                "config_sha256": config_hash(config_to_dict(arm.cfg))})
    return out


def per_round_drift(run_dir: Path) -> dict:
    """Per-round pose error from a run directory: ``cameras.json`` (estimated and commanded poses)
    against ``rounds/rNNN/ground_truth.npz`` (actual poses). Errors are RMSE of camera centres in
    metres over the round's tracked frames, without alignment (the estimate lives in the metric
    world frame of the commanded path).

    Returns:
        ``{"round": [...], "ate_m": [...], "commanded_ate_m": [...]}`` — ``commanded_ate_m`` is the
        error of simply trusting the commanded poses (the generator's control error).
    """
    run_dir = Path(run_dir)
    cams = json.loads((run_dir / "cameras.json").read_text())["cameras"]
    by_round: dict[int, list[dict]] = {}
    for c in cams:
        by_round.setdefault(int(c["round"]), []).append(c)
    out: dict[str, list] = {"round": [], "ate_m": [], "commanded_ate_m": []}
    for r in sorted(by_round):
        gt_file = run_dir / "rounds" / f"r{r:03d}" / "ground_truth.npz"
        if not gt_file.is_file():
            raise FileNotFoundError(f"{gt_file} not found: per-round drift needs ground truth "
                                    "(eval.ground_truth_metrics: true and the procedural generator)")
        entries = sorted(by_round[r], key=lambda c: c["frame"])
        gt = np.load(gt_file)["T_world_cam"][:, :3, 3]
        est = np.array([c["T_world_cam_estimated"] for c in entries])[:, :3, 3]
        cmd = np.array([c["T_world_cam"] for c in entries])[:, :3, 3]
        tracked = np.array([c.get("tracked", True) for c in entries], dtype=bool)
        d_est = np.linalg.norm(est - gt, axis=1)[tracked]
        d_cmd = np.linalg.norm(cmd - gt, axis=1)
        out["round"].append(r)
        out["ate_m"].append(float(np.sqrt(np.mean(d_est**2))) if len(d_est) else float("nan"))
        out["commanded_ate_m"].append(float(np.sqrt(np.mean(d_cmd**2))))
    return out


# --------------------------------------------------------------------------------------------
# loop
# --------------------------------------------------------------------------------------------


def _tsdf_views(arm: ArmRun) -> list:
    """The depth maps the oracle arm fused: keyframes' static ground-truth depth (actors removed)."""
    views = []
    for rec in arm.loop.records:
        for k in rec.slam.keyframes:
            if rec.slam.tracked[k] and (rec.slam.depth[k] > 0).any():
                cam = rec.cameras[k].with_pose(rec.slam.T_world_cam[k])
                views.append((rec.slam.depth[k], rec.frames[k], cam))
    return views


def scenario_loop(ctx: BenchContext) -> dict:
    name = "loop"
    p = ctx.params(name)
    arms = {"memory": (), "no_memory": ("memory.enabled=false",), "oracle": ("slam.mode=oracle",)}
    runs = {arm: ctx.run_arm(name, arm, ctx.config(name, arm, *ov)) for arm, ov in arms.items()}
    figures: dict[str, Any] = {"arms": {arm: _arm_figures(r) for arm, r in runs.items()}}
    mem, off, orc = (figures["arms"][a] for a in ("memory", "no_memory", "oracle"))
    rows = [
        row("revisit PSNR, static px", "dB", mem.get("revisit_psnr_db"), "memory: off", off.get("revisit_psnr_db"),
            "delta", f"{mem.get('revisit_pairs', 0)} revisit pairs"),
        row("revisit PSNR, static px", "dB", mem.get("revisit_psnr_db"), "oracle SLAM", orc.get("revisit_psnr_db"),
            "delta", "oracle = ground-truth poses/depth/masks"),
        row("revisit SSIM, static px", "", mem.get("revisit_ssim"), "memory: off", off.get("revisit_ssim"), "delta"),
        row("revisit SSIM, static px", "", mem.get("revisit_ssim"), "oracle SLAM", orc.get("revisit_ssim"), "delta"),
        row("ATE (metric, no alignment)", "cm", 100 * _f(mem.get("ate_rmse_m")), "commanded poses",
            100 * _f(mem.get("commanded_ate_rmse_m")), "ratio", "commanded = trusting the camera command"),
        row("run wall time", "s", mem["wall_s"], "memory: off", off["wall_s"], "ratio"),
    ]
    notes = ["COLMAP: pycolmap defaults (SIFT on CPU), intrinsics given and fixed, exhaustive matching up to "
             f"{p['colmap_exhaustive_max_images']} frames else sequential; largest model Sim(3)-aligned to truth.",
             "TSDF: Open3D VoxelBlockGrid at the memory's voxel size, 8^3 blocks, truncation 8 voxels, surface "
             "extracted at weight >= 1; ours: SpatialMemory.fuse_depth of the same maps and poses."]
    errors: list[str] = []

    # COLMAP on the frames of the memory arm against our tracking of the same frames.
    records = runs["memory"].loop.records
    frames = np.concatenate([r.frames for r in records])
    T_gt = np.concatenate([r.ground_truth.T_world_cam for r in records])
    T_est = np.concatenate([r.slam.T_world_cam for r in records])
    tracked = np.concatenate([r.slam.tracked for r in records])
    K = records[0].cameras[0].K
    ctx.log(name, f"peer: pycolmap incremental mapping on {len(frames)} frames")
    try:
        col = peers.colmap_peer(frames, K, T_gt, ctx.out / "peers" / "colmap",
                                exhaustive_max_images=p["colmap_exhaustive_max_images"],
                                sequential_overlap=p["colmap_sequential_overlap"], seed=runs["memory"].cfg.seed)
    except Exception as e:  # recorded in results.json and the table, and the exit code says so
        traceback.print_exc()
        col = {"error": f"{type(e).__name__}: {e}"}
    slam_s = float(sum(mem["timings_s"]["slam"]))
    # Like for like: both trajectories Sim(3)-aligned to the truth on the frames both registered.
    reg = np.asarray(col.get("registered_frames", []), dtype=np.int64)
    both = reg[tracked[reg]] if len(reg) else reg
    ours_sim3 = colmap_sim3 = {"ate_rmse_m": float("nan")}
    if len(both) >= 3:
        ours_sim3 = peers.sim3_aligned_errors(T_est[both], T_gt[both])
        colmap_sim3 = peers.sim3_aligned_errors(col["T_world_cam"][np.isin(reg, both)], T_gt[both])
    col.pop("T_world_cam", None)
    figures["colmap"] = col
    figures["ours_tracking"] = {"slam_s": slam_s, "tracked_fraction": float(tracked.mean()),
                                "ate_rmse_m": mem.get("ate_rmse_m"), "common_frames": len(both),
                                "ate_rmse_m_sim3_common": ours_sim3["ate_rmse_m"],
                                "colmap_ate_rmse_m_sim3_common": colmap_sim3["ate_rmse_m"]}
    if "error" in col:
        errors.append(f"pycolmap: {col['error']}")
        rows.append(row("tracking vs COLMAP", "", None, "pycolmap", None, None, "peer failed: " + col["error"][:80]))
    else:
        rows += [
            row("tracking time, all frames", "s", slam_s, "pycolmap", col["total_s"], "ratio",
                f"ours: whole SLAM stage (incl. depth, masks); COLMAP: SIFT + {col['matcher']} match + mapping"),
            row("ATE after Sim(3) alignment", "cm", 100 * ours_sim3["ate_rmse_m"], "pycolmap",
                100 * colmap_sim3["ate_rmse_m"], "ratio",
                f"on the {len(both)} frames both registered; Umeyama to truth (COLMAP has no metric frame)"),
            row("frames tracked / registered", "%", 100 * float(tracked.mean()), "pycolmap",
                100 * col["registered_fraction"], "delta", f"of {len(frames)} frames"),
        ]

    # Open3D TSDF against our depth fusion on the oracle arm's depth maps.
    views = _tsdf_views(runs["oracle"])
    ctx.log(name, f"peer: Open3D VoxelBlockGrid TSDF vs fuse_depth on {len(views)} depth maps")
    vs = runs["oracle"].cfg.memory.voxel_size
    tsdf = peers.tsdf_peer(views, vs)
    figures["tsdf"] = tsdf
    rows.append(row("depth-map integration", "ms/view", 1e3 * tsdf["ours_s_per_view"], "Open3D TSDF",
                    1e3 * tsdf["peer_s_per_view"], "ratio",
                    f"same {tsdf['views']} GT depth maps, voxel {vs * 100:g} cm; "
                    f"{tsdf['ours_points']:,} pts vs {tsdf['peer_points']:,} surface pts"))
    series = {}
    for arm in ("memory", "no_memory"):
        d = per_round_drift(runs[arm].out)
        series[f"visual SLAM, {arm.replace('_', ' ')}"] = _series(d["round"], d["ate_m"], 100)
        if arm == "memory":
            series["commanded poses"] = _series(d["round"], d["commanded_ate_m"], 100)
    curves = {"drift": _curve("loop: per-round pose error (no alignment)", "round", "ATE [cm]", series)}
    return {"rows": rows, "curves": curves, "figures": figures, "notes": notes, "errors": errors}


# --------------------------------------------------------------------------------------------
# long
# --------------------------------------------------------------------------------------------


def _lap_of_rounds(arm: ArmRun) -> list[int]:
    n = arm.cfg.path.n_frames
    return [int(rec.frame_offset // n) for rec in arm.loop.records]


def scenario_long(ctx: BenchContext) -> dict:
    name = "long"
    p = ctx.params(name)
    cfg = ctx.config(name, "memory")
    arm = ctx.run_arm(name, "memory", cfg)
    fig = _arm_figures(arm)
    t = arm.metrics["timings_s"]
    n = len(arm.round_wall_s)
    ours_stage = [t["render"][i] + t["slam"][i] + t["fuse"][i] for i in range(n)]
    mem_pts = arm.metrics["memory_points_per_round"]
    drift = per_round_drift(arm.out)
    laps = _lap_of_rounds(arm)
    n_laps = max(laps) + 1
    # "After exploration" = from the second lap on (the path repeats; nothing new to see). The
    # reference lap for flatness is the second one when there are three or more, so that both
    # compared laps see a fully built memory.
    ref_lap = 1 if n_laps >= 3 else 0
    last_lap = n_laps - 1

    def lap_median(xs: list[float], lap: int, skip_first_round: bool = False) -> float:
        sel = [x for i, (x, l_) in enumerate(zip(xs, laps, strict=True))
               if l_ == lap and not (skip_first_round and i == 0)]
        return _median(sel)

    first_lap_end = max(i for i, l_ in enumerate(laps) if l_ == 0)
    fig.update({
        "laps": n_laps, "reference_lap": ref_lap, "drift": drift, "ours_stage_s": ours_stage,
        "memory_points_end_of_first_lap": mem_pts[first_lap_end], "memory_points_end": mem_pts[-1],
        "memory_growth_after_first_lap": _div(mem_pts[-1] - mem_pts[first_lap_end], mem_pts[first_lap_end]),
        "round_wall_ratio_last_vs_ref_lap": _div(lap_median(arm.round_wall_s, last_lap),
                                                 lap_median(arm.round_wall_s, ref_lap, True)),
        "ours_stage_ratio_last_vs_ref_lap": _div(lap_median(ours_stage, last_lap),
                                                 lap_median(ours_stage, ref_lap, True)),
        "drift_ratio_last_vs_first_lap": _div(lap_median(drift["ate_m"], last_lap), lap_median(drift["ate_m"], 0)),
    })

    # Rebuild-everything peer, replayed on the run's own SLAM results with the pipeline's fusion.
    from slam.fusion import fuse_clip

    def fuse_round(memory, rec, r):
        fuse_clip(memory, rec.frames, rec.slam, rec.cameras, r, cfg.slam)

    every = max(int(p["rebuild_every"]), 1)
    rebuild_at = sorted(set(range(0, n, every)) | {n - 1})
    ctx.log(name, f"peer: rebuild-everything memory, replaying {n} rounds (rebuild measured at {len(rebuild_at)})")
    reb = peers.incremental_vs_rebuild(arm.loop.records, fuse_round, cfg.memory.voxel_size, rebuild_at)
    fig["rebuild"] = reb
    inc_first = _median(reb["incremental_s"][: max(n // 5, 1)])
    inc_last = _median(reb["incremental_s"][-max(n // 5, 1):])
    lap_name = f"lap {last_lap + 1} / lap {ref_lap + 1}"
    rows = [
        row("memory points at end", "pts", mem_pts[-1], None, None, None,
            f"{n} rounds, {n_laps} laps; after lap 1: {mem_pts[first_lap_end]:,}"),
        row("memory growth after lap 1", "%", 100 * fig["memory_growth_after_first_lap"], None, None, None,
            "0 = memory follows explored area, not frame count"),
        row(f"per-round wall time, {lap_name}", "ratio", fig["round_wall_ratio_last_vs_ref_lap"], None, None, None,
            "medians; 1 = flat (incl. generation and checkpoint waits)"),
        row(f"render+slam+fuse per round, {lap_name}", "ratio", fig["ours_stage_ratio_last_vs_ref_lap"], None, None,
            None, "medians; 1 = flat"),
        row(f"per-round ATE, lap {last_lap + 1} / lap 1", "ratio", fig["drift_ratio_last_vs_first_lap"], None, None,
            None, "medians; > 1 = drift grows"),
        row("per-round ATE, last lap median", "cm", 100 * lap_median(drift["ate_m"], last_lap), "commanded poses",
            100 * lap_median(drift["commanded_ate_m"], last_lap), "ratio"),
        row("memory update, last round", "ms", 1e3 * reb["incremental_s"][-1], "rebuild everything",
            1e3 * reb["rebuild_s"][-1], "ratio", "same fusion, same SLAM output; rebuild re-fuses all rounds"),
        row("memory update, total over run", "s", reb["cumulative_incremental_s"], "rebuild everything",
            reb["cumulative_rebuild_s_measured"] if len(rebuild_at) == n else None, "ratio",
            "" if len(rebuild_at) == n else f"rebuild measured every {every} rounds only"),
        row("memory update growth, last/first fifth", "ratio", _div(inc_last, inc_first), None, None, None,
            f"incremental; rebuilt memory identical: {reb['identical']}"),
    ]
    rounds = list(range(n))
    lap_starts = {"x": [i - 0.5 for i in range(1, n) if laps[i] != laps[i - 1]], "label": "lap start"}
    curves = {
        "update_time": _curve("long: memory update per round", "round", "time [ms]", {
            "incremental (spatia)": _series(rounds, reb["incremental_s"], 1e3),
            "rebuild everything (Spatia-style)": _series(reb["rebuild_round"], reb["rebuild_s"], 1e3)},
            vlines=lap_starts),
        "round_time": _curve("long: per-round time", "round", "time [s]", {
            "round wall (all stages + checkpoint wait)": _series(rounds, arm.round_wall_s),
            "render+slam+fuse": _series(rounds, ours_stage),
            **{stage: _series(rounds, t[stage]) for stage in ("generate", "slam")}}, vlines=lap_starts),
        "memory_size": _curve("long: memory size", "round", "points",
                              {"memory points": _series(rounds, mem_pts)}, vlines=lap_starts),
        "drift": _curve("long: per-round pose error (no alignment)", "round", "ATE [cm]", {
            "visual SLAM": _series(drift["round"], drift["ate_m"], 100),
            "commanded poses": _series(drift["round"], drift["commanded_ate_m"], 100)}, vlines=lap_starts),
    }
    notes = ["rebuild everything re-fuses all rounds' SLAM depth into an empty memory each round; it does not "
             "re-estimate depth, so it is a lower bound on a Spatia-style reconstruction from all history frames."]
    return {"rows": rows, "curves": curves, "figures": fig, "notes": notes}


# --------------------------------------------------------------------------------------------
# dynamic
# --------------------------------------------------------------------------------------------


def scenario_dynamic(ctx: BenchContext) -> dict:
    name = "dynamic"
    arms = {"visual": (), "oracle": ("slam.mode=oracle",)}
    runs = {arm: ctx.run_arm(name, arm, ctx.config(name, arm, *ov)) for arm, ov in arms.items()}
    fig = {"arms": {arm: _arm_figures(r) for arm, r in runs.items()}}
    vis, orc = fig["arms"]["visual"], fig["arms"]["oracle"]
    n_actors = runs["visual"].cfg.generator.procedural.n_actors
    rows = [
        row("dynamic leak (memory pts in actors)", "%", 100 * _f(vis.get("dynamic_leak_fraction")), "oracle SLAM",
            100 * _f(orc.get("dynamic_leak_fraction")), "delta", f"{n_actors} actors; oracle = ground-truth masks"),
        row("leaked memory points", "pts", vis.get("dynamic_leak_points"), "oracle SLAM",
            orc.get("dynamic_leak_points"), "delta"),
        row("dynamic mask IoU", "", vis.get("dynamic_mask_iou"), "oracle SLAM", orc.get("dynamic_mask_iou"), "delta"),
        row("memory points at end", "pts", (vis.get("memory_points_per_round") or [0])[-1], "oracle SLAM",
            (orc.get("memory_points_per_round") or [0])[-1], "ratio"),
        row("ATE (metric, no alignment)", "cm", 100 * _f(vis.get("ate_rmse_m")), "commanded poses",
            100 * _f(vis.get("commanded_ate_rmse_m")), "ratio"),
    ]
    drift = per_round_drift(runs["visual"].out)
    curves = {"drift": _curve("dynamic: per-round pose error (no alignment)", "round", "ATE [cm]", {
        "visual SLAM": _series(drift["round"], drift["ate_m"], 100),
        "commanded poses": _series(drift["round"], drift["commanded_ate_m"], 100)})}
    return {"rows": rows, "curves": curves, "figures": fig, "notes": []}


# --------------------------------------------------------------------------------------------
# scale
# --------------------------------------------------------------------------------------------

ROOM_M = (6.0, 5.0, 3.0)
ROOM_PITCH_M = 7.0


def rooms_points(n_points: int, voxel_size: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_points`` points, one per voxel, on the inner faces of a row of 6 x 5 x 3 m rooms.

    A large explored area at the memory's resolution: rooms are added along x (7 m apart) until
    there are enough surface voxels; the first ``n_points`` of them are kept, so the memory built
    from them has exactly ``n_points`` points. Colours: per-face base, 25 cm checker, seeded noise.

    Returns:
        ``xyz float32 (n_points, 3)`` and ``rgb uint8 (n_points, 3)``.
    """
    rng = np.random.default_rng(seed)
    dims = [int(round(d / voxel_size)) for d in ROOM_M]
    xyz_parts: list[np.ndarray] = []
    total = 0
    room = 0
    while total < n_points:
        ox = room * int(round(ROOM_PITCH_M / voxel_size))
        # Each face as integer voxel coordinates; edges are shared, so skip the border of some faces.
        nx, ny, nz = dims
        faces = []
        for zc in (0, nz - 1):  # floor, ceiling
            i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
            faces.append(np.stack([i.ravel(), j.ravel(), np.full(i.size, zc)], 1))
        for yc in (0, ny - 1):  # walls at y = 0, y = max (without floor/ceiling rows)
            i, k = np.meshgrid(np.arange(nx), np.arange(1, nz - 1), indexing="ij")
            faces.append(np.stack([i.ravel(), np.full(i.size, yc), k.ravel()], 1))
        for xc in (0, nx - 1):  # walls at x = 0, x = max (without the rows above)
            j, k = np.meshgrid(np.arange(1, ny - 1), np.arange(1, nz - 1), indexing="ij")
            faces.append(np.stack([np.full(j.size, xc), j.ravel(), k.ravel()], 1))
        ijk = np.concatenate(faces)
        ijk[:, 0] += ox
        xyz_parts.append(ijk)
        total += len(ijk)
        room += 1
    ijk = np.concatenate(xyz_parts)[:n_points]
    # A quarter voxel off the grid: inside voxel ijk whether voxels are centred on the grid or start on it.
    xyz = ((ijk + 0.25) * voxel_size).astype(np.float32)
    checker = ((np.floor(xyz[:, 0] / 0.25) + np.floor(xyz[:, 1] / 0.25) + np.floor(xyz[:, 2] / 0.25)) % 2)
    base = np.array([[150, 120, 90], [200, 90, 80], [80, 150, 200]], np.float32)[(ijk[:, 2] % 3)]
    rgb = base * (0.65 + 0.35 * checker[:, None]) + rng.normal(0, 10, size=(len(xyz), 3))
    return xyz, np.clip(rgb, 0, 255).astype(np.uint8)


def _room_cameras(cfg: RunConfig, n: int, yaw0_deg: float = 20.0) -> list:
    """``n`` cameras standing in the middle of the first room, panning (commanded path intrinsics)."""
    from spatia_py.geometry import Camera, intrinsics_from_fov, look_at

    W, H = cfg.path.width, cfg.path.height
    K = intrinsics_from_fov(W, H, cfg.path.fov_x_deg)
    eye = np.array([ROOM_M[0] / 2, ROOM_M[1] / 2, 1.5])
    cams = []
    for i in range(n):
        yaw = math.radians(yaw0_deg + 360.0 * i / n)
        cams.append(Camera(K, W, H, look_at(eye, eye + np.array([math.cos(yaw), math.sin(yaw), -0.1]))))
    return cams


def _count_label(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1e6 else f"{n / 1e3:g}k" if n >= 1e3 else str(n)


def scenario_scale(ctx: BenchContext) -> dict:
    from spatia_py.conditioning import MemoryRenderer, ReferenceIndex
    from spatia_py.memory import SpatialMemory

    name = "scale"
    p = ctx.params(name)
    cfg = ctx.config(name, "scale")
    vs = cfg.memory.voxel_size
    cams = _room_cameras(cfg, p["views"])
    index_cams = _room_cameras(cfg, p["index_entries"], yaw0_deg=7.0)
    seg_cams = _room_cameras(cfg, min(cfg.frames_per_round, 8), yaw0_deg=33.0)
    frame_points = cfg.path.width * cfg.path.height
    per_size: list[dict] = []
    rows = []
    for P in p["points"]:
        ctx.log(name, f"memory of {P:,} points")
        xyz, rgb = rooms_points(P, vs)
        memory = SpatialMemory(vs)
        t0 = time.perf_counter()
        memory.fuse(xyz, rgb, round_index=0)
        build_s = time.perf_counter() - t0
        if len(memory) != P:
            raise RuntimeError(f"scale: built {len(memory):,} points, expected {P:,} (synthetic rooms overlap?)")
        res: dict[str, Any] = {"points": P, "build_s": build_s}
        res["render"] = peers.render_peer(memory, cams, radius_scale=cfg.render.radius_scale,
                                          max_radius_px=cfg.render.max_radius_px, repeats=p["repeats"])

        # Retrieval: the visible voxel keys of a view (point-id buffer) and top-k over the index.
        renderer = MemoryRenderer(memory, radius_scale=cfg.render.radius_scale, max_radius_px=cfg.render.max_radius_px)
        index = ReferenceIndex()
        vk_s = []
        for i, c in enumerate(index_cams):
            t0 = time.perf_counter()
            keys = renderer.visible_keys(c)
            vk_s.append(time.perf_counter() - t0)
            index.add(i, c, keys)
        seg_keys = np.unique(np.concatenate([renderer.visible_keys(c) for c in seg_cams]))
        def retrieve(index=index, seg_keys=seg_keys):
            return index.retrieve(seg_keys, seg_cams, cfg.render.n_reference_frames)

        rt = peers.time_interleaved({"retrieve": retrieve}, p["repeats"])
        res["retrieval"] = {"visible_keys_s": _median(vk_s), "retrieve_s": rt["retrieve"]["median_s"],
                            "index_entries": len(index.entries), "segment_keys": len(seg_keys)}
        del renderer

        # One frame's worth of points: a revisit (memory points: existing voxels) and a novel view
        # (the same points moved south of the rooms, into unexplored space: new voxels).
        pick = np.random.default_rng(1).choice(P, size=min(frame_points, P), replace=False)
        revisit = (memory.xyz[pick].copy(), memory.rgb[pick].copy())

        def novel(k: int, revisit=revisit):
            shift = np.array([0.0, -(20.0 + 10.0 * k), 0.0], np.float32)
            return revisit[0] + shift, revisit[1]

        res["frame_update"] = peers.frame_update_peer(memory, revisit, novel, p["repeats"])
        del memory
        gc.collect()
        if P in p["voxel_points"]:
            # P raw points, about 3 per voxel: the first third of the rooms' voxels, each 3x with jitter.
            src = np.repeat(np.arange(-(-P // 3)), 3)[:P]
            raw = (xyz[src] + np.random.default_rng(2).uniform(-0.49, 0.49, size=(P, 3)) * vs).astype(np.float32)
            raw_rgb = rgb[src]
            ctx.log(name, f"voxel downsampling of {len(raw):,} raw points")
            res["voxel_downsample"] = peers.voxel_downsample_peer(raw, raw_rgb, vs, p["repeats"])
            del raw, raw_rgb
        del xyz, rgb
        gc.collect()
        per_size.append(res)

        label = _count_label(P)
        r, fu = res["render"], res["frame_update"]
        rows += [
            row(f"render {cfg.path.width}x{cfg.path.height}, {label} pts", "ms", 1e3 * r["ours_s"],
                "Open3D project_to_rgbd", 1e3 * r["peer_s"], "ratio",
                f"splat vs 1-px points; covered {100 * r['ours_covered_fraction']:.0f}% vs "
                f"{100 * r['peer_covered_fraction']:.0f}%"),
            row(f"fuse 1 frame (revisit), {label} pts", "ms", 1e3 * fu["ours_revisit_s"],
                "Open3D concat+downsample", 1e3 * fu["peer_s"], "ratio",
                f"{fu['frame_points']:,} new points; peer re-downsamples all"),
            row(f"fuse 1 frame (new area), {label} pts", "ms", 1e3 * fu["ours_novel_s"],
                "Open3D concat+downsample", 1e3 * fu["peer_s"], "ratio", "inserts: one linear copy"),
            row(f"visible voxel keys, {label} pts", "ms", 1e3 * res["retrieval"]["visible_keys_s"], None, None, None,
                "MemoryRenderer.visible_keys (one render)"),
            row(f"reference retrieval, {label} pts", "ms", 1e3 * res["retrieval"]["retrieve_s"], None, None, None,
                f"ReferenceIndex.retrieve over {len(index_cams)} past frames"),
        ]
        if "voxel_downsample" in res:
            v = res["voxel_downsample"]
            rows += [
                row(f"voxelise {_count_label(v['points_in'])} raw pts", "ms", 1e3 * v["ours_s"],
                    "Open3D voxel_down_sample (legacy)", 1e3 * v["legacy_s"], "ratio",
                    f"{v['ours_voxels']:,} vs {v['legacy_voxels']:,} voxels"),
                row(f"voxelise {_count_label(v['points_in'])} raw pts", "ms", 1e3 * v["ours_s"],
                    "Open3D voxel_down_sample (tensor)", 1e3 * v["tensor_s"], "ratio",
                    f"{v['tensor_voxels']:,} voxels"),
            ]
        ctx.log(name, f"{label}: render {1e3 * r['ours_s']:.1f} ms (Open3D {1e3 * r['peer_s']:.1f} ms), "
                      f"fuse frame {1e3 * fu['ours_revisit_s']:.1f} ms")

    pts = [s["points"] for s in per_size]

    def col(*path: str) -> list:
        out = []
        for size in per_size:
            v: Any = size
            for key in path:
                v = v[key]
            out.append(v)
        return out

    log = {"logx": True, "logy": True}
    curves = {
        "render": _curve("scale: render one view", "memory points", "time [ms]", {
            "spatia render_points": _series(pts, col("render", "ours_s"), 1e3),
            "Open3D project_to_rgbd_image": _series(pts, col("render", "peer_s"), 1e3)}, **log),
        "fusion": _curve("scale: fuse one frame into memory", "memory points", "time [ms]", {
            "spatia fuse (revisit)": _series(pts, col("frame_update", "ours_revisit_s"), 1e3),
            "spatia fuse (new area)": _series(pts, col("frame_update", "ours_novel_s"), 1e3),
            "Open3D concat + voxel_down_sample": _series(pts, col("frame_update", "peer_s"), 1e3)}, **log),
        "retrieval": _curve("scale: reference-frame retrieval", "memory points", "time [ms]", {
            "visible_keys (one view)": _series(pts, col("retrieval", "visible_keys_s"), 1e3),
            "ReferenceIndex.retrieve": _series(pts, col("retrieval", "retrieve_s"), 1e3)}, **log),
    }
    notes = [f"synthetic memories: rows of 6 x 5 x 3 m rooms at {vs * 100:g} cm voxels, cameras in the first room; "
             "one-time conversions (torch arrays, Open3D point clouds) are not timed; Open3D draws 1 px per point, "
             "ours a depth-scaled square splat.",
             "fuse 1 frame: one image's worth of points into the memory; the Open3D peer has no incremental update, "
             "so it concatenates them to the whole cloud and voxel-downsamples again (legacy API, its faster one)."]
    return {"rows": rows, "curves": curves, "figures": {"sizes": per_size, "params": p}, "notes": notes}


SCENARIOS: dict[str, Callable[[BenchContext], dict]] = {
    "loop": scenario_loop,
    "long": scenario_long,
    "dynamic": scenario_dynamic,
    "scale": scenario_scale,
}
"""Scenario name -> function, in the order ``spatia bench`` runs them."""
