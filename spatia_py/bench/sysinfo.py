"""Machine and software facts recorded next to every benchmark result, and config hashes.

Numbers from two machines are not comparable; these facts say which machine produced them.
Everything here is read-only: no command that changes the repository or the system is run.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["machine_info", "config_hash", "git_info"]

_PACKAGES = ("torch", "numpy", "scipy", "open3d", "pycolmap", "matplotlib", "spatia")
_REPO = Path(__file__).resolve().parents[2]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 2)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 2)
    except (ValueError, OSError, AttributeError):
        return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_info(repo: Path = _REPO) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the source tree, read without taking locks."""
    def git(*args: str) -> str | None:
        try:
            # --no-optional-locks: `status` must not refresh (write) the index of a shared checkout.
            res = subprocess.run(["git", "--no-optional-locks", "-C", str(repo), *args], capture_output=True,
                                 text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def machine_info() -> dict:
    """CPU model, cores, RAM, OS, Python and library versions, torch threads, git commit, load average."""
    from spatia_py.parallel import usable_cpu_count

    usable = usable_cpu_count()
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_usable": usable,
        "ram_gib": _ram_gib(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {name: _version(name) for name in _PACKAGES},
        "git": git_info(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch_threads"] = None
    try:
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        info["load_average_1m"] = None
    return info


def config_hash(config: dict) -> str:
    """sha256 of a resolved config dict (keys sorted), so two results can be matched to one setup."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
