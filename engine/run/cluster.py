"""Chunks decided on a Dask cluster, results in roster order.

``--cluster tcp://HOST:8786`` (or ``tls://``) sends the chunks of a run or a
what-if to the workers of a running Dask scheduler; ``--cluster local:N``
starts N worker processes and a scheduler on this machine. The same
pure chunk function runs there as in the process pool (engine.run.chunks),
so the outputs do not depend on where it ran: the driver (this process)
still reads the roster, numbers the rows, checks duplicates, joins the
history, writes every output in roster order and records the run.

What goes to the workers: the shared arguments (the rule set, the letters'
settings) once per worker, scattered before the first chunk; then each
chunk with its partners' history and earlier decisions. At most two chunks
per worker thread are in flight, so the driver's memory stays flat. A
worker lost mid-run has its chunks sent again, to run elsewhere (results
are pure, so nothing changes); a scheduler lost stops the run,
and the previous run stays current. Each worker process builds its
durable_rules engine once (engine.ruleset.model.per_rule_set) and decides
one chunk at a time: the engine is not shared between threads.

Dask is an optional extra: ``pip install -e '.[cluster]'``.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from engine.errors import EngineError, UsageError

LOCAL = "local:"
SCHEMES = ("tcp://", "tls://", "inproc://")
INSTALL = (
    "pip install 'partner-eligibility[cluster]' (or, in a checkout, pip install -e '.[cluster]')"
)
CONNECT_SECONDS = 30


@dataclass(frozen=True)
class ClusterSpec:
    """Where chunks go: a scheduler's address, or a local cluster's size."""

    address: str | None = None
    local_workers: int = 0

    @classmethod
    def parse(cls, text: str) -> ClusterSpec:
        if text.startswith(LOCAL):
            count = text[len(LOCAL) :]
            if not count.isdigit() or not 1 <= int(count) <= 256:
                raise UsageError(
                    f"--cluster {text}: write local:N with N worker processes, 1 to 256 (local:2)"
                )
            return cls(local_workers=int(count))
        if not text.startswith(SCHEMES) or len(text.split("://", 1)[1]) == 0:
            raise UsageError(
                f"--cluster {text}: give a Dask scheduler's address, like "
                "tcp://scheduler.example.com:8786 (or tls://...), or local:N"
            )
        return cls(address=text)

    def __str__(self) -> str:
        return self.address or f"{LOCAL}{self.local_workers}"


def _distributed():
    try:
        import distributed
    except ImportError:
        raise UsageError(f"--cluster needs Dask, an optional extra: {INSTALL}") from None
    return distributed


@contextlib.contextmanager
def connected(spec: ClusterSpec) -> Iterator[Any]:
    """A Dask client of the cluster (a local one started, and stopped after)."""
    distributed = _distributed()
    cluster = None
    try:
        if spec.local_workers:
            cluster = _local_cluster(distributed, spec.local_workers)
            client = distributed.Client(cluster)
            client.wait_for_workers(spec.local_workers, timeout=CONNECT_SECONDS)
        else:
            client = distributed.Client(spec.address, timeout=CONNECT_SECONDS)
    except (OSError, TypeError, ValueError) as error:
        # TypeError, ValueError: Dask's word for a TLS configuration it cannot use.
        if cluster is not None:
            cluster.close()
        hint = ""
        if str(spec).startswith("tls://"):
            hint = (
                "; for tls:// set the client's certificate, key and CA in Dask's configuration "
                "(distributed.comm.tls.client.cert, .client.key, .ca-file: docs/cluster.md)"
            )
        raise EngineError(
            f"--cluster {spec}: cannot reach the Dask scheduler ({error}){hint}"
        ) from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _local_cluster(distributed: Any, workers: int) -> Any:
    """A cluster of ``workers`` processes on this machine, its scheduler in
    a process of its own where Dask can (SubprocessCluster): in the
    driver's process it would take the driver's CPU (about 40 µs a partner
    at 100,000 partners; docs/benchmarks.md). The workers run without a
    nanny and without a memory monitor: a nanny is a process of its own per
    worker, and both poll the worker all the time, CPU the workers' cores
    lack on one machine (about 10% of a run's time on 2 cores). A worker
    that dies is not restarted then; its chunks are decided by the others."""
    options = {
        "n_workers": workers,
        "threads_per_worker": 1,
        "dashboard_address": None,
        "silence_logs": 50,  # logging.CRITICAL: the run's own lines only
    }
    try:
        from distributed.deploy.subprocess import SubprocessCluster
    except ImportError:
        return distributed.LocalCluster(processes=True, **options)
    return SubprocessCluster(
        worker_class="distributed.Worker", worker_kwargs={"memory_limit": 0}, **options
    )


def _worker_check() -> str:
    """Run on each worker before the first chunk: the package, and with it
    durable_rules' compiled engine (imported by the adapter), must import
    there."""
    import engine.evaluate.durable_adapter as adapter

    return adapter.__name__


def check_workers(client: Any, spec: ClusterSpec) -> int:
    """Fail the run at its start, naming the worker, when a worker lacks the
    package or durable_rules; returns the number of worker threads."""
    workers = client.scheduler_info().get("workers", {})
    if not workers:
        raise EngineError(f"--cluster {spec}: the scheduler has no workers")
    try:
        found = client.run(_worker_check, on_error="return")
    except Exception as error:  # noqa: BLE001 - whatever Dask raised
        raise EngineError(
            f"--cluster {spec}: the workers cannot run the rules: {error}. "
            f"Install the package on every worker: {INSTALL}"
        ) from None
    failed = sorted(
        ((a, e) for a, e in found.items() if isinstance(e, BaseException)), key=lambda f: f[0]
    )
    if failed:
        address, error = failed[0]
        name = workers.get(address, {}).get("name")
        named = address if name in (None, "", address) else f"{address}, named {name}"
        others = f" (and {len(failed) - 1} other workers)" if len(failed) > 1 else ""
        # Dask wraps what a worker could not unpickle in an Exception saying what it was.
        reason = str(error) if type(error) is Exception else f"{type(error).__name__}: {error}"
        raise EngineError(
            f"--cluster {spec}: a worker ({named}){others} cannot run the rules: "
            f"{reason}. Install the package on every worker: {INSTALL}"
        )
    return sum(w.get("nthreads", 1) for w in workers.values())


class _Opaque:
    """Arguments Dask carries without looking inside: the shared ones,
    scattered once (else it would scatter a tuple's items one by one), and
    each task's (else it would walk every row of a chunk looking for
    futures, which cost the driver more than deciding cost the workers)."""

    __slots__ = ("values",)

    def __init__(self, values: tuple):
        self.values = values

    def __getstate__(self) -> tuple:
        return self.values

    def __setstate__(self, values: tuple) -> None:
        self.values = values


_lock = threading.Lock()  # one chunk at a time in a worker process (see the docstring)


def _run_task(function: Callable[..., Any], shared: _Opaque, task: _Opaque) -> Any:
    with _lock:
        return function(*shared.values, *task.values)


def cluster_map(
    client: Any,
    spec: ClusterSpec,
    function: Callable[..., Any],
    tasks: Iterable[tuple],
    shared: tuple = (),
) -> Iterator[Any]:
    """``function(*shared, *task)`` for each task on the cluster's workers,
    results in the order of the tasks (see the module docstring). Each
    worker builds what it needs (the engine) with its first chunk.

    A chunk goes straight to a worker (scattered), not through the
    scheduler: the driver then spends less and holds less. Data scattered to
    a worker that dies is lost with it, so a chunk whose worker was lost is
    sent again, this time with its task, which the scheduler can run again
    anywhere."""
    distributed = _distributed()
    threads = check_workers(client, spec)
    scattered = client.scatter(_Opaque(shared), broadcast=True, hash=False)
    lost = (OSError, distributed.comm.CommClosedError, distributed.client.FutureCancelledError)

    def send(task: tuple, direct: bool = True) -> Any:
        if direct:
            with contextlib.suppress(*lost):
                data = client.scatter(_Opaque(task), direct=True, hash=False)
                return client.submit(_run_task, function, scattered, data, pure=False)
        return client.submit(_run_task, function, scattered, _Opaque(task), pure=False)

    def collect(task: tuple, future: Any) -> Any:
        try:
            return future.result()
        except lost:
            if client.status != "running":
                raise
            return send(task, direct=False).result()  # its worker died: send it again

    inflight: collections.deque = collections.deque()
    try:
        for task in tasks:
            inflight.append((task, send(task)))
            while len(inflight) > 2 * threads:
                yield _said(functools.partial(collect, *inflight.popleft()), spec, distributed)
        while inflight:
            yield _said(functools.partial(collect, *inflight.popleft()), spec, distributed)
    finally:
        for _, future in inflight:
            future.cancel()


def _said(get: Callable[[], Any], spec: ClusterSpec, distributed: Any) -> Any:
    """``get()``, a chunk's result, with the cluster's failures in one line."""
    try:
        return get()
    except distributed.client.FutureCancelledError:
        raise EngineError(f"--cluster {spec}: the scheduler cancelled a chunk") from None
    except (OSError, distributed.comm.CommClosedError) as error:
        raise EngineError(
            f"--cluster {spec}: lost the Dask scheduler ({error}); nothing was recorded, "
            "and the previous run stays current"
        ) from None
    except distributed.scheduler.KilledWorker as error:
        raise EngineError(
            f"--cluster {spec}: a chunk killed every worker it was given to ({error}); "
            "nothing was recorded"
        ) from None
