"""Partners' memory of earlier decisions: from the run history, and from
earlier enrollments imported from a CSV file.

A vendor moving from spreadsheets has no run history yet; its earlier
enrollments, one row per partner and program (``partner_id, program, from,
to``: the first and last day the partner held the program by its
conditions), stand in for it. The file is read with each run
(``--enrollments FILE``, or ``enrollments`` in the project config), so a run,
``explain`` and ``diff`` given the same file and history decide alike. Bad
rows are set aside with their row number and reason; a file that lacks a
column, or whose every row is bad, stops the run before anything is
decided. What the rules make of memory: engine.ruleset.memory.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Iterable
from pathlib import Path

from engine.data.readers import RowReader, check_columns, unreadable_row
from engine.data.rejects import Reject
from engine.data.run_history import RunHistory
from engine.errors import DataError
from engine.evaluate.records import PARTNER_ID, read_partner_id, shorten
from engine.ruleset.memory import EMPTY, Enrolled, Memory
from engine.ruleset.model import RuleSet
from engine.ruleset.value_types import DATE, ValueType, parse_value

COLUMNS = (PARTNER_ID, "program", "from", "to")
_DATE = ValueType(DATE)


class EarlierEnrollments:
    """An earlier-enrollments file, read whole (such files list one row per
    partner and program, so they are small next to a roster):
    ``by_partner`` maps a partner id to its enrollments, ``rejects`` lists
    the rows set aside."""

    def __init__(self, path: str | Path, ruleset: RuleSet):
        self.path = Path(path)
        check_columns(self.path, COLUMNS, "earlier-enrollments file")
        self.by_partner: dict[str, tuple[Enrolled, ...]] = {}
        self.rejects: list[Reject] = []
        self.rows_read = 0
        programs = [p.id for p in ruleset.programs]
        found: dict[str, list[Enrolled]] = {}
        for row in RowReader(self.path, COLUMNS):
            self.rows_read += 1
            if row.problem:
                self.rejects.append(unreadable_row(row))
                continue
            try:
                partner_id = read_partner_id(row.record)
            except DataError as error:
                value = shorten(row.record.get(PARTNER_ID))
                self.rejects.append(
                    Reject(str(self.path), row.row, "", PARTNER_ID, value, str(error))
                )
                continue
            try:
                enrolled = _enrollment(row.record, programs)
            except _BadCell as bad:
                self.rejects.append(
                    Reject(str(self.path), row.row, partner_id, bad.column, bad.value, bad.reason)
                )
                continue
            found.setdefault(partner_id, []).append(enrolled)
        if self.rows_read and len(self.rejects) == self.rows_read:
            raise DataError(
                f"{self.path}: all {self.rows_read:,} rows of the earlier-enrollments file "
                f"were rejected (row {self.rejects[0].row}: {self.rejects[0].reason}). Is it "
                "the right file? Nothing was decided"
            )
        self.by_partner = {pid: tuple(rows) for pid, rows in found.items()}


class _BadCell(Exception):
    """A bad cell of a row: its column, the value as written, and why."""

    def __init__(self, column: str, value: object, reason: str):
        self.column, self.value, self.reason = column, shorten(value), reason


def _enrollment(record, programs: list[str]) -> Enrolled:
    program = str(record.get("program") or "").strip()
    if program not in programs:
        close = difflib.get_close_matches(program, programs, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        reason = (
            "no program given"
            if not program
            else f"'{program}' is not a program of the rules (give its id){hint}"
        )
        raise _BadCell("program", program, reason)
    dates = []
    for column in ("from", "to"):
        raw = record.get(column)
        try:
            day = parse_value(_DATE, raw)
        except ValueError as error:
            raise _BadCell(column, raw, str(error)) from None
        if day is None:
            raise _BadCell(column, raw, f"'{column}' is empty; give a date like 2026-09-30")
        dates.append(day)
    start, end = dates
    if end < start:
        raise _BadCell("to", record.get("to"), f"ends ({end}) before it starts ({start})")
    return Enrolled(program, start, end)


class MemorySource:
    """Where each partner's memory comes from for a run as of ``as_of``: the
    runs of the rule set (by name) recorded in ``history`` with an earlier
    as-of date, and the imported ``enrollments``. None of either: nothing."""

    def __init__(
        self,
        ruleset: RuleSet,
        as_of: dt.date,
        history: RunHistory | None = None,
        enrollments: EarlierEnrollments | None = None,
    ):
        self.ruleset, self.as_of = ruleset, as_of
        self.history, self.enrollments = history, enrollments

    def for_partners(self, partner_ids: Iterable[str]) -> dict[str, Memory]:
        """The memory of each partner that has one (others have none)."""
        ids = list(partner_ids)
        runs = (
            self.history.recalled(self.ruleset.name, self.as_of.isoformat(), ids)
            if self.history is not None
            else {}
        )
        imported = self.enrollments.by_partner if self.enrollments is not None else {}
        found = {}
        for pid in ids:
            recalled, enrolled = runs.get(pid), imported.get(pid)
            if recalled or enrolled:
                found[pid] = Memory(tuple(recalled or ()), enrolled or ()).before(self.as_of)
        return found

    def of(self, partner_id: str) -> Memory:
        return self.for_partners([partner_id]).get(partner_id, EMPTY)
