"""spatia bench: argument checks, report formatting, the rebuild-everything peer, Umeyama alignment.

The benchmark numbers themselves are not asserted here (STYLE.md: benchmarks print tables and
write JSON; no timed assertions in unit tests). The full quick run is marked slow.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from spatia_py.bench import SCENARIO_NAMES, BenchError, run_bench
from spatia_py.bench.peers import incremental_vs_rebuild, sim3_aligned_errors, time_interleaved
from spatia_py.bench.report import format_table, format_value, json_safe, row, write_plots, write_results_json
from spatia_py.bench.scenarios import per_round_drift, rooms_points
from spatia_py.bench.sysinfo import config_hash, machine_info
from spatia_py.cli import main
from spatia_py.geometry import Camera, intrinsics_from_fov, look_at, so3_exp, umeyama
from spatia_py.memory import SpatialMemory

# --------------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------------


def test_unknown_scenario_is_rejected_with_the_valid_names(tmp_path):
    out = tmp_path / "bench"
    with pytest.raises(BenchError) as e:
        run_bench(scenarios=["loop", "nope"], quick=True, out=out)
    msg = str(e.value)
    assert "'nope'" in msg
    for name in SCENARIO_NAMES:
        assert name in msg
    assert not out.exists()  # rejected before anything was written


def test_cli_unknown_scenario_exits_nonzero(tmp_path, capsys):
    code = main(["bench", "--scenario", "nope", "--out", str(tmp_path / "b")])
    assert code != 0
    err = capsys.readouterr().err
    assert "unknown scenario 'nope'" in err and "loop, long, dynamic, scale" in err


def test_non_empty_out_is_rejected(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(BenchError, match="not empty"):
        run_bench(scenarios=["scale"], quick=True, out=tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "x"


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def synthetic_results() -> dict:
    return {
        "bench": "spatia",
        "mode": "quick",
        "machine": machine_info(),
        "scenarios": {
            "loop": {
                "rows": [row("revisit PSNR, static px", "dB", 30.0, "memory: off", 20.5, "delta"),
                         row("tracking time", "s", 2.0, "pycolmap", 10.0, "ratio", "same frames"),
                         row("ATE", "cm", float("nan"), "pycolmap", 1.0, "ratio")],
                "curves": {"drift": {"title": "drift", "xlabel": "round", "ylabel": "cm",
                                     "series": {"ours": {"x": [0, 1, 2], "y": [1.0, None, 1.5]}}}},
                "figures": {"n": np.int64(3), "a": np.arange(3), "inf": float("inf"), "nan": float("nan")},
                "notes": ["COLMAP is Sim(3)-aligned"],
            },
            "scale": {
                "rows": [row("render, 1M pts", "ms", 12.5, "Open3D", 25.0), row("memory points", "pts", 1234567)],
                "curves": {"render": {"title": "render", "xlabel": "points", "ylabel": "ms", "logx": True,
                                      "logy": True,
                                      "series": {"ours": {"x": [1e6, 4e6], "y": [10.0, 40.0]},
                                                 "Open3D": {"x": [1e6, 4e6], "y": [20.0, 80.0]}}}},
            },
            "dynamic": {"error": "Traceback ...\nRuntimeError: boom", "rows": [], "curves": {}},
        },
    }


def test_row_computes_ratio_and_delta():
    r = row("t", "s", 2.0, "peer", 10.0)
    assert r["ratio"] == pytest.approx(5.0) and "delta" not in r
    d = row("psnr", "dB", 30.0, "off", 20.5, "delta")
    assert d["delta"] == pytest.approx(9.5) and "ratio" not in d
    assert "ratio" not in row("x", "s", float("nan"), "peer", 1.0)
    assert row("x", "s", 1.0)["compare"] is None
    with pytest.raises(ValueError):
        row("x", "s", 1.0, "p", 2.0, "percent")


def test_format_table_is_aligned_and_complete():
    table = format_table(synthetic_results())
    lines = table.splitlines()
    header = lines[0]
    assert header.split()[:4] == ["scenario", "measure", "unit", "spatia"]
    body = [ln for ln in lines[2:] if ln.startswith(("loop ", "scale "))]
    assert len(body) == 5
    # Right-aligned numeric columns end at the same character position in every line.
    col_end = header.index("spatia") + len("spatia")
    for ln in body:
        assert ln[col_end - 1] != " "
    assert "x5.00" in table and "+9.50" in table and "x2.00" in table
    assert "ERROR" in table and "RuntimeError: boom" in table
    assert "1,234,567" in table
    assert "ratio (xN) = peer / spatia" in table
    assert "machine:" in table
    assert "loop: COLMAP is Sim(3)-aligned" in table


def test_format_value():
    assert format_value(None) == "-"
    assert format_value(float("nan")) == "nan"
    assert format_value(12345.6) == "12,346"
    assert format_value(1.23456) == "1.235"
    assert format_value(0.00612) == "0.006120"


def test_results_json_and_plots(tmp_path):
    res = synthetic_results()
    path = write_results_json(res, tmp_path)
    data = json.loads(path.read_text())  # strict JSON: no NaN/Infinity tokens
    figs = data["scenarios"]["loop"]["figures"]
    assert figs == {"n": 3, "a": [0, 1, 2], "inf": "inf", "nan": None}
    assert data["machine"]["versions"]["numpy"] == np.__version__
    files = write_plots(res, tmp_path)
    assert sorted(f.name for f in files) == ["loop_drift.png", "scale_render.png"]
    for f in files:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_safe_and_config_hash():
    assert json_safe({"a": (np.float32(1.5), Path("/x"))}) == {"a": [1.5, "/x"]}
    a = config_hash({"x": 1, "y": {"z": [1, 2]}})
    assert a == config_hash({"y": {"z": [1, 2]}, "x": 1}) and len(a) == 64
    assert a != config_hash({"x": 2, "y": {"z": [1, 2]}})


# --------------------------------------------------------------------------------------------
# peers
# --------------------------------------------------------------------------------------------


def _tiny_rounds(n_rounds: int = 4):
    """Depth maps of a wall 2 m ahead from a camera panning left to right, 3 frames per round."""
    W, H = 32, 24
    K = intrinsics_from_fov(W, H, 70.0)
    rng = np.random.default_rng(0)
    rounds = []
    for r in range(n_rounds):
        views = []
        for k in range(3):
            x = 0.1 * (3 * r + k)
            cam = Camera(K, W, H, look_at([x, 0.0, 0.0], [x, 2.0, 0.0], up=(0.0, 0.0, 1.0)))
            depth = np.full((H, W), 2.0, np.float32) + rng.uniform(0, 0.01, (H, W)).astype(np.float32)
            rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
            views.append((depth, rgb, cam))
        rounds.append(views)
    return rounds


def _fuse_round(memory, views, r):
    for depth, rgb, cam in views:
        memory.fuse_depth(depth, rgb, cam, round_index=r)


def test_rebuild_everything_gives_the_incremental_memory():
    rounds = _tiny_rounds()
    res = incremental_vs_rebuild(rounds, _fuse_round, voxel_size=0.02)
    assert res["identical"] is True
    assert res["rebuild_points"] == res["incremental_points"]
    assert res["incremental_points"][-1] > res["incremental_points"][0] > 0
    assert res["rebuild_round"] == [0, 1, 2, 3] and len(res["rebuild_s"]) == 4
    # Same points fused in the same order -> the same voxels as a direct fuse of everything.
    direct = SpatialMemory(0.02)
    for r, views in enumerate(rounds):
        _fuse_round(direct, views, r)
    assert len(direct) == res["incremental_points"][-1]


def test_rebuild_measured_only_where_asked():
    res = incremental_vs_rebuild(_tiny_rounds(3), _fuse_round, voxel_size=0.02, rebuild_at=[0, 2])
    assert res["rebuild_round"] == [0, 2] and len(res["incremental_s"]) == 3
    assert res["identical"] is True


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(50, 3))
    R = so3_exp(np.array([0.3, -1.2, 0.7]))
    s, t = 2.5, np.array([1.0, -2.0, 0.5])
    dst = s * src @ R.T + t
    s_hat, R_hat, t_hat = umeyama(src, dst)
    assert s_hat == pytest.approx(s, rel=1e-9)
    np.testing.assert_allclose(R_hat, R, atol=1e-9)
    np.testing.assert_allclose(t_hat, t, atol=1e-9)
    s_rigid, _, _ = umeyama(src, src @ R.T + t, with_scale=False)
    assert s_rigid == 1.0
    with pytest.raises(ValueError):
        umeyama(src[:2], dst[:2])


def test_sim3_alignment_of_a_trajectory():
    rng = np.random.default_rng(4)
    T_gt = np.stack([look_at(rng.normal(size=3) * 2, [0.0, 0.0, 0.0]) for _ in range(10)])
    # The same trajectory seen in another frame at another scale (as COLMAP would return it).
    S = np.eye(4)
    S[:3, :3] = so3_exp(np.array([0.1, 0.2, -0.4]))
    S[:3, 3] = [3.0, 1.0, -2.0]
    T_est = np.einsum("ij,njk->nik", S, T_gt)
    T_est[:, :3, 3] *= 0.3
    err = sim3_aligned_errors(T_est, T_gt)
    assert err["ate_rmse_m"] < 1e-9 and err["rot_err_median_deg"] < 1e-6
    assert err["scale"] == pytest.approx(1 / 0.3)


def test_time_interleaved_runs_each_callable_repeatedly():
    calls = []
    t = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert set(t) == {"a", "b"} and t["a"]["repeats"] == 3 and t["a"]["median_s"] >= 0


# --------------------------------------------------------------------------------------------
# scenario helpers
# --------------------------------------------------------------------------------------------


def test_rooms_points_are_one_per_voxel():
    xyz, rgb = rooms_points(60_000, voxel_size=0.05)  # more than one 6 x 5 x 3 m room at 5 cm
    assert xyz.shape == (60_000, 3) and rgb.shape == (60_000, 3) and rgb.dtype == np.uint8
    mem = SpatialMemory(0.05)
    mem.fuse(xyz, rgb, round_index=0)
    assert len(mem) == 60_000
    assert xyz[:, 0].max() > 7.0  # spilled into the second room


def test_per_round_drift_reads_cameras_json_and_ground_truth(tmp_path):
    K = intrinsics_from_fov(32, 24, 70.0)
    entries, gts = [], {0: [], 1: []}
    for f in range(4):
        r = f // 2
        T_cmd = look_at([0.1 * f, 0.0, 0.0], [0.1 * f, 1.0, 0.0])
        T_gt = T_cmd.copy()
        T_gt[0, 3] += 0.01  # 1 cm control error
        T_est = T_gt.copy()
        T_est[1, 3] += 0.02 * (r + 1)  # 2 cm, then 4 cm estimation error
        entries.append({**Camera(K, 32, 24, T_cmd).to_dict(), "T_world_cam_estimated": T_est.tolist(),
                        "round": r, "frame": f, "tracked": True})
        gts[r].append(T_gt)
    (tmp_path / "cameras.json").write_text(json.dumps({"fps": 24, "cameras": entries}))
    for r, Ts in gts.items():
        d = tmp_path / "rounds" / f"r{r:03d}"
        d.mkdir(parents=True)
        np.savez(d / "ground_truth.npz", T_world_cam=np.stack(Ts))
    drift = per_round_drift(tmp_path)
    assert drift["round"] == [0, 1]
    np.testing.assert_allclose(drift["ate_m"], [0.02, 0.04], atol=1e-9)
    np.testing.assert_allclose(drift["commanded_ate_m"], [0.01, 0.01], atol=1e-9)


def test_bench_presets_load():
    from spatia_py.bench.scenarios import CONFIG_DIR, QUICK_OVERRIDES
    from spatia_py.config import load_config

    for name in SCENARIO_NAMES:
        full = load_config(CONFIG_DIR / f"bench-{name}.yaml")
        quick = load_config(CONFIG_DIR / f"bench-{name}.yaml", QUICK_OVERRIDES[name])
        assert quick.path.n_frames * quick.path.laps <= full.path.n_frames * full.path.laps
        assert quick.path.width * quick.path.height <= full.path.width * full.path.height
    long = load_config(CONFIG_DIR / "bench-long.yaml")
    n_rounds = long.path.n_frames * long.path.laps / long.frames_per_round
    assert n_rounds >= 30 and long.path.laps >= 2
    assert math.isfinite(long.memory.voxel_size)


# --------------------------------------------------------------------------------------------
# the quick suite end to end
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_bench_end_to_end(tmp_path):
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["mode"] == "quick" and set(data["scenarios"]) == set(SCENARIO_NAMES)
    for name, sc in data["scenarios"].items():
        assert sc["rows"], name
        assert all(len(c["sha256"]) == 64 for c in sc["configs"].values())
    assert {"long_update_time.png", "long_memory_size.png", "long_drift.png", "scale_render.png"} <= set(data["plots"])
    assert data["scenarios"]["long"]["figures"]["rebuild"]["identical"] is True
