"""Rerun logging: record tiny synthetic rounds, read the .rrd back and check what the README ("Inspecting runs in Rerun") promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

rr = pytest.importorskip("rerun")
from rerun.chunk import RrdReader  # noqa: E402

from spatia_py.geometry import orbit_path  # noqa: E402
from spatia_py.memory import SpatialMemory  # noqa: E402
from spatia_py.rerun_log import RerunLogError, RerunLogger, record_run_dir, view  # noqa: E402
from spatia_py.rundir import RoundRecord, RunDir  # noqa: E402
from spatia_py.types import ConditioningMaps, GroundTruth, ReferenceFrame, SlamResult  # noqa: E402

W, H, N_PER_ROUND, N_ROUNDS = 64, 48, 3, 2
N_FRAMES = N_PER_ROUND * N_ROUNDS


@pytest.fixture(autouse=True)
def _strict_rerun():
    """Rerun logs and swallows bad calls by default; make them raise in tests."""
    before = rr.strict_mode()
    rr.set_strict_mode(True)
    yield
    rr.set_strict_mode(before)


def make_rounds(*, ground_truth: bool = True):
    """Two rounds of a tiny orbit: frames, conditioning (round 1 only), SLAM result, memory versions."""
    rng = np.random.default_rng(0)
    path = orbit_path([0.0, 0.0, 1.0], 1.5, 1.4, N_FRAMES, width=W, height_px=H, fps=8)
    memory = SpatialMemory(voxel_size=0.05)
    records, memories, previous = [], [], []
    for r in range(N_ROUNDS):
        lo = r * N_PER_ROUND
        cams = path.cameras[lo:lo + N_PER_ROUND]
        frames = rng.integers(0, 256, (N_PER_ROUND, H, W, 3), dtype=np.uint8)
        conditioning = None
        if r > 0:
            ref = records[-1]
            conditioning = ConditioningMaps(
                frames // 2, rng.uniform(0.5, 3.0, (N_PER_ROUND, H, W)).astype(np.float32),
                rng.uniform(0, 1, (N_PER_ROUND, H, W)).astype(np.float32),
                [ReferenceFrame(ref.frames[1], ref.cameras[1], ref.frame_offset + 1, 0.5)])
        T = np.stack([c.T_world_cam for c in cams])
        depth = np.zeros((N_PER_ROUND, H, W), np.float32)
        depth[0] = 2.0  # keyframe 0 has dense depth, the others none
        masks = np.zeros((N_PER_ROUND, H, W), bool)
        masks[:, 10:20, 10:30] = True
        slam = SlamResult(T, np.ones(N_PER_ROUND, bool), np.full(N_PER_ROUND, 0.75, np.float32), [0], depth,
                          (depth > 0).astype(np.float32), masks, {"track": 0.01}, {})
        gt = None
        if ground_truth:
            gt = GroundTruth(T, depth + 1.0, masks, np.zeros((N_PER_ROUND, 1, 3), np.float32),
                             np.array([0.2], np.float32))
        before = memory.copy()
        memory.fuse(rng.uniform(-1, 1, (300, 3)), rng.integers(0, 256, (300, 3), dtype=np.uint8), round_index=r)
        if r == 1:
            memory.remove(np.arange(5))
        records.append(RoundRecord(r, lo, cams, frames, conditioning, slam, "visual", gt,
                                   {"render": 0.1, "generate": 0.2, "slam": 0.3, "fuse": 0.04},
                                   {"points": len(memory)}))
        memories.append(memory.copy())
        previous.append(before)
    return path, records, memories, previous


def read_rrd(path: Path) -> dict[str, list]:
    """Entity path -> its chunks' record batches (static chunks have no timeline columns)."""
    out: dict[str, list] = {}
    for chunk in RrdReader(path).stream():
        out.setdefault(chunk.entity_path.lstrip("/"), []).append(chunk.to_record_batch())
    return out


def column(batches: list, name: str) -> list:
    return [v for b in batches if name in b.schema.names for v in b.column(name).to_pylist()]


