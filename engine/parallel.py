"""Work spread over worker processes, results in the order given.

Used by batch runs and letters: each task is a pure function of its
arguments, so results do not depend on the number of workers.
"""
from __future__ import annotations

import collections
import multiprocessing
from typing import Any, Callable, Iterable, Iterator


def ordered_map(function: Callable[..., Any], tasks: Iterable[tuple],
                workers: int) -> Iterator[Any]:
    """``function(*task)`` for each task, in order, in this process or a pool.

    At most two tasks per worker are in flight, so a huge input is never
    read ahead into memory.
    """
    if workers <= 1:
        for task in tasks:
            yield function(*task)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with context.Pool(workers) as pool:
        inflight: collections.deque = collections.deque()
        for task in tasks:
            inflight.append(pool.apply_async(function, task))
            while len(inflight) > 2 * workers:
                yield inflight.popleft().get()
        while inflight:
            yield inflight.popleft().get()
