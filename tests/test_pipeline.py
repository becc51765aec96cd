"""The round loop end to end at tiny resolution (like nerfstudio's 2-iteration train test)."""

import dataclasses
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import DEMO, TINY

from spatia_py.cli import main
from spatia_py.config import ConfigError, load_config
from spatia_py.memory import SpatialMemory
from spatia_py.pipeline import PipelineError, RoundLoop
from spatia_py.rundir import RunDir, RunDirError

METRIC_KEYS = {"slam", "memory", "revisit_psnr_db", "revisit_psnr_db_by_first_round", "revisit_ssim",
               "memory_points_per_round", "timings_s", "frames", "ate_rmse_m", "path_length_m", "rot_err_median_deg", "depth_absrel_median",
               "depth_coverage", "dynamic_leak_fraction", "dynamic_mask_iou"}


def tiny_config(*extra):
    return load_config(DEMO, TINY + list(extra))


def check_run_dir(out: Path, n_rounds: int) -> dict:
    for name in ("config.yaml", "cameras.json", "walkthrough.mp4", "memory.ply", "metrics.json"):
        assert (out / name).is_file(), name
    for r in range(n_rounds):
        d = out / "rounds" / f"r{r:03d}"
        for name in ("round.json", "clip.mp4", "frames.npz", "slam.json", "masks.npz"):
            assert (d / name).is_file(), f"{d}/{name}"
        assert (out / "memory" / f"v{r:03d}.npz").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert len(metrics["memory_points_per_round"]) == n_rounds
    assert all(len(v) == n_rounds for v in metrics["timings_s"].values())
    cams = json.loads((out / "cameras.json").read_text())
    assert len(cams["cameras"]) == metrics["frames"]
    assert {"K", "width", "height", "T_world_cam", "T_world_cam_estimated", "round"} <= set(cams["cameras"][0])
    return metrics


def test_two_rounds_visual_slam(tmp_path):
    out = tmp_path / "run"
    # A 60 degree arc: the demo's angular step, so round 1's first keyframes take round 0's last
    # frames as stereo sources (the state SLAM carries between clips).
    arc = "path.params={center: [0.0, 0.0, 1.2], radius: 1.5, height: 1.4, degrees: 60}"
    assert main(["run", "--config", str(DEMO), "--out", str(out), "--no-progress", *TINY, arc]) == 0
    m = check_run_dir(out, 2)
    assert m["slam"] == "visual" and m["memory"] is True
    assert m["memory_points_per_round"][0] > 0
    assert m["tracked_fraction"] > 0.7
    assert m["ate_rmse_m"] < 0.05
    mem = SpatialMemory.load(out / "memory" / "v001.npz")
    assert len(mem) == m["memory_points_per_round"][1]
    # The round-1 conditioning was rendered from memory.
    cond = np.load(out / "rounds" / "r001" / "conditioning.npz")
    assert cond["validity"].astype(np.float32).mean() > 0.05

    # Resuming after round 0 gives round 1 bit for bit: visual SLAM carries the last clip's frames
    # into the next clip's stereo, and the resumed run restores them from the run directory.
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    shutil.rmtree(resumed / "rounds" / "r001")
    (resumed / "memory" / "v001.npz").unlink()
    assert main(["run", "--out", str(resumed), "--resume", "--no-progress"]) == 0
    assert min(json.loads((out / "rounds" / "r001" / "slam.json").read_text())["info"]["keyframes"][0]["sources"]) < 0
    for name in ("frames.npz", "conditioning.npz", "slam.npz", "masks.npz"):
        a, b = np.load(out / "rounds" / "r001" / name), np.load(resumed / "rounds" / "r001" / name)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}:{k}")
    assert json.loads((resumed / "metrics.json").read_text())["memory_points_per_round"] == m["memory_points_per_round"]


def test_oracle_and_memory_off_are_labelled(tmp_path):
    m = RoundLoop(tiny_config("slam=oracle", "memory=off"), tmp_path / "o", progress=False).run()
    assert m["slam"] == "oracle" and m["memory"] is False
    assert not (tmp_path / "o" / "rounds" / "r001" / "conditioning.npz").exists()


