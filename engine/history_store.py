"""Quarterly performance history, staged for lookups by partner.

The performance file is read once, and its rows are stored as they are in a
temporary SQLite file indexed by partner. Chunks of partners then fetch
their rows with one query. Memory stays flat however large the file is, and
the file need not be sorted. Rows are checked (quarter label, figures,
a quarter given twice) by the workers, next to the partner they belong to;
rows for partners not in the roster are set aside at the end of the run.
"""
from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from .model import RuleSet
from .partners import PARTNER_ID, QUARTER
from .rejects import Reject
from .roster import RowReader, read_columns

_INSERT_BATCH = 10_000
RawRow = tuple  # (row number, quarter as written, {figure: value as written})


def _storable(value):
    """SQLite stores text, numbers, and None; dates and the like go as text."""
    return value if value is None or isinstance(value, (str, int, float)) else str(value)


class HistoryStore:
    """History rows by partner: ``rows_for(ids)`` -> {partner id: [RawRow, ...]}."""

    def __init__(self, ruleset: RuleSet):
        self.figures = list(ruleset.figures)
        self._folder = tempfile.TemporaryDirectory(prefix="eligibility-history-")
        self._db = sqlite3.connect(Path(self._folder.name) / "history.sqlite")
        figure_columns = "".join(f", f{i}" for i in range(len(self.figures)))
        self._db.executescript(f"""
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            CREATE TABLE history (partner_id TEXT NOT NULL, row INTEGER NOT NULL,
                                  quarter{figure_columns});
        """)
        self._insert = f"INSERT INTO history VALUES (?, ?, ?{', ?' * len(self.figures)})"
        self.rows_read = 0
        self.source = ""

    def load(self, path: str | Path) -> Iterator[Reject]:
        """Stage a performance file; yields a Reject for each row without a partner_id."""
        self.source = str(path)
        batch: list[tuple] = []
        as_text = RowReader(path).kind == "csv"  # CSV gives only text: stored as it is
        for number, values in read_columns(path, [PARTNER_ID, QUARTER, *self.figures]):
            self.rows_read += 1
            partner_id = str(values[0] or "").strip()
            if not partner_id:
                yield Reject(self.source, number, "", PARTNER_ID, "", "partner_id is missing")
                continue
            batch.append((partner_id, number, *values[1:]) if as_text else
                         (partner_id, number, *(_storable(v) for v in values[1:])))
            if len(batch) >= _INSERT_BATCH:
                self._db.executemany(self._insert, batch)
                batch = []
        if batch:
            self._db.executemany(self._insert, batch)
        self._db.execute("CREATE INDEX history_by_partner ON history (partner_id, row)")
        self._db.commit()

    def rows_for(self, partner_ids: Iterable[str]) -> dict[str, list[RawRow]]:
        ids = list(partner_ids)
        found: dict[str, list[RawRow]] = {}
        for start in range(0, len(ids), 900):  # SQLite's limit on query parameters
            part = ids[start:start + 900]
            marks = ",".join("?" * len(part))
            for partner_id, row, quarter, *figures in self._db.execute(
                    f"SELECT * FROM history WHERE partner_id IN ({marks}) "
                    f"ORDER BY partner_id, row", part):
                found.setdefault(partner_id, []).append(
                    (row, quarter, dict(zip(self.figures, figures))))
        return found

    def unknown_partners(self, known: set[str]) -> Iterator[Reject]:
        """History rows whose partner is not in the roster, in file order."""
        for partner_id, row in self._db.execute("SELECT partner_id, row FROM history ORDER BY row"):
            if partner_id not in known:
                yield Reject(self.source, row, partner_id, PARTNER_ID, partner_id,
                             "no partner with this partner_id in the roster")

    def close(self) -> None:
        self._db.close()
        self._folder.cleanup()
