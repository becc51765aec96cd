"""Render a saved memory along a camera path — the cleanest walkthrough of the static world.

    python examples/render_memory_along_path.py runs/demo --out runs/demo-orbit-render

Loads the latest memory version of a run (`memory/vNNN.npz`), builds a new camera path (a slow
orbit at a different height than the run flew), writes it as a path file that `spatia render`
also accepts, and renders rgb + depth with the point-splatting renderer.
"""

import argparse
from pathlib import Path

import numpy as np

from render.video import colorize_depth, write_video
from spatia_py.conditioning import MemoryRenderer
from spatia_py.geometry import orbit_path, save_path
from spatia_py.rundir import RunDir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a run directory made by `spatia run`")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--frames", type=int, default=48)
    args = ap.parse_args()
    rd = RunDir(args.run)
    version = rd.latest_memory_version()
    if version is None:
        raise SystemExit(f"{args.run} has no memory/vNNN.npz; run `spatia run` first (e.g. make demo)")
    memory = rd.load_memory(version)
    out = args.out or args.run.parent / f"{args.run.name}-render"
    out.mkdir(parents=True, exist_ok=True)

    path = orbit_path([0, 0, 1.2], 1.2, 1.6, args.frames, width=512, height_px=320, degrees=360)
    save_path(path, out / "path.json")  # reusable: spatia render RUN --path out/path.json --out DIR
    renderer = MemoryRenderer(memory, radius_scale=0.5, max_radius_px=3)
    rgb, depth = [], []
    for cam in path:
        o = renderer.render(cam)
        rgb.append(o["rgb"])
        depth.append(colorize_depth(o["depth"]))
    write_video(out / "rgb.mp4", np.stack(rgb), path.fps)
    write_video(out / "depth.mp4", np.stack(depth), path.fps)
    cover = np.mean([(d > 0).any(-1).mean() for d in depth])
    print(f"rendered {len(path)} views of {len(memory):,} points ({100 * cover:.0f}% pixels covered) -> {out}")


if __name__ == "__main__":
    main()
