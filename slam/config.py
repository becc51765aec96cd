"""Configuration of the visual SLAM module (a dataclass; presets live in ``configs/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SlamConfig:
    mode: str = "visual"
    """``visual`` estimates poses, depth and dynamic masks from pixels; ``oracle`` reads the
    generator's ground truth instead (an explicit upper bound for ablations, never the default)."""
    depth_source: str = "pixels"
    """``pixels`` runs multi-view stereo; ``generator`` uses depth a backend hands over with its clip."""
    carve: bool = True
    """Remove memory points that new, confident observations see through (free-space carving)."""
    torch_threads: int = 1
    """Torch threads while SLAM runs (restored afterwards). One is faster on shared cores: measured
    0.12 s CPU / 0.23 s wall per plane sweep with 1 thread vs 0.38 s / 0.63 s with 2 under load."""
    workers: int = 0
    """Python threads for independent per-keyframe and per-frame work (tracking templates, keyframe
    sweeps, their consistency checks, hole filling, transient labels and per-frame dynamic masks); torch, NumPy
    and SciPy release the GIL in that work, so one whole task per core beats intra-op threads.
    Each worker uses ``torch_threads`` torch threads (so up to ``workers * torch_threads`` cores).
    ``0``: one per available CPU core, at most 4; ``1``: serial. Results do not depend on it (each
    task is deterministic and results are gathered in order)."""

    # ---- tracking against the memory (dense photometric alignment) --------------------------
    render_radius_scale: float = 0.5
    """World-space splat radius of memory points, in voxels, when SLAM renders the memory as a
    tracking template. The round loop sets it from ``render.radius_scale``: the template must look like the
    conditioning the generator followed (measured: 0.75 here against 0.5 there biases tracking by
    ~2.5 cm / 0.45 deg on the procedural world, equal settings give ~2 mm / 0.03 deg)."""
    render_max_radius_px: int = 3
    """Largest splat half-size in pixels for the tracking template (the round loop sets it from
    ``render.max_radius_px``)."""
    track_levels: int = 3
    """Pyramid levels of the direct alignment (full, 1/2, 1/4)."""
    track_max_pixels: int = 15000
    """Template pixels used per pyramid level (strongest gradients, evenly subsampled)."""
    track_min_pixels: int = 1500
    """A frame is tracked against the memory only if at least this many template pixels have
    memory depth and gradient at full resolution (for 512x320 frames; scaled with the image area)."""
    track_min_inlier_fraction: float = 0.5
    """... and at least this fraction of them end with a residual within the inlier threshold."""
    track_prior_sigma_m: float = 0.02
    """Per-axis std of the commanded camera's position used as a prior in the alignment; it only
    decides directions the image leaves weak (a far flat wall couples yaw and sideways motion)."""
    track_prior_sigma_deg: float = 0.3
    """Per-axis std of the commanded camera's rotation used as that prior."""
    max_correction_m: float = 0.15
    """Largest accepted distance between a tracked and the commanded camera centre; beyond it the
    measurement is treated as a failure (the commanded pose is only ever an initial guess)."""
    max_correction_deg: float = 3.0
    """Largest accepted rotation between a tracked and the commanded camera."""

    # ---- tracking within the clip (features + bundle adjustment) ----------------------------
    sift_max_features: int = 2000
    """SIFT keypoints per frame for the clip's own structure from motion (first round, or frames
    the memory cannot track)."""
    sfm_pair_offsets: list = field(default_factory=lambda: [1, 2, 4, 8])
    """Frame i is matched with frames i + offset of the clip."""
    sfm_min_inliers: int = 40
    """Essential-matrix (pair) and PnP (frame) inliers needed to use a pair / register a frame."""
    sfm_max_reproj_px: float = 2.0
    """Observations with a larger reprojection error are dropped during the clip's BA."""
    anchor_rotation_sigma_deg: float = 0.15
    """Assumed per-frame rotation error of the commanded cameras when the clip's reconstruction is
    placed in the world by them (first round); weights the rotation against the centres."""

    # ---- keyframes and dense depth -----------------------------------------------------------
    keyframe_stride: int = 4
    """Frames between keyframes, counted back from the newest one (see ``keyframe_end_margin``)."""
    keyframe_stride_unmapped: int = 2
    """Keyframe stride of a clip the memory barely covers (median coverage of its frames below
    ``keyframe_unmapped_coverage``): with no memory to confirm swept depth, consecutive keyframes
    must confirm each other, and sparse ones leave the clip's first frames half empty."""
    keyframe_unmapped_coverage: float = 0.1
    """See ``keyframe_stride_unmapped``."""
    keyframe_max_angle_deg: float = 15.0
    """The stride shrinks so consecutive keyframes are at most about this far apart in viewing
    direction (only matters on coarse paths; the evaluation orbit turns 3.5 deg per frame)."""
    keyframe_end_margin: int = 2
    """The newest keyframe is this many frames before the clip's end, so it has stereo sources
    on both sides (the clip's last frames are covered by the next clip's first keyframe)."""
    keyframe_confirm_min_fraction: float = 0.01
    """When more than this fraction of a keyframe's swept depth lies in no other keyframe's view
    (nor on the memory), a neighbouring frame that sees it becomes a keyframe too, so the depth can
    be confirmed and fused (0 turns this off); see ``VisualSlam._confirming_keyframes``."""
    keyframe_min_new_coverage: float = 0.0
    """Skip a keyframe candidate when less than this fraction of it is new to the memory (0 keeps
    all: keyframes also form the clip's static model for dynamic masks, and a keyframe the memory
    already explains costs little, as only its unexplained part is swept)."""
    mvs_scale: float = 0.5
    """Working resolution of plane sweep relative to the frames (the result is upsampled)."""
    mvs_min_width: int = 256
    """The working resolution is raised (up to the frames' own) to keep at least this many
    pixels across: small frames are swept at full resolution."""
    mvs_coarse_scale: float = 0.25
    """Resolution of the wide coarse sweep that seeds the narrow sweep."""
    mvs_max_planes: int = 48
    """Cap on coarse depth hypotheses (their count follows the disparity range)."""
    mvs_fine_planes: int = 8
    """Depth hypotheses of the narrow sweep at working resolution."""
    mvs_window: int = 7
    """ZNCC window in pixels (odd) at working resolution (``python -m slam.benchmark``: 7 against 5
    lowers the median depth error from 1.08% to 0.95% at the same cost)."""
    mvs_smooth_window: int = 7
    """Second box filter (pixels, odd; 0 = off) of each source's ZNCC map before sources are
    ranked: two boxes make a tent-weighted support. ``python -m slam.benchmark``, orbit clip:
    see its ``mvs`` table; on loop-path clips with true poses it lowered the median depth error
    1.33% -> 0.77% and sweep outliers beyond 8% from 6.6% to 4.6% of pixels at the same cost
    (a single wider box, 9 or 11, gave 1.29% / 1.24%); loop revisit PSNR 23.2 -> 23.7 dB."""
    mvs_source_offsets: list = field(default_factory=lambda: [-6, -3, 3, 6])
    """Source frames of a keyframe, as offsets within the clip (out-of-clip offsets are replaced
    by the nearest unused frames; the previous clip's last frames are used at the start).
    On the procedural orbit (3.5 deg/frame, ``python -m slam.benchmark``): +-3/+-6 gives a median
    depth error of 0.95% against 1.16% for +-2/+-4 at the same cost."""
    mvs_max_source_angle_deg: float = 30.0
    """Sources whose viewing direction differs from the keyframe's by more than this are replaced
    by nearer frames (on a 24 deg/frame path the +-3/+-6 offsets would see other walls)."""
    mvs_min_baseline_frac: float = 0.25
    """A stereo source must be at least this fraction of the clip's median frame-to-frame camera
    translation away from the keyframe: a source at the keyframe's own centre (a path that stops
    or turns back) matches at every depth and would decide the sweep by noise. 0 keeps all."""
    mvs_fallback_offsets: list = field(default_factory=lambda: [-1, 1])
    """Neighbours of a keyframe (offsets within the clip; negative ones may be history frames) added
    as stereo sources that count only where fewer than ``mvs_top_k`` of the regular sources see a
    pixel: content at the image border that the +-3/+-6 frames no longer (or not yet) see, as when
    the camera moves forward after a turn. A short baseline also matches at wrong depths, so they
    never replace a regular source that sees the pixel. [] turns this off."""
    mvs_fallback_min_fraction: float = 0.01
    """A keyframe gets a second sweep with its fallback sources only when more than this fraction of
    it is seen by fewer than ``mvs_top_k`` regular sources (the sweep covers just those pixels)."""
    mvs_top_k: int = 2
    """Sources averaged per hypothesis (the best ones: robust to occlusion and moving actors)."""
    mvs_max_cost: float = 0.8
    """Pixels whose best 1 - ZNCC exceeds this get no depth."""
    mvs_min_texture: float = 0.01
    """Pixels whose local intensity standard deviation is below this get no depth."""
    mvs_consistency_rel: float = 0.03
    """Relative depth agreement needed between keyframes or with the memory (geometric consistency)."""
    mvs_average_views: bool = True
    """A keyframe depth confirmed by other views (keyframes, memory) is replaced by its mean with
    the depths they imply for it: independent sweeps err independently, so averaging lowers noise."""
    mvs_edge_radius: int = 3
    """Depth-edge refinement (``slam.mvs.refine_depth_edges``; 0 = off, the default before
    2026-11-21, which runs saved then keep on resume): swept pixels the memory does not cover,
    whose inverse depth within this many working pixels spans more than ``mvs_edge_jump`` of their own, are swept again with colour-weighted ZNCC over a disc of this
    radius, which stops the textured side of a depth edge from "fattening" over the other.
    Measured against 0 (``configs/loop.yaml`` seeds 1 / 2 / 3): revisit PSNR 25.26 / 23.10 / 25.11
    -> 26.98 / 23.75 / 25.82 dB; ``slam-eval.yaml`` costs +12 ms per frame in the depth stage
    (205 -> 217 ms per frame in the same hour, with the default ``workers``: 2 on 2 cores)."""
    mvs_edge_jump: float = 0.15
    """Relative inverse-depth span around a pixel that marks it as next to a depth edge."""
    mvs_edge_planes: int = 6
    """Depth hypotheses per edge pixel (evenly in inverse depth over the span, then a parabola)."""
    mvs_edge_colour_scale: float = 0.1
    """Colour distance (sum of absolute RGB differences in [0, 1]) at which a window pixel's
    weight falls by ``1/e`` in the edge refinement."""
    depth_min_m: float = 0.2
    """Nearest depth searched when nothing better is known."""
    depth_max_m: float = 12.0
    """Farthest depth searched when nothing better is known."""
    depth_memory_radius_scale: float = 1.5
    """Splat radius (voxels) of the memory rendered at keyframes for depth reuse and snapping."""
    fuse_known_radius_scale: float = 1.5
    """Splat radius (voxels) of the memory rendered at fusion to decide which keyframe pixels
    re-observe a known surface: a gap between the conditioning's narrower splats is not new
    surface, and fusing it would open voxels next to existing ones on every pass (demo path flown
    3 times: growth after lap 1 +31% at 0.5). Whether the memory holds a
    *different* surface there (a conflict, see ``carve_min_confidence``) is decided with the
    conditioning's splats: wide ones fatten silhouettes into the wall behind them, which then
    stayed unfused (loop revisit PSNR 23.65 -> 23.86 dB)."""
    memory_snap_rel: float = 0.06
    """Swept depth within this fraction of the memory's depth is the memory's surface seen again
    (MVS noise is ~1-2%): the keyframe reports the memory's depth there, and fusion refines the
    covering memory point instead of opening a neighbouring voxel (on a revisit round of the
    evaluation orbit this cut new voxels from ~210k to ~20k). Larger differences are new
    surfaces and are fused (and carve what they see through)."""
    memory_prior_rel: float = 0.08
    """Where the rendered memory has depth, the sweep searches only +- this fraction around it."""

    track_conditioning: bool = True
    """Track each frame against the conditioning it was generated from (the memory rendered at
    its commanded camera, with the same colours the generator saw) instead of a fresh render."""
    depth_fill: bool = True
    """Fill holes of keyframe depth enclosed by a locally planar surface (row and column
    interpolation of inverse depth agreeing within ``depth_fill_plane_rel``), keeping only filled
    pixels that are photometrically consistent with the stereo sources or untextured."""
    depth_fill_max_gap_px: int = 64
    """Longest row/column gap (full-resolution pixels) a fill may bridge."""
    depth_fill_plane_rel: float = 0.03
    """Agreement of the row and column interpolations needed to fill."""
    depth_fill_max_cost: float = 1.0
    """A textured filled pixel is kept only when its best 1 - ZNCC at the filled depth is at most this."""
    depth_fill_flat_texture: float = 0.01
    """Filled pixels with local intensity std below this pass the photometric check (untextured)."""
    depth_fill_confidence: float = 0.3
    """Depth confidence of filled pixels (fused with this lower weight; below ``carve_min_confidence``)."""

    # ---- dynamic masks -----------------------------------------------------------------------
    dynamic_threshold: float = 0.12
    """Colour residual (mean absolute difference in [0, 1] of low-passed colours, see
    ``dynamic_window``) above which a pixel disagrees with the static prediction."""
    dynamic_window: int = 7
    """Box window (pixels) over which frame and static prediction are low-passed before comparing."""
    dynamic_frame_gap: int = 4
    """Where the clip's static model is blind, frame i is compared with frames i -+ this many steps
    warped through the static depth (memory, else the nearest known)."""
    dynamic_depth_rel: float = 0.05
    """Relative depth margin of the free-space test: a keyframe point is transient when another
    keyframe sees more than this fraction beyond it (or it lies in front of the memory by twice it)."""
    dynamic_min_area_px: int = 150
    """Connected dynamic regions smaller than this (pixels at full resolution) are dropped."""
    dynamic_dilate_px: int = 3
    """Dynamic masks are grown by this many pixels (silhouettes are never fused)."""

    # ---- fusion ------------------------------------------------------------------------------
    fuse_stride: int = 1
    """Fuse every n-th pixel row/column of keyframe depth (1 = all)."""
    fuse_min_confidence: float = 0.25
    """Keyframe pixels with depth confidence below this are not fused. Confidence is the ZNCC
    match quality ``1 - cost / mvs_max_cost`` scaled by the evidence: x1.0 when two or more other
    views (keyframes or the memory) confirm the depth, x0.8 for one, x0.6 when only confirmed
    neighbours on the same surface support it; reused memory depth scores 0.8."""
    fuse_min_confidence_far: float = 0.05
    """The lower threshold for pixels farther than ``fuse_dynamic_margin_px`` from anything found
    moving in the keyframe or its ``fuse_dynamic_frames`` neighbours on either side. Smooth,
    weakly textured static surfaces (a plain pillar) match weakly but are confirmed by other
    views; moving actors also match weakly, so ``fuse_min_confidence`` still guards the pixels
    near them (and masks can miss an actor in one frame, hence the neighbours' masks).
    ``configs/loop.yaml``: revisit PSNR 23.9 -> 24.6 dB; demo x3 laps: revisit 21.8 -> 22.0 dB,
    growth after lap 1 +7.0% -> +5.6%, leak 0.06% -> 0.09%. Set it to ``fuse_min_confidence``
    to turn this off."""
    fuse_dynamic_margin_px: int = 64
    """See ``fuse_min_confidence_far`` (full-resolution pixels, Chebyshev distance)."""
    fuse_dynamic_frames: int = 4
    """See ``fuse_min_confidence_far``."""
    carve_min_confidence: float = 0.6
    """Only pixels at least this confident carve free space."""

    def check(self) -> None:
        """Value checks that types alone cannot express. ``validate_config`` runs them on the run
        config's ``slam`` section and :class:`~slam.VisualSlam` on whatever config it is given
        (``slam.eval_fountain``, ``slam.benchmark`` and API users build ``SlamConfig`` directly).

        Raises:
            ValueError: naming the ``slam.`` field, the allowed values and the value given.
        """

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)

        need(self.mode in ("visual", "oracle"), f"slam.mode must be 'visual' or 'oracle', got {self.mode!r}")
        need(self.depth_source in ("pixels", "generator"),
             f"slam.depth_source must be 'pixels' or 'generator', got {self.depth_source!r}")
        need(self.workers >= 0,
             f"slam.workers must be >= 0 (0 = one per CPU core, at most 4; 1 = serial), got {self.workers}")
        need(self.keyframe_stride >= 1, f"slam.keyframe_stride must be >= 1, got {self.keyframe_stride}")
        need(self.mvs_min_baseline_frac >= 0,
             f"slam.mvs_min_baseline_frac must be >= 0 (0 keeps all sources), got {self.mvs_min_baseline_frac}")
        for name in ("mvs_fallback_min_fraction", "keyframe_confirm_min_fraction"):
            need(0.0 <= getattr(self, name) <= 1.0, f"slam.{name} must be in [0, 1], got {getattr(self, name)}")
        need(all(isinstance(o, int) and o != 0 for o in self.mvs_fallback_offsets),
             f"slam.mvs_fallback_offsets must be non-zero integer frame offsets, got {self.mvs_fallback_offsets}")
        need(self.mvs_window >= 1 and self.mvs_window % 2 == 1,
             f"slam.mvs_window must be a positive odd number, got {self.mvs_window}")
        need(self.mvs_smooth_window == 0 or (self.mvs_smooth_window > 0 and self.mvs_smooth_window % 2 == 1),
             f"slam.mvs_smooth_window must be 0 (off) or a positive odd number, got {self.mvs_smooth_window}")
        need(self.mvs_edge_radius >= 0,
             f"slam.mvs_edge_radius must be >= 0 (0 turns edge refinement off), got {self.mvs_edge_radius}")
        need(self.mvs_edge_planes >= 3, f"slam.mvs_edge_planes must be >= 3, got {self.mvs_edge_planes}")
        need(self.mvs_edge_jump > 0 and self.mvs_edge_colour_scale > 0,
             f"slam.mvs_edge_jump and slam.mvs_edge_colour_scale must be > 0, got {self.mvs_edge_jump} and "
             f"{self.mvs_edge_colour_scale}")
        need(self.fuse_dynamic_margin_px >= 0 and self.fuse_dynamic_frames >= 0,
             "slam.fuse_dynamic_margin_px and slam.fuse_dynamic_frames must be >= 0, got "
             f"{self.fuse_dynamic_margin_px} and {self.fuse_dynamic_frames}")
