"""Quarterly performance history and the windows that metrics look at.

A quarter counts once it has ended on or before the run's as-of date: a run
as of 2026-11-26 looks back from 2026Q3. A run may look back from an earlier
quarter (``--through 2026Q2``) when the last one's figures are not in yet;
dates (tenure, dated rules) still count from the as-of date. A quarter with
no row is "not reported": sums skip it, and it ends a run of consecutive
missed quarters (the rule set decides, through its own metrics, how to treat
silence).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from engine.errors import UsageError

_QUARTER = re.compile(
    r"^\s*(?:(\d{4})\s*-?\s*Q([1-4])|Q([1-4])\s*[-/ ]?\s*(\d{4}))\s*$", re.IGNORECASE
)


class Quarter(NamedTuple):
    """A calendar quarter. A named tuple: metrics look quarters up in every
    partner's history, and tuples hash and compare at C speed."""

    year: int
    number: int

    def __str__(self) -> str:
        return f"{self.year}Q{self.number}"

    @property
    def end(self) -> dt.date:
        month = self.number * 3
        next_first = dt.date(self.year + (month == 12), month % 12 + 1, 1)
        return next_first - dt.timedelta(days=1)

    def previous(self, steps: int = 1) -> Quarter:
        index = self.year * 4 + (self.number - 1) - steps
        return Quarter(index // 4, index % 4 + 1)


@lru_cache(maxsize=4096)
def _parse_quarter_text(text: str) -> Quarter:
    match = _QUARTER.match(text)
    if not match:
        raise ValueError(f"'{text[:20]}' is not a quarter; write it like 2026Q3")
    year, number = (match[1], match[2]) if match[1] else (match[4], match[3])
    return Quarter(int(year), int(number))


def parse_quarter(label: Any) -> Quarter:
    """'2026Q3', '2026-Q3', 'Q3 2026', and 'Q3-2026' all name the same quarter."""
    return _parse_quarter_text(str(label))


@lru_cache(maxsize=64)
def last_complete_quarter(as_of: dt.date) -> Quarter:
    current = Quarter(as_of.year, (as_of.month - 1) // 3 + 1)
    return current if current.end <= as_of else current.previous()


def figures_through(as_of: dt.date, through: Quarter | None = None) -> Quarter:
    """The last quarter whose figures a run reads: ``through`` if given (it
    must have ended by the as-of date), else the last complete quarter."""
    latest = last_complete_quarter(as_of)
    if through is None:
        return latest
    if through > latest:
        raise UsageError(
            f"{through} has not ended on {as_of}, so its figures "
            f"cannot be complete; the last quarter that has is {latest}"
        )
    return through


@lru_cache(maxsize=256)
def window(last: Quarter, quarters: int, skip: int = 0) -> tuple[Quarter, ...]:
    """The ``quarters`` quarters up to ``last`` (skipping the ``skip`` most
    recent), most recent first."""
    return tuple(last.previous(skip + i) for i in range(quarters))


@dataclass(frozen=True)
class History:
    """One partner's figures per quarter: {Quarter: {figure: value}}."""

    quarters: Mapping[Quarter, Mapping[str, Any]] = field(default_factory=dict)

    def figures(self, quarter: Quarter) -> Mapping[str, Any] | None:
        return self.quarters.get(quarter)

    def to_json(self) -> list[dict]:
        return [{"quarter": str(q), **dict(v)} for q, v in sorted(self.quarters.items())]
