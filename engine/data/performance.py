"""Quarterly performance history, joined to roster partners by partner_id.

Two ways, chosen when the performance file is loaded:

* **Merged**: when the performance file (CSV) lists the roster's partners
  in the roster's order, each partner's rows together, the history is read
  as a stream alongside the roster (CSV, JSON Lines or Parquet), a partner's rows at a
  time. Rows for partners not in the roster may be anywhere. Nothing is
  staged, and deciding starts as soon as both files' partner ids have been
  read to check the order; the roster's ids are kept meanwhile (about 130
  bytes a partner). (.xlsx is slow to read twice; a JSON Lines performance
  file keeps typed values, which the staged way stores as SQLite would.)
* **Staged**: otherwise, the performance file is read once and its rows are
  stored as they are in a temporary SQLite file indexed by partner; chunks of
  partners then fetch their rows with one query.

Either way memory stays flat however large the files are, and the results
are the same. Rows are checked (quarter label, figures, a quarter given
twice) by the workers, next to the partner they belong to; rows for
partners not in the roster, and rows that cannot be read (see
:attr:`engine.data.readers.SourceRow.problem`), are set aside at the end of the run.

The staging folder is removed when the run ends. One left by a run that was
killed (its name holds the run's process id, which is no longer alive) is
removed by the next run.
"""

from __future__ import annotations

import heapq
import operator
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Container, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from engine.data.readers import (
    PARQUET_BATCH,
    RowReader,
    SourceRow,
    check_columns,
    partner_id_runs,
    read_columns,
    unreadable_row,
)
from engine.data.rejects import Reject
from engine.errors import DataError
from engine.evaluate.records import (
    MAX_ID_LENGTH,
    PARTNER_ID,
    QUARTER,
    HistoryRows,
    clean_partner_id,
)

_INSERT_BATCH = 10_000
_FOLDER_PREFIX = "eligibility-history-"
RawRow = tuple  # (row number, quarter as written, (each figure's value as written))


def _storable(value):
    """SQLite stores text, numbers, and None; dates and the like go as text."""
    return value if value is None or isinstance(value, (str, int, float)) else str(value)


