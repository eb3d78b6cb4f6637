"""Benchmark a run on a Dask LocalCluster against the process pool.

For one roster, alternating, each run in a fresh process, folder and
database: ``--workers N`` and ``--cluster local:N``. Prints for each run the
wall time, the driver's own CPU time per partner (this process: reading,
joining, sending chunks, writing outputs; the workers are other processes),
the driver's peak memory, and from the driver's CPU the most partners per
second it could feed a cluster of any size (one core saturated). With
``--parquet`` the roster is the folder's roster.parquet (written from its
roster.csv once), whose chunks go to the workers as columns. Record the
figures in docs/benchmarks.md; it is not a test.

    python bench/cluster_benchmark.py --roster bench/data/p100000 --workers 2 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RUN = """
import datetime as dt, json, resource, sys, time
from pathlib import Path
from engine.run.driver import RunOptions, run_batch
from engine.ruleset.loader import load_rules
data, work, mode, workers = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
roster = data / sys.argv[5]
ruleset = load_rules("rules")
started = time.perf_counter()
before = resource.getrusage(resource.RUSAGE_SELF)
result = run_batch(ruleset, RunOptions(
    roster, data / "performance.csv", dt.date(2026, 11, 26), work / "out",
    workers=workers, db=work / "h.sqlite", max_rejects=0.1,
    cluster=f"local:{workers}" if mode == "cluster" else None))
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "wall": time.perf_counter() - started,
    "driver_cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
    "driver_peak_mb": after.ru_maxrss / 1024,
    "partners": result.summary["partners"]["decided"],
}))
"""


def one(data: Path, mode: str, workers: int, roster: str) -> dict:
    work = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    try:
        done = subprocess.run(
            [sys.executable, "-c", RUN, str(data), str(work), mode, str(workers), roster],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roster", type=Path, default=ROOT / "bench/data/p100000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parquet", action="store_true", help="read roster.parquet")
    args = parser.parse_args()
    roster = "roster.csv"
    if args.parquet:
        roster = "roster.parquet"
        if not (args.roster / roster).exists():
            import pyarrow.csv
            import pyarrow.parquet

            table = pyarrow.csv.read_csv(args.roster / "roster.csv")
            pyarrow.parquet.write_table(table, args.roster / roster, row_group_size=100_000)
    runs: dict[str, list[dict]] = {"pool": [], "cluster": []}
    for round_ in range(args.repeat):
        for mode in ("pool", "cluster"):
            found = one(args.roster, mode, args.workers, roster)
            runs[mode].append(found)
            per = found["driver_cpu"] / found["partners"] * 1e6
            print(
                f"round {round_ + 1} {mode:7}: {found['wall']:.1f} s, driver "
                f"{per:.0f} µs CPU a partner, driver peak {found['driver_peak_mb']:.0f} MB",
                flush=True,
            )
    for mode, found in runs.items():
        wall = statistics.median(r["wall"] for r in found)
        per = statistics.median(r["driver_cpu"] / r["partners"] for r in found)
        print(
            f"{mode:7} median: {wall:.1f} s; driver {per * 1e6:.0f} µs CPU a partner, so it "
            f"could feed at most {1 / per:,.0f} partners/s"
        )
    ratios = [c["wall"] / p["wall"] for p, c in zip(runs["pool"], runs["cluster"])]
    print(f"cluster / pool wall time, pair by pair: {', '.join(f'{r:.2f}' for r in ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