def timeline_values(batches: list, timeline: str) -> list[int]:
    return sorted(column(batches, timeline))


def rows_by_frame(batches: list, component: str) -> dict[int, object]:
    out = {}
    for b in batches:
        if "frame" in b.schema.names and component in b.schema.names:
            for f, v in zip(b.column("frame").to_pylist(), b.column(component).to_pylist(), strict=True):
                out[f] = v
    return out


def verify_rrd(path: Path) -> None:
    exe = Path(sys.executable).with_name("rerun")
    if not exe.is_file():
        pytest.skip("the rerun CLI is not installed next to this Python")
    res = subprocess.run([str(exe), "rrd", "verify", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


PER_FRAME = ["world/camera", "world/camera/image", "world/commanded_camera", "world/commanded_camera/image",
             "world/paths/estimated", "frames/generated", "frames/slam/dynamic_mask",
             "metrics/slam/tracking_quality", "metrics/slam/tracked", "world/ground_truth/camera",
             "world/ground_truth/camera/image", "world/ground_truth/path", "world/ground_truth/actors",
             "frames/ground_truth/dynamic_mask"]
PER_ROUND = ["world/memory/points", "world/memory/by_confidence", "world/memory/by_round", "world/memory/by_origin",
             "world/memory/added", "world/memory/removed", "metrics/memory/points", "metrics/memory/added",
             "metrics/memory/removed", "metrics/timings/render", "metrics/timings/generate", "metrics/timings/slam",
             "metrics/timings/fuse", "log"]
STATIC = ["world", "world/paths/commanded", "config", "summary", "frames"]


def test_logger_records_what_the_docs_promise(tmp_path):
    path, records, memories, previous = make_rounds()
    out = tmp_path / "run.rrd"
    with RerunLogger(save_path=out) as logger:
        logger.log_setup(path, {"name": "tiny", "memory": {"voxel_size": 0.05}})
        for rec, mem, prev in zip(records, memories, previous, strict=True):
            logger.log_round(rec, mem, prev, {"revisit_psnr_db": 25.0})
        logger.log_final({"revisit_psnr_db": 25.0, "frames": N_FRAMES, "timings_s": {"render": [0.1, 0.1]}})
    verify_rrd(out)
    ents = read_rrd(out)
    missing = [e for e in PER_FRAME + PER_ROUND + STATIC if e not in ents]
    assert not missing, f"entities not recorded: {missing}"

    # Per-frame entities: one row per global frame index, on both timelines.
    for e in PER_FRAME:
        assert timeline_values(ents[e], "frame") == list(range(N_FRAMES)), e
        assert sorted(set(column(ents[e], "round"))) == list(range(N_ROUNDS)), e
    # Per-round entities: stamped at each round's last frame.
    last_frames = [(r + 1) * N_PER_ROUND - 1 for r in range(N_ROUNDS)]
    for e in PER_ROUND:
        assert timeline_values(ents[e], "frame") == last_frames, e
        assert timeline_values(ents[e], "round") == list(range(N_ROUNDS)), e

    # The memory after each round, complete, with one colour per point.
    positions = rows_by_frame(ents["world/memory/points"], "Points3D:positions")
    colors = rows_by_frame(ents["world/memory/points"], "Points3D:colors")
    for f, mem in zip(last_frames, memories, strict=True):
        assert len(positions[f]) == len(mem) and len(colors[f]) == len(mem)
        np.testing.assert_allclose(np.array(positions[f]), mem.xyz, rtol=0, atol=0)
    # The colourings share the positions; by_origin uses class ids with an annotation context.
    assert len(rows_by_frame(ents["world/memory/by_origin"], "Points3D:class_ids")[last_frames[-1]]) == len(memories[-1])
    # Diffs: the voxels round 1 added, and those of round 0 it dropped (memory.remove above).
    added_keys, removed_keys = memories[1].diff_keys(previous[1])
    assert len(rows_by_frame(ents["world/memory/added"], "Points3D:positions")[last_frames[1]]) == len(added_keys)
    assert 0 < len(removed_keys) <= 5
    assert len(rows_by_frame(ents["world/memory/removed"], "Points3D:positions")[last_frames[1]]) == len(removed_keys)
    assert rows_by_frame(ents["metrics/memory/points"], "Scalars:scalars")[last_frames[1]] == [len(memories[1])]

    # Paths: the whole commanded path (static) and the estimated path growing frame by frame.
    assert len(column(ents["world/paths/commanded"], "LineStrips3D:strips")[0][0]) == N_FRAMES
    strips = rows_by_frame(ents["world/paths/estimated"], "LineStrips3D:strips")
    assert [len(strips[f][0]) for f in range(N_FRAMES)] == list(range(1, N_FRAMES + 1))
    # Camera pose: camera-to-world with an explicit relation; OpenCV (RDF) pinhole.
    tr = rows_by_frame(ents["world/camera"], "Transform3D:translation")
    np.testing.assert_allclose(tr[4][0], records[1].slam.T_world_cam[1][:3, 3], atol=1e-5)
    assert column(ents["world/camera"], "Transform3D:relation")[0] == [1]  # ParentFromChild
    assert "Pinhole:image_from_camera" in ents["world/camera/image"][0].schema.names
    assert "EncodedImage:blob" in ents["world/camera/image"][0].schema.names

    # Round 0 has no conditioning; round 1 has it for each of its frames, plus its reference frame.
    assert timeline_values(ents["frames/conditioning/rgb"], "frame") == [3, 4, 5]
    assert timeline_values(ents["frames/conditioning/depth"], "frame") == [3, 4, 5]
    assert timeline_values(ents["frames/conditioning/validity"], "frame") == [3, 4, 5]
    assert timeline_values(ents["frames/references/images"], "frame") == [3]
    assert column(ents["world/references"], "Points3D:labels")[-1] == ["#1 (50%)"]
    # Estimated depth only on the keyframes (cleared elsewhere): frame 0 of each round.
    depth_rows = rows_by_frame(ents["frames/slam/depth"], "DepthImage:buffer")
    assert sorted(f for f, v in depth_rows.items() if v is not None) == [0, 3]
    assert timeline_values(ents["world/keyframes"], "frame") == [0, 3]
    # Scalars.
    tq = rows_by_frame(ents["metrics/slam/tracking_quality"], "Scalars:scalars")
    assert len(tq) == N_FRAMES and tq[0] == [pytest.approx(0.75)]
    assert "metrics/quality/revisit_psnr_db" in ents and "metrics/final/revisit_psnr_db" in ents
    assert "metrics/final/timings_s/render" not in ents  # lists are not plotted as final scalars

    # Exactly our two timelines (no wall-clock log_time / log_tick), and a blueprint store.
    timelines = {n for batches in ents.values() for b in batches for n in b.schema.names
                 if not (":" in n or n.startswith("rerun."))}
    assert timelines == {"frame", "round"}
    assert RrdReader(out).blueprints(), "the default blueprint is sent with the recording"


def test_no_ground_truth_no_previous(tmp_path):
    path, records, memories, _ = make_rounds(ground_truth=False)
    out = tmp_path / "a.rrd"
    with RerunLogger(save_path=out, depth_stride=1, max_overlay_points=100) as logger:
        logger.log_setup(path, {})
        for rec, mem in zip(records, memories, strict=True):
            logger.log_round(rec, mem, None)
    ents = read_rrd(out)
    assert not [e for e in ents if "ground_truth" in e]
    # Overlays thinned to max_overlay_points; the memory itself never is.
    last = N_FRAMES - 1
    assert len(rows_by_frame(ents["world/memory/by_confidence"], "Points3D:positions")[last]) == 100
    assert len(rows_by_frame(ents["world/memory/points"], "Points3D:positions")[last]) == len(memories[-1])
    # Unknown previous memory: added/removed are cleared, not guessed.
    assert "world/memory/added" in ents and "Points3D:positions" not in ents["world/memory/added"][0].schema.names


def test_logger_arguments():
    with pytest.raises(RerunLogError, match="save_path"):
        RerunLogger()
    with pytest.raises(RerunLogError, match=".rrd"):
        RerunLogger(save_path="run.txt")


def write_run_dir(root: Path) -> tuple[list[RoundRecord], list[SpatialMemory]]:
    """A complete tiny run directory, written with the run-dir API alone (no pipeline)."""
    _, records, memories, _ = make_rounds()
    rd = RunDir(root)
    rd.prepare()
    rd.config_path.write_text(yaml.safe_dump({"name": "tiny", "memory": {"voxel_size": 0.05}}))
    for rec, mem in zip(records, memories, strict=True):
        mem.save(rd.memory_version_path(rec.round_index))
        rd.write_round(rec, fps=8, videos=False)
    rd.metrics_path.write_text(json.dumps({"frames": N_FRAMES, "revisit_psnr_db": 24.5,
                                           "memory_points_per_round": [len(m) for m in memories]}))
    return records, memories


def test_record_run_dir(tmp_path):
    records, memories = write_run_dir(tmp_path / "run")
    out = record_run_dir(tmp_path / "run", progress=False)
    assert out == tmp_path / "run" / "run.rrd" and out.is_file()
    assert not list((tmp_path / "run").glob(".*.tmp*")), "temporary recording left behind"
    verify_rrd(out)
    ents = read_rrd(out)
    assert timeline_values(ents["frames/generated"], "frame") == list(range(N_FRAMES))
    positions = rows_by_frame(ents["world/memory/points"], "Points3D:positions")
    assert [len(positions[(r + 1) * N_PER_ROUND - 1]) for r in range(N_ROUNDS)] == [len(m) for m in memories]
    # Round 0 starts from an empty memory: all its points count as added.
    added = rows_by_frame(ents["world/memory/added"], "Points3D:positions")
    assert len(added[N_PER_ROUND - 1]) == len(memories[0])
    # Reference images are looked up in the run's frames by the indices in round.json.
    assert timeline_values(ents["frames/references/images"], "frame") == [N_PER_ROUND]
    assert column(ents["world/references"], "Points3D:labels")[-1] == ["#1 (50%)"]
    assert "world/ground_truth/camera" in ents and "summary" in ents and "config" in ents
    assert column(ents["metrics/final/revisit_psnr_db"], "Scalars:scalars") == [[24.5]]


def test_record_run_dir_rejects_non_runs(tmp_path):
    with pytest.raises(Exception, match="no committed round"):
        record_run_dir(tmp_path, progress=False)


def test_view_without_display(tmp_path, monkeypatch, capsys):
    write_run_dir(tmp_path / "run")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert view(tmp_path / "run") == 0
    out = capsys.readouterr().out
    assert "No display" in out and str((tmp_path / "run" / "run.rrd").resolve()) in out
    assert (tmp_path / "run" / "run.rrd").is_file()
    # `spatia view --no-viewer`: same message without the "No display" part, no viewer started.
    assert view(tmp_path / "run", launch=False) == 0
    assert "The recording is" in capsys.readouterr().out


def test_view_launches_the_viewer(tmp_path, monkeypatch):
    write_run_dir(tmp_path / "run")
    record_run_dir(tmp_path / "run", progress=False)
    calls = []
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert view(tmp_path / "run" / "run.rrd") == 0
    assert calls == [[sys.executable, "-m", "rerun", str(tmp_path / "run" / "run.rrd")]]
    # A run directory whose recording is up to date is opened without re-recording.
    mtime = (tmp_path / "run" / "run.rrd").stat().st_mtime_ns
    assert view(tmp_path / "run") == 0
    assert (tmp_path / "run" / "run.rrd").stat().st_mtime_ns == mtime


def test_view_rejects_other_paths(tmp_path, capsys):
    assert view(tmp_path / "missing") == 2
    (tmp_path / "notes.txt").write_text("x")
    assert view(tmp_path / "notes.txt") == 2
    assert view(tmp_path) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "neither a run directory nor an .rrd file" in err and "committed rounds" in err
