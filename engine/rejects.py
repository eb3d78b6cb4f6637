"""Rows set aside during a run, with where they came from and why."""
from __future__ import annotations

from dataclasses import dataclass

from .partners import shorten

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
