"""Benchmark reading a roster from Parquet against the same roster as CSV.

Writes the CSV roster's Parquet copy once (pyarrow's own types: whole
numbers, dates and text; shares stay text, "60%"), then reads both the way
a run's main process does (``roster_chunks``: every row numbered, its
partner_id checked, chunks of 500 rows made and pickled for the workers;
no history), alternating, each in a fresh process. A CSV roster's chunks
are records; a Parquet roster's stay columns, and the workers make the
records: that work is timed too (``in workers``: every chunk unpickled and
its rows made, as a worker does before deciding), but not counted as
reading. Prints rows/s and the ratio, pair by pair. Record the figures in
docs/benchmarks.md; it is not a test.

    python bench/parquet_benchmark.py --roster bench/data/p1000000/roster.csv --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

READ = """
import json, pickle, sys, time
from engine.data.performance import HistoryStore
from engine.data.readers import RowReader
from engine.ruleset.loader import load_rules
from engine.run.driver import RunTally, roster_chunks
ruleset = load_rules("rules")
history = HistoryStore(ruleset.figures)
started = time.perf_counter()
tally = RunTally()
sent = [
    pickle.dumps(chunk, pickle.HIGHEST_PROTOCOL)
    for chunk, _ in roster_chunks(RowReader(sys.argv[1], ruleset.fields), history, {}, tally, 500)
]
seconds = time.perf_counter() - started
started = time.perf_counter()
made = sum(1 for chunk in sent for _ in pickle.loads(chunk))
workers = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "rows": tally.rows_read, "made": made, "workers": workers}))
"""


def read(path: Path) -> dict:
    command = [sys.executable, "-c", READ, str(path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roster", type=Path, default=ROOT / "bench/data/p1000000/roster.csv")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import pyarrow.csv
    import pyarrow.parquet

    parquet = args.roster.with_suffix(".parquet")
    if not parquet.exists():
        table = pyarrow.csv.read_csv(args.roster)
        pyarrow.parquet.write_table(table, parquet, row_group_size=100_000)
        print(f"wrote {parquet} ({parquet.stat().st_size / 1e6:.0f} MB, schema: {table.schema})")
    times: dict[str, list[float]] = {"csv": [], "parquet": []}
    for round_ in range(args.repeat):
        for kind, path in (("csv", args.roster), ("parquet", parquet)):
            found = read(path)
            times[kind].append(found["seconds"])
            print(
                f"round {round_ + 1} {kind:7}: {found['rows']:,} rows in {found['seconds']:.1f} s "
                f"({found['rows'] / found['seconds']:,.0f} rows/s); in workers "
                f"{found['workers']:.1f} s for {found['made']:,} records",
                flush=True,
            )
    ratios = [c / p for c, p in zip(times["csv"], times["parquet"])]
    print(
        f"CSV / Parquet time, pair by pair: {', '.join(f'{r:.2f}' for r in ratios)}; "
        f"median {statistics.median(ratios):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
