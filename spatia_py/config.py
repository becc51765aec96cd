"""Dataclass configs of a run, YAML presets and command-line overrides.

A preset (``configs/demo.yaml``) is a nested mapping of these dataclasses' fields; any field can
be overridden from the command line as ``section.field=value`` (value parsed as YAML). Unknown
keys are errors that name the key and the valid choices. Two shorthands keep presets short:
``memory: off`` means ``memory.enabled: false`` and ``slam: oracle`` means ``slam.mode: oracle``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from slam.config import SlamConfig

__all__ = [
    "ConfigError",
    "PathConfig",
    "ProceduralConfig",
    "GeneratorConfig",
    "MemoryConfig",
    "RenderConfig",
    "EvalConfig",
    "RunConfig",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
]


class ConfigError(ValueError):
    """A config file or override is invalid; the message says what and how to fix it."""


@dataclass
class PathConfig:
    kind: str = "orbit"
    """Camera path builder: ``orbit``, ``dolly``, ``look_around``, ``loop`` or ``file``."""
    n_frames: int = 96
    """Frames in one lap of the path (ignored for ``file``)."""
    laps: int = 1
    """Fly the path this many times (revisits every pose ``laps - 1`` times)."""
    width: int = 512
    height: int = 320
    fov_x_deg: float = 70.0
    fps: float = 24.0
    params: dict = field(default_factory=lambda: {"center": [0.0, 0.0, 1.2], "radius": 1.5, "height": 1.4})
    """Keyword arguments of the builder in ``spatia_py.geometry`` (``file`` takes ``{file: PATH}``)."""


@dataclass
class ProceduralConfig:
    scene: str = "room"
    """``room`` (box room with furniture) or ``courtyard`` (walls and pillars, open sky)."""
    world_seed: int = 0
    """Seed of the layout (geometry) of the procedural world; appearance is re-sampled per call."""
    n_actors: int = 2
    """Dynamic actors (balls, boxes) moving along smooth paths; never part of the memory."""
    control_error_m: float = 0.01
    """Std of the per-clip camera-control translation error in metres (smooth within a clip)."""
    control_error_deg: float = 0.15
    """Std of the per-clip camera-control rotation error in degrees."""
    noise_std: float = 2.0
    """Std of pixel noise in 0-255 intensity levels."""
    validity_threshold: float = 0.5
    """Conditioning pixels with validity above this are followed; the rest is re-sampled."""
    follow_depth_rel_tol: float = 0.08
    """Conditioning is followed where its depth agrees with the scene within this fraction (+3 cm):
    an occlusion test, loose enough that memory depth a few percent off is still followed."""
    forget_layout: bool = False
    """Also re-sample furniture placement where the conditioning does not cover it: each movable
    piece has a few seeded placements (within 0.3 m / 15 degrees); it keeps the one the
    conditioning depth shows, else takes a random one per call that hides nothing covered."""
    hand_over_depth: bool = False
    """Return the ray-cast depth of every frame (actors included) with the clip, as a backend with
    a depth head would, for ``slam.depth_source: generator``. Off by default: SLAM estimates depth
    from the pixels. With visual poses it separates the stereo error from the pose error in the
    revisit gap (README, Known gaps)."""
    torch_threads: int = 1
    """Intra-op torch threads while ray-casting (restored afterwards; 0 leaves torch's setting).
    1 is fastest for its many small ops and immune to CPU oversubscription on shared machines."""


@dataclass
class GeneratorConfig:
    backend: str = "procedural"
    """``procedural`` (the embedded stand-in world model; no weights, CPU)."""
    procedural: ProceduralConfig = field(default_factory=ProceduralConfig)
    history_frames: int = 4
    """How many of the last generated frames are passed to the generator."""


@dataclass
class MemoryConfig:
    enabled: bool = True
    """``false`` (``memory: off``) runs the loop without conditioning: the no-memory ablation."""
    voxel_size: float = 0.01
    """Voxel edge in metres: one fused point per occupied voxel."""
    min_confidence: float = 0.0
    """Points below this confidence are not rendered as conditioning."""


@dataclass
class RenderConfig:
    radius_scale: float = 0.5
    """World-space splat radius as a multiple of the voxel size."""
    max_radius_px: int = 3
    """Largest splat half-size in pixels (keeps close-up points from flooding the image)."""
    n_reference_frames: int = 2
    """Past frames retrieved by visibility overlap and passed to the generator."""
    blend_colours: bool = False
    """Colour the conditioning by the Gaussian-weighted mean of all front-surface points covering
    each pixel (``render/blend.py``) instead of the single z-buffer winner; occlusion, depth and
    validity are unchanged; ~0.1 s per 512x320 frame. Off by default: measured on the loop preset
    before ``colour_frames`` existed (which later overwrites the colours where past frames saw the
    surface), it lifted oracle revisit PSNR 31.4 -> 32.5 dB but left visual SLAM's at 22.8 dB.
    ``spatia render`` blends unless given ``--hard``."""
    blend_depth_tol_rel: float = 0.03
    """Points within this fraction of a pixel's z-buffer depth count as its front surface."""
    colour_frames: int = 3
    """Colour the conditioning from up to this many past frames with the nearest viewpoints, where
    they saw the rendered surface (image-based rendering, ``spatia_py.conditioning.colour_from_frames``):
    the memory decides what is shown, the frames give it their sharpness. 0: memory colours only."""
    colour_depth_tol_rel: float = 0.03
    """A past frame saw a rendered point when its depth there agrees within this fraction."""
    colour_max_diff: float = 0.06
    """Frame colours are taken only where their local mean (5x5, [0, 1]) is within this of the
    memory render's (a frame showing something else there is not copied)."""
    workers: int = 0
    """Threads rendering a segment's conditioning views, and indexing a round's frames for
    retrieval, in parallel (one view per task). ``0``: one per available CPU core, at most 4;
    ``1``: serial. Results do not depend on it."""


@dataclass
class EvalConfig:
    ground_truth_metrics: bool = True
    """Compute pose, depth, dynamic-leak and revisit metrics when the generator returns ground truth."""
    revisit_max_translation_m: float = 0.02
    revisit_max_rotation_deg: float = 0.5
    """Two commanded poses this close (in different rounds) form a revisit pair."""


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    """Seed of everything random in the run (generator appearance, control error)."""
    prompt: str = ""
    frames_per_round: int = 16
    """Frames generated per round (one clip)."""
    lookahead_frames: int = 4
    """Frames generated past each segment but the last, used by SLAM and then discarded (the next
    round generates them again). Content entering view in a segment's last frames is otherwise seen
    from one side only, not confirmed, not fused, and so re-sampled by the next clip: the world
    would change at every clip boundary. 0 turns look-ahead off."""
    path: PathConfig = field(default_factory=PathConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    slam: SlamConfig = field(default_factory=SlamConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


_SHORTHANDS = {
    ("memory", bool): lambda v: {"enabled": v},
    ("slam", str): lambda v: {"mode": v},
}


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def config_from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a nested mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys are {names}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp) and not isinstance(value, dict):
            value = _expand_shorthand(key, value)
        kwargs[key] = _convert(value, tp, f"{where}.{key}")
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict:
    """Nested plain-dict form of a config (what ``config.yaml`` in a run holds)."""
    return dataclasses.asdict(cfg)


def _expand_shorthand(section: str, value: Any) -> Any:
    """``memory: off`` → ``{"enabled": False}``, ``slam: oracle`` → ``{"mode": "oracle"}``; else unchanged."""
    for (name, vtype), expand in _SHORTHANDS.items():
        if name == section and isinstance(value, vtype):
            return expand(value)
    return value


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        nxt = _expand_shorthand(k, cur.get(k))
        if not isinstance(nxt, dict):
            nxt = {}
        cur[k] = nxt
        cur = nxt
    last = keys[-1]
    if len(keys) == 1:
        # A shorthand for a whole section (``memory=off``) sets its one field and keeps the others.
        expanded, existing = _expand_shorthand(last, value), _expand_shorthand(last, cur.get(last))
        if expanded is not value and isinstance(existing, dict):
            value = {**existing, **expanded}
    cur[last] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``section.field=value`` strings (values parsed as YAML) to a raw config mapping."""
    data = dict(data or {})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} is not of the form section.field=value (e.g. memory.voxel_size=0.02)"
            )
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-")
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
        _set_dotted(data, key, value)
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML preset (or defaults when ``path`` is None), apply overrides and validate."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p} (presets are in configs/, e.g. configs/demo.yaml)")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections, got {type(data).__name__}")
    if overrides:
        # Type and key errors of an override name the override, not the file it is applied to:
        # each field is checked on its own, so the overrides alone fail exactly where they are wrong.
        config_from_dict(RunConfig, apply_overrides({}, overrides), where="override")
    data = apply_overrides(data, overrides or [])
    cfg = config_from_dict(RunConfig, data, where=str(path) if path else "config")
    validate_config(cfg)
    return cfg


def validate_config(cfg: RunConfig) -> None:
    """Value checks that types alone cannot express."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    need(cfg.frames_per_round >= 2, f"frames_per_round must be >= 2, got {cfg.frames_per_round}")
    need(cfg.lookahead_frames >= 0, f"lookahead_frames must be >= 0 (0 turns look-ahead off), got {cfg.lookahead_frames}")
    need(cfg.path.width >= 16 and cfg.path.height >= 16,
         f"path.width/height must be >= 16 pixels, got {cfg.path.width}x{cfg.path.height}")
    need(cfg.path.n_frames >= 2, f"path.n_frames must be >= 2, got {cfg.path.n_frames}")
    need(cfg.path.laps >= 1, f"path.laps must be >= 1, got {cfg.path.laps}")
    need(0 < cfg.path.fov_x_deg < 180, f"path.fov_x_deg must be in (0, 180), got {cfg.path.fov_x_deg}")
    need(cfg.path.fps > 0, f"path.fps must be > 0, got {cfg.path.fps}")
    need(cfg.memory.voxel_size > 0, f"memory.voxel_size must be > 0 metres, got {cfg.memory.voxel_size}")
    try:
        cfg.slam.check()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    need(not (cfg.slam.depth_source == "generator" and cfg.slam.mode == "visual"
              and cfg.generator.backend == "procedural" and not cfg.generator.procedural.hand_over_depth),
         "slam.depth_source=generator needs depth from the generator, and the procedural one hands it over "
         "only with generator.procedural.hand_over_depth=true; set that or use slam.depth_source=pixels")
    need(cfg.generator.backend in ("procedural",),
         f"generator.backend must be 'procedural' (the embedded stand-in world model), got {cfg.generator.backend!r}")
    need(cfg.generator.procedural.scene in ("room", "courtyard"),
         f"generator.procedural.scene must be 'room' or 'courtyard', got {cfg.generator.procedural.scene!r}")
    need(cfg.generator.procedural.n_actors >= 0, "generator.procedural.n_actors must be >= 0")
    need(cfg.render.max_radius_px >= 0, "render.max_radius_px must be >= 0")
    need(cfg.render.n_reference_frames >= 0, "render.n_reference_frames must be >= 0")
    need(cfg.render.workers >= 0,
         f"render.workers must be >= 0 (0 = one per CPU core, at most 4; 1 = serial), got {cfg.render.workers}")
    need(cfg.render.colour_frames >= 0, "render.colour_frames must be >= 0 (0 turns frame colours off)")
    need(cfg.render.colour_depth_tol_rel > 0,
         f"render.colour_depth_tol_rel must be > 0 (a fraction of depth), got {cfg.render.colour_depth_tol_rel}")
    need(cfg.render.colour_max_diff >= 0,
         f"render.colour_max_diff must be >= 0 (colour in [0, 1]), got {cfg.render.colour_max_diff}")
    need(cfg.render.blend_depth_tol_rel >= 0,
         f"render.blend_depth_tol_rel must be >= 0 (a fraction of depth), got {cfg.render.blend_depth_tol_rel}")
