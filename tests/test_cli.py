"""The command line: clear errors with a non-zero exit for bad input, never a deep traceback."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import DEMO, ROOT

from spatia_py.cli import main
from spatia_py.geometry import orbit_path, save_path


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_is_fast():
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "spatia_py.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "run" in r.stdout
    # Heavy libraries are imported lazily; --help must not pay for torch/open3d.
    assert time.perf_counter() - t0 < 5.0
    r = subprocess.run([sys.executable, "-c", "import spatia_py.cli, sys; "
                        "print(any(m in sys.modules for m in ('torch', 'open3d', 'pycolmap', 'rerun')))"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.strip() == "False"


def test_missing_config(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", "--config", tmp_path / "nope.yaml", "--out", tmp_path / "run")
    assert code == 2 and "config file not found" in err and "Traceback" not in err


def test_malformed_config(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("path: [unclosed\n")
    code, _, err = run_cli(capsys, "run", "--config", f, "--out", tmp_path / "run")
    assert code == 2 and "not valid YAML" in err


def test_unknown_config_key(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("memory: {voxel_sise: 0.02}\n")
    code, _, err = run_cli(capsys, "run", "--config", f, "--out", tmp_path / "run")
    assert code == 2 and "unknown key 'voxel_sise'" in err and "voxel_size" in err


def test_unknown_override_key(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", "--config", DEMO, "--out", tmp_path / "run", "slam.speed=11")
    assert code == 2 and "unknown key 'speed'" in err
    assert not (tmp_path / "run").exists()


def _path_file(tmp_path, mutate) -> Path:
    p = orbit_path([0, 0, 1.2], 1.5, 1.4, 4, width=64, height_px=48).to_dict()
    mutate(p["cameras"][1])
    f = tmp_path / "path.json"
    f.write_text(json.dumps(p))
    return f


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["T_world_cam"][0].__setitem__(3, float("nan")), "non-finite"),
        (lambda c: c["T_world_cam"][0].__setitem__(0, 3.0), "not rigid"),
        (lambda c: c["K"][0].__setitem__(0, 0.0), "focal lengths must be positive"),
        (lambda c: c["K"][1].__setitem__(1, -5.0), "focal lengths must be positive"),
        (lambda c: c.pop("K"), "missing key"),
    ],
)
def test_bad_camera_path_file_in_run(tmp_path, capsys, mutate, message):
    f = _path_file(tmp_path, mutate)
    code, _, err = run_cli(capsys, "run", "--config", DEMO, "--out", tmp_path / "run", "path.kind=file",
                           f"path.params={{file: {f}}}")
    assert code == 2 and message in err and "camera 1" in err


def test_unwritable_output_directory(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(capsys, "run", "--config", DEMO, "--out", blocker / "run", "path.n_frames=4",
                           "frames_per_round=2", "path.width=32", "path.height=24")
    assert code == 2 and "cannot write the run directory" in err
    assert blocker.read_text() == "not a folder"


def test_refused_run_keeps_the_existing_recording(tmp_path, capsys):
    # Rerun truncates a recording when it opens it: a run refused up front must not get that far.
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: earlier\n")
    rrd = run / "run.rrd"
    rrd.write_bytes(b"an earlier recording")
    code, _, err = run_cli(capsys, "run", "--config", DEMO, "--out", run, "--rerun", rrd)
    assert code == 2 and "already holds a run" in err
    assert rrd.read_bytes() == b"an earlier recording"


def test_render_errors(tmp_path, capsys):
    code, _, err = run_cli(capsys, "render", tmp_path / "no-run", "--path", tmp_path / "p.json",
                           "--out", tmp_path / "r")
    assert code == 2 and "not a run directory" in err


def test_resume_without_run(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", "--out", tmp_path / "run", "--resume")
    assert code == 2 and "nothing to resume" in err


def test_view_rejects_unknown_target(tmp_path, capsys):
    f = tmp_path / "x.txt"
    f.write_text("hello")
    code, _, err = run_cli(capsys, "view", f, "--no-viewer")
    assert code != 0 and err


def test_save_path_file_is_loadable_by_render_contract(tmp_path):
    p = orbit_path([0, 0, 1.2], 1.5, 1.4, 3, width=64, height_px=48)
    save_path(p, tmp_path / "p.json")
    d = json.loads((tmp_path / "p.json").read_text())
    assert d["fps"] == 24.0 and np.asarray(d["cameras"][0]["T_world_cam"]).shape == (4, 4)
