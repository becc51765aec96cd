"""Every metric on a case with a known answer."""

import math

import numpy as np
import pytest

from spatia_py import metrics as M
from spatia_py.geometry import intrinsics_from_fov, look_at, so3_exp
from spatia_py.rundir import _json_safe


def test_psnr_identical_is_inf_and_json_safe():
    a = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    assert M.psnr(a, a) == float("inf")
    assert _json_safe({"x": M.psnr(a, a), "y": float("nan")}) == {"x": "inf", "y": None}


def test_psnr_known_value():
    a = np.zeros((4, 4), np.uint8)
    b = np.full((4, 4), 10, np.uint8)
    assert M.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))
    mask = np.zeros((4, 4), bool)
    assert math.isnan(M.psnr(a, b, mask))
    mask[0, 0] = True
    b2 = b.copy()
    b2[1:] = 0
    b2[0, 1:] = 0
    assert M.psnr(a, b2, mask) == pytest.approx(M.psnr(a, b))


def test_ssim_identical_is_one_and_drops_with_noise():
    v, u = np.mgrid[0:32, 0:32]
    a = np.repeat((128 + 80 * np.sin(u / 3.0) * np.cos(v / 4.0))[..., None], 3, -1)
    assert M.ssim(a, a) == pytest.approx(1.0)
    noisy = a + np.random.default_rng(2).normal(0, 40, a.shape)
    assert M.ssim(a, noisy) < 0.6
    assert M.ssim(a, a + 1.0) > 0.99


def test_ate_known_offset():
    T_gt = np.tile(np.eye(4), (4, 1, 1))
    T_est = T_gt.copy()
    T_est[:, 0, 3] = [0.0, 0.03, 0.04, 0.0]  # errors 0, 3, 4, 0 cm
    assert M.ate_rmse(T_est, T_gt) == pytest.approx(math.sqrt((0.03**2 + 0.04**2) / 4))
    assert M.ate_rmse(T_est, T_gt, np.array([False, True, False, False])) == pytest.approx(0.03)


def test_rotation_errors_known_angle():
    T_gt = np.tile(np.eye(4), (2, 1, 1))
    T_est = T_gt.copy()
    T_est[1, :3, :3] = so3_exp([0, 0, math.radians(0.25)])
    np.testing.assert_allclose(M.rotation_errors_deg(T_est, T_gt), [0.0, 0.25], atol=1e-6)


def test_depth_errors_known():
    gt = np.full((2, 2), 2.0)
    est = np.array([[2.2, 2.0], [0.0, 1.9]])
    static = np.ones((2, 2), bool)
    d = M.depth_errors(est, gt, static)
    assert d["coverage"] == pytest.approx(0.75)
    assert d["absrel_median"] == pytest.approx(0.05)


def test_dynamic_leak_counts_a_known_point():
    pts = np.array([[0, 0, 0], [5, 5, 5], [1.0, 0, 0]], dtype=np.float32)
    actors = np.array([[[1.05, 0, 0]], [[3, 3, 3]]], dtype=np.float32)  # one actor, two frames
    leak = M.dynamic_leak_fraction(pts, actors, np.array([0.1]))
    assert leak["leaked"] == 1 and leak["fraction"] == pytest.approx(1 / 3)
    assert M.dynamic_leak_fraction(pts, np.zeros((2, 0, 3)), np.zeros(0))["leaked"] == 0


def test_mask_iou():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert math.isnan(M.mask_iou(a, b))
    a[:2] = True
    b[1:3] = True
    assert M.mask_iou(a, b) == pytest.approx(4 / 12)


def test_revisit_pairs_and_warp_identity():
    K = intrinsics_from_fov(48, 32, 60)
    T0 = look_at([0, 0, 0], [0, 0, 1], up=[0, -1, 0])
    T = np.stack([T0, T0, T0])
    pairs = M.find_revisit_pairs(T, np.array([0, 0, 1]), 0.01, 0.1)
    assert pairs == [(0, 2)]
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
    frames = np.stack([img, img, img])
    depth = np.full((3, 32, 48), 2.0, np.float32)
    res = M.revisit_consistency(frames, pairs, K, T, depth, np.zeros((3, 32, 48), bool))
    assert res["pairs"] == 1 and res["psnr_db"] == 100.0 and res["ssim"] == pytest.approx(1.0)


