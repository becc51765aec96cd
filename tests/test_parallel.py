"""The thread pool shared by SLAM and the conditioning renderer (spatia_py/parallel.py)."""

import os
import signal
import threading

from render.splat import _HELPER
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
    assert len(errors) == 1 and "test: close() called while a map() is running" in errors[0]
    workers.close()  # idle: stops the threads
    assert ran_on and threading.current_thread() not in ran_on and not any(t.is_alive() for t in ran_on)
    assert workers.map(lambda x: x + 1, [1, 2]) == [2, 3]  # a new pool after close
    workers.close()


def test_workers_start_afresh_in_a_forked_child():
    workers = Workers(2, "test")
    started, release = threading.Event(), threading.Event()

    def blocking(x):
        started.set()
        release.wait(10)
        return x

    busy = threading.Thread(target=lambda: workers.map(blocking, [1, 2]))
    busy.start()
    assert started.wait(10)
    pid = os.fork()  # while another thread's map holds the pool and counts as running
    if pid == 0:
        signal.alarm(30)  # a child stuck on the parent's pool or lock dies instead of hanging the test
        code = 1
        try:
            ok = workers.map(lambda x: x + 1, [1, 2, 3]) == [2, 3, 4]
            workers.close()  # the parent's running map is not the child's: no error
            code = 0 if ok and _HELPER.pool is None else 2
        finally:
            os._exit(code)
    release.set()
    busy.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    workers.close()


def test_workers_default_to_the_usable_cores_at_most_four():
    assert Workers(0).n == min(4, usable_cpu_count()) and Workers(3).n == 3
    assert Workers(1).map(lambda x: threading.current_thread(), [1, 2]) == [threading.current_thread()] * 2
