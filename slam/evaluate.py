"""Full-loop evaluation of visual SLAM on the procedural world (ground truth for metrics only).

Runs the round loop (``spatia_py.pipeline``: render memory at the commanded cameras as
conditioning, generate, SLAM, fuse) with a SLAM-evaluation preset and prints one JSON line with
the issue's targets: pose accuracy (ATE as % of path length, median rotation error) against the
generator's *actual* cameras, keyframe depth error and coverage on static pixels, dynamic leak
and mask IoU, SLAM + fusion time per frame with a per-stage breakdown, and the per-round cost
trend (is round cost flat?).

    .venv/bin/python -m slam.evaluate                       # configs/slam-eval.yaml
    .venv/bin/python -m slam.evaluate --out /tmp/run path.n_frames=176   # longer run, any override

Equivalent to ``spatia run --config configs/slam-eval.yaml`` plus the summary below.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGETS = {
    "ate_rmse_percent_of_path": ("<=", 0.5),
    "rot_err_median_deg": ("<=", 0.3),
    "depth_absrel_median": ("<=", 0.05),
    "depth_coverage": (">=", 0.70),
    "dynamic_leak_fraction": ("<=", 0.01),
    "dynamic_mask_iou": (">=", 0.6),
    "slam_fuse_ms_per_frame": ("<=", 250.0),
}


def summarize(metrics: dict, run_dir: Path | None = None) -> dict:
    """The SLAM-relevant subset of ``metrics.json`` plus pass/fail per target and round-cost trend."""
    keys = [
        "frames",
        "rounds",
        "path_length_m",
        "ate_rmse_m",
        "ate_rmse_percent_of_path",
        "commanded_ate_rmse_m",
        "rot_err_median_deg",
        "rot_err_max_deg",
        "depth_absrel_median",
        "depth_coverage",
        "dynamic_leak_fraction",
        "dynamic_leak_points",
        "dynamic_mask_iou",
        "tracked_fraction",
        "slam_fuse_ms_per_frame",
        "slam_stage_ms_per_frame",
        "memory_points_per_round",
        "revisit_psnr_db",
    ]
    out = {k: metrics.get(k) for k in keys if k in metrics}
    t = metrics.get("timings_s", {})
    if t.get("slam"):
        per_round = [s + f for s, f in zip(t["slam"], t.get("fuse", [0.0] * len(t["slam"])), strict=True)]
        out["slam_fuse_s_per_round"] = [round(x, 3) for x in per_round]
        if len(per_round) >= 3:
            steady = per_round[1:]
            out["round_cost_last_over_round2"] = round(per_round[-1] / max(per_round[2], 1e-9), 3)
            out["round_cost_slope_s_per_round"] = round(float(np.polyfit(np.arange(len(steady)), steady, 1)[0]), 4)
    if run_dir is not None:
        cpu = {}
        for f in sorted((run_dir / "rounds").glob("r*/slam.json")):
            try:
                d = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            for k, v in ((d.get("info") or {}).get("cpu_s") or {}).items():
                cpu[k] = cpu.get(k, 0.0) + float(v)
        if cpu and out.get("frames"):
            out["slam_stage_cpu_ms_per_frame"] = {k: round(1000 * v / out["frames"], 1) for k, v in cpu.items()}
    passed = {}
    for k, (op, thr) in TARGETS.items():
        v = out.get(k)
        if isinstance(v, (int, float)) and math.isfinite(v):
            passed[k] = bool(v <= thr) if op == "<=" else bool(v >= thr)
    out["targets"] = {k: f"{op} {thr}" for k, (op, thr) in TARGETS.items()}
    out["passed"] = passed
    return out


def main(argv: list[str] | None = None) -> int:
    from spatia_py.config import load_config
    from spatia_py.pipeline import run

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/slam-eval.yaml", help="run preset (default: %(default)s)")
    ap.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    ap.add_argument("overrides", nargs="*", help="section.field=value overrides")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if cfg.slam.mode != "visual":
        print(f"slam.evaluate measures visual SLAM; the config has slam.mode={cfg.slam.mode!r}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="slam-eval-"))
    t0 = time.perf_counter()
    metrics = run(cfg, out, progress=False)
    summary = summarize(metrics, out)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    summary["run_dir"] = str(out)
    print(json.dumps(summary, default=lambda o: None if isinstance(o, float) and not math.isfinite(o) else str(o)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