def test_revisit_psnr_by_first_round_groups_by_the_first_visit():
    per_pair = [{"first": 0, "later": 4, "psnr_db": 20.0}, {"first": 1, "later": 5, "psnr_db": 30.0},
                {"first": 2, "later": 6, "psnr_db": 25.0}, {"first": 3, "later": 7, "psnr_db": float("inf")}]
    round_of = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    by = M.revisit_psnr_by_first_round(per_pair, round_of)
    # Round 0: the mean of 20 and 30; round 1: 25 and an identical pair capped at 100 dB.
    assert by == {"0": pytest.approx(25.0), "1": pytest.approx(62.5)}
    assert M.revisit_psnr_by_first_round([], round_of) == {}


def test_revisit_error_split_adds_up_to_the_pair_mse():
    K = intrinsics_from_fov(48, 32, 60)
    T0 = look_at([0, 0, 0], [0, 0, 1], up=[0, -1, 0])
    T = np.stack([T0, T0, T0, T0])
    pairs = [(0, 2), (1, 3)]
    rng = np.random.default_rng(4)
    img = rng.integers(60, 200, (32, 48, 3), dtype=np.uint8)
    frames = np.stack([img, img, img, img])
    status = np.ones((4, 32, 48), np.uint8)
    # Pair (0, 2): the later frame re-sampled its left quarter (memory hole) with an error of 20.
    frames[2, :, :12] = frames[2, :, :12] + 20
    status[2, :, :12] = 3
    # Pair (1, 3): a depth-rejected band (error 10) and a followed pixel block (error 4).
    frames[3, 8:12] = frames[3, 8:12] - 10
    status[3, 8:12] = 2
    frames[3, 20:24, :24] = frames[3, 20:24, :24] + 4
    depth = np.full((4, 32, 48), 2.0, np.float32)
    res = M.revisit_consistency(frames, pairs, K, T, depth, np.zeros((4, 32, 48), bool), conditioning_status=status)
    p0, p1 = res["per_pair"]
    _, valid = M.warp_to_camera(frames[2], depth[2], K, T0, depth[0], K, T0)  # the compared pixels
    n = valid.sum()
    assert n == p0["pixels"] == p1["pixels"] and n > 0.9 * 32 * 48
    hole, band, block = np.zeros_like(valid), np.zeros_like(valid), np.zeros_like(valid)
    hole[:, :12], band[8:12], block[20:24, :24] = True, True, True
    share = {k: (valid & m).sum() / n for k, m in (("hole", hole), ("band", band), ("block", block))}
    assert p0["split"]["uncovered"]["pixels"] == pytest.approx(share["hole"])
    assert p0["split"]["uncovered"]["mse"] == pytest.approx(share["hole"] * 400)
    assert p0["split"]["followed"]["mse"] == pytest.approx(0.0)
    assert p1["split"]["depth_rejected"] == {"pixels": pytest.approx(share["band"]),
                                             "mse": pytest.approx(share["band"] * 100)}
    assert p1["split"]["followed"]["mse"] == pytest.approx(share["block"] * 16)
    # The parts add up to each pair's MSE, which gives its PSNR.
    for p in (p0, p1):
        mse = sum(v["mse"] for v in p["split"].values())
        assert 10 * math.log10(255**2 / mse) == pytest.approx(p["psnr_db"])
    split = M.revisit_error_split(res["per_pair"], np.array([0, 1, 2, 3]))
    assert split["all"]["pairs"] == 2
    mse0, mse1 = share["hole"] * 400, share["band"] * 100 + share["block"] * 16
    assert split["all"]["mse"] == pytest.approx((mse0 + mse1) / 2)
    assert split["by_first_round"]["0"]["uncovered"]["mse"] == pytest.approx(mse0)
    assert split["by_first_round"]["1"]["depth_rejected"]["pixels"] == pytest.approx(share["band"])
    assert M.revisit_error_split([{"first": 0, "later": 2, "psnr_db": 30.0}], np.zeros(3)) == {}


def test_warp_to_camera_sees_a_plane_from_a_shifted_camera():
    K = intrinsics_from_fov(64, 48, 60)
    T_a = np.eye(4)
    T_b = np.eye(4)
    T_b[0, 3] = 0.1
    # A fronto-parallel plane at z=2 textured by its world x coordinate.
    def render(T):
        v, u = np.mgrid[0:48, 0:64].astype(float)
        x_world = (u - K[0, 2]) / K[0, 0] * 2.0 + T[0, 3]
        return np.repeat((128 + 100 * np.sin(x_world * 6))[..., None], 3, -1), np.full((48, 64), 2.0)
    img_a, d_a = render(T_a)
    img_b, d_b = render(T_b)
    warped, valid = M.warp_to_camera(img_b, d_b, K, T_b, d_a, K, T_a)
    assert valid.mean() > 0.7
    assert np.abs(warped[valid] - img_a[valid]).max() < 2.0
