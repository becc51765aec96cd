"""Threads for spatia's independent per-frame and per-keyframe work: how many CPU cores this
process may use (one answer for every pool), a pool that maps tasks in order (:class:`Workers`),
and one at-fork hook that gives every registered pool a clean state in a forked child."""

from __future__ import annotations

import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager

__all__ = ["usable_cpu_count", "reset_after_fork", "Workers", "serial_map", "torch_threads"]


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


@contextmanager
def torch_threads(n: int):
    """Torch intra-op threads set to ``n`` (> 0; otherwise left as they are) inside the block,
    restored afterwards. Code that issues many small torch ops wants few: with more threads than
    free cores (a shared machine) OpenMP's spin-waiting makes them 10-30x slower."""
    import torch

    prev = torch.get_num_threads()
    if n <= 0 or n == prev:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def serial_map(fn, items) -> list:
    """``[fn(x) for x in items]``: the serial stand-in for :meth:`Workers.map` where a function takes
    an optional ``map_fn``."""
    return [fn(x) for x in items]


class Workers:
    """Threads for independent tasks: ``map`` returns results in input order and re-raises a task's
    exception. Serial with one worker or one task; the pool is made on first use (again after a
    fork or :meth:`close`). :meth:`close` while a ``map`` runs is an error, not a race.

    Worth it where the tasks spend their time in NumPy, SciPy, torch or pycolmap calls that
    release the GIL. Each task runs with the caller's torch thread count. Results do not depend on
    the number of workers when each task is deterministic.

    Args:
        n: threads; ``0``: one per usable CPU core, at most 4; ``1``: serial.
        name: names the threads and the owner in :meth:`close`'s error.
    """

    def __init__(self, n: int, name: str = "workers") -> None:
        if n <= 0:
            n = min(4, usable_cpu_count())
        self.n = n
        self.name = name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._active = 0
        reset_after_fork(self)

    def map(self, fn, items) -> list:
        """``[fn(x) for x in items]``, on the pool's threads."""
        import torch

        items = list(items)
        if self.n <= 1 or len(items) <= 1:
            return serial_map(fn, items)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.n, thread_name_prefix=self.name)
            pool = self._pool
            self._active += 1
        n_torch = torch.get_num_threads()

        def task(x):
            torch.set_num_threads(n_torch)  # a pool thread keeps its own count: use the caller's
            return fn(x)

        try:
            futures = [pool.submit(task, x) for x in items]
            try:
                return [f.result() for f in futures]
            except BaseException:
                # No task outlives the call (they write into the caller's arrays).
                for f in futures:
                    f.cancel()
                wait(futures)
                raise
        finally:
            with self._lock:
                self._active -= 1

    def close(self) -> None:
        """Stop the threads (a later ``map`` starts new ones); raises while a ``map`` runs."""
        with self._lock:
            if self._active:
                raise RuntimeError(f"close() of the {self.name!r} workers called while they run a map() (for SLAM: "
                                   "while VisualSlam.process runs); close them after it returns")
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _after_fork(self) -> None:
        """In a forked child the parent's pool, lock and count of running maps are not its own."""
        self._pool, self._lock, self._active = None, threading.Lock(), 0
