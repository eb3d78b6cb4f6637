"""Runs on a Dask cluster (engine.run.cluster): real LocalClusters of worker
processes, outputs byte for byte those of a process-pool run, a worker
killed half way changing nothing."""

from __future__ import annotations

import os
import signal

import pytest

from conftest import ROOT, example_run_options
from engine.errors import EngineError, UsageError
from engine.ruleset.loader import load_rules
from engine.run import cluster as cluster_module
from engine.run.cluster import ClusterSpec
from engine.run.driver import run_batch
from engine.run.impact import compare

distributed = pytest.importorskip("distributed", reason="the cluster extra is not installed")

OUTPUTS = ("decisions.jsonl", "enrollments.csv", "rejects.csv", "changes.csv")
EARLIER, NOW = "2026-08-20", "2026-11-26"


def _outputs(folder) -> dict[str, bytes]:
    return {name: (folder / "out" / name).read_bytes() for name in OUTPUTS}


def _two_runs(ruleset, folder, **options) -> dict[str, bytes]:
    """A run as of EARLIER, then one as of NOW (with changes since the first)."""
    import datetime as dt

    for day in (EARLIER, NOW):
        run_batch(
            ruleset,
            example_run_options(folder, as_of=dt.date.fromisoformat(day), **options),
        )
    return _outputs(folder)


@pytest.fixture(scope="module")
def pool_outputs(tmp_path_factory, ruleset):
    return _two_runs(ruleset, tmp_path_factory.mktemp("pool"), workers=2)


@pytest.mark.parametrize(("workers", "chunk_size"), [(2, 4), (1, 7)])
def test_a_cluster_run_writes_the_same_bytes_as_a_pool_run(
    tmp_path, ruleset, pool_outputs, workers, chunk_size
):
    outputs = _two_runs(ruleset, tmp_path, cluster=f"local:{workers}", chunk_size=chunk_size)
    assert outputs == pool_outputs
    assert b"classification,standing" in outputs["changes.csv"]  # something to compare


def test_a_parquet_roster_on_a_cluster_writes_what_its_csv_does_in_a_pool(
    tmp_path, ruleset, pool_outputs
):
    """Its chunks travel to Dask's workers as Arrow columns, not records."""
    import csv

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from conftest import EXAMPLES

    with (EXAMPLES / "roster.csv").open(newline="", encoding="utf-8") as handle:
        header, *body = list(csv.reader(handle))
    table = pa.table({n: pa.array([r[i] or None for r in body]) for i, n in enumerate(header)})
    roster = tmp_path / "roster.parquet"
    pq.write_table(table, roster, row_group_size=10)
    outputs = _two_runs(ruleset, tmp_path, cluster="local:2", chunk_size=4, roster=roster)
    for name in ("decisions.jsonl", "enrollments.csv", "changes.csv"):
        assert outputs[name] == pool_outputs[name], name
    # The same rows set aside, named by the Parquet file.
    pool_rejects = pool_outputs["rejects.csv"].decode().replace("roster.csv", "roster.parquet")
    rejects = outputs["rejects.csv"].decode().replace(str(tmp_path) + "/", "")
    assert "\nroster.parquet,34,P-1033,joined_on," in rejects
    assert rejects.replace(str(EXAMPLES) + "/", "") == pool_rejects.replace(str(EXAMPLES) + "/", "")


def test_a_worker_killed_half_way_changes_nothing(tmp_path, ruleset, pool_outputs):
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        pids = client.run(os.getpid)
        killed = []

        def kill_one(progress) -> None:
            if not killed and progress.count >= 8:  # some chunks done, others in flight
                victim = next(iter(pids.values()))
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        import datetime as dt

        for day in (EARLIER, NOW):
            options = example_run_options(
                tmp_path,
                as_of=dt.date.fromisoformat(day),
                cluster=cluster.scheduler_address,
                chunk_size=2,
            )
            run_batch(ruleset, options, kill_one if day == NOW else None)
        assert killed, "no worker was killed"
    assert _outputs(tmp_path) == pool_outputs


