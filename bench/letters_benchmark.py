"""Benchmark letter writing on a synthetic roster of the reference rules.

Runs the rules once over the roster (without letters), then writes every
partner's letters from that run's output with 1 and with N workers, for each
format on its own and for all three together, and prints letters per second
(files written per second is letters times formats) and the CPU time
(user and system, all processes) a letter took. Each measurement
writes into its own copy of the run's output folder, as on a first run, and
nothing is deleted until the end (see the note in the loop). Run it by hand on
a quiet machine and record the figures in docs/benchmarks.md; it is not a test.

    python bench/letters_benchmark.py                    # 100,000 partners
    python bench/letters_benchmark.py --partners 10000 --workers 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.ruleset.loader import load_rules  # noqa: E402
from engine.run.driver import RunOptions, run_batch  # noqa: E402
from engine.run.letters_pass import LetterOptions, write_letters  # noqa: E402

AS_OF = dt.date(2026, 11, 26)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--only-all-workers", action="store_true", help="Skip the 1-worker measurements."
    )
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "data")
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="Where to write the letters (a temporary folder is made "
        "in it; default: the --data folder). See the note on file "
        "systems in docs/benchmarks.md.",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="Leave the letters written, for you to delete later: deleting "
        "hundreds of thousands of files slows down the next files made "
        "nearby for minutes (docs/benchmarks.md), so runs compared "
        "back to back should keep theirs until all are done.",
    )
    parser.add_argument(
        "--measure", nargs=3, metavar=("FOLDER", "FORMATS", "WORKERS"), help=argparse.SUPPRESS
    )  # one measurement, in a process of its own
    args = parser.parse_args()
    if args.measure:
        measure(Path(args.measure[0]), tuple(args.measure[1].split(",")), int(args.measure[2]))
        return
    data = args.data / f"roster-{args.partners}"
    if not (data / "roster.csv").exists():
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "generate.py"),
                "--partners",
                str(args.partners),
                "--out",
                str(data),
            ],
            check=True,
        )
    ruleset = load_rules(ROOT / "rules")
    where = args.dir or args.data
    where.mkdir(parents=True, exist_ok=True)
    temp = tempfile.mkdtemp(prefix="letters-bench-", dir=where)
    try:
        out = Path(temp) / "out"
        run_batch(
            ruleset,
            RunOptions(
                data / "roster.csv",
                data / "performance.csv",
                AS_OF,
                out,
                workers=args.workers,
                db=Path(temp) / "runs.sqlite",
            ),
        )
        print(f"{args.partners:,} partners, {os.cpu_count()} cores; letters/s (files/s)")
        # All workers first: what the target is about, measured while the file
        # system near the folder is fresh (hundreds of thousands of files made
        # nearby slow the next ones down; see docs/benchmarks.md).
        for workers in (
            [args.workers] if args.only_all_workers else sorted({1, args.workers}, reverse=True)
        ):
            for formats in (("text",), ("html",), ("eml",), ("text", "html", "eml")):
                # Each measurement in a copy of the run's output, and nothing deleted
                # until the end: on ext4, files made just after thousands were deleted
                # cost up to ten times as much (see batch.remove_derived_outputs).
                folder = Path(temp) / f"out-{workers}-{'-'.join(formats)}"
                shutil.copytree(out, folder)
                # The copy and the previous measurement's files are written out
                # first, so that their writeback is not timed with these letters.
                if hasattr(os, "sync"):
                    os.sync()
                # A fresh process, as `eligibility letters` is: nothing warm from
                # the measurements before (compiled templates, remembered values).
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--measure",
                        str(folder),
                        ",".join(formats),
                        str(workers),
                    ],
                    capture_output=True,
                    text=True,
                )
                if done.returncode:
                    sys.exit(
                        f"letters {formats} with {workers} workers failed:\n{done.stderr[-2000:]}"
                    )
                letters, files, seconds, cpu = json.loads(done.stdout)
                print(
                    f"  workers {workers}  {'+'.join(formats):15} "
                    f"{letters / seconds:>9,.0f} letters/s "
                    f"({files / seconds:>9,.0f} files/s), "
                    f"{letters:,} letters in {seconds:,.1f} s, "
                    f"{cpu / letters * 1e6:,.0f} µs CPU a letter"
                )
    finally:
        if args.keep:
            print(f"The letters are in {temp}; delete it when the measurements are done.")
        else:
            shutil.rmtree(temp, ignore_errors=True)


def measure(folder: Path, formats: tuple[str, ...], workers: int) -> None:
    """Write the letters of the run in ``folder``; print (letters, files, seconds,
    CPU seconds) as JSON. The rules are loaded before timing starts."""
    ruleset = load_rules(ROOT / "rules")
    cpu, started = _cpu_seconds(), time.perf_counter()
    summary = write_letters(
        ruleset, LetterOptions(folder, ROOT / "templates", formats, workers=workers, check=False)
    )
    seconds = time.perf_counter() - started
    print(json.dumps([summary["letters"], summary["files"], seconds, _cpu_seconds() - cpu]))


def _cpu_seconds() -> float:
    """User and system time of this process and of its finished workers."""
    return sum(
        u.ru_utime + u.ru_stime
        for u in (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
    )


if __name__ == "__main__":
    main()
