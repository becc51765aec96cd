"""A round loop written out by hand with the Python API (what `spatia run` does, step by step).

    python examples/scripted_loop.py --out runs/example-loop

Each round: render the memory along the next segment -> generate a clip with the procedural
stand-in world model -> visual SLAM on the pixels -> fuse the static part into the memory.
Runs on CPU in about a minute at 320x200.
"""

import argparse
from pathlib import Path

import numpy as np

from slam import VisualSlam
from slam.fusion import fuse_clip
from spatia_py.conditioning import MemoryRenderer, render_conditioning
from spatia_py.config import RunConfig
from spatia_py.generators.procedural import ProceduralGenerator
from spatia_py.geometry import orbit_path
from spatia_py.memory import SpatialMemory
from spatia_py.types import GenerationRequest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/example-loop"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames-per-round", type=int, default=12)
    args = ap.parse_args()

    cfg = RunConfig()  # defaults; tweak fields directly, e.g. cfg.memory.voxel_size = 0.02
    cfg.memory.voxel_size = 0.02
    path = orbit_path([0, 0, 1.2], 1.5, 1.4, args.rounds * args.frames_per_round, width=320, height_px=200,
                      degrees=120)
    generator = ProceduralGenerator(cfg.generator.procedural, seed=0)
    slam = VisualSlam(cfg.slam, cfg.memory.voxel_size)
    memory = SpatialMemory(cfg.memory.voxel_size)

    all_frames = []
    for r in range(args.rounds):
        start = r * args.frames_per_round
        cams = path.cameras[start:start + args.frames_per_round]
        conditioning = None
        if len(memory):
            conditioning = render_conditioning(MemoryRenderer.from_config(memory, cfg), cams)
        clip = generator.generate(GenerationRequest(cameras=cams, conditioning=conditioning, seed=0,
                                                    round_index=r, frame_offset=start, fps=path.fps))
        # Track against the conditioning the clip was generated from (what `spatia run` does; it
        # also colours the conditioning from past frames, see render_conditioning(colour_frames=...)).
        templates = None if conditioning is None else (conditioning.rgb, conditioning.depth)
        result = slam.process(clip.frames, cams, memory, r, templates=templates)
        stats = fuse_clip(memory, clip.frames, result, cams, r, cfg.slam)
        # Ground truth is for evaluation only; here, to print how far SLAM is from the true cameras.
        err_cm = 100 * np.linalg.norm(result.T_world_cam[:, :3, 3] - clip.ground_truth.T_world_cam[:, :3, 3], axis=1)
        cov = 100 * conditioning.validity.mean() if conditioning is not None else 0.0
        print(f"round {r}: conditioning covers {cov:.0f}% | tracked {result.tracked.sum()}/{len(cams)} "
              f"| pose error median {np.median(err_cm):.2f} cm | memory {len(memory):,} points (+{stats['added']:,})")
        all_frames.append(clip.frames)

    args.out.mkdir(parents=True, exist_ok=True)
    memory.save(args.out / "memory.npz")
    memory.export_ply(args.out / "memory.ply")
    from render.video import write_video

    write_video(args.out / "walkthrough.mp4", np.concatenate(all_frames), path.fps)
    print(f"wrote {args.out}/memory.npz, memory.ply, walkthrough.mp4")


if __name__ == "__main__":
    main()