class HistoryStore:
    """History rows by partner: ``rows_for(ids)``, as columns (HistoryRows).

    ``rows_for`` is called with the roster's partners in roster order, each
    partner once, as runs and letter passes do.
    """

    def __init__(self, figures: Iterable[str] | Mapping[str, Any]):
        self.figures = tuple(dict.fromkeys(figures))  # the columns read, by name
        # Their declarations (a rule set's ``history``), whose ``column:``,
        # ``aliases:`` and ``may_be_absent:`` count; none for bare names.
        self.declared = dict(figures) if isinstance(figures, Mapping) else {}
        remove_abandoned_folders()
        self._folder = tempfile.TemporaryDirectory(prefix=f"{_FOLDER_PREFIX}{os.getpid()}-")
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
        self.merged: _Merge | None = None  # set when the history is in roster order
        self._unreadable: list[SourceRow] = []  # set aside at the end, merged or staged

    def load(self, path: str | Path, roster: str | Path | None = None) -> Iterator[Reject]:
        """Read a performance file; yields a Reject for each row without a partner_id.

        With the ``roster`` it will be joined to, the history is merged as a
        stream when it lists the roster's partners in the roster's order, and
        staged otherwise (see the module docstring).
        """
        self.source = str(path)
        check_columns(path, {QUARTER: None, **self._columns()}, "history file")
        reported = 0  # rows up to this one have been checked for a partner_id
        if (
            roster is not None
            and RowReader(path).kind == "csv"
            and RowReader(roster).kind in ("csv", "jsonl", "parquet")
        ):
            positions = _roster_positions(roster)
            rejects: list[Reject] = []
            self.rows_read, reported, in_order = self._check_order(path, positions, rejects)
            yield from rejects
            if in_order:
                self.merged = _Merge(
                    read_columns(
                        path,
                        [PARTNER_ID, QUARTER, *self.figures],
                        self._unreadable.append,
                        self.declared,
                    ),
                    positions,
                    self.source,
                )
                return
        yield from self._stage(path, reported)

    @property
    def roster_positions(self) -> Mapping[str, int] | None:
        """Each usable roster partner id's place in the roster (its first),
        when the history is merged in roster order; else None."""
        return self.merged.positions if self.merged is not None else None

    def _columns(self) -> dict[str, Any]:
        return {name: self.declared.get(name) for name in self.figures}

    def _check_order(
        self, path: str | Path, positions: dict[str, int], rejects: list[Reject]
    ) -> tuple[int, int, bool]:
        """(rows read, last row checked, whether the roster's partners come in
        roster order, each one's rows together)."""
        last, count, number = -1, 0, 0
        for number, value, rows in partner_id_runs(path):
            partner_id = clean_partner_id(value)
            if not partner_id:
                rejects.extend(self._missing_id(n) for n in range(number, number + rows))
            else:
                position = positions.get(partner_id, last)  # not in the roster: anywhere
                if position < last:
                    return count, number - 1, False
                last = position
            count += rows
            number += rows - 1
        return count, number, True

    def _stage(self, path: str | Path, reported: int) -> Iterator[Reject]:
        """Store every row in SQLite; rows up to ``reported`` were checked already."""
        self.rows_read = 0
        batch: list[tuple] = []
        as_text = RowReader(path).kind == "csv"  # CSV gives only text: stored as it is
        for number, values in read_columns(
            path, [PARTNER_ID, QUARTER, *self.figures], self._unreadable.append, self.declared
        ):
            self.rows_read += 1
            partner_id = clean_partner_id(values[0])
            if not partner_id:
                if number > reported:
                    yield self._missing_id(number)
                continue
            batch.append(
                (partner_id, number) + values[1:]
                if as_text
                else (partner_id, number, *(_storable(v) for v in values[1:]))
            )
            if len(batch) >= _INSERT_BATCH:
                self._db.executemany(self._insert, batch)
                batch = []
        self.rows_read += len(self._unreadable)
        if batch:
            self._db.executemany(self._insert, batch)
        self._db.execute("CREATE INDEX history_by_partner ON history (partner_id, row)")
        self._db.commit()

    def _missing_id(self, number: int) -> Reject:
        return Reject(self.source, number, "", PARTNER_ID, "", "partner_id is missing")

    def rows_for(self, partner_ids: Iterable[str]) -> HistoryRows:
        """The rows of each of ``partner_ids`` (in roster order), as columns
        in that order: what a chunk carries to its worker."""
        ids = list(partner_ids)
        found = (
            self.merged.rows_for(ids, self._set_aside)
            if self.merged is not None
            else self._staged_rows(ids)
        )
        return HistoryRows.of(self.figures, (found.get(pid, ()) for pid in ids))

    def _staged_rows(self, ids: list[str]) -> dict[str, list[RawRow]]:
        found: dict[str, list[RawRow]] = {}
        for start in range(0, len(ids), 900):  # SQLite's limit on query parameters
            part = ids[start : start + 900]
            marks = ",".join("?" * len(part))
            for partner_id, row, quarter, *figures in self._db.execute(
                f"SELECT * FROM history WHERE partner_id IN ({marks}) ORDER BY partner_id, row",
                part,
            ):
                found.setdefault(partner_id, []).append((row, quarter, tuple(figures)))
        return found

    def _set_aside(self, rows: list[tuple[str, int]]) -> None:
        """Merged rows no roster partner took: kept for :meth:`late_rejects`."""
        self._db.executemany("INSERT INTO history (partner_id, row) VALUES (?, ?)", rows)

    def late_rejects(self, known: Container[str]) -> Iterator[Reject]:
        """History rows set aside once every partner is decided, in file order:
        rows whose partner is not in the roster (``known``: the roster's
        partner ids), and rows that could not be read (merged or staged)."""
        if self.merged is not None:
            self.merged.finish(self._set_aside)
        unknown = (
            Reject(
                self.source,
                row,
                partner_id,
                PARTNER_ID,
                partner_id,
                "no partner with this partner_id in the roster",
            )
            for partner_id, row in self._db.execute(
                "SELECT partner_id, row FROM history ORDER BY row"
            )
            if partner_id not in known
        )
        yield from heapq.merge(
            unknown, map(unreadable_row, self._unreadable), key=operator.attrgetter("row")
        )

    def close(self) -> None:
        self._db.close()
        self._folder.cleanup()


