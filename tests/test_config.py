"""Config presets, overrides and their errors."""


import pytest
from helpers import DEMO, ROOT

from spatia_py.config import ConfigError, RunConfig, config_to_dict, load_config

CONFIGS = ROOT / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_presets_load(name):
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, RunConfig)


def test_overrides_and_shorthands():
    cfg = load_config(DEMO, ["memory.voxel_size=0.02", "slam=oracle", "path.laps=3",
                             "generator.procedural.n_actors=0"])
    assert cfg.memory.voxel_size == 0.02
    assert cfg.slam.mode == "oracle"
    assert cfg.path.laps == 3
    assert cfg.generator.procedural.n_actors == 0
    off = load_config(DEMO, ["memory=off"])
    assert off.memory.enabled is False


def test_shorthand_override_keeps_the_sections_other_fields():
    # bench-long.yaml sets memory.voxel_size 0.02 (default 0.01); demo.yaml sets no slam.workers.
    cfg = load_config(ROOT / "configs" / "bench-long.yaml", ["memory=off"])
    assert (cfg.memory.enabled, cfg.memory.voxel_size) == (False, 0.02)
    cfg = load_config(DEMO, ["slam.workers=1", "slam=oracle"])
    assert (cfg.slam.mode, cfg.slam.workers) == ("oracle", 1)


def test_memory_off_shorthand_in_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("memory: off\nslam: oracle\n")
    cfg = load_config(f)
    assert cfg.memory.enabled is False and cfg.slam.mode == "oracle"


def test_round_trip_through_dict(tmp_path):
    import yaml

    cfg = load_config(DEMO)
    f = tmp_path / "resolved.yaml"
    f.write_text(yaml.safe_dump(config_to_dict(cfg)))
    assert config_to_dict(load_config(f)) == config_to_dict(cfg)


@pytest.mark.parametrize(
    "text, message",
    [
        ("memroy: {voxel_size: 0.1}\n", "unknown key 'memroy'"),
        ("memory: {voxel: 0.1}\n", "unknown key 'voxel'"),
        ("memory: {voxel_size: -1}\n", "voxel_size must be > 0"),
        ("frames_per_round: many\n", "expected an integer"),
        ("slam: {mode: magic}\n", "slam.mode must be"),
        ("slam: {workers: -1}\n", "slam.workers must be >= 0"),
        ("render: {workers: -2}\n", "render.workers must be >= 0"),
        ("path: {fov_x_deg: 0}\n", "fov_x_deg"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("a: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_files(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(f)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_bad_override():
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(DEMO, ["memory.voxel_size"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(DEMO, ["memory.colour=red"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("memory.voxel_size=abc", r"^override\.memory\.voxel_size: expected a number, got 'abc'"),
        ("generator.width=7", r"^override\.generator: unknown key 'width'"),
        ("slam.keyframe_stride=0.5", r"^override\.slam\.keyframe_stride: expected an integer"),
    ],
)
def test_override_errors_name_the_override(override, message):
    # The value came from the command line, not from the preset file: the error must say so.
    with pytest.raises(ConfigError, match=message):
        load_config(DEMO, [override])


def test_valid_overrides_and_shorthands_still_apply():
    cfg = load_config(DEMO, ["memory=off", "slam=oracle", "memory.voxel_size=0.05"])
    assert (cfg.memory.enabled, cfg.slam.mode, cfg.memory.voxel_size) == (False, "oracle", 0.05)
