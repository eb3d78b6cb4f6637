"""Rows set aside during a run, with where they came from and why."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .partners import PARTNER_ID, clean_partner_id, shorten

if TYPE_CHECKING:
    from .roster import SourceRow

COLUMNS = ("source_file", "row", "partner_id", "column", "value", "reason")


@dataclass(frozen=True)
class Reject:
    source_file: str
    row: int
    partner_id: str
    column: str
    value: str
    reason: str

    def as_row(self) -> tuple:
        return (self.source_file, self.row, shorten(self.partner_id), self.column,
                shorten(self.value), self.reason)


def unreadable_row(row: "SourceRow") -> Reject:
    """The reject for a row that could not be read (see
    :attr:`engine.roster.SourceRow.problem`): its value is the row's text, or
    the value out of place."""
    return Reject(row.file, row.row, clean_partner_id(row.record.get(PARTNER_ID)), "",
                  row.text, row.problem)
