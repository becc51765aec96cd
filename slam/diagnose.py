"""Diagnostics of visual SLAM's keyframe depth against ground truth.

Both commands read the ground truth of the procedural stand-in world model (``eval.ground_truth_metrics``
on), so they work on procedural runs only. They measure where depth errors lie and what fixing
them would be worth; neither is a method (SLAM never reads ground truth).

``depth``: keyframe depth of finished runs against the true static depth, per round::

    .venv/bin/python -m slam.diagnose depth RUN [RUN ...] [--band 8] [--gross 0.05]

For each round (tracked keyframes, static pixels that no actor covers): coverage, median abs-rel
error, the fraction of covered pixels more than ``--gross`` off after dividing out each
keyframe's median depth ratio (its scale, which the commanded path set), and how these gross
errors split between pixels within ``--band`` px of a true depth edge and the rest. One JSON
line per run.

``edit``: re-run the round loop with SLAM's keyframe depth edited with the truth right after SLAM
(before fusion), and report the revisit PSNR (also by the round of the first visit)::

    .venv/bin/python -m slam.diagnose edit --fix gross-band --rounds 0 --out RUN
    .venv/bin/python -m slam.diagnose edit --fix values --config configs/loop.yaml seed=2
    .venv/bin/python -m slam.diagnose edit --fix none --gauge truth --config configs/loop.yaml

``--gauge truth`` also moves round 0's result, before fusion, by the similarity that best fits
its tracked cameras to the generator's actual ones (rotation first, then scale and offset; the depth is
scaled with it): the first clip's placement, which the commanded cameras set and no pixel-only
SLAM can observe (docs/revisit-gap.md). Everything downstream (memory, the
cameras of colour sources and retrieval) follows from the moved result. ``--gauge slam`` (the
default) leaves it.

``--fix``: ``truth`` (true depth on every static pixel SLAM did not mask as moving),
``values`` (true depth on the pixels SLAM covered), ``holes`` (static pixels SLAM left
empty get the truth), ``gross`` / ``gross-band`` / ``gross-outside`` (pixels more than ``--gross``
off get the truth: all, only within ``--band`` px of a true depth edge, only farther; the raw
relative error, no scale divided out), ``gross-near`` / ``gross-far`` (only those in front of /
behind the true surface), ``drop-gross`` / ``drop-gross-band`` (those pixels lose their depth
instead: what a perfect detector of wrong depth would be worth), ``none``. Pixels an actor covers (in truth) are never edited. A pixel
that gets depth where SLAM had none gets confidence 1; a replaced one keeps SLAM's confidence
(which decides whether fusion takes it and whether it may carve), a removed one gets 0. A round's
edits include its look-ahead keyframes, which are fused with that round.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

FIXES = ("none", "truth", "values", "holes", "gross", "gross-band", "gross-outside", "gross-near", "gross-far",
         "drop-gross", "drop-gross-band")

GAUGES = ("slam", "truth")


class DiagnoseError(RuntimeError):
    """A diagnostic cannot run on this run or config; the message says why."""

__all__ = ["DiagnoseError", "FIXES", "GAUGES", "depth_edge_band", "depth_report", "edit_depth"]


def _place_by_truth(res, T_true: np.ndarray) -> dict:
    """Move a clip's SLAM result (in place) by the similarity that best maps its tracked cameras
    onto the true ones (:func:`~spatia_py.geometry.similarity_from_poses`)."""
    from spatia_py.geometry import GeometryError, apply_similarity_to_poses, rotation_angle_deg, similarity_from_poses
    from spatia_py.metrics import ate_rmse

    k = np.flatnonzero(res.tracked)
    if len(k) < 2:
        raise DiagnoseError(f"--gauge truth needs at least two tracked frames in round 0, got {len(k)}")
    try:
        s, R, t = similarity_from_poses(res.T_world_cam[k], T_true[k])
    except GeometryError as e:
        raise DiagnoseError(f"--gauge truth: round 0's tracked cameras do not move, so no scale can be fitted ({e})") from None
    before = ate_rmse(res.T_world_cam, T_true, res.tracked)
    # In place: SLAM keeps views of these poses (its history for the next clip's stereo sources).
    T = res.T_world_cam
    T[...] = apply_similarity_to_poses(s, R, t, T)
    res.depth *= np.float32(s)
    return {"scale": s, "rotation_deg": float(rotation_angle_deg(np.eye(3), R)),
            "translation_m": np.round(t, 5).tolist(), "centre_error_before_m_rms": before,
            "centre_error_after_m_rms": ate_rmse(T, T_true, res.tracked)}


def depth_edge_band(static_depth: np.ndarray, band_px: int, jump: float = 0.05) -> np.ndarray:
    """``bool (H, W)``: pixels within ``band_px`` of a true depth edge, where the log depth changes
    by more than ``jump`` per pixel (central differences: surfaces seen at a very grazing angle
    count too)."""
    d = np.log(np.maximum(static_depth, 1e-3))
    gy, gx = np.gradient(d)
    edge = (np.hypot(gx, gy) > jump) & (static_depth > 0)
    return ndimage.binary_dilation(edge, iterations=band_px) if band_px > 0 else edge


def edit_depth(fix: str, depth: np.ndarray, static_depth: np.ndarray, dynamic_true: np.ndarray,
               dynamic_est: np.ndarray, *, gross: float = 0.05, band_px: int = 8) -> np.ndarray:
    """One keyframe's depth ``(H, W)`` edited with the truth as ``fix`` says (see the module doc)."""
    if fix not in FIXES:
        raise ValueError(f"unknown fix {fix!r}; choose one of {', '.join(FIXES)}")
    has = depth > 0
    # Pixels an actor covers are left as SLAM had them: the fixes are about static depth, not masks.
    truth = (static_depth > 0) & ~dynamic_true
    if fix == "none":
        return depth.astype(np.float32)
    if fix == "values":
        nothing = has & (static_depth <= 0)  # no surface there in truth
        return np.where(has & truth, static_depth, np.where(nothing, 0.0, depth)).astype(np.float32)
    if fix in ("holes", "truth"):
        fill = truth & ~dynamic_est
        if fix == "holes":
            return np.where(fill & ~has, static_depth, depth).astype(np.float32)
        return np.where(fill, static_depth, np.where(dynamic_true, depth, 0.0)).astype(np.float32)
    rel = np.where(has & truth, depth / np.maximum(static_depth, 1e-9) - 1.0, 0.0)
    sel = has & truth & (np.abs(rel) > gross)
    if fix in ("gross-band", "drop-gross-band"):
        sel &= depth_edge_band(static_depth, band_px)
    elif fix == "gross-outside":
        sel &= ~depth_edge_band(static_depth, band_px)
    elif fix == "gross-near":
        sel &= rel < 0
    elif fix == "gross-far":
        sel &= rel > 0
    return np.where(sel, 0.0 if fix.startswith("drop-") else static_depth, depth).astype(np.float32)