def test_generator_depth_source(tmp_path):
    # Without depth from the backend: a clear error naming both ways out, before anything runs.
    with pytest.raises(ConfigError, match="hand_over_depth=true"):
        tiny_config("slam.depth_source=generator")
    assert main(["run", "--config", str(DEMO), "--out", str(tmp_path / "none"),
                 "slam.depth_source=generator"]) == 2
    assert not (tmp_path / "none").exists()
    # With it, visual SLAM tracks from pixels but fuses the backend's depth: keyframe depth is exact.
    loop = RoundLoop(tiny_config("slam.depth_source=generator", "generator.procedural.hand_over_depth=true",
                                 "slam.workers=2", "render.workers=2"), tmp_path / "run", progress=False)
    names = set()
    process = loop.slam.process

    def process_and_look(*args, **kwargs):
        out = process(*args, **kwargs)
        names.update(t.name.rsplit("_", 1)[0] for t in threading.enumerate())
        return out

    loop.slam.process = process_and_look
    m = loop.run()
    # SLAM's and the renderer's worker threads and the checkpoint writer ran; none outlives the run.
    assert {"slam", "render_views", "checkpoint"} <= names
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("slam", "render_views", "checkpoint"))]
    assert m["slam"] == "visual"
    assert m["depth_absrel_median"] < 1e-6 and m["depth_coverage"] > 0.95
    assert m["memory_points_per_round"][-1] > 0


def test_render_workers_do_not_change_the_run(tmp_path):
    # Conditioning views and the retrieval index of each round, rendered serially and on threads.
    runs = {}
    for w in (1, 2):
        RoundLoop(tiny_config("slam=oracle", f"render.workers={w}"), tmp_path / f"w{w}", progress=False).run()
        runs[w] = {f"{p.parent.name}/{p.name}": dict(np.load(p)) for p in sorted((tmp_path / f"w{w}" / "rounds").glob("*/*.npz"))}
    assert runs[1].keys() == runs[2].keys() and any("conditioning" in k for k in runs[1])
    for name, arrays in runs[1].items():
        assert arrays.keys() == runs[2][name].keys(), name
        for key, a in arrays.items():
            assert np.array_equal(a, runs[2][name][key]), f"{name}: {key}"


def test_existing_run_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    RoundLoop(tiny_config("slam=oracle"), out, progress=False).run()
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(PipelineError, match="already holds a run"):
        RoundLoop(tiny_config("slam=oracle"), out, progress=False)
    assert (out / "metrics.json").read_bytes() == before


def test_driving_round_by_round(tmp_path):
    # The README's scripted use on a fresh directory: the first run_round sets the run up (folders,
    # config.yaml), so a scripted run can be resumed like one started by run().
    out = tmp_path / "run"
    loop = RoundLoop(tiny_config("slam=oracle"), out, progress=False)
    assert len(loop.segments) == 2
    loop.run_round(0, *loop.segments[0])
    loop.close()
    resumed = RoundLoop(None, out, resume=True, progress=False)
    assert resumed.start() == 1 and resumed.start() == 1 and len(resumed.records) == 1
    with pytest.raises(PipelineError, match="round 0 cannot run next"):
        resumed.run_round(0, *resumed.segments[0])
    resumed.run_round(1, *resumed.segments[1])
    resumed.finish()
    check_run_dir(out, 2)
    # A setup that fails half-way (round 0 restored, round 1 damaged) is not retried on the same loop.
    (out / "rounds" / "r001" / "round.json").write_text("{")
    broken = RoundLoop(None, out, resume=True, progress=False)
    with pytest.raises(RunDirError, match="round.json"):
        broken.start()
    with pytest.raises(PipelineError, match="failed earlier"):
        broken.run_round(1, *broken.segments[1])


