"""Kill runs at random moments and check that nothing is ever mixed or lost.

Each round starts ``eligibility run`` (letters and report on) and stops it
with SIGKILL, SIGINT (to the process group, as Ctrl-C does) or SIGTERM (to
the main process, as ``kill`` does): a third of the rounds after a random
time, a third as soon as it writes its report (its summary is written), a
third as soon as its folder is complete (while it is recorded and made
current). Each round notes the phase the run was in (starting, deciding,
summary, report, recording, switching, finished).
Then it checks:

- the current run is complete and self-consistent: decisions.jsonl has as
  many lines as the summary says were decided; enrollments.csv, changes.csv
  and letters/index.csv match the decisions; every letter listed exists;
  the report is there;
- the run history passes ``PRAGMA integrity_check`` and its last run is
  complete, whether current or (killed between recording and switching)
  about to be made current by the next run;
- the next run succeeds, and lists exactly the partners whose decisions
  differ from the run it compares with.

As-of dates alternate between two quarters so that consecutive runs differ.

    python bench/kill_test.py --partners 20000 --kills 50 --workers 2

It runs the code of the checkout it is in, for many minutes: run it from a
clean clone, not a working tree being edited.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from engine.data.outputs import read_cell  # noqa: E402 - after the path is set

DATES = ("2026-11-26", "2026-08-20")
SIGNALS = (signal.SIGKILL, signal.SIGINT, signal.SIGTERM)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int, default=20000)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    random.seed(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="kill-test-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    if not (data / "roster.csv").exists():
        subprocess.run(
            [sys.executable, str(ROOT / "bench/generate.py"), "--partners", str(args.partners)]
            + ["--out", str(data)],
            check=True,
            capture_output=True,
        )
    out, db = work / "out", work / "runs.sqlite"
    clock = time.perf_counter()
    run(out, db, data, DATES[0], args.workers)
    duration = time.perf_counter() - clock
    print(f"a whole run: {duration:.1f} s ({args.partners:,} partners, {args.workers} workers)")
    phases: collections.Counter = collections.Counter()
    failures = []
    for number in range(1, args.kills + 1):
        date = DATES[number % 2]
        chosen = random.choice(SIGNALS)
        target = ("random", "report", "recording")[number % 3]
        delay = random.uniform(0, 1.05 * duration)
        phase = kill_run(out, db, data, date, args.workers, chosen, delay, target)
        problems = check_current(out, db)
        next_problems = check_next_run(out, db, data, DATES[(number + 1) % 2], args.workers)
        phases[phase] += 1
        verdict = "clean" if not problems + next_problems else "; ".join(problems + next_problems)
        when = f"after {delay:4.1f} s" if target == "random" else f"at {target:10}"
        print(f"{number:3} {chosen.name:8} {when} ({phase:9}): {verdict}", flush=True)
        if problems or next_problems:
            failures.append(number)
    clean = args.kills - len(failures)
    print(f"\n{clean} of {args.kills} clean; phases: {dict(sorted(phases.items()))}")
    return 0 if not failures else 1


def command(out: Path, db: Path, data: Path, date: str, workers: int) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from cli import main; main()",
        "run",
        "--roster",
        str(data / "roster.csv"),
        "--performance",
        str(data / "performance.csv"),
        "--as-of",
        date,
        "--out",
        str(out),
        "--db",
        str(db),
        "--workers",
        str(workers),
        "--report",
        "--quiet",
        "--max-moves",  # the dates alternate, so many partners move: not a run to hold here
        "100",
    ]


def run(out: Path, db: Path, data: Path, date: str, workers: int) -> None:
    subprocess.run(command(out, db, data, date, workers), cwd=ROOT, check=True)


def kill_run(
    out: Path,
    db: Path,
    data: Path,
    date: str,
    workers: int,
    chosen: int,
    delay: float,
    target: str = "random",
) -> str:
    """Start a run and stop it with ``chosen``: after ``delay`` seconds, or as
    soon as it reaches ``target`` (report, recording); returns its phase then."""
    before = set((out / "runs").iterdir()) if (out / "runs").is_dir() else set()
    process = subprocess.Popen(
        command(out, db, data, date, workers),
        cwd=ROOT,
        start_new_session=True,
        stderr=subprocess.PIPE,
        text=True,
    )
    if target == "random":
        time.sleep(delay)
    else:
        while process.poll() is None:
            staging = list(out.glob("runs/.*.partial"))
            if target == "report" and staging and (staging[0] / "summary.json").exists():
                break
            fresh = [p for p in (out / "runs").iterdir() if p not in before] if not staging else []
            if target == "recording" and any(not p.name.startswith(".") for p in fresh):
                break
            time.sleep(0.001)
    phase = phase_of(out, db) if process.poll() is None else "finished"
    if process.poll() is None:
        if chosen == signal.SIGINT:
            os.killpg(process.pid, signal.SIGINT)
        else:
            os.kill(process.pid, chosen)
    _, error = process.communicate(timeout=120)
    if "Traceback" in error:
        print(error, file=sys.stderr)
        raise SystemExit("a traceback: see above")
    return phase


def phase_of(out: Path, db: Path) -> str:
    staging = list(out.glob("runs/.*.partial"))
    if staging:
        folder = staging[0]
        if (folder / "report.html").exists() or list(folder.glob(".report.html.*")):
            return "report"
        return "summary" if (folder / "summary.json").exists() else "deciding"
    current = (out / "current").resolve()
    newest = max((p for p in (out / "runs").iterdir() if not p.name.startswith(".")), default=None)
    if newest is not None and newest != current:
        return "recording" if not recorded(db, newest) else "switching"
    return "starting"


def recorded(db: Path, folder: Path) -> bool:
    connection = sqlite3.connect(db)
    try:
        row = connection.execute(
            "SELECT 1 FROM runs WHERE output_folder = ?", (str(folder.resolve()),)
        ).fetchone()
    finally:
        connection.close()
    return row is not None


def check_current(out: Path, db: Path) -> list[str]:
    problems = check_run_folder((out / "current").resolve())
    connection = sqlite3.connect(db)
    try:
        if connection.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            problems.append("the run history fails its integrity check")
        last = connection.execute(
            "SELECT id, output_folder, decided FROM runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
        stored = connection.execute(
            "SELECT COUNT(*) FROM decisions WHERE run_id = ?", (last[0],)
        ).fetchone()[0]
    finally:
        connection.close()
    run_id, folder, decided = last
    if stored != decided:
        problems.append(f"run {run_id} has {stored} decisions stored, {decided} decided")
    if Path(folder) != (out / "current").resolve():  # recorded, not yet current
        problems += [f"run {run_id} (not current): {p}" for p in check_run_folder(Path(folder))]
    elif json.loads((Path(folder) / "summary.json").read_text())["run"]["id"] != run_id:
        problems.append(f"the current run is not the last recorded one ({run_id})")
    return problems


def check_run_folder(folder: Path) -> list[str]:
    """A run's folder is complete and its files agree with each other."""
    if not (folder / "summary.json").is_file():
        return [f"{folder}: no summary.json"]
    summary = json.loads((folder / "summary.json").read_text())
    problems = []
    decisions = [json.loads(line) for line in (folder / "decisions.jsonl").open("rb")]
    ids = {d["partner_id"] for d in decisions}
    if len(decisions) != summary["partners"]["decided"]:
        problems.append(f"{len(decisions)} decisions, the summary says {summary['partners']}")
    enrolled = sum(len(d["programs"]) for d in decisions)
    if enrolled != len(rows(folder / "enrollments.csv")):
        problems.append("enrollments.csv does not match the decisions")
    changes = rows(folder / "changes.csv")
    if any(
        read_cell(r["partner_id"]) not in ids and r["change"] != "removed_partner" for r in changes
    ):
        problems.append("changes.csv lists partners that were not decided")
    index = rows(folder / "letters" / "index.csv")
    if [read_cell(r["partner_id"]) for r in index] != [d["partner_id"] for d in decisions]:
        problems.append("the letters index does not match the decisions")
    missing = [
        f for r in index for f in r["files"].split(";") if not (folder / "letters" / f).exists()
    ]
    if missing:
        problems.append(f"{len(missing)} letter files missing")
    if summary.get("letters", {}).get("letters") != len(index):
        problems.append("the summary's letter count does not match the index")
    if not (folder / "report.html").is_file():
        problems.append("no report")
    return problems


