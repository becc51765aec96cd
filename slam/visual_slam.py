"""Visual SLAM on one generated clip: poses, keyframe depth and dynamic masks from pixels.

Stages of :meth:`VisualSlam.process` (each timed into ``SlamResult.timings_s``; CPU seconds in
``info["cpu_s"]``):

1. ``render``: the part of the memory inside the clip's (widened) commanded frusta is selected
   once, and splatted per frame at the commanded camera as a tracking template.
2. ``track``: each frame is aligned to that template by direct photometric alignment
   (:mod:`slam.photometric`), initialised with the previous frame's correction (the control
   error is smooth within a clip) under a weak prior at the commanded pose.
3. ``features`` + ``sfm``: frames the memory cannot track (all of them in the first round) are
   reconstructed by the clip's own structure from motion (SIFT, two-view initialisation, PnP,
   bundle adjustment; :mod:`slam.sfm`) and placed in the world by the memory-tracked frames, or
   in the first round by a BA with all commanded cameras as priors (metric scale and gauge).
   Frames SIFT cannot place either (tiny or bland images) get a dense fallback: plane-sweep depth
   on a reference frame and direct alignment of its neighbours, spreading outwards.
4. ``depth``: keyframes every few frames (denser on coarse paths); the memory's depth is reused
   where the frame shows what the memory holds, plane-sweep MVS (:mod:`slam.mvs`) runs on the
   rest (narrowed around the memory's depth where it has any), swept depth is kept where another
   keyframe or the memory confirms it (or confirmed neighbours support it), and swept depth that
   matches the memory snaps onto it.
5. ``masks``: keyframe depth that other keyframes see through (or that floats in front of the
   memory) is transient; the rest forms the clip's static model, rendered at every frame; pixels
   whose low-passed colour it cannot explain are dynamic, and where it is blind the frame is
   compared with its neighbours warped through the static depth (memory, else the nearest).

A frame that nothing can place is reported with ``tracked=False`` and its reason in
``info["failures"]``; its pose is the commanded one only as a placeholder, and it is never fused.

State kept across rounds is bounded: the last few frames of the previous clip (grey images and
estimated poses), used as extra stereo sources for the first keyframes of the next clip.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from slam.bundle import BaProblem, bundle_adjust
from slam.config import SlamConfig
from slam.features import extract_sift, to_gray
from slam.mvs import consistency_count, cost_at_depth, neighbour_support, sweep_coarse_to_fine
from slam.photometric import align_to_template, scale_K
from slam.sfm import incremental_sfm, verify_pairs
from spatia_py.conditioning import fill_enclosed_holes
from spatia_py.geometry import Camera, invert_pose, rotation_angle_deg
from spatia_py.types import SlamResult

__all__ = ["VisualSlam"]


class _Timer:
    """Wall-clock seconds per stage (``t``) and process CPU seconds per stage (``cpu``)."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t0
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c0


@contextmanager
def _torch_threads(n: int):
    prev = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _average_rotation(Rs: np.ndarray) -> np.ndarray:
    """Chordal L2 mean of rotations ``(n, 3, 3)``."""
    U, _, Vt = np.linalg.svd(Rs.sum(0))
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    return U @ D @ Vt


def _upsample_mask(m: np.ndarray, H: int, W: int) -> np.ndarray:
    """Nearest-neighbour resize of a boolean mask ``(h, w)`` to ``(H, W)``."""
    h, w = m.shape
    if (h, w) == (H, W):
        return m
    if (2 * h, 2 * w) == (H, W):
        return np.repeat(np.repeat(m, 2, 0), 2, 1)
    return (
        F.interpolate(torch.from_numpy(m.astype(np.float32))[None, None], size=(H, W), mode="nearest")[0, 0].numpy() > 0
    )