def test_resume_after_interruption_mid_round(tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = tiny_config("slam=oracle", "path.n_frames=24")  # 3 rounds
    loop = RoundLoop(cfg, out, progress=False)
    from slam.fusion import fuse_clip as real_fuse
    calls = {"n": 0}

    def dying_fuse(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # killed in the middle of round 1
            raise KeyboardInterrupt
        return real_fuse(*a, **k)

    monkeypatch.setattr("slam.fusion.fuse_clip", dying_fuse)
    with pytest.raises(KeyboardInterrupt):
        loop.run()
    rd = RunDir(out)
    assert rd.completed_rounds() == [0]
    r0 = (out / "rounds" / "r000" / "frames.npz").read_bytes()
    # Leftovers of the interrupted round, as a kill would leave them.
    (out / "rounds" / ".r001.tmp").mkdir()
    monkeypatch.setattr("slam.fusion.fuse_clip", real_fuse)
    m = RoundLoop(None, out, resume=True, progress=False).run()
    assert rd.completed_rounds() == [0, 1, 2]
    assert (out / "rounds" / "r000" / "frames.npz").read_bytes() == r0
    assert not (out / "rounds" / ".r001.tmp").exists()
    assert m["frames"] == 24
    # An uninterrupted run gives the same frames: resuming loses nothing and changes nothing.
    ref = RoundLoop(cfg, tmp_path / "ref", progress=False).run()
    a = np.load(out / "rounds" / "r002" / "frames.npz")["frames"]
    b = np.load(tmp_path / "ref" / "rounds" / "r002" / "frames.npz")["frames"]
    np.testing.assert_array_equal(a, b)
    assert ref["memory_points_per_round"] == m["memory_points_per_round"]


@pytest.mark.parametrize("failing_round", [1, 2])
def test_checkpoint_write_error_is_raised(tmp_path, monkeypatch, failing_round):
    # Checkpoints are written on a background thread while the next round runs: a failed write
    # (a full disk) must still stop the run with its error, whether a later round waits for it
    # (round 1) or the end of the run does (round 2, the last); earlier rounds stay committed,
    # and the run resumes from them.
    out = tmp_path / "run"
    loop = RoundLoop(tiny_config("slam=oracle", "path.n_frames=24"), out, progress=False)
    real_write = RunDir.write_round
    threads = []

    def failing_write(self, rec, **kw):
        threads.append(threading.current_thread().name)
        if rec.round_index == failing_round:
            raise OSError(28, "No space left on device")
        return real_write(self, rec, **kw)

    monkeypatch.setattr(RunDir, "write_round", failing_write)
    with pytest.raises(OSError, match="No space left"):
        loop.run()
    assert all(t.startswith("checkpoint") for t in threads) and len(threads) == failing_round + 1
    assert RunDir(out).completed_rounds() == list(range(failing_round))
    assert (out / "rounds" / "r000" / "visibility.npz").is_file()
    assert not (out / "metrics.json").exists()
    assert len(json.loads((out / "cameras.json").read_text())["cameras"]) == 8 * failing_round
    monkeypatch.undo()
    m = RoundLoop(None, out, resume=True, progress=False).run()
    assert RunDir(out).completed_rounds() == [0, 1, 2] and m["frames"] == 24
    assert len(json.loads((out / "cameras.json").read_text())["cameras"]) == 24


def test_render_command(tmp_path):
    out = tmp_path / "run"
    RoundLoop(tiny_config("slam=oracle"), out, progress=False).run()
    from spatia_py.geometry import orbit_path, save_path

    save_path(orbit_path([0, 0, 1.2], 1.5, 1.4, 3, width=64, height_px=40, degrees=30), tmp_path / "p.json")
    assert main(["render", str(out), "--path", str(tmp_path / "p.json"), "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 0
    for i in range(3):
        assert (tmp_path / "r" / "rgb" / f"{i:04d}.png").is_file()
        assert (tmp_path / "r" / "validity" / f"{i:04d}.png").is_file()
        d = np.load(tmp_path / "r" / "depth" / f"{i:04d}.npy")
        assert d.dtype == np.float32 and d.shape == (40, 64) and (d > 0).mean() > 0.2
    assert (tmp_path / "r" / "render.mp4").is_file()
    # A second render into the same folder is refused, nothing overwritten.
    assert main(["render", str(out), "--path", str(tmp_path / "p.json"), "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2


def test_damaged_run_files_are_named_with_the_fix(tmp_path, capsys):
    # A truncated or hand-broken file of a run stops every command with one line naming the file
    # and how to recover, exit 2, and nothing is written; following the fix recovers the run.
    out = tmp_path / "run"
    RoundLoop(tiny_config("slam=oracle"), out, progress=False).run()
    from spatia_py.geometry import orbit_path, save_path

    save_path(orbit_path([0, 0, 1.2], 1.5, 1.4, 2, width=64, height_px=40, degrees=30), tmp_path / "p.json")
    mem = out / "memory" / "v001.npz"
    good_memory = mem.read_bytes()
    mem.write_bytes(good_memory[:300])
    capsys.readouterr()
    assert main(["render", str(out), "--path", str(tmp_path / "p.json"), "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{mem} is not a readable" in err and f"delete {mem}" in err and "--resume" in err
    assert not (tmp_path / "r").exists()  # a later render into the same --out is not refused
    mem.write_bytes(good_memory)

    frames = out / "rounds" / "r001" / "frames.npz"
    frames.write_bytes(frames.read_bytes()[:100])
    before = sorted(p.name for p in out.rglob("*"))
    assert main(["run", "--out", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{frames} is damaged or unreadable" in err and f"delete {out / 'rounds' / 'r001'}" in err
    assert sorted(p.name for p in out.rglob("*")) == before
    (out / "rounds" / "r001" / "round.json").write_text("{bad")
    with pytest.raises(RunDirError, match=r"round\.json is damaged or unreadable \(JSONDecodeError"):
        RunDir(out).read_round(1)
    shutil.rmtree(out / "rounds" / "r001")  # the fix: round 1 is generated again
    assert main(["run", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert RunDir(out).read_round(1).frames.shape[0] == 8

    (out / "cameras.json").write_text("[")
    with pytest.raises(RunDirError, match="cameras.json is damaged.*writes it again"):
        RunDir(out).read_json(out / "cameras.json")
    assert main(["run", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert len(json.loads((out / "cameras.json").read_text())["cameras"]) == 16
    with pytest.raises(RunDirError, match=r"v007\.npz is missing; 'spatia run .* --resume' generates round 7") as e:
        RunDir(out).load_memory(7)
    assert "delete" not in str(e.value)  # nothing to delete when the file is missing

    # Poses and tracked flags of different lengths (a hand-edited slam.json) stop the resume cleanly.
    sj_path = out / "rounds" / "r001" / "slam.json"
    sj = json.loads(sj_path.read_text())
    sj["tracked"] = sj["tracked"][:3]
    sj_path.write_text(json.dumps(sj))
    capsys.readouterr()
    assert main(["run", "--out", str(out), "--resume", "--no-progress"]) == 2
    assert f"{sj_path} is damaged or unreadable" in capsys.readouterr().err


def test_lookahead_frames_serve_slam_and_are_not_committed(tmp_path, monkeypatch):
    cfg = tiny_config("slam=oracle", "path.n_frames=24", "lookahead_frames=3")  # rounds of 8, 8, 8
    loop = RoundLoop(cfg, tmp_path / "run", progress=False)
    asked, fused = [], []
    real_generate = loop.generator.generate
    from slam.fusion import fuse_clip as real_fuse

    def generate(request):
        asked.append((request.frame_offset, len(request.cameras)))
        return real_generate(request)

    def fuse(memory, frames, result, cameras, r, c):
        fused.append((len(frames), max(result.keyframes)))
        return real_fuse(memory, frames, result, cameras, r, c)

    monkeypatch.setattr(loop.generator, "generate", generate)
    monkeypatch.setattr("slam.fusion.fuse_clip", fuse)
    m = loop.run()
    # Rounds 0 and 1 see 3 frames past their segment (fused from); the last round has none.
    assert asked == [(0, 11), (8, 11), (16, 8)]
    assert [n for n, _ in fused] == [11, 11, 8] and fused[0][1] >= 8
    assert m["frames"] == 24 and [len(r.frames) for r in loop.records] == [8, 8, 8]
    assert all(max(r.slam.keyframes) < 8 for r in loop.records)
    # Every per-frame ground-truth array is cut to the committed frames too.
    for r in loop.records:
        per_frame = {f.name: getattr(r.ground_truth, f.name) for f in dataclasses.fields(r.ground_truth)
                     if f.name != "actor_radii"}
        assert per_frame["conditioning_status"] is not None
        assert {k: len(v) for k, v in per_frame.items()} == dict.fromkeys(per_frame, 8)
    assert loop.records[0].slam.info["lookahead"]["frames"] == 3
    assert len(json.loads((tmp_path / "run" / "cameras.json").read_text())["cameras"]) == 24
    # Look-ahead stops where the path turns back onto the segment (it would see nothing new).
    loop.path.cameras[8:16] = loop.path.cameras[7::-1]
    assert loop._lookahead(0, 8) == 0 and loop._lookahead(8, 16) == 3
    with pytest.raises(ConfigError, match="lookahead_frames"):
        tiny_config("lookahead_frames=-1")
