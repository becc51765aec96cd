"""Depth diagnostics against ground truth (``python -m slam.diagnose``)."""

import json

import numpy as np
import pytest
from helpers import DEMO, TINY

from slam.diagnose import _place_by_truth, depth_edge_band, depth_report, edit_depth, main
from spatia_py.geometry import apply_similarity_to_poses, so3_exp
from spatia_py.types import SlamResult


def two_planes():
    """A wall at 4 m with a box face at 2 m on its left half; estimated depth with known errors."""
    truth = np.full((40, 60), 4.0, np.float32)
    truth[:, :30] = 2.0
    est = truth.copy()
    est[10, 31] = 2.0  # the near face spilled over the edge: 50 % in front, inside the band
    est[20, 55] = 4.6  # 15 % behind, far from the edge
    est[30, 5] = 2.02  # 1 % off: not gross
    est[5, 45] = 0.0  # a hole
    return est, truth


def test_edge_band_follows_true_depth_edges():
    _, truth = two_planes()
    band = depth_edge_band(truth, 3)
    assert band[:, 26:34].all()
    assert not band[:, :25].any() and not band[:, 35:].any()


def test_edit_depth_changes_only_what_the_fix_names():
    est, truth = two_planes()
    no_dyn = np.zeros(est.shape, bool)

    def edit(fix):
        return edit_depth(fix, est, truth, no_dyn, no_dyn, gross=0.05, band_px=3)

    np.testing.assert_array_equal(edit("none"), est)
    values = edit("values")
    assert values[5, 45] == 0 and np.array_equal(values[est > 0], truth[est > 0])
    full = edit("truth")
    assert np.array_equal(full, truth)  # every static pixel, the hole included
    holes = edit("holes")
    assert holes[5, 45] == 4.0 and holes[10, 31] == 2.0  # fills the hole only
    gross = edit("gross")
    assert gross[10, 31] == 4.0 and gross[20, 55] == 4.0 and gross[30, 5] == pytest.approx(2.02)
    assert edit("gross-band")[10, 31] == 4.0 and edit("gross-band")[20, 55] == pytest.approx(4.6)
    assert edit("gross-outside")[10, 31] == 2.0 and edit("gross-outside")[20, 55] == 4.0
    assert edit("gross-near")[10, 31] == 4.0 and edit("gross-near")[20, 55] == pytest.approx(4.6)
    assert edit("gross-far")[10, 31] == 2.0 and edit("gross-far")[20, 55] == 4.0
    dropped = edit("drop-gross")
    assert dropped[10, 31] == 0 and dropped[20, 55] == 0 and dropped[30, 5] == pytest.approx(2.02)
    assert edit("drop-gross-band")[10, 31] == 0 and edit("drop-gross-band")[20, 55] == pytest.approx(4.6)
    # Holes stay holes under every gross fix, and pixels a mask calls dynamic are never filled.
    assert all(edit(f)[5, 45] == 0 for f in ("gross", "gross-band", "gross-near"))
    dyn = np.zeros(est.shape, bool)
    dyn[5, 45] = True
    assert edit_depth("holes", est, truth, dyn, no_dyn)[5, 45] == 0
    assert edit_depth("truth", est, truth, no_dyn, dyn)[5, 45] == 0
    # Pixels an actor covers in truth keep SLAM's depth under every fix (masks are not the subject).
    actor = np.zeros(est.shape, bool)
    actor[10, 31] = actor[5, 45] = True
    for f in ("values", "holes", "truth", "gross", "gross-band", "gross-near", "drop-gross"):
        e = edit_depth(f, est, truth, actor, no_dyn, band_px=3)
        assert e[10, 31] == 2.0 and e[5, 45] == 0, f
    with pytest.raises(ValueError, match="unknown fix"):
        edit("exact")


def random_poses(rng, n):
    T = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        T[i, :3, :3] = so3_exp(rng.normal(size=3))
    T[:, :3, 3] = np.linspace(0, 1, n)[:, None] * [1.0, 0.2, 0.0] + rng.normal(scale=0.01, size=(n, 3))
    return T


def test_place_by_truth_moves_the_clip_result_onto_the_truth():
    # (The similarity fit itself is tested in test_geometry.)
    rng = np.random.default_rng(0)
    true = random_poses(rng, 12)
    # The estimate is the truth seen through a known similarity: x_est = s0 R0 x_true + t0.
    s0, R0, t0 = 1.007, so3_exp(np.radians([0.1, -0.15, 0.05])), np.array([0.02, -0.01, 0.005])
    est = apply_similarity_to_poses(s0, R0, t0, true)
    # Moved by the fit, a clip result lands on the truth; its depth scales with it; untracked
    # frames do not vote.
    H, W = 4, 5
    tracked = np.ones(12, bool)
    tracked[3] = False
    est[3, :3, 3] += 5.0  # an untracked frame's placeholder pose
    res = SlamResult(T_world_cam=est, tracked=tracked, tracking_quality=np.ones(12, np.float32), keyframes=[0],
                     depth=np.full((12, H, W), 2.0, np.float32), depth_confidence=np.ones((12, H, W), np.float32),
                     dynamic_masks=np.zeros((12, H, W), bool))
    info = _place_by_truth(res, true)
    assert np.allclose(res.T_world_cam[tracked], true[tracked], atol=1e-9)
    assert np.allclose(res.depth, 2.0 / s0) and info["centre_error_after_m_rms"] < 1e-9


def test_edit_then_report_on_a_tiny_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["edit", "--fix", "values", "--rounds", "0", "--gauge", "truth", "--config",
                 str(DEMO), "--out", str(out), *TINY]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.isfinite(printed["revisit_psnr_db"])
    # Round 0's tracked cameras were moved closer to the generator's actual ones.
    g = printed["gauge"]
    assert g["centre_error_after_m_rms"] < g["centre_error_before_m_rms"] and abs(g["scale"] - 1) < 0.05
    before = sorted(p.name for p in out.rglob("*"))
    assert main(["edit", "--fix", "values", "--config", str(DEMO), "--out", str(out),
                 *TINY]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing overwritten
    rep = depth_report(out, band_px=8)
    r0, r1 = rep["rounds"]
    # Round 0 holds the true values (stored as float16), round 1 SLAM's own stereo depth.
    assert r0["keyframes"] > 0 and r0["gross_fraction"] == 0.0 and r0["absrel_median"] < 1e-3
    assert r1["keyframes"] > 0 and r1["absrel_median"] > 1e-3
    assert 0.0 <= r1["gross_share_in_band"] <= 1.0 and 0.0 < r1["coverage"] <= 1.0


def test_bad_input_is_named(tmp_path, capsys):
    assert main(["depth", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["depth", str(tmp_path)]) == 2
    assert "no completed round" in capsys.readouterr().err
    assert main(["edit", "--fix", "values", "--config", str(DEMO), "slam.mode=oracle"]) == 2
    assert "slam.mode" in capsys.readouterr().err
    assert main(["edit", "--fix", "values", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["edit", "--fix", "values", "--rounds", "7", "--config", str(DEMO),
                 "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "0 to 1" in capsys.readouterr().err and not (tmp_path / "r").exists()
    for argv, name in ((["edit", "--fix", "values", "--rounds", "zero"], "--rounds"),
                       (["depth", "--gross", "2", str(tmp_path)], "--gross")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and name in capsys.readouterr().err