def test_diff_on_a_cluster_finds_the_same_moves(tmp_path, ruleset):
    proposed_folder = tmp_path / "proposed"
    (proposed_folder).mkdir()
    for path in (ROOT / "rules").glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        (proposed_folder / path.name).write_text(
            text.replace("certified_technical >= 2", "certified_technical >= 3"), encoding="utf-8"
        )
    proposed = load_rules(proposed_folder)
    args = (
        ruleset,
        proposed,
        ROOT / "examples" / "roster.csv",
        ROOT / "examples" / "performance.csv",
    )
    days = (example_run_options(tmp_path).as_of,) * 2
    here = compare(*args, *days, "base", "proposed", 2)
    there = compare(*args, *days, "base", "proposed", cluster="local:2")
    assert here.moves and here.moves == there.moves


def test_a_cluster_that_cannot_be_used_stops_before_anything_is_decided(
    tmp_path, ruleset, monkeypatch
):
    for bad in ("local:0", "local:x", "scheduler:8786", "tcp://"):
        with pytest.raises(UsageError, match="--cluster"):
            ClusterSpec.parse(bad)
    monkeypatch.setattr(cluster_module, "CONNECT_SECONDS", 2)
    with pytest.raises(EngineError, match="cannot reach the Dask scheduler"):
        run_batch(ruleset, example_run_options(tmp_path, cluster="tcp://127.0.0.1:9"))
    assert not (tmp_path / "out" / "current").exists()  # nothing became current


BLOCKER = '''
"""A worker's environment without the package: importing engine fails."""
import sys


class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name == "engine" or name.startswith("engine."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Missing())
'''


def test_a_worker_without_the_package_stops_the_run_at_its_start_naming_it(tmp_path, ruleset):
    """One of two real worker processes cannot import the package (a worker
    started with a preload that hides it): the run stops before anything is
    decided, naming that worker, not the other."""
    import subprocess
    import sys

    blocker = tmp_path / "without_engine.py"
    blocker.write_text(BLOCKER, encoding="utf-8")
    scheduler = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    )
    lacking = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            scheduler.scheduler_address,
            "--nthreads",
            "1",
            "--no-nanny",
            "--name",
            "lacking",
            "--preload",
            str(blocker),
            "--no-dashboard",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with distributed.Client(scheduler) as client:
            client.wait_for_workers(2, timeout=60)
            good = [
                a for a, w in client.scheduler_info()["workers"].items() if w["name"] != "lacking"
            ]
        options = example_run_options(tmp_path, cluster=scheduler.scheduler_address)
        with pytest.raises(EngineError) as stopped:
            run_batch(ruleset, options)
        message = str(stopped.value)
        assert "named lacking" in message and "No module named 'engine" in message
        assert good[0] not in message and "\n" not in message
        assert not (tmp_path / "out" / "decisions.jsonl").exists()
    finally:
        lacking.terminate()
        lacking.wait(timeout=30)
        scheduler.close()


def test_a_run_over_tls_writes_the_same_bytes(tmp_path, ruleset, pool_outputs, monkeypatch):
    """The driver reaches a scheduler that accepts TLS only (a self-signed
    certificate made here), configured as docs/cluster.md says: Dask's
    distributed.comm.tls settings. Without its certificate it stops in one
    line saying what to set."""
    import shutil
    import subprocess

    import dask

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
    )
    tls = {
        "distributed.comm.require-encryption": True,
        "distributed.comm.tls.ca-file": str(cert),
        **{
            f"distributed.comm.tls.{role}.{part}": str(path)
            for role in ("client", "scheduler", "worker")
            for part, path in (("cert", cert), ("key", key))
        },
    }
    with dask.config.set(tls):
        security = distributed.Security()
        assert security.require_encryption
        scheduler = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            protocol="tls://",
            security=security,
            dashboard_address=None,
        )
        try:
            assert scheduler.scheduler_address.startswith("tls://")
            outputs = _two_runs(ruleset, tmp_path, cluster=scheduler.scheduler_address)
            with dask.config.set({"distributed.comm.tls.client.cert": None}):  # no certificate
                monkeypatch.setattr(cluster_module, "CONNECT_SECONDS", 5)
                options = example_run_options(
                    tmp_path / "refused", cluster=scheduler.scheduler_address
                )
                with pytest.raises(EngineError) as refused:
                    run_batch(ruleset, options)
        finally:
            scheduler.close()
    assert outputs == pool_outputs
    message = str(refused.value)  # a driver without its certificate: one line, what to set
    assert "cannot reach the Dask scheduler" in message and "\n" not in message
    assert "distributed.comm.tls.client.cert" in message
