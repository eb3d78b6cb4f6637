"""Writing run outputs: atomically, and safe to open in a spreadsheet.

Every file is written to a temporary name in the output folder and renamed
into place only when complete, so an interrupted run leaves either the
previous complete file or the new one, never half a file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".partial"
# Spreadsheets run cells starting with these as formulas (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """A value for a CSV cell that a spreadsheet shows as text, never runs."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def read_cell(value: str) -> str:
    """A cell as it was before :func:`safe_cell` (for reading our own CSV files)."""
    if value[:1] == "'" and value[1:2] and value[1] in _FORMULA_START:
        return value[1:]
    return value


class AtomicFile:
    """A text file that appears under its name only once :meth:`commit` is called."""

    def __init__(self, path: Path):
        self.path = path
        self.temp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
        self.handle = self.temp.open("w", encoding="utf-8", newline="")

    def write_text(self, text: str) -> None:
        """Lines made elsewhere (see :func:`csv_text`), written as they are."""
        self.handle.write(text)

    def commit(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.temp, self.path)

    def discard(self) -> None:
        if not self.handle.closed:
            self.handle.close()
        self.temp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace) -> None:
        """Commit when the block ends normally; discard when it raises."""
        if kind is None:
            self.commit()
        else:
            self.discard()


def csv_text(rows: Iterable[Sequence[Any]]) -> str:
    """Rows whose cells went through :func:`safe_cell`, as CsvOutput writes
    them: a worker makes a chunk's rows once, the main process writes them
    with :meth:`AtomicFile.write_text`."""
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


class CsvOutput(AtomicFile):
    def __init__(self, path: Path, columns: Sequence[str]):
        super().__init__(path)
        self.writer = csv.writer(self.handle)
        self.writer.writerow(columns)

    def write(self, row: Iterable[Any]) -> None:
        self.writer.writerow([safe_cell(v) for v in row])


def write_json_atomically(path: Path, data: Any) -> None:
    with AtomicFile(path) as output:
        output.handle.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def remove_stale_partials(folder: Path) -> None:
    """Temporary files (and letter folders) left by a run that was killed outright."""
    for path in [*folder.glob(f".*{TEMP_SUFFIX}"), *folder.glob(".*.stale")]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
