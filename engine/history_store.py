"""Quarterly performance history, staged for lookups by partner.

The performance file is read once: each row is checked (known quarter
label, figures that parse, no quarter twice for a partner) and the good
rows go into a temporary SQLite file indexed by partner. Chunks of partners
then fetch their history with one query. Memory stays flat however large
the file is, and the file need not be sorted.
"""
from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from .errors import DataError
from .model import RuleSet
from .partners import PARTNER_ID, QUARTER, history_row, shorten
from .rejects import Reject
from .roster import read_rows

_INSERT_BATCH = 5_000


class HistoryStore:
    """History rows by partner: ``rows_for(ids)`` -> {partner id: [(quarter, figures)]}."""

    def __init__(self, ruleset: RuleSet):
        self.ruleset = ruleset
        self._folder = tempfile.TemporaryDirectory(prefix="eligibility-history-")
        self._db = sqlite3.connect(Path(self._folder.name) / "history.sqlite")
        self._db.executescript("""
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            CREATE TABLE history (
                partner_id TEXT NOT NULL, quarter TEXT NOT NULL, row INTEGER NOT NULL,
                figures TEXT NOT NULL, PRIMARY KEY (partner_id, quarter)) WITHOUT ROWID;
        """)
        self.rows_read = 0
        self.rows_kept = 0
        self.source = ""

    def load(self, path: str | Path) -> Iterator[Reject]:
        """Stage a performance file; yields a Reject for every unusable row."""
        self.source = str(path)
        batch: list[tuple] = []
        for row in read_rows(path):
            self.rows_read += 1
            partner_id = str(row.record.get(PARTNER_ID) or "").strip()
            if not partner_id:
                yield Reject(row.file, row.row, "", PARTNER_ID, "", "partner_id is missing")
                continue
            try:
                quarter, figures = history_row(self.ruleset, row.record)
            except DataError as error:
                column, _, reason = str(error).partition(": ")
                yield Reject(row.file, row.row, partner_id, column,
                             shorten(row.record.get(column)), reason)
                continue
            batch.append((partner_id, str(quarter), row.row, json.dumps(figures)))
            if len(batch) >= _INSERT_BATCH:
                yield from self._insert(batch, row.file)
                batch = []
        if batch:
            yield from self._insert(batch, self.source)

    def _insert(self, batch: list[tuple], source: str) -> Iterator[Reject]:
        with self._db:
            for partner_id, quarter, row, figures in batch:
                try:
                    self._db.execute("INSERT INTO history VALUES (?, ?, ?, ?)",
                                     (partner_id, quarter, row, figures))
                    self.rows_kept += 1
                except sqlite3.IntegrityError:
                    first = self._db.execute(
                        "SELECT row FROM history WHERE partner_id = ? AND quarter = ?",
                        (partner_id, quarter)).fetchone()[0]
                    yield Reject(source, row, partner_id, QUARTER, quarter,
                                 f"{quarter} appears twice for this partner (first on row {first})")

    def rows_for(self, partner_ids: Iterable[str]) -> dict[str, list[tuple[str, dict]]]:
        ids = list(partner_ids)
        found: dict[str, list[tuple[str, dict]]] = {}
        for start in range(0, len(ids), 900):  # SQLite's limit on query parameters
            part = ids[start:start + 900]
            marks = ",".join("?" * len(part))
            for partner_id, quarter, figures in self._db.execute(
                    f"SELECT partner_id, quarter, figures FROM history "
                    f"WHERE partner_id IN ({marks})", part):
                found.setdefault(partner_id, []).append((quarter, json.loads(figures)))
        return found

    def unknown_partners(self, known: set[str]) -> Iterator[Reject]:
        """History rows whose partner is not in the roster, in file order."""
        for partner_id, quarter, row in self._db.execute(
                "SELECT partner_id, quarter, row FROM history ORDER BY row"):
            if partner_id not in known:
                yield Reject(self.source, row, partner_id, PARTNER_ID, partner_id,
                             "no partner with this partner_id in the roster")

    def close(self) -> None:
        self._db.close()
        self._folder.cleanup()
