"""Benchmark batch runs of the reference rules on synthetic rosters.

Prints, for each roster size: end-to-end partners per second with 1 worker
and with all workers, the CPU time (user and system, all processes) per
partner, peak memory, the raw durable_rules throughput on the same compiled
rules and the same facts without any I/O, and the ratio of the two. On 2
cores, 100,000 partners in 15 s means at most 300 µs of CPU per partner. Run
it by hand on a quiet machine and record the figures in docs/benchmarks.md;
it is not a test.

    python bench/benchmark.py                       # 10k and 100k partners
    python bench/benchmark.py --sizes 10000,100000,1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AS_OF = "2026-11-26"
RAW_SAMPLE = 100_000  # facts held in memory for the raw engine measurement

RUN = """
import datetime as dt, json, resource, sys, time
from pathlib import Path
from engine.run.driver import RunOptions, run_batch
from engine.ruleset.loader import load_rules
data, out, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
started = time.perf_counter()
ruleset = load_rules("rules")
result = run_batch(ruleset, RunOptions(data / "roster.csv", data / "performance.csv",
                   dt.date.fromisoformat("@AS_OF@"), out, workers=workers, db=out / "runs.sqlite"))
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "partners": result.summary["partners"],
                  "main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "cpu_seconds": sum(u.ru_utime + u.ru_stime for u in (
                      resource.getrusage(resource.RUSAGE_SELF),
                      resource.getrusage(resource.RUSAGE_CHILDREN)))}))
""".replace("@AS_OF@", AS_OF)


def generate(size: int, folder: Path) -> Path:
    data = folder / f"roster-{size}"
    if not (data / "roster.csv").exists():
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "generate.py"),
                "--partners",
                str(size),
                "--out",
                str(data),
            ],
            check=True,
        )
    return data


def measure(*args: str) -> dict:
    """Run this script's measurement in a fresh process and read its JSON.

    Each measurement has a process of its own: Linux carries a process's peak
    memory across fork and exec, so measuring in a big parent would inflate
    the child's figure.
    """
    done = subprocess.run(
        [sys.executable, __file__, *args], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(f"measurement {args} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def end_to_end(data: Path, workers: int, folder: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=folder))
    try:
        done = subprocess.run(
            [sys.executable, "-c", RUN, str(data), str(out), str(workers)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)  # outputs of 1M partners take 2 GB
    if done.returncode:
        sys.exit(f"the run over {data} with {workers} workers failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def raw_engine(data: Path) -> dict:
    """durable_rules alone: the same compiled rules and facts, built before timing."""
    sys.path.insert(0, str(ROOT))
    from engine.data.readers import read_rows
    from engine.errors import DataError
    from engine.evaluate.decide import Evaluator, partner_values
    from engine.evaluate.records import partner_from_record
    from engine.ruleset.loader import load_rules

    ruleset = load_rules(ROOT / "rules")
    as_of = dt.date.fromisoformat(AS_OF)
    history: dict[str, list] = {}
    for row in read_rows(data / "performance.csv"):
        history.setdefault(row.record["partner_id"], []).append(row.record)
    evaluator = Evaluator(ruleset)
    facts, seen = [], set()
    for row in read_rows(data / "roster.csv"):
        if len(facts) == RAW_SAMPLE:
            break
        try:
            partner = partner_from_record(
                ruleset, row.record, history.get(row.record.get("partner_id"), [])
            )
        except DataError:
            continue
        if partner.partner_id in seen:
            continue
        seen.add(partner.partner_id)
        facts.append(evaluator.fact(partner, partner_values(ruleset, partner, as_of), as_of))
    started = time.perf_counter()
    evaluator.engine.decide(facts)
    seconds = time.perf_counter() - started
    return {"partners": len(facts), "seconds": seconds, "per_second": len(facts) / seconds}


def main() -> None:
    if sys.argv[1:2] == ["--raw-engine"]:
        print(json.dumps(raw_engine(Path(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "data")
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores; workers: 1 and {args.workers}; as of {AS_OF}")
    header = (
        f"{'partners':>10} {'workers':>7} {'seconds':>8} {'partners/s':>11} "
        f"{'CPU µs/partner':>14} {'main MB':>8} {'worker MB':>9} {'raw engine/s':>12} "
        f"{'e2e/raw':>8}"
    )
    print(header)
    for size in (int(s) for s in args.sizes.split(",")):
        data = generate(size, args.data)
        raw = measure("--raw-engine", str(data))
        raw_seconds = raw["seconds"] / raw["partners"] * size
        for workers in sorted({1, args.workers}):
            run = end_to_end(data, workers, args.data)
            rows = run["partners"]["rows_read"]
            print(
                f"{rows:>10,} {workers:>7} {run['seconds']:>8.1f} "
                f"{rows / run['seconds']:>11,.0f} {run['cpu_seconds'] / rows * 1e6:>14,.0f} "
                f"{run['main_mb']:>8.0f} "
                f"{run['worker_mb']:>9.0f} {raw['per_second']:>12,.0f} "
                f"{run['seconds'] / raw_seconds:>8.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
