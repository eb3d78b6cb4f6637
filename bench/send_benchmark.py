"""Benchmark `eligibility send`: letters per second to a local SMTP server, one connection.

Runs the reference rules over a generated roster, writing .eml letters only,
then starts an SMTP server on 127.0.0.1 (aiosmtpd, in a process of its own,
accepting and discarding every message), and sends every letter with
``eligibility send --confirm``, timed as a whole process and from its own
report. Each send is recorded in the run history as a real send is. Run it
by hand and record the figures in docs/benchmarks.md; it is not a test.

    python bench/send_benchmark.py                     # 20,000 partners
    python bench/send_benchmark.py --partners 5000 --repeat 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.ruleset.loader import load_rules  # noqa: E402
from engine.run.driver import RunLetters, RunOptions, run_batch  # noqa: E402

AS_OF = dt.date(2026, 11, 26)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=1, help="Sends, each to a fresh history.")
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "data")
    args = parser.parse_args()
    data = args.data / f"p{args.partners}"
    if not (data / "roster.csv").exists():
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "generate.py")]
            + ["--partners", str(args.partners), "--out", str(data)],
            check=True,
        )
    work = Path(tempfile.mkdtemp(prefix="send-bench-"))
    server = None
    try:
        out, db = work / "out", work / "runs.sqlite"
        run_batch(
            load_rules(ROOT / "rules"),
            RunOptions(
                data / "roster.csv",
                data / "performance.csv",
                AS_OF,
                out,
                db=db,
                letters=RunLetters(ROOT / "templates", ("eml",)),
            ),
        )
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}"]
            + ["-c", "aiosmtpd.handlers.Sink"],
        )
        _wait_for(port)
        shutil.copy(db, work / "fresh.sqlite")
        for _ in range(args.repeat):
            shutil.copy(work / "fresh.sqlite", db)  # nothing sent yet
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", "from cli import main; main()", "send", str(out)]
                + ["--smtp", f"127.0.0.1:{port}", "--confirm", "--db", str(db)],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - started
            if done.returncode:
                sys.exit(done.stderr[-2000:])
            first = done.stdout.splitlines()[0]
            sent = int(re.search(r"Sent ([\d,]+) letters", first).group(1).replace(",", ""))
            print(f"{sent:,} letters in {wall:.1f} s, whole process: {sent / wall:,.0f}/s")
            print(f"  send's own report: {first}")
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"the SMTP server on port {port} did not start")


if __name__ == "__main__":
    main()
