"""How many CPU cores this process may use (one answer for every thread pool in spatia), and one
at-fork hook that gives every registered thread pool a clean state in a forked child."""

from __future__ import annotations

import os
import weakref

__all__ = ["usable_cpu_count", "reset_after_fork"]


def usable_cpu_count() -> int:
    """CPU cores this process may run on: its affinity mask where the OS has one (Linux, containers
    pinned with ``taskset`` / cgroups cpusets), else all logical cores; at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


_FORK_CHILD_RESETS: weakref.WeakSet = weakref.WeakSet()


def reset_after_fork(owner) -> None:
    """Call ``owner._after_fork()`` in every child forked while ``owner`` lives (held weakly).

    Only the forking thread runs in a child: a pool object there has lost its threads, and a lock
    another thread held at ``fork()`` stays held. ``_after_fork`` must drop both (no pool, a fresh
    lock) so that the child starts its own on first use.
    """
    _FORK_CHILD_RESETS.add(owner)


def _reset_all_after_fork() -> None:
    for owner in list(_FORK_CHILD_RESETS):
        owner._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_all_after_fork)