def _resize_nearest(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resize of ``(H, W)`` to ``(h, w)`` (plain striding for exact halves)."""
    H, W = a.shape[:2]
    if (H, W) == (2 * h, 2 * w):
        return a[::2, ::2]
    return F.interpolate(
        torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None], size=(h, w), mode="nearest"
    )[0, 0].numpy()


def _resize_area(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Area downsampling of ``(..., H, W, C)`` float images to ``(..., h, w, C)``."""
    H, W = img.shape[-3:-1]
    if (H, W) == (2 * h, 2 * w):
        a = img.reshape(img.shape[:-3] + (h, 2, w, 2, img.shape[-1]))
        return a.mean(axis=(-4, -2), dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(img, np.float32)).reshape(-1, H, W, img.shape[-1]).permute(0, 3, 1, 2)
    out = F.interpolate(t, size=(h, w), mode="area").permute(0, 2, 3, 1).numpy()
    return out.reshape(img.shape[:-3] + (h, w, img.shape[-1]))


def _place(a: torch.Tensor, box: tuple[int, int, int, int], h: int, w: int) -> torch.Tensor:
    """``a`` (a crop) placed into a zero ``(h, w)`` image at ``box = (y0, y1, x0, x1)``."""
    out = torch.zeros((h, w), dtype=a.dtype)
    y0, y1, x0, x1 = box
    out[y0:y1, x0:x1] = a
    return out


class VisualSlam:
    """Visual SLAM from generated pixels (see the module docstring).

    Args:
        cfg: the SLAM config.
        voxel_size: the memory's voxel edge in metres (sets the splat size of the tracking template).
    """

    def __init__(self, cfg: SlamConfig, voxel_size: float):
        if cfg.mode != "visual":
            raise ValueError(
                f"VisualSlam runs slam.mode='visual', got {cfg.mode!r} (oracle SLAM is the pipeline's "
                "explicit ground-truth path)"
            )
        if cfg.depth_source not in ("pixels", "generator"):
            raise ValueError(f"slam.depth_source must be 'pixels' or 'generator', got {cfg.depth_source!r}")
        if not voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0 metres, got {voxel_size}")
        if cfg.keyframe_stride < 1:
            raise ValueError(f"slam.keyframe_stride must be >= 1, got {cfg.keyframe_stride}")
        if cfg.mvs_window % 2 != 1:
            raise ValueError(f"slam.mvs_window must be odd, got {cfg.mvs_window}")
        if cfg.mvs_smooth_window != 0 and cfg.mvs_smooth_window % 2 != 1:
            raise ValueError(f"slam.mvs_smooth_window must be 0 (off) or odd, got {cfg.mvs_smooth_window}")
        if cfg.fuse_dynamic_margin_px < 0 or cfg.fuse_dynamic_frames < 0:
            raise ValueError(
                "slam.fuse_dynamic_margin_px and slam.fuse_dynamic_frames must be >= 0, got "
                f"{cfg.fuse_dynamic_margin_px} and {cfg.fuse_dynamic_frames}"
            )
        self.cfg = cfg
        self.voxel_size = float(voxel_size)
        self._history: list[tuple[np.ndarray, np.ndarray]] = []
        """Last frames of the previous clip: ``(gray float32 (H, W), T_world_cam (4, 4))``."""

    # ------------------------------------------------------------------------------------------
    # public API
    # ------------------------------------------------------------------------------------------

    def process(
        self,
        frames: np.ndarray,
        cameras: list[Camera],
        memory,
        round_index: int,
        depth: np.ndarray | None = None,
        *,
        poses_known: bool = False,
        templates: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> SlamResult:
        """Estimate poses, keyframe depth and dynamic masks of one clip.

        Args:
            frames: ``uint8 (N, H, W, 3)`` the generated clip.
            cameras: the ``N`` commanded cameras (initial guesses in metric world coordinates).
            memory: the current :class:`~spatia_py.memory.SpatialMemory` (may be empty).
            round_index: index of this round.
            depth: ``float32 (N, H, W)`` generator depth, only with ``depth_source == "generator"``.
            poses_known: the cameras are measured, not commanded (a calibrated capture such as
                ``shared/data/fountain-p11``): tracking is skipped and only depth, masks and the
                bounded state are computed (sparse points triangulated with the given poses set
                the depth search range).
            templates: ``(rgb uint8 (N, H, W, 3), depth float32 (N, H, W))`` the memory already
                rendered at the commanded cameras, i.e. the conditioning the clip was generated
                from (with its colour resolve); tracking aligns each frame to it instead of
                re-rendering the memory there. ``None``: render the memory.

        Returns:
            :class:`~spatia_py.types.SlamResult`.
        """
        frames = self._validate(frames, cameras, depth)
        if templates is not None:
            rgb_t, dep_t = templates
            if np.shape(rgb_t) != frames.shape or np.shape(dep_t) != frames.shape[:3]:
                raise ValueError(
                    f"VisualSlam.process: templates must be rgb {frames.shape} and depth {frames.shape[:3]} "
                    f"(the conditioning of these frames), got {np.shape(rgb_t)} and {np.shape(dep_t)}"
                )
        with _torch_threads(self.cfg.torch_threads):
            return self._process(frames, cameras, memory, round_index, depth, poses_known, templates)

    def _process(self, frames, cameras, memory, round_index, depth, poses_known, templates=None) -> SlamResult:
        cfg = self.cfg
        N, H, W = frames.shape[:3]
        K = cameras[0].K
        timer = _Timer()
        info: dict = {"round": int(round_index), "failures": {}}
        T_cmd = np.stack([c.T_world_cam for c in cameras])
        self._clip_points = np.zeros((0, 3))
        with timer("features"):
            gray = to_gray(frames)
        with timer("render"):
            mem_xyz, mem_rgb = self._visible_memory(memory, cameras)
        info["memory_points_visible"] = int(len(mem_xyz))

        # ---- tracking ---------------------------------------------------------------------
        T_est = T_cmd.copy()
        tracked = np.zeros(N, bool)
        quality = np.zeros(N, np.float32)
        how = ["none"] * N
        mem_cov = np.zeros(N)
        if poses_known:
            tracked[:] = True
            quality[:] = 1.0
            how = ["given"] * N
            with timer("features"):
                self._clip_points = self._triangulate_known(gray, cameras)
            info["sparse_points"] = int(len(self._clip_points))
            if len(mem_xyz):
                with timer("render"):
                    for i in range(N):
                        mem_cov[i] = float((self._render(mem_xyz, mem_rgb, K, T_est[i], W, H)[1] > 0).mean())
        elif len(mem_xyz):
            self._track_memory(gray, cameras, mem_xyz, mem_rgb, T_est, tracked, quality, mem_cov, info, timer,
                               templates)
            for i in np.nonzero(tracked)[0]:
                how[i] = "memory"
        if not tracked.all():
            self._track_clip(gray, cameras, T_est, tracked, quality, how, info, timer)
        if not tracked.all():
            with timer("track"):
                self._track_dense_fallback(gray, cameras, T_est, tracked, quality, how, info)
        for i in np.nonzero(~tracked)[0]:
            if "dense_fallback" in info and str(int(i)) in info["failures"]:
                info["failures"][str(int(i))] += "; direct alignment to placed neighbours failed too"
            T_est[i] = T_cmd[i]  # placeholder only: reported untracked, never fused
            info["failures"].setdefault(str(int(i)), "no pose from memory alignment or the clip's reconstruction")
        info["tracked_by"] = how

        # ---- keyframes and depth ----------------------------------------------------------
        depth_out = np.zeros((N, H, W), np.float32)
        conf_out = np.zeros((N, H, W), np.float32)
        with timer("depth"):
            keyframes = self._select_keyframes(tracked, mem_cov, T_est)
            info["keyframes_memory_coverage"] = [float(mem_cov[k]) for k in keyframes]
            if depth is not None:
                for k in keyframes:
                    depth_out[k] = np.where(np.isfinite(depth[k]) & (depth[k] > 0), depth[k], 0.0)
                    conf_out[k] = (depth_out[k] > 0).astype(np.float32)
                kf_aux = {}
            else:
                kf_aux = self._keyframe_depth(
                    gray, frames, K, T_est, tracked, keyframes, mem_xyz, mem_rgb, depth_out, conf_out, info, timer
                )

        # ---- dynamic masks ----------------------------------------------------------------
        with timer("masks"):
            dyn = self._dynamic_masks(
                frames, K, T_est, tracked, keyframes, depth_out, conf_out, mem_xyz, mem_rgb, kf_aux, info
            )
        for k in keyframes:
            # Dynamic pixels carry no static depth.
            depth_out[k][dyn[k]] = 0.0
            conf_out[k][dyn[k]] = 0.0
        if depth is None and cfg.depth_fill:
            with timer("fill"):
                self._fill_holes(gray, K, T_est, tracked, keyframes, depth_out, conf_out, dyn, info)

        # Bounded state for the next clip: its first keyframes use these as extra stereo sources.
        n_hist = max([-o for o in cfg.mvs_source_offsets if o < 0] + [0])
        self._history = [(gray[i], T_est[i]) for i in range(max(0, N - n_hist), N) if tracked[i]]
        info["cpu_s"] = {k: round(v, 4) for k, v in timer.cpu.items()}
        return SlamResult(
            T_world_cam=T_est,
            tracked=tracked,
            tracking_quality=quality,
            keyframes=list(keyframes),
            depth=depth_out,
            depth_confidence=conf_out,
            dynamic_masks=dyn,
            timings_s={k: float(v) for k, v in timer.t.items()},
            info=info,
        )

    def reset(self) -> None:
        """Forget the state carried between clips (e.g. after a discontinuous camera jump)."""
        self._history = []

    # ------------------------------------------------------------------------------------------
    # validation and memory access
    # ------------------------------------------------------------------------------------------

    def _validate(self, frames, cameras, depth) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
        N, H, W = frames.shape[:3]
        if len(cameras) != N:
            raise ValueError(f"got {N} frames but {len(cameras)} cameras; pass one commanded camera per frame")
        for i, c in enumerate(cameras):
            if not isinstance(c, Camera):
                raise ValueError(f"cameras[{i}] is a {type(c).__name__}, expected spatia_py.geometry.Camera")
            if (c.width, c.height) != (W, H):
                raise ValueError(f"cameras[{i}] is {c.width}x{c.height} but the frames are {W}x{H}")
            if not np.allclose(c.K, cameras[0].K):
                raise ValueError("all cameras of a clip must share one K (a video model renders with one camera)")
        if self.cfg.depth_source == "generator":
            if depth is None:
                raise ValueError(
                    "slam.depth_source='generator' needs depth=(N, H, W) from the generator; "
                    "use depth_source='pixels' for backends without depth"
                )
            if np.shape(depth) != (N, H, W):
                raise ValueError(f"depth must have shape {(N, H, W)}, got {np.shape(depth)}")
        elif depth is not None:
            raise ValueError("depth was given but slam.depth_source='pixels'; set depth_source='generator' to use it")
        if N < 2:
            raise ValueError(f"a clip needs at least 2 frames, got {N}")
        return frames

    def _visible_memory(self, memory, cameras: list[Camera]) -> tuple[np.ndarray, np.ndarray]:
        """Memory points inside any of the clip's (commanded) frusta, slightly widened so the
        control error cannot push needed points out."""
        if memory is None or len(memory) == 0:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        sel = []
        for c in cameras[:: max(1, len(cameras) // 6)] + [cameras[-1]]:
            wide = c.scaled(1.0)
            K = wide.K.copy()
            # 10% margin on each side: same focal length, larger image.
            mx, my = int(0.1 * c.width), int(0.1 * c.height)
            K[0, 2] += mx
            K[1, 2] += my
            sel.append(memory.visible(Camera(K, c.width + 2 * mx, c.height + 2 * my, c.T_world_cam)))
        keep = np.zeros(len(memory), bool)
        for ix in sel:
            keep[ix] = True
        return np.ascontiguousarray(memory.xyz[keep]), np.ascontiguousarray(memory.rgb[keep])

    def _render(self, xyz, rgb, K, T_world_cam, W, H, radius_scale: float | None = None):
        """Memory splatted into a camera: ``rgb uint8 (H, W, 3)``, ``depth float32 (H, W)``."""
        from render.splat import render_points

        rs = self.cfg.render_radius_scale if radius_scale is None else radius_scale
        out = render_points(
            xyz,
            rgb,
            K,
            invert_pose(T_world_cam),
            W,
            H,
            radius=rs * self.voxel_size,
            max_radius_px=self.cfg.render_max_radius_px,
        )
        return out.rgb.numpy(), out.depth.numpy()

    # ------------------------------------------------------------------------------------------
    # tracking
    # ------------------------------------------------------------------------------------------

    def _track_memory(self, gray, cameras, mem_xyz, mem_rgb, T_est, tracked, quality, mem_cov, info, timer,
                      templates=None):
        cfg = self.cfg
        N, H, W = gray.shape
        K = cameras[0].K
        corr = np.eye(4)  # T_cmd_actual of the last tracked frame (control error is smooth)
        details = []
        for i in range(N):
            C = cameras[i].T_world_cam
            if templates is not None:
                rgb_t, dep_t = templates[0][i], templates[1][i]
            else:
                with timer("render"):
                    rgb_t, dep_t = self._render(mem_xyz, mem_rgb, K, C, W, H)
            mem_cov[i] = float((dep_t > 0).mean())
            with timer("track"):
                res = align_to_template(
                    gray[i],
                    to_gray(rgb_t),
                    dep_t,
                    K,
                    invert_pose(corr),
                    levels=cfg.track_levels,
                    max_pixels=cfg.track_max_pixels,
                    min_pixels=max(100, round(cfg.track_min_pixels * W * H / (512 * 320))),
                    min_inlier_fraction=cfg.track_min_inlier_fraction,
                    prior_T_frame_tmpl=np.eye(4),
                    prior_sigma_deg=cfg.track_prior_sigma_deg,
                    prior_sigma_m=cfg.track_prior_sigma_m,
                )
            A = C @ invert_pose(res.T_frame_tmpl)
            dt, dr = float(np.linalg.norm(A[:3, 3] - C[:3, 3])), rotation_angle_deg(A[:3, :3], C[:3, :3])
            d = {
                "pixels": res.n_pixels,
                "inliers": round(res.inlier_fraction, 3),
                "coverage": round(mem_cov[i], 3),
                "correction_m": round(dt, 4),
                "correction_deg": round(dr, 3),
            }
            details.append(d)
            if not res.ok:
                sig = res.info["levels"][-1].get("sigma", float("nan")) if res.info["levels"] else float("nan")
                info["failures"][str(i)] = (
                    f"memory alignment rejected ({res.n_pixels} pixels, inlier fraction "
                    f"{res.inlier_fraction:.2f}, residual scale {sig:.3f})"
                )
                continue
            if dt > cfg.max_correction_m or dr > cfg.max_correction_deg:
                info["failures"][str(i)] = (
                    f"memory alignment moved the camera {dt:.3f} m / {dr:.2f} deg from the "
                    "commanded pose (beyond slam.max_correction_m/deg)"
                )
                continue
            T_est[i] = A
            tracked[i] = True
            quality[i] = res.inlier_fraction
            corr = invert_pose(C) @ A
            info["failures"].pop(str(i), None)
        info["memory_tracking"] = details

    def _track_clip(self, gray, cameras, T_est, tracked, quality, how, info, timer):
        """Structure from motion within the clip for the frames the memory did not track."""
        cfg = self.cfg
        N, H, W = gray.shape
        Ks = np.stack([c.K for c in cameras])
        T_cmd = np.stack([c.T_world_cam for c in cameras])
        with timer("features"):
            feats = [extract_sift(g, cfg.sift_max_features) for g in gray]
        with timer("sfm"):
            pairs = [(i, i + o) for o in cfg.sfm_pair_offsets for i in range(N) if i + o < N]
            ver = verify_pairs(
                feats, Ks, (W, H), pairs, max_error_px=cfg.sfm_max_reproj_px, min_inliers=cfg.sfm_min_inliers
            )
            rec = incremental_sfm(
                feats, Ks, (W, H), ver, min_pnp_inliers=cfg.sfm_min_inliers, max_reproj_px=cfg.sfm_max_reproj_px
            )
        info["sfm"] = {k: v for k, v in rec.info.items() if k != "pnp"}
        reg = rec.registered
        if reg.sum() < 2:
            for i in np.nonzero(~tracked)[0]:
                info["failures"][str(int(i))] = (
                    f"clip reconstruction failed ({rec.info.get('error', 'too few matches')})"
                )
            return
        T_sfm = invert_pose(rec.T_cam_world)  # camera-to-world in the reconstruction's frame
        anchors = np.nonzero(reg & tracked)[0]
        mem_anchor = len(anchors) >= 2 and np.ptp(T_est[anchors, :3, 3], axis=0).max() > 0.05
        if not mem_anchor:
            anchors = np.nonzero(reg)[0]
        target = T_est if mem_anchor else T_cmd
        # World rotation from the orientations (far tighter than from centres on a short path),
        # then scale and offset from the centres with that rotation fixed.
        Rw = _average_rotation(np.einsum("nij,nkj->nik", target[anchors, :3, :3], T_sfm[anchors, :3, :3]))
        c_s = T_sfm[anchors, :3, 3] @ Rw.T
        c_t = target[anchors, :3, 3]
        a, b = c_s - c_s.mean(0), c_t - c_t.mean(0)
        denom = float((a * a).sum())
        if denom < 1e-12 or np.ptp(c_t, axis=0).max() < 0.02:
            for i in np.nonzero(~tracked)[0]:
                info["failures"][str(int(i))] = "no parallax in the clip to fix the scale (camera only rotates)"
            return
        s = float((a * b).sum() / denom)
        tw = c_t.mean(0) - s * c_s.mean(0)
        Sim = np.eye(4)
        Sim[:3, :3] = Rw
        T_w = np.einsum("ij,njk->nik", Sim, T_sfm)
        T_w[:, :3, 3] = s * (T_sfm[:, :3, 3] @ Rw.T) + tw
        points = s * (rec.points @ Rw.T) + tw
        self._clip_points = points
        info["sfm"]["anchored_to"] = "memory" if mem_anchor else "commanded"
        info["sfm"]["scale"] = s
        if not mem_anchor:
            # First round: a BA over the clip with the commanded poses as priors places the gauge
            # (position, rotation and scale) where all commanded cameras agree best.
            with timer("sfm"):
                T_w = self._refine_with_priors(feats, rec, Ks, T_w, points, T_cmd, reg)
        for i in np.nonzero(reg & ~tracked)[0]:
            # The same plausibility bound as tracking against the memory: a clip reconstruction can
            # register a frame wrongly (few, repetitive matches), and that must be a reported failure.
            dt = float(np.linalg.norm(T_w[i][:3, 3] - T_cmd[i][:3, 3]))
            dr = rotation_angle_deg(T_w[i][:3, :3], T_cmd[i][:3, :3])
            if dt > cfg.max_correction_m or dr > cfg.max_correction_deg:
                info["failures"][str(int(i))] = (
                    f"clip reconstruction placed it {dt:.2f} m / {dr:.1f} deg from the commanded pose "
                    "(beyond slam.max_correction_m/deg)"
                )
                continue
            T_est[i] = T_w[i]
            tracked[i] = True
            how[i] = "clip"
            quality[i] = min(1.0, rec.info.get("pnp", {}).get(int(i), 200) / 200.0)
            info["failures"].pop(str(int(i)), None)
        for i in np.nonzero(~reg & ~tracked)[0]:
            info["failures"][str(int(i))] = "not registered by the clip's reconstruction (too few PnP inliers)"

    def _triangulate_known(self, gray, cameras) -> np.ndarray:
        """Sparse world points from SIFT matches of neighbouring frames triangulated with known
        poses (matches farther than 2 px from their epipolar line are dropped)."""
        from slam.bundle import triangulate_tracks
        from slam.features import match_features

        cfg = self.cfg
        feats = [extract_sift(g, cfg.sift_max_features) for g in gray]
        Ks = np.stack([c.K for c in cameras])
        T_cw = invert_pose(np.stack([c.T_world_cam for c in cameras]))
        tc, tx = [], []
        for o in cfg.sfm_pair_offsets[:2]:
            for i in range(len(gray) - o):
                j = i + o
                m = match_features(feats[i], feats[j])
                if len(m) < 8:
                    continue
                T_ji = T_cw[j] @ invert_pose(T_cw[i])
                t = T_ji[:3, 3]
                E = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ T_ji[:3, :3]
                Fm = np.linalg.inv(Ks[j]).T @ E @ np.linalg.inv(Ks[i])
                a = np.c_[feats[i].xy[m[:, 0]], np.ones(len(m))]
                b = np.c_[feats[j].xy[m[:, 1]], np.ones(len(m))]
                lines = a @ Fm.T
                dist = np.abs((lines * b).sum(1)) / np.maximum(np.hypot(lines[:, 0], lines[:, 1]), 1e-12)
                for mi in m[dist < 2.0]:
                    tc.append(np.array([i, j]))
                    tx.append(np.stack([feats[i].xy[mi[0]], feats[j].xy[mi[1]]]))
        if not tc:
            return np.zeros((0, 3))
        X, ok = triangulate_tracks(Ks, T_cw, tc, tx, max_reproj_px=2.0, min_angle_deg=1.0)
        return X[ok]

    def _track_dense_fallback(self, gray, cameras, T_est, tracked, quality, how, info) -> None:
        """Frames neither the memory nor SIFT could place (few features: tiny or bland images).

        A reference frame (a tracked one, else the clip's middle frame, whose commanded pose then
        fixes the gauge like the commanded path does for the clip's reconstruction) gets plane-sweep
        depth from its neighbours at their current poses; untracked neighbours within two frames are
        aligned to it by direct photometric alignment, twice (the second sweep uses the refined
        poses), and newly placed frames become references in turn. A starting reference without
        any aligned neighbour stays untracked: nothing confirmed its pose.
        """
        cfg = self.cfg
        N, H, W = gray.shape
        K = cameras[0].K
        T_cmd = np.stack([c.T_world_cam for c in cameras])
        order = np.argsort(np.abs(np.arange(N) - (N - 1) / 2), kind="stable")
        start = [int(i) for i in order if tracked[i]] or [int(order[0])]
        frontier = [start[0]]
        done: set[int] = set()
        placed: list[int] = []
        while frontier:
            ref = frontier.pop(0)
            done.add(ref)
            near = [int(j) for j in np.argsort(np.abs(np.arange(N) - ref), kind="stable")[1:] if abs(j - ref) <= 2]
            todo = [j for j in near if not tracked[j] and j not in placed]
            if not todo:
                continue
            aligned: list[int] = []
            for _ in range(2):
                T_src_ref = np.einsum("nij,jk->nik", invert_pose(T_est[near]), T_est[ref])
                sw = sweep_coarse_to_fine(
                    gray[ref], gray[near], K, T_src_ref, cfg.depth_min_m, cfg.depth_max_m,
                    scale=self._mvs_scales(W)[0], coarse_scale=self._mvs_scales(W)[1],
                    max_planes=cfg.mvs_max_planes, fine_planes=cfg.mvs_fine_planes, window=cfg.mvs_window,
                    top_k=cfg.mvs_top_k, smooth_window=cfg.mvs_smooth_window,
                )  # fmt: skip
                good = (sw.cost <= 0.5 * cfg.mvs_max_cost) & (sw.texture >= cfg.mvs_min_texture)
                d = torch.where(good, sw.depth, torch.zeros_like(sw.depth))
                depth = F.interpolate(d[None, None], size=(H, W), mode="nearest")[0, 0].numpy()
                aligned = []
                for j in todo:
                    res = align_to_template(
                        gray[j], gray[ref], depth, K, invert_pose(T_est[j]) @ T_est[ref],
                        levels=cfg.track_levels, max_pixels=cfg.track_max_pixels, min_pixels=50, smooth_window=3,
                        min_inlier_fraction=cfg.track_min_inlier_fraction,
                        prior_T_frame_tmpl=invert_pose(T_cmd[j]) @ T_cmd[ref],
                        prior_sigma_deg=cfg.track_prior_sigma_deg, prior_sigma_m=cfg.track_prior_sigma_m,
                    )  # fmt: skip
                    if res.ok:
                        T_est[j] = T_est[ref] @ invert_pose(res.T_frame_tmpl)
                        quality[j] = res.inlier_fraction
                        aligned.append(j)
            if aligned and not tracked[ref]:
                tracked[ref] = True
                how[ref] = "direct (reference)"
                quality[ref] = float(np.mean(quality[aligned]))
                info["failures"].pop(str(int(ref)), None)
            for j in aligned:
                tracked[j] = True
                how[j] = "direct"
                info["failures"].pop(str(int(j)), None)
                placed.append(j)
                if j not in done:
                    frontier.append(j)
        info["dense_fallback"] = {"start": start[0], "placed": [int(j) for j in placed]}

    def _refine_with_priors(self, feats, rec, Ks, T_w, points, T_cmd, reg) -> np.ndarray:
        cfg = self.cfg
        tracks = rec.tracks
        if tracks is None or len(points) == 0:
            return T_w
        oc, op, ox = [], [], []
        for p, t in enumerate(rec.point_track):
            c = tracks.cams[t]
            k = tracks.kps[t]
            m = reg[c]
            for ci, ki in zip(c[m], k[m], strict=True):
                oc.append(ci)
                op.append(p)
                ox.append(feats[ci].xy[ki])
        if not oc:
            return T_w
        T_cw = invert_pose(T_w)
        T_cw[~reg] = np.eye(4)
        prob = BaProblem(Ks, T_cw, points, np.array(oc), np.array(op), np.array(ox))
        prior_c = np.where(reg[:, None], T_cmd[:, :3, 3], np.nan)
        prior_r = np.where(reg[:, None, None], np.transpose(T_cmd[:, :3, :3], (0, 2, 1)), np.nan)
        T_new, _, _ = bundle_adjust(
            prob,
            const_cams=~reg,
            center_prior=prior_c,
            center_prior_sigma_m=max(0.005, 0.01),
            rotation_prior=prior_r,
            rotation_prior_sigma_deg=cfg.anchor_rotation_sigma_deg,
            max_iters=15,
        )
        out = T_w.copy()
        out[reg] = invert_pose(T_new[reg])
        return out

    # ------------------------------------------------------------------------------------------
    # keyframes and depth
    # ------------------------------------------------------------------------------------------

    def _select_keyframes(self, tracked: np.ndarray, mem_cov: np.ndarray, T_est: np.ndarray | None = None) -> list[int]:
        """Every ``keyframe_stride``-th tracked frame counted back from ``keyframe_end_margin``
        frames before the last one (so the newest keyframe still has stereo sources on both
        sides; the last frames' content is picked up by the next clip), skipping frames the
        memory already covers almost entirely."""
        cfg = self.cfg
        N = len(tracked)
        stride, margin = cfg.keyframe_stride, cfg.keyframe_end_margin
        idx = np.nonzero(tracked)[0]
        if len(idx) and float(np.median(mem_cov[idx])) < cfg.keyframe_unmapped_coverage:
            # Little memory to reuse or confirm against: denser keyframes confirm each other.
            stride = min(stride, cfg.keyframe_stride_unmapped)
        if T_est is not None and len(idx) >= 2:
            steps = [
                rotation_angle_deg(T_est[a][:3, :3], T_est[b][:3, :3]) for a, b in zip(idx[:-1], idx[1:], strict=True)
            ]
            per_frame = float(np.median(steps)) / max(1.0, float(np.median(np.diff(idx))))
            if per_frame > 0:
                # A coarse path (large rotation per frame) needs denser keyframes to keep overlap.
                stride = max(1, min(stride, int(cfg.keyframe_max_angle_deg / per_frame)))
                margin = min(margin, stride // 2)
        kfs = []
        i = max(0, N - 1 - margin)
        while i >= 0:
            j = i
            while j >= 0 and not tracked[j]:
                j -= 1
            if j < 0:
                break
            if 1.0 - mem_cov[j] >= cfg.keyframe_min_new_coverage or not kfs:
                kfs.append(j)
            i = j - stride
        return sorted(kfs)

    def _mvs_scales(self, W: int) -> tuple[float, float]:
        """``(working, coarse)`` plane-sweep scales for frames ``W`` pixels wide: the configured
        ones, raised so the working image stays at least ``mvs_min_width`` pixels wide (a 7-pixel
        ZNCC window on a 64-pixel-wide image matches nothing)."""
        cfg = self.cfg
        s = min(1.0, max(cfg.mvs_scale, cfg.mvs_min_width / W))
        return s, s * cfg.mvs_coarse_scale / cfg.mvs_scale

    def _sources(self, k: int, N: int, tracked: np.ndarray, T_est: np.ndarray) -> list[int]:
        """Source frames of keyframe ``k``: ``mvs_source_offsets`` within the clip (negative indices
        are history frames of the previous clip, -1 the newest), each pulled towards ``k`` until
        its viewing direction is within ``mvs_max_source_angle_deg`` of the keyframe's (a coarse
        path needs nearer sources than a smooth video); missing ones are replaced by the nearest
        unused usable frames."""
        cfg = self.cfg

        def pose(j):
            return T_est[j] if j >= 0 else self._history[j][1]

        def usable(j):
            if j == k or (j >= 0 and (j >= N or not tracked[j])) or (j < 0 and -j > len(self._history)):
                return False
            return rotation_angle_deg(pose(j)[:3, :3], T_est[k][:3, :3]) <= cfg.mvs_max_source_angle_deg

        out: list[int] = []
        for o in cfg.mvs_source_offsets:
            step = 1 if o > 0 else -1
            for d in range(abs(o), 0, -1):
                j = k + step * d
                if usable(j) and j not in out:
                    out.append(j)
                    break
        want = len(cfg.mvs_source_offsets)
        d = 1
        while len(out) < want and d < N:
            for j in (k + d, k - d):
                if len(out) < want and 0 <= j < N and usable(j) and j not in out:
                    out.append(j)
            d += 1
        return out

    def _source_stack(self, k: int, srcs: list[int], gray: np.ndarray, T_est: np.ndarray):
        """``(src_gray (S, H, W), T_src_ref (S, 4, 4))`` of keyframe ``k``'s stereo sources ``srcs``
        (from :meth:`_sources`; negative: history frames), or ``None`` without any."""
        if not srcs:
            return None
        src_gray = np.stack([gray[j] if j >= 0 else self._history[j][0] for j in srcs])
        T_src = np.stack([T_est[j] if j >= 0 else self._history[j][1] for j in srcs])
        return src_gray, np.einsum("nij,jk->nik", invert_pose(T_src), T_est[k])

    def _depth_range(self, K, T_world_cam, W, H, mem_depth) -> tuple[float, float]:
        """Search range of a keyframe from what is known: rendered memory depth and the clip's
        sparse points in view (widened: new content may lie outside), else the config's range."""
        cfg = self.cfg
        z = []
        if mem_depth is not None and (mem_depth > 0).mean() > 0.02:
            z.append(mem_depth[mem_depth > 0][::7])
        if len(self._clip_points):
            Tcw = invert_pose(T_world_cam)
            pc = self._clip_points @ Tcw[:3, :3].T + Tcw[:3, 3]
            zc = pc[:, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                u = K[0, 0] * pc[:, 0] / zc + K[0, 2]
                v = K[1, 1] * pc[:, 1] / zc + K[1, 2]
            ok = (zc > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
            if ok.sum() >= 20:
                z.append(zc[ok])
        if not z:
            return cfg.depth_min_m, cfg.depth_max_m
        z = np.concatenate(z)
        lo, hi = np.percentile(z, [1, 99])
        return max(cfg.depth_min_m, 0.6 * float(lo)), min(cfg.depth_max_m, 1.5 * float(hi))

    def _memory_agrees(self, frame_rgb: np.ndarray, mem_rgb: np.ndarray, mem_depth: np.ndarray) -> np.ndarray:
        """``bool (H, W)``: the memory covers the pixel with locally smooth depth and the frame shows
        (low-passed) what the memory rendered there, i.e. the generator followed the memory."""
        from render.transfer import local_colour_difference
        from slam.photometric import _smooth_depth_only

        smooth = _smooth_depth_only(mem_depth, 0.05, 5) > 0
        diff = local_colour_difference(frame_rgb, mem_rgb, self.cfg.dynamic_window)
        return smooth & (diff < 0.5 * self.cfg.dynamic_threshold)

    def _keyframe_depth(
        self, gray, frames, K, T_est, tracked, keyframes, mem_xyz, mem_rgb, depth_out, conf_out, info, timer
    ) -> dict:
        """Keyframe depth: memory reuse where the memory explains the frame, plane sweep elsewhere
        (cropped to the unexplained part), then geometric consistency across keyframes and memory."""
        cfg = self.cfg
        N, H, W = gray.shape
        hs, ws = int(round(H * self._mvs_scales(W)[0])), int(round(W * self._mvs_scales(W)[0]))
        Ks = scale_K(K, ws / W)
        per_kf = {}
        kf_info = []
        for k in keyframes:
            srcs = self._sources(k, N, tracked, T_est)
            stack = self._source_stack(k, srcs, gray, T_est)
            if stack is None:
                kf_info.append({"keyframe": int(k), "error": "no source frames"})
                continue
            src_gray, T_src_ref = stack
            mem_rgb_k = mem_depth_k = agree = None
            crop = None
            if len(mem_xyz):
                # Wider splats than the tracking template: a surface the memory holds should be
                # continuous here, so re-observations snap onto it instead of thickening it.
                mem_rgb_k, mem_depth_k = self._render(
                    mem_xyz, mem_rgb, K, T_est[k], W, H, radius_scale=cfg.depth_memory_radius_scale
                )
                agree = self._memory_agrees(frames[k], mem_rgb_k, mem_depth_k)
                need = ndimage.binary_dilation(~agree, iterations=int(2 * cfg.mvs_window / self._mvs_scales(W)[0]))
                if need.mean() < 0.8 and need.any():
                    rows, cols = np.nonzero(need.any(1))[0], np.nonzero(need.any(0))[0]
                    crop = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
                elif not need.any():
                    crop = (0, 0, 0, 0)
            dmin, dmax = self._depth_range(K, T_est[k], W, H, mem_depth_k)
            e = {
                "keyframe": int(k),
                "sources": [int(j) for j in srcs],
                "range_m": [round(dmin, 3), round(dmax, 3)],
                "swept_fraction": 1.0,
            }
            if crop == (0, 0, 0, 0):
                raw = torch.zeros((hs, ws))
                cost = torch.full((hs, ws), 2.0)
                good = torch.zeros((hs, ws), dtype=torch.bool)
                e["swept_fraction"] = 0.0
            else:
                sw = sweep_coarse_to_fine(
                    gray[k],
                    src_gray,
                    K,
                    T_src_ref,
                    dmin,
                    dmax,
                    scale=self._mvs_scales(W)[0],
                    coarse_scale=self._mvs_scales(W)[1],
                    max_planes=cfg.mvs_max_planes,
                    fine_planes=cfg.mvs_fine_planes,
                    window=cfg.mvs_window,
                    top_k=cfg.mvs_top_k,
                    smooth_window=cfg.mvs_smooth_window,
                    prior_depth=mem_depth_k,
                    prior_rel=cfg.memory_prior_rel,
                    crop=crop,
                )
                raw = sw.full("depth", hs, ws)
                cost = sw.full("cost", hs, ws, fill=2.0)
                good = (sw.cost <= cfg.mvs_max_cost) & (sw.texture >= cfg.mvs_min_texture) & (sw.n_visible >= 1)
                good = _place(good, sw.box, hs, ws)
                y0, y1, x0, x1 = sw.box
                e["swept_fraction"] = round((y1 - y0) * (x1 - x0) / (hs * ws), 3)
            per_kf[k] = {
                "raw": raw,
                "good": good,
                "cost": cost,
                "mem_rgb": mem_rgb_k,
                "mem_depth": mem_depth_k,
                "agree": agree,
            }
            kf_info.append(e)
        # Geometric consistency: a depth is confirmed when another keyframe's sweep or the memory
        # agrees with it; confirmed pixels then vouch for agreeing neighbours on the same surface.
        for k, d in per_kf.items():
            dk = torch.where(d["good"], d["raw"], torch.zeros_like(d["raw"]))
            others = [(per_kf[j]["raw"], invert_pose(T_est[j]) @ T_est[k]) for j in per_kf if j != k]
            if d["mem_depth"] is not None:
                md = torch.from_numpy(d["mem_depth"])[None, None]
                others.append((F.interpolate(md, size=(hs, ws), mode="nearest")[0, 0], np.eye(4)))
            if others:
                n_ok, n_bad, d_mean = consistency_count(dk, Ks, others, rel_tol=cfg.mvs_consistency_rel, radius_px=1)
                if cfg.mvs_average_views:
                    dk = d_mean
            else:
                n_ok = n_bad = torch.zeros(dk.shape, dtype=torch.int32)
            # Confirmed by another view and not seen through by more views than confirm it.
            confirmed = (n_ok >= 1) & (n_bad < n_ok)
            supported = neighbour_support(dk, confirmed, rel_tol=cfg.mvs_consistency_rel)
            base = (1.0 - d["cost"] / max(cfg.mvs_max_cost, 1e-6)).clamp(0.05, 1.0)
            # Confidence: confirmed by two or more views > by one > only supported by neighbours.
            conf = torch.where(confirmed, (0.6 + 0.2 * n_ok.clamp(max=2).float()) * base, torch.zeros_like(base))
            conf = torch.where(supported, 0.6 * base, conf)
            d["stats"] = {
                "good": round(float(d["good"].float().mean()), 3),
                "confirmed": round(float(confirmed.float().mean()), 3),
                "supported": round(float(supported.float().mean()), 3),
            }
            dk = torch.where(confirmed | supported, dk, torch.zeros_like(dk))
            full = F.interpolate(dk[None, None], size=(H, W), mode="nearest")[0, 0].numpy()
            cfull = F.interpolate(conf[None, None], size=(H, W), mode="nearest")[0, 0].numpy()
            md = d["mem_depth"]
            if md is not None:
                # Reuse the memory where it explains the frame, and snap swept depth that agrees with
                # the memory onto it: re-observing a surface refines its voxels instead of
                # thickening it with a second, noisier layer (memory follows area, not frames).
                close = (full > 0) & (md > 0) & (np.abs(full - md) <= cfg.memory_snap_rel * md)
                use_mem = d["agree"] | close
                full = np.where(use_mem, md, full)
                cfull = np.where(use_mem, np.maximum(cfull, 0.8), cfull)
            depth_out[k] = full.astype(np.float32)
            conf_out[k] = np.where(full > 0, cfull, 0.0).astype(np.float32)
        for e in kf_info:
            k = e["keyframe"]
            if k in per_kf:
                e["coverage"] = round(float((depth_out[k] > 0).mean()), 3)
                e.update(per_kf[k].get("stats", {}))
        info["keyframes"] = kf_info
        return per_kf

    def _fill_holes(self, gray, K, T_est, tracked, keyframes, depth_out, conf_out, dyn, info) -> None:
        """Fill holes of keyframe depth enclosed by a locally planar surface, then keep a filled
        pixel only where it is photometrically consistent with the keyframe's stereo sources (or
        untextured: its colour is right whatever the exact depth). Filled pixels get the lower
        confidence ``depth_fill_confidence``; dynamic pixels are never filled."""
        cfg = self.cfg
        N, H, W = gray.shape
        s = self._mvs_scales(W)[0]
        hs, ws = int(round(H * s)), int(round(W * s))
        filled_frac = {}
        for k in keyframes:
            if not tracked[k]:
                continue
            dk = _resize_nearest(depth_out[k], hs, ws)
            if not (dk > 0).any():
                continue
            # Never fill a hole that touches a dynamic region: an actor's mask rarely covers all of
            # it, and a fill across it would fuse the rest of the actor into the static memory.
            dyn_s = ndimage.binary_dilation(_resize_nearest(dyn[k].astype(np.float32), hs, ws) > 0, iterations=4)
            lab, _ = ndimage.label(dk <= 0)
            touched = np.unique(lab[dyn_s & (lab > 0)])
            blocked = dyn_s | np.isin(lab, touched[touched > 0])
            _, df, _ = fill_enclosed_holes(
                np.zeros((hs, ws, 3), np.uint8), dk, np.zeros((hs, ws), np.float32),
                max_gap_px=max(2, int(round(cfg.depth_fill_max_gap_px * s))), plane_rel_tol=cfg.depth_fill_plane_rel,
            )
            new = (df > 0) & (dk <= 0) & ~blocked
            if not new.any():
                continue
            stack = self._source_stack(k, self._sources(k, N, tracked, T_est), gray, T_est)
            if stack is not None:
                src_gray, T_src_ref = stack
                cost, tex = cost_at_depth(
                    gray[k], src_gray, K, T_src_ref, np.where(new, df, 0.0), scale=s, window=cfg.mvs_window,
                    top_k=cfg.mvs_top_k,
                )
                ok = (cost.numpy() <= cfg.depth_fill_max_cost) | (tex.numpy() < cfg.depth_fill_flat_texture)
                new &= ok
            else:
                new &= False
            full = _resize_nearest(np.where(new, df, 0.0).astype(np.float32), H, W)
            put = (full > 0) & (depth_out[k] <= 0) & ~dyn[k]
            depth_out[k][put] = full[put]
            conf_out[k][put] = cfg.depth_fill_confidence
            filled_frac[int(k)] = round(float(put.mean()), 4)
        info["depth_fill_fraction"] = filled_frac

    # ------------------------------------------------------------------------------------------
    # dynamic masks
    # ------------------------------------------------------------------------------------------

    def _dynamic_masks(
        self, frames, K, T_est, tracked, keyframes, depth_out, conf_out, mem_xyz, mem_rgb, kf_aux, info
    ) -> np.ndarray:
        """Pixels that rigid camera motion over a static world cannot explain.

        1. Keyframe depth is labelled point by point against the other keyframes and the memory:
           a point that another view sees *through* (that view's depth lies clearly behind it) or
           that lies clearly in front of the memory's surface is transient; of the rest, those
           whose colour disagrees with every view that sees them at the same depth are transient too.
        2. The remaining keyframe points are this clip's static model: it shows what the clip
           itself shows (a generator re-samples appearance the memory does not pin, so the clip,
           not the memory, is the reference for colour). It is rendered at each frame's estimated
           pose, with the memory filling its holes, and pixels whose colour it cannot explain
           (over a small window) are dynamic, as are the transient keyframe points.
        """
        from render.splat import render_points

        cfg = self.cfg
        N, H, W = frames.shape[:3]
        dyn = np.zeros((N, H, W), bool)
        img = frames.astype(np.float32) / 255.0
        s = self._mvs_scales(W)[0]
        hs, ws = int(round(H * s)), int(round(W * s))
        Ks = scale_K(K, ws / W)
        small_all = _resize_area(img, hs, ws)
        small = {k: small_all[k] for k in keyframes}
        blur = {k: ndimage.uniform_filter(small[k], (3, 3, 1)) for k in keyframes}
        dsm = {k: _resize_nearest(depth_out[k], hs, ws) for k in keyframes}
        gu, gv = np.meshgrid(np.arange(ws), np.arange(hs))
        rays = np.stack([gu, gv, np.ones((hs, ws))], -1) @ np.linalg.inv(Ks).T
        tol = cfg.dynamic_depth_rel
        transient = {}
        pts, cols, radii = [], [], []
        for k in keyframes:
            d = dsm[k]
            valid = d > 0
            Xc = rays * d[..., None]
            Xw = Xc @ T_est[k][:3, :3].T + T_est[k][:3, 3]
            violate = np.zeros((hs, ws), np.int32)
            agree = np.zeros((hs, ws), np.int32)
            seen = np.zeros((hs, ws), np.int32)
            for j in keyframes:
                if j == k:
                    continue
                T_jw = invert_pose(T_est[j])
                Xj = Xw @ T_jw[:3, :3].T + T_jw[:3, 3]
                z = Xj[..., 2]
                zs = np.where(z > 1e-6, z, 1.0)
                u = Ks[0, 0] * Xj[..., 0] / zs + Ks[0, 1] * Xj[..., 1] / zs + Ks[0, 2]
                v = Ks[1, 1] * Xj[..., 1] / zs + Ks[1, 2]
                ui, vi = np.rint(u).astype(np.int64), np.rint(v).astype(np.int64)
                inside = valid & (z > 1e-6) & (ui >= 0) & (ui < ws) & (vi >= 0) & (vi < hs)
                uc, vc = np.clip(ui, 0, ws - 1), np.clip(vi, 0, hs - 1)
                dj = dsm[j][vc, uc]
                known = inside & (dj > 0)
                behind = known & (dj > z * (1 + tol))  # view j sees through the point
                same = known & (np.abs(dj - z) <= tol * z)
                cdiff = np.abs(blur[j][vc, uc] - blur[k]).mean(-1)
                violate += behind
                seen += same
                agree += same & (cdiff < cfg.dynamic_threshold)
            md = kf_aux.get(k, {}).get("mem_depth")
            if md is not None:
                mds = _resize_nearest(md, hs, ws)
                violate += valid & (mds > 0) & (d < mds * (1 - 2 * tol))  # in front of the known surface
            # Isolated labels are depth noise; transient surfaces come in blobs.
            tr = ndimage.binary_opening(valid & (agree == 0) & ((violate >= 1) | (seen >= 2)), iterations=1)
            transient[k] = tr
            keep = valid & ~tr
            pts.append(Xw[keep].astype(np.float32))
            cols.append((small[k][keep] * 255).round().astype(np.uint8))
            # Splats about one working-resolution pixel wide at the point's depth.
            radii.append((0.75 * d[keep] / Ks[0, 0]).astype(np.float32))
        info["transient_keyframe_fraction"] = {int(k): round(float(transient[k].mean()), 4) for k in keyframes}
        xyz = np.concatenate(pts) if pts else np.zeros((0, 3), np.float32)
        rgb = np.concatenate(cols) if cols else np.zeros((0, 3), np.uint8)
        radius = np.concatenate(radii) if radii else None
        frac = []
        tracked_idx = np.nonzero(tracked)[0]
        # Per-frame work at the working resolution: actors are large blobs; masks are upsampled.
        win = max(3, (cfg.dynamic_window // 2) | 1)
        for i in tracked_idx:
            T_cw = invert_pose(T_est[i])
            ref = np.zeros((hs, ws, 3), np.uint8)
            ref_depth = np.zeros((hs, ws), np.float32)
            if len(xyz):
                out = render_points(xyz, rgb, Ks, T_cw, ws, hs, radius=radius, max_radius_px=2)
                ref = out.rgb.numpy()
                ref_depth = out.depth.numpy()
            valid = ref_depth > 0
            m = self._residual_mask(small_all[i], ref, valid, win)
            if not valid.all():
                # Where the clip's static model is blind, the static surface behind is still known
                # (memory depth, else the nearest static depth): warp the clip's own frames a few
                # steps before and after through it; a moving actor leaves both, so the smaller of
                # the two residuals is large only on dynamic pixels (one side's occlusion is not).
                depth_i = ref_depth
                if len(mem_xyz):
                    _, mdep = self._render(mem_xyz, mem_rgb, Ks, T_est[i], ws, hs)
                    depth_i = np.where(valid, depth_i, mdep)
                m |= ~valid & self._warp_residual_mask(small_all, i, depth_i, Ks, T_est, tracked_idx, win)
            if i in transient:
                m |= transient[i]
            dyn[i] = _upsample_mask(self._clean_mask(m, ws / W), H, W)
            frac.append(round(float(dyn[i].mean()), 4))
        info["dynamic_fraction"] = frac
        return dyn

    def _warp_residual_mask(
        self,
        img: np.ndarray,
        i: int,
        depth: np.ndarray,
        K: np.ndarray,
        T_est: np.ndarray,
        tracked_idx: np.ndarray,
        window: int,
    ) -> np.ndarray:
        """Frame ``i`` against frames ``i -+ dynamic_frame_gap`` warped through ``depth`` (holes filled
        with the nearest known depth); ``True`` where the smaller low-passed residual is large.

        ``img (N, h, w, 3)`` in [0, 1], ``depth (h, w)`` and ``K`` at the same resolution.
        """
        cfg = self.cfg
        H, W = depth.shape
        known = depth > 0
        if not known.any():
            return np.zeros((H, W), bool)
        if not known.all():
            idx = ndimage.distance_transform_edt(~known, return_distances=False, return_indices=True)
            depth = depth[idx[0], idx[1]]
        ok = set(tracked_idx.tolist())

        def side(step: int) -> int | None:
            # The farthest frame within the gap that still looks roughly the same way.
            for d in range(cfg.dynamic_frame_gap, 0, -1):
                j = i + step * d
                if j in ok and rotation_angle_deg(T_est[j][:3, :3], T_est[i][:3, :3]) <= cfg.mvs_max_source_angle_deg:
                    return j
            return None

        pair = [j for j in (side(-1), side(1)) if j is not None]
        if not pair:
            return np.zeros((H, W), bool)
        v, u = np.mgrid[0:H, 0:W].astype(np.float32)
        rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T.astype(np.float32)
        Xw = (rays * depth[..., None]) @ T_est[i][:3, :3].T.astype(np.float32) + T_est[i][:3, 3].astype(np.float32)
        img_s = ndimage.uniform_filter(img[i], (window, window, 1))
        best = np.full((H, W), np.inf, np.float32)
        for j in pair:
            T_jw = invert_pose(T_est[j])
            Xj = Xw @ T_jw[:3, :3].T.astype(np.float32) + T_jw[:3, 3].astype(np.float32)
            z = np.maximum(Xj[..., 2], 1e-6)
            uj = (K[0, 0] * Xj[..., 0] + K[0, 1] * Xj[..., 1]) / z + K[0, 2]
            vj = K[1, 1] * Xj[..., 1] / z + K[1, 2]
            grid = torch.from_numpy(np.stack([uj * 2 / (W - 1) - 1, vj * 2 / (H - 1) - 1], -1)[None].astype(np.float32))
            warped = (
                F.grid_sample(
                    torch.from_numpy(img[j]).permute(2, 0, 1)[None],
                    grid,
                    mode="bilinear",
                    padding_mode="border",
                    align_corners=True,
                )[0]
                .permute(1, 2, 0)
                .numpy()
            )
            inside = (uj >= 0) & (uj <= W - 1) & (vj >= 0) & (vj <= H - 1) & (Xj[..., 2] > 0)
            r = np.abs(ndimage.uniform_filter(warped, (window, window, 1)) - img_s).mean(-1)
            best = np.where(inside, np.minimum(best, r), best)
        return np.isfinite(best) & (best > cfg.dynamic_threshold)

    def _residual_mask(
        self, img_0_1: np.ndarray, ref_rgb: np.ndarray, valid: np.ndarray, window: int | None = None
    ) -> np.ndarray:
        """Pixels where the low-passed frame and reference colours differ by more than
        ``dynamic_threshold`` (mean absolute over channels, in [0, 1]).

        Both images are blurred over ``dynamic_window`` pixels before differencing (the reference
        by normalised convolution over its valid pixels): splatted references are blocky at
        texture edges, while moving actors differ over whole regions.
        """
        w = self.cfg.dynamic_window if window is None else window
        vf = valid.astype(np.float32)
        ref = ref_rgb.astype(np.float32) / 255.0 * vf[..., None]
        vs = ndimage.uniform_filter(vf, w)
        ref_s = ndimage.uniform_filter(ref, (w, w, 1)) / np.maximum(vs, 1e-3)[..., None]
        img_s = ndimage.uniform_filter(img_0_1, (w, w, 1))
        res = np.abs(img_s - ref_s).mean(-1)
        return valid & (vs > 0.6) & (res > self.cfg.dynamic_threshold)

    def _clean_mask(self, m: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Opening, closing, hole filling, small-region removal and dilation of a mask at
        ``scale`` times the frame resolution (areas and widths in the config are full-resolution)."""
        cfg = self.cfg
        m = ndimage.binary_opening(m, iterations=1)
        m = ndimage.binary_closing(m, iterations=max(1, round(2 * scale)))
        m = ndimage.binary_fill_holes(m)
        lab, n = ndimage.label(m)
        if n:
            sizes = ndimage.sum(m, lab, index=np.arange(1, n + 1))
            keep = np.zeros(n + 1, bool)
            keep[1:] = sizes >= cfg.dynamic_min_area_px * scale * scale
            m = keep[lab]
        if cfg.dynamic_dilate_px > 0:
            m = ndimage.binary_dilation(m, iterations=max(1, round(cfg.dynamic_dilate_px * scale)))
        return m