def check_next_run(out: Path, db: Path, data: Path, date: str, workers: int) -> list[str]:
    """The next run succeeds and lists exactly what changed since the run it compares with."""
    try:
        run(out, db, data, date, workers)
    except subprocess.CalledProcessError as error:
        return [f"the next run failed (exit {error.returncode})"]
    folder = (out / "current").resolve()
    summary = json.loads((folder / "summary.json").read_text())
    previous = summary["changes"]["previous_run"]
    connection = sqlite3.connect(db)
    try:
        before_folder = connection.execute(
            "SELECT output_folder FROM runs WHERE id = ?", (previous,)
        ).fetchone()[0]
    finally:
        connection.close()
    problems = check_run_folder(folder)
    if not Path(before_folder).is_dir():
        return problems + [f"run {previous}'s folder is gone"]
    before = decided(Path(before_folder))
    after = decided(folder)
    expected = {
        pid
        for pid in after
        if before.get(pid, ())[:3] != after[pid][:3]
        or (pid in before and after[pid][3] - before[pid][3])  # newly kept by memory
    } | (before.keys() - after)
    listed = {read_cell(r["partner_id"]) for r in rows(folder / "changes.csv")}
    if listed != expected:
        problems.append(
            f"changes.csv lists {len(listed)} partners, {len(expected)} changed since run "
            f"{previous} ({len(listed - expected)} listed wrongly, {len(expected - listed)} missed)"
        )
    return problems


def decided(folder: Path) -> dict[str, tuple]:
    """Each partner's decisions, and the programs memory kept it in."""
    result = {}
    for line in (folder / "decisions.jsonl").open("rb"):
        d = json.loads(line)
        result[d["partner_id"]] = (
            json.dumps(d["classifications"], sort_keys=True),
            d["engagement_model"],
            tuple(d["programs"]),
            frozenset(d.get("kept", {})),
        )
    return result


def rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


if __name__ == "__main__":
    raise SystemExit(main())
