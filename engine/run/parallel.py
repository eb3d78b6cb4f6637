"""Work spread over worker processes, results in the order given.

Used by batch runs and letters: each task is a pure function of its
arguments, so results do not depend on the number of workers.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import gc
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

# A run allocates millions of short-lived containers (rows, facts, results),
# nearly all freed by reference counting. At Python's default threshold (700
# allocations) the cycle collector runs every few partners and scans the
# chunks in flight again and again; every 50,000 it costs a fraction of that.
GC_THRESHOLD = (50_000, 20, 20)

_PR_SET_PDEATHSIG = 1  # Linux prctl(2)
_shared: tuple = ()  # in a worker: the shared arguments of its pool's tasks


def ordered_map(
    function: Callable[..., Any],
    tasks: Iterable[tuple],
    workers: int,
    warm_up: Callable[[], Any] | None = None,
    shared: tuple = (),
) -> Iterator[Any]:
    """``function(*shared, *task)`` for each task, in order, in this process or a pool.

    ``shared`` holds the leading arguments that are the same for every task
    (the rule set): they go to each worker once, as it starts, rather than
    with every task. At most two tasks per worker are in flight, so a huge
    input is never read ahead into memory. Each worker calls ``warm_up`` as
    it starts, while the first tasks are being made.
    """
    with fewer_collections():
        if workers <= 1:
            for task in tasks:
                yield function(*shared, *task)
            return
        context = multiprocessing.get_context("fork" if workers_inherit_memory() else "spawn")
        with context.Pool(workers, initializer=_start_worker, initargs=(warm_up, shared)) as pool:
            inflight: collections.deque = collections.deque()
            try:
                for task in tasks:
                    inflight.append(pool.apply_async(_with_shared, (function, *task)))
                    while len(inflight) > 2 * workers:
                        yield inflight.popleft().get()
                while inflight:
                    yield inflight.popleft().get()
            except BaseException:
                # Stopped (Ctrl-C, an error, the consumer gone): let the few tasks
                # handed over finish first. Terminating the pool while its feeder
                # thread is still writing a large task into the pipe waits for
                # that thread forever (seen with Ctrl-C in about one run in four).
                pool.close()
                pool.join()
                raise


def workers_inherit_memory() -> bool:
    """Whether workers are forked (POSIX), so that they start with what this
    process has built; else (Windows, spawn) they start afresh."""
    return "fork" in multiprocessing.get_all_start_methods()


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the cycle collector less often (see GC_THRESHOLD) for a while."""
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _with_shared(function: Callable[..., Any], *task: Any) -> Any:
    return function(*_shared, *task)


def _die_with_parent() -> None:
    """End this worker when the main process dies, even killed outright: on
    Linux at once, by the kernel; elsewhere within a second, by a watcher
    thread. Else it would write its result into a pipe nobody reads and
    print a BrokenPipeError traceback."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0 and os.getppid() == parent:
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _start_worker(warm_up: Callable[[], Any] | None, shared: tuple) -> None:
    """Keep the shared arguments and warm up; then what the worker holds
    (modules, the rule set, its engine) is never garbage: the collector need
    not scan it again, and runs less often."""
    global _shared
    _shared = shared
    # Ctrl-C and SIGTERM are the main process's to handle: it stops the pool,
    # and the run keeps nothing half-written. Workers would only print
    # tracebacks (SIGTERM: the pool stopping them, or what they inherited).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    if warm_up is not None:
        try:
            warm_up()
        except Exception:  # noqa: BLE001 - a pool whose initializer raises restarts it forever;
            pass  # the first task meets the same error and reports it
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