def depth_report(run: str | Path, *, band_px: int = 8, gross: float = 0.05) -> dict:
    """Per-round keyframe-depth statistics of a finished run against its ground truth."""
    from spatia_py.pipeline import keyframe_depth_errors
    from spatia_py.rundir import RunDir, RunDirError

    rd = RunDir(run)
    if not Path(run).is_dir():
        raise RunDirError(f"run directory not found: {run}")
    rounds = rd.completed_rounds() if rd.exists() else []
    if not rounds:
        raise RunDirError(f"{run} holds no completed round; is it a run directory (`spatia run ... --out DIR`)?")
    out = {"run": str(run), "band_px": band_px, "gross": gross, "rounds": []}
    for r in rounds:
        rec = rd.read_round(r, with_frames=False)
        gt = rec.ground_truth
        if gt is None:
            raise RunDirError(
                f"round {r} of {run} has no ground truth; run with eval.ground_truth_metrics=true on the "
                "procedural world")
        keyframes = [k for k in rec.slam.keyframes if rec.slam.tracked[k]]
        n_cov = n_bad = n_bad_band = n_band = 0
        for k in keyframes:
            d, sd = rec.slam.depth[k], gt.static_or_depth[k]
            cov = (sd > 0) & ~gt.dynamic_masks[k] & (d > 0)
            if not cov.any():
                continue
            ratio = d[cov] / sd[cov]
            e = np.abs(ratio / np.median(ratio) - 1.0)
            band = depth_edge_band(sd, band_px)[cov]
            n_cov += int(cov.sum())
            n_bad += int((e > gross).sum())
            n_bad_band += int(((e > gross) & band).sum())
            n_band += int(band.sum())
        if not n_cov:
            out["rounds"].append({"round": r, "keyframes": len(keyframes), "coverage": 0.0})
            continue
        # Median abs-rel and coverage exactly as metrics.json computes them; the rest per keyframe.
        errs = keyframe_depth_errors([rec])
        out["rounds"].append({
            "round": r,
            "keyframes": len(keyframes),
            "coverage": round(errs["coverage"], 4),
            "absrel_median": round(errs["absrel_median"], 5),
            "gross_fraction": round(n_bad / n_cov, 4),
            "band_fraction_of_pixels": round(n_band / n_cov, 4),
            "gross_share_in_band": round(n_bad_band / max(n_bad, 1), 3),
            "gross_rate_in_band": round(n_bad_band / max(n_band, 1), 4),
            "gross_rate_outside_band": round((n_bad - n_bad_band) / max(n_cov - n_band, 1), 4),
        })
    return out


