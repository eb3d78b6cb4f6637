"""Benchmark the letters folder's layout: file-system time per letter, by roster size.

Writes N partners' letters (text, html and eml: three files each, the bytes
of three real example letters) the way a run does: names from
``LetterNames`` in roster order, each file created by the same call a run
makes, the index written and the folder committed. Rendering is left out,
so that only what the layout costs is measured: system CPU time (the
kernel's share of creating files and folders) and wall time, per letter.
With ``--flat`` every letter goes into one folder, as before blocks, for
comparison. Each size runs in a fresh folder in a process of its own, and
nothing is deleted until every size has run: on ext4 (and more so mounted
with ``discard``), files made soon after many were deleted cost several
times as much, which would measure the previous size's deletion. Run it by hand and record the
figures in docs/benchmarks.md; it is not a test.

    python bench/letter_layout.py --sizes 10000,100000,1000000 --dir /var/tmp
    python bench/letter_layout.py --sizes 10000,100000 --flat
"""

from __future__ import annotations

import argparse
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

from engine.letters import files  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--flat", action="store_true", help="One folder, as before blocks.")
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)  # FOLDER N
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), int(args.measure[1]), args.flat)))
        return
    sample = _sample_letters()
    print(
        f"{'flat' if args.flat else f'blocks of {files.BLOCK:,}'}; three files a letter "
        f"({sum(len(b) for b in sample.values()):,} bytes); per letter: system CPU, wall"
    )
    work = Path(tempfile.mkdtemp(prefix="layout-bench-", dir=args.dir))
    try:
        for number, size in enumerate(int(s) for s in args.sizes.split(",")):
            folder = work / str(number)
            folder.mkdir()
            if hasattr(os, "sync"):
                os.sync()  # the previous size's writeback is not timed with this one
            command = [sys.executable, __file__, "--measure", str(folder), str(size)]
            done = subprocess.run(
                command + (["--flat"] if args.flat else []), capture_output=True, text=True
            )
            if done.returncode:
                sys.exit(done.stderr[-2000:])
            system, wall, folders = json.loads(done.stdout)
            print(
                f"  {size:>9,} partners: {system / size * 1e6:6.1f} µs system, "
                f"{wall / size * 1e6:6.1f} µs wall a letter ({size / wall:,.0f} letters/s; "
                f"{folders:,} folder{'s' if folders != 1 else ''} of letters)",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(folder: Path, size: int, flat: bool) -> tuple[float, float, int]:
    """Write ``size`` letters into ``folder``; (system seconds, wall seconds, folders)."""
    if flat:
        files.BLOCK = size + 1
    sample = _sample_letters()
    usage, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    letters = files.NewLetters(folder, tuple(sample))
    rows = []
    for number in range(size):
        partner_id = f"P-{number:07d}"
        stem = letters.names(partner_id)
        written = []
        for name, data in sample.items():
            file_name = f"{stem}{files.FORMATS[name]}"
            files._write_new_file(os.path.join(letters.folder, file_name), data)
            written.append(file_name)
        rows.append((partner_id, "status", "status", "en", "en", "", "", ";".join(written), ""))
        if len(rows) == 500:
            letters.add(rows)
            rows = []
    letters.add(rows)
    letters.commit()
    wall = time.perf_counter() - started
    system = resource.getrusage(resource.RUSAGE_SELF).ru_stime - usage.ru_stime
    target = folder / files.LETTERS_FOLDER
    return system, wall, max(sum(1 for p in target.iterdir() if p.is_dir()), 1)


def _sample_letters() -> dict[str, bytes]:
    """A real letter in each format: the example's P-1006 (run it first if missing)."""
    letters = ROOT / "out" / "letters"
    if not (letters / "P-1006.eml").is_file():
        subprocess.run(
            [sys.executable, "-c", "from cli import main; main()", "run", "-q"]
            + ["--as-of", "2026-11-26"],
            cwd=ROOT,
            check=True,
        )
    return {name: (letters / f"P-1006{ext}").read_bytes() for name, ext in files.FORMATS.items()}


if __name__ == "__main__":
    main()