def remove_abandoned_folders() -> None:
    """Remove the staging folders of runs that were killed (their process is
    gone, so nothing else will). POSIX only: elsewhere, asking whether a
    process is alive is not harmless."""
    if os.name != "posix":
        return
    for path in Path(tempfile.gettempdir()).glob(f"{_FOLDER_PREFIX}*-*"):
        pid = path.name[len(_FOLDER_PREFIX) :].split("-", 1)[0]
        if pid.isdecimal() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process
        return True
    return True


class _Merge:
    """A performance file whose roster partners come in roster order, read
    alongside the roster: each call takes the rows of the partners asked for
    (in roster order), skips those of partners not asked for (rows the run
    set aside), and sets aside rows of partner ids the roster does not have."""

    def __init__(self, rows: Iterator[tuple[int, tuple]], positions: dict[str, int], source: str):
        self.positions = positions  # roster partner id -> its place
        self._unknown: list[tuple[str, int]] = []
        self._groups = self._by_partner(rows, source)
        self._asked = -1  # roster position of the last partner asked for
        self._pending = next(self._groups, None)

    def _by_partner(
        self, rows: Iterator[tuple[int, tuple]], source: str
    ) -> Iterator[tuple[int, list[RawRow]]]:
        """(roster position, its rows) for each roster partner with rows, in
        file order; rows of other partner ids are collected as unknown."""
        positions, unknown = self.positions, self._unknown
        current, group = -1, []
        last_raw: Any = _NO_ROW  # the last row's partner_id as written, and its position
        position: int | None = None
        for number, values in rows:
            raw = values[0]
            if raw == last_raw and raw.__class__ is str and position is not None:
                group.append((number, values[1], values[2:]))  # the partner's next row
                continue
            last_raw = raw
            partner_id = clean_partner_id(raw)
            position = positions.get(partner_id)
            if position is None:
                if partner_id:  # rows without one were reported when the file was checked
                    unknown.append((partner_id, number))
                continue
            if position != current:
                if position < current:
                    raise DataError(
                        f"{source} changed while it was read (partner_id "
                        f"{partner_id} on row {number} is out of order); run again"
                    )
                if group:
                    yield current, group
                current, group = position, []
            group.append((number, values[1], values[2:]))
        if group:
            yield current, group

    def rows_for(self, partner_ids: Iterable[str], set_aside) -> dict[str, list[RawRow]]:
        found: dict[str, list[RawRow]] = {}
        pending, groups = self._pending, self._groups
        for wanted in partner_ids:
            position = self.positions.get(wanted, -1)
            if position <= self._asked:
                raise DataError(
                    f"the roster changed while it was read (partner_id {wanted} "
                    "is new or out of order); run again"
                )
            self._asked = position
            while pending is not None and pending[0] < position:
                pending = next(groups, None)  # a partner the run set aside
            if pending is not None and pending[0] == position:
                found[wanted] = pending[1]
                pending = next(groups, None)
        self._pending = pending
        self._flush(set_aside)
        return found

    def finish(self, set_aside) -> None:
        """Read to the end of the file, setting aside rows of unknown partners."""
        while self._pending is not None:
            self._pending = next(self._groups, None)
            if len(self._unknown) >= _INSERT_BATCH:
                self._flush(set_aside)
        self._flush(set_aside)

    def _flush(self, set_aside) -> None:
        if self._unknown:
            set_aside(self._unknown)
            self._unknown.clear()


_NO_ROW = object()


def _roster_positions(roster: str | Path) -> dict[str, int]:
    """Each usable partner id of the roster and where it first appears
    (repeats and unusable ids are set aside by the run)."""
    positions: dict[str, int] = {}
    reader = RowReader(roster)
    if reader.kind == "parquet":  # the id column of each batch, not a record per row
        batches = reader.parquet_batches(PARQUET_BATCH, only=[PARTNER_ID])
        values = (v for batch in batches for v in batch.column(PARTNER_ID))
    else:
        values = (value for _, value, _ in partner_id_runs(roster))
    for value in values:
        if isinstance(value, (list, tuple, dict, bool)):
            continue  # no partner_id (the run sets its row aside)
        partner_id = clean_partner_id(value)
        if partner_id and len(partner_id) <= MAX_ID_LENGTH and partner_id not in positions:
            positions[partner_id] = len(positions)
    return positions
