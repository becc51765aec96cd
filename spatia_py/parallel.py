"""How many CPU cores this process may use (one answer for every thread pool in spatia)."""

from __future__ import annotations

import os

__all__ = ["usable_cpu_count"]


def usable_cpu_count() -> int:
    """CPU cores this process may run on: its affinity mask where the OS has one (Linux, containers
    pinned with ``taskset`` / cgroups cpusets), else all logical cores; at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
