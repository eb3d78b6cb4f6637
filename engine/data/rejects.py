"""Rows set aside during a run, with where they came from and why."""

from __future__ import annotations

from dataclasses import dataclass

from engine.evaluate.records import FieldProblem, shorten

COLUMNS = ("source_file", "row", "partner_id", "column", "value", "reason")


@dataclass(frozen=True)
class Reject:
    source_file: str
    row: int
    partner_id: str
    column: str
    value: str
    reason: str

    @classmethod
    def of(cls, source_file: str, row: int, partner_id: str, problem: FieldProblem) -> Reject:
        """The reject for one unusable value of a partner's row (a history
        value's problem carries its own row number, which wins)."""
        return cls(
            source_file,
            problem.row or row,
            partner_id,
            problem.column,
            problem.value,
            problem.reason,
        )

    def as_row(self) -> tuple:
        return (
            self.source_file,
            self.row,
            shorten(self.partner_id),
            self.column,
            shorten(self.value),
            self.reason,
        )