def run_edited(cfg, out: Path, fix: str, rounds: set[int] | None, *, gross: float, band_px: int,
               gauge: str = "slam") -> dict:
    """Run the round loop with SLAM's keyframe depth of ``rounds`` (all when ``None``) edited, and
    round 0 placed by the truth when ``gauge == "truth"`` (the placement is in ``metrics["gauge"]``)."""
    if gauge not in GAUGES:
        raise ValueError(f"unknown gauge {gauge!r}; choose one of {', '.join(GAUGES)}")
    from spatia_py.pipeline import RoundLoop

    loop = RoundLoop(cfg, out, progress=False)
    n = len(loop.segments)
    if rounds is not None and (not rounds or not rounds <= set(range(n))):
        raise ValueError(f"--rounds must name rounds of this run, 0 to {n - 1}; got {sorted(rounds)}")
    state: dict = {}
    generate, process = loop.generator.generate, loop.slam.process

    def generate_keep_truth(request):
        clip = generate(request)
        state["gt"] = clip.ground_truth
        return clip

    def process_then_edit(frames, cameras, memory, round_index, **kw):
        res = process(frames, cameras, memory, round_index, **kw)
        gt = state.get("gt")
        if gt is None:
            raise DiagnoseError("the generator returned no ground truth; slam.diagnose edit needs the procedural world")
        if gauge == "truth" and round_index == 0:  # before the depth edit: true depth needs no scaling
            state["gauge"] = _place_by_truth(res, gt.T_world_cam)
        if rounds is None or round_index in rounds:
            for k in res.keyframes:
                new = edit_depth(fix, res.depth[k], gt.static_depth[k], gt.dynamic_masks[k], res.dynamic_masks[k],
                                 gross=gross, band_px=band_px)
                added = (new > 0) & (res.depth[k] <= 0)
                res.depth_confidence[k] = np.where(added, 1.0, np.where(new > 0, res.depth_confidence[k], 0.0))
                res.depth[k] = new
        return res

    loop.generator.generate = generate_keep_truth
    loop.slam.process = process_then_edit
    metrics = loop.run()
    if "gauge" in state:
        metrics["gauge"] = state["gauge"]
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    a = sub.add_parser("depth", help="keyframe depth of finished runs against ground truth, per round")
    a.add_argument("runs", nargs="+", help="run directories (procedural world, ground truth on)")
    b = sub.add_parser("edit", help="re-run with keyframe depth edited with the truth after SLAM")
    b.add_argument("--fix", required=True, choices=FIXES)
    b.add_argument("--gauge", default="slam", choices=GAUGES,
                   help="round 0 placed as SLAM placed it, or by the similarity fit to its true cameras")
    b.add_argument("--rounds", default=None, help="comma-separated rounds to edit, counted from 0 (default: all)")
    b.add_argument("--config", default="configs/loop.yaml", help="run preset (default: %(default)s)")
    b.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    b.add_argument("overrides", nargs="*", help="section.field=value overrides")
    for p in (a, b):
        p.add_argument("--band", type=int, default=8, help="edge band half-width in pixels (default: %(default)s)")
        p.add_argument("--gross", type=float, default=0.05, help="gross-error threshold (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.band < 0 or not 0 < args.gross < 1:
        ap.error(f"--band must be >= 0 and --gross in (0, 1), got {args.band} and {args.gross}")
    from spatia_py.bench.report import json_safe
    from spatia_py.config import ConfigError, load_config
    from spatia_py.pipeline import PipelineError
    from spatia_py.rundir import RunDir, RunDirError

    def dumps(obj) -> str:
        return json.dumps(json_safe(obj))

    try:
        if args.command == "depth":
            for run in args.runs:
                print(dumps(depth_report(run, band_px=args.band, gross=args.gross)))
            return 0
        rounds = None
        if args.rounds is not None:
            try:
                rounds = {int(x) for x in args.rounds.split(",") if x.strip()}
            except ValueError:
                ap.error(f"--rounds takes comma-separated round indices such as 0,1; got {args.rounds!r}")
        cfg = load_config(args.config, args.overrides)
        if cfg.generator.backend != "procedural" or not cfg.eval.ground_truth_metrics:
            print("slam.diagnose edit needs generator.backend=procedural and eval.ground_truth_metrics=true",
                  file=sys.stderr)
            return 2
        if cfg.slam.mode != "visual":
            print(f"slam.diagnose edit edits visual SLAM's depth; the config has slam.mode={cfg.slam.mode!r}",
                  file=sys.stderr)
            return 2
        out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="slam-diag-"))
        if RunDir(out).exists():
            print(f"slam.diagnose: {out} already holds a run; choose a new --out (nothing was overwritten)",
                  file=sys.stderr)
            return 2
        m = run_edited(cfg, out, args.fix, rounds, gross=args.gross, band_px=args.band, gauge=args.gauge)
        print(dumps({
            "fix": args.fix, "rounds": sorted(rounds) if rounds is not None else "all", "run_dir": str(out),
            "gauge": m.get("gauge", "slam"),
            "revisit_psnr_db": round(m["revisit_psnr_db"], 3),
            "revisit_psnr_db_by_first_round": {k: round(v, 3) for k, v in m.get("revisit_psnr_db_by_first_round",
                                                                              {}).items()},
            "memory_points": int(m["memory_points_per_round"][-1]),
        }))
        return 0
    except (ConfigError, DiagnoseError, RunDirError, PipelineError, FileNotFoundError, ValueError) as e:
        print(f"slam.diagnose: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
