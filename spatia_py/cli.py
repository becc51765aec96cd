"""The ``spatia`` command line (DESIGN.md "Command line and files").

Heavy libraries (torch, open3d, pycolmap, rerun) are imported inside the commands so that
``spatia --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run the round loop into a run directory",
                       description="Run the round loop: render memory -> generate -> SLAM -> fuse, per round. "
                                   "Any config field can be overridden as section.field=value "
                                   "(e.g. memory.voxel_size=0.02 slam.mode=oracle path.laps=3).")
    p.add_argument("--config", type=Path, help="YAML preset (configs/demo.yaml, configs/loop.yaml, ...)")
    p.add_argument("--out", type=Path, required=True, help="run directory to write")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out from its last complete round")
    p.add_argument("--rerun", type=Path, metavar="FILE.rrd", help="record the run for the Rerun viewer")
    p.add_argument("--rerun-connect", nargs="?", const="", default=None, metavar="ADDR",
                   help="stream to a running Rerun viewer (default address if ADDR is omitted)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="section.field=value", help="config overrides")


def _add_render(sub) -> None:
    p = sub.add_parser("render", help="render a run's memory along a camera path (no generation)",
                       description="Render the memory of RUN along the cameras of PATH.json: "
                                   "DIR/rgb/NNNN.png, DIR/validity/NNNN.png, DIR/depth/NNNN.npy (metres), DIR/render.mp4.")
    p.add_argument("run", type=Path, help="run directory")
    p.add_argument("--path", type=Path, required=True, help='camera path JSON ({"fps":..,"cameras":[..]})')
    p.add_argument("--out", type=Path, required=True, help="output folder (must not already hold a render)")
    p.add_argument("--version", type=int, default=None, help="memory version (round) to render; default: latest")
    p.add_argument("--hard", action="store_true",
                   help="colour each pixel by its z-buffer winner only (default: blend the front-surface points "
                        "covering it, render/blend.py; smoother, ~0.1 s more per 512x320 frame)")
    p.add_argument("--no-progress", action="store_true")


def _add_view(sub) -> None:
    p = sub.add_parser("view", help="open a run (or .rrd) in the Rerun viewer",
                       description="Open RUN_DIR or FILE.rrd in Rerun; a run without a recording gets one "
                                   "re-created from the run directory first.")
    p.add_argument("target", type=Path, help="run directory or .rrd file")
    p.add_argument("--no-viewer", action="store_true", help="only (re)create the recording, do not launch the viewer")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmark scenarios and peers; table, results.json and plots")
    p.add_argument("--scenario", action="append", default=None,
                   help="scenario to run (repeatable): loop, long, dynamic, scale; default: all")
    p.add_argument("--quick", action="store_true", help="small sizes for a CI smoke run (< 3 min)")
    p.add_argument("--out", type=Path, required=True, help="output folder for results.json and plots")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spatia", description="Long, spatially consistent video generation "
                                     "grounded in an explicit 3D memory.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(sub)
    _add_render(sub)
    _add_view(sub)
    _add_bench(sub)
    return parser


# --------------------------------------------------------------------------------------------


def cmd_run(args) -> int:
    from spatia_py.config import load_config
    from spatia_py.pipeline import RoundLoop, summary_line

    cfg = None
    if args.config is not None or not args.resume:
        if args.config is None:
            raise CliError("--config is required to start a run (e.g. --config configs/demo.yaml)")
        cfg = load_config(args.config, args.overrides)
    elif args.overrides:
        raise CliError("--resume continues with the run's saved config; overrides are not allowed")
    t0 = time.perf_counter()
    # The loop checks the run directory (an existing run without --resume, a config that differs
    # from the saved one) before the recording is opened: opening truncates the .rrd.
    loop = RoundLoop(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    if args.rerun is not None or args.rerun_connect is not None:
        from spatia_py.rerun_log import RerunLogError, RerunLogger

        if args.rerun is not None:
            _check_writable_parent(args.rerun)
        try:
            loop.logger = RerunLogger(save_path=args.rerun, connect_addr=args.rerun_connect,
                                      recording_name=args.out.name)
        except RerunLogError as e:
            raise CliError(str(e)) from None
    try:
        metrics = loop.run()
    finally:
        if loop.logger is not None:
            loop.logger.close()
    print(summary_line(metrics, args.out, time.perf_counter() - t0))
    return 0


def _check_writable_parent(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create {parent} for {path}: {e.strerror or e}") from None


def cmd_render(args) -> int:
    import numpy as np

    from render.video import write_png, write_video
    from spatia_py.conditioning import MemoryRenderer
    from spatia_py.geometry import load_path
    from spatia_py.parallel import Workers
    from spatia_py.pipeline import load_run_config
    from spatia_py.rundir import RunDir

    rd = RunDir(args.run)
    if not rd.exists():
        raise CliError(f"{args.run} is not a run directory (no config.yaml); make one with 'spatia run'")
    cfg = load_run_config(rd)
    version = rd.latest_memory_version() if args.version is None else args.version
    if version is None:
        raise CliError(f"{args.run} has no memory versions (memory/vNNN.npz); did its first round finish?")
    if version not in rd.memory_versions():
        raise CliError(f"memory version {version} not found; available: "
                       f"{', '.join(f'{v:03d}' for v in rd.memory_versions())}")
    path = load_path(args.path)
    out = args.out
    if (out / "rgb").exists() or (out / "render.mp4").exists():
        raise CliError(f"{out} already holds a render; choose a new --out (nothing was overwritten)")
    memory = rd.load_memory(version)  # before anything is written: an unreadable memory leaves no render folder
    try:
        for sub in ("rgb", "validity", "depth"):
            (out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot write to {out}: {e.strerror or e}") from None
    renderer = MemoryRenderer.from_config(memory, cfg, blend_colours=not args.hard)
    workers = Workers(cfg.render.workers, "render_views")

    def render_frame(i: int) -> np.ndarray:
        o = renderer.render(path[i])
        write_png(out / "rgb" / f"{i:04d}.png", o["rgb"])
        write_png(out / "validity" / f"{i:04d}.png", (np.clip(o["validity"], 0, 1) * 255).astype(np.uint8))
        np.save(out / "depth" / f"{i:04d}.npy", o["depth"].astype(np.float32))
        return o["rgb"]

    frames: list[np.ndarray] = []
    progress = None
    if not args.no_progress:
        from tqdm import tqdm

        progress = tqdm(total=len(path), desc="render", unit="frame")
    try:
        batch = 4 * workers.n  # frames rendered in parallel between progress updates
        for start in range(0, len(path), batch):
            chunk = workers.map(render_frame, range(start, min(start + batch, len(path))))
            frames += chunk
            if progress is not None:
                progress.update(len(chunk))
    finally:
        workers.close()
        if progress is not None:
            progress.close()
    write_video(out / "render.mp4", np.stack(frames), path.fps)
    covered = float(np.mean([f.any(-1).mean() for f in frames]))
    print(f"spatia: rendered {len(path)} frames of {rd.memory_version_path(version).name} ({len(memory):,} points, "
          f"{100 * covered:.0f}% pixels covered) → {out}")
    return 0


def cmd_view(args) -> int:
    from spatia_py.rerun_log import view

    return view(args.target, launch=not args.no_viewer)


def cmd_bench(args) -> int:
    from spatia_py.bench import run_bench

    return run_bench(scenarios=args.scenario, quick=args.quick, out=args.out)


COMMANDS = {"run": cmd_run, "render": cmd_render, "view": cmd_view, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    # Idle OpenMP threads sleep instead of spinning: on small shared machines spinning threads of
    # torch and numpy starve each other (seen as 10x slowdowns). Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from spatia_py.config import ConfigError
    from spatia_py.geometry import GeometryError

    known: tuple[type[BaseException], ...] = (CliError, ConfigError, GeometryError)
    try:
        from spatia_py.pipeline import PipelineError
        from spatia_py.rundir import RunDirError

        known += (PipelineError, RunDirError)
    except ImportError:  # pragma: no cover - only while optional parts are missing
        pass
    try:
        return COMMANDS[args.command](args)
    except known as e:
        print(f"spatia {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"spatia {args.command}: interrupted; completed rounds are kept (continue with --resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
