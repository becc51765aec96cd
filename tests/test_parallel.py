"""The thread pool shared by SLAM and the conditioning renderer (spatia_py/parallel.py)."""

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from render.splat import _HelperThread
from spatia_py.parallel import Workers, usable_cpu_count


def test_workers_refuse_to_close_while_mapping_and_restart_after_close():
    workers = Workers(2, "test")
    started, release = threading.Event(), threading.Event()
    errors = []

    ran_on = set()

    def task(x):
        ran_on.add(threading.current_thread())
        started.set()
        release.wait(10)
        return x * 2

    def close_while_busy():
        started.wait(10)
        try:
            workers.close()
        except RuntimeError as e:
            errors.append(str(e))
        finally:
            release.set()

    closer = threading.Thread(target=close_while_busy)
    closer.start()
    assert workers.map(task, [1, 2, 3]) == [2, 4, 6]
    closer.join()
    assert len(errors) == 1 and "'test' workers called while they run a map()" in errors[0]
    workers.close()  # idle: stops the threads
    assert ran_on and threading.current_thread() not in ran_on and not any(t.is_alive() for t in ran_on)
    assert workers.map(lambda x: x + 1, [1, 2]) == [2, 3]  # a new pool after close
    workers.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_workers_start_afresh_in_a_forked_child():
    workers = Workers(2, "test")
    helper = _HelperThread()  # the renderer's helper: a pool, and its lock held at fork()
    helper.pool = ThreadPoolExecutor(max_workers=1)
    started, release = threading.Event(), threading.Event()

    def blocking(x):
        started.set()
        release.wait(10)
        return x

    def hold_helper_lock():
        with helper.lock:
            started.set()
            release.wait(10)

    busy = [threading.Thread(target=lambda: workers.map(blocking, [1, 2])), threading.Thread(target=hold_helper_lock)]
    for t in busy:
        started.clear()
        t.start()
        assert started.wait(10)
    pid = os.fork()  # while another thread's map holds the pool and counts as running
    if pid == 0:
        # A child stuck on the parent's pool or lock dies instead of hanging the test.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(30)
        code = 1
        try:
            ok = workers.map(lambda x: x + 1, [1, 2, 3]) == [2, 3, 4]
            workers.close()  # the parent's running map is not the child's: no error
            ok = ok and helper.pool is None and helper.lock.acquire(timeout=5)
            code = 0 if ok else 2
        finally:
            os._exit(code)
    release.set()
    for t in busy:
        t.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    workers.close()
    helper.pool.shutdown()


def test_workers_default_to_the_usable_cores_at_most_four():
    assert Workers(0).n == min(4, usable_cpu_count()) and Workers(3).n == 3
    assert Workers(1).map(lambda x: threading.current_thread(), [1, 2]) == [threading.current_thread()] * 2
