"""Decisions with memory: what a partner held before this run.

A partner's :class:`Memory` is what the run history recorded of it in
earlier runs of the same rule set (by name) with an as-of date before this
run's (the newest run of each such date counts; a run never sees another of
its own date, so re-running a date gives the same decisions), and the earlier
enrollments imported for it from a CSV file (engine.data.enrollments).

Two things read it:

* metrics, through the memory functions (``held(premier, 4)``,
  ``quarters_since_last(premier)``, ...: see :data:`engine.ruleset.metrics.FUNCTIONS`);
* a program's *keeping* (``grace:``, ``protection:``, ``renewal:``), which
  keeps a partner enrolled for a while after its conditions stop holding.
  :func:`keep_offer` works out whether it does, and until when, before the
  partner reaches durable_rules; the offer reaches the engine as a yes/no
  fact, and the engine decides (engine.evaluate.compiler).

The rules of keeping, for a program P and a run as of date A:

* **grace** (a period G): P stopped qualifying on the first date after the
  last one it qualified (a recorded run that enrolled it by its conditions,
  or the last day of an imported enrollment) on which a recorded run did not
  enroll it by its conditions, or on A when no run did since; after an
  imported enrollment's last day, on the day after. It is kept while A is
  before that date + G: "in grace until" that date.
* **protection** (a period T): P is kept while A is before the start of the
  partner's current stretch of holding it (counting back from the newest
  record, stopping at the first run that did not enroll it) + T.
* **renewal** (every R, with a window W): counted from the start of the
  current stretch, the enrollment renews on each anniversary (start + R,
  + 2R, ...); P is kept while A is before the first anniversary after the
  last date it qualified, + W.

Periods add calendar months as spreadsheets' EOMONTH does for month ends
(2026-09-30 + 1 quarter is 2026-12-31) and clamp other days (2026-01-31 +
1 month is 2026-02-28).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

# How a program keeps a partner it no longer qualifies for (Keep.how).
GRACE, PROTECTION, RENEWAL = "grace", "protection", "renewal"

_UNITS = {"day": 0, "week": 0, "month": 1, "quarter": 3, "year": 12}
_PERIOD = re.compile(r"^\s*(\d{1,3})\s*(day|week|month|quarter|year)s?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Period:
    """A stretch of time a rule names: ``1 quarter``, ``90 days``, ``2 years``."""

    count: int
    unit: str  # day, week, month, quarter, year

    @classmethod
    def parse(cls, text: object) -> Period:
        """A period from its text; ValueError saying how to write one."""
        match = _PERIOD.match(str(text)) if isinstance(text, (str, int)) else None
        if not match or int(match[1]) == 0:
            raise ValueError(
                f"'{text}' is not a period; write a whole number and a unit, "
                "such as 1 quarter, 6 months, 90 days or 1 year"
            )
        return cls(int(match[1]), match[2].lower())

    def after(self, day: dt.date) -> dt.date:
        """The date this period after ``day``."""
        if self.unit == "day":
            return day + dt.timedelta(days=self.count)
        if self.unit == "week":
            return day + dt.timedelta(weeks=self.count)
        return add_months(day, self.count * _UNITS[self.unit])

    def __str__(self) -> str:
        return f"{self.count} {self.unit}{'s' * (self.count != 1)}"


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` plus whole months: a month end stays a month end, another day
    is clamped to the end of a shorter month."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    at_end = day.day == calendar.monthrange(day.year, day.month)[1]
    return dt.date(year, month + 1, last if at_end else min(day.day, last))


@dataclass(frozen=True)
class Keeping:
    """How a program keeps a partner after its conditions stop holding."""

    grace: Period | None = None
    protection: Period | None = None
    renewal: Period | None = None  # every
    renewal_window: Period | None = None

    def describe(self) -> str:
        parts = []
        if self.grace:
            parts.append(f"grace {self.grace}")
        if self.protection:
            parts.append(f"protection {self.protection}")
        if self.renewal:
            window = f", window {self.renewal_window}" if self.renewal_window else ""
            parts.append(f"renewal every {self.renewal}{window}")
        return "; ".join(parts)


class Keep(NamedTuple):
    """A program kept for a partner: until when (the first date it is no
    longer kept), how, and the date the keeping counts from."""

    until: dt.date
    how: str  # GRACE, PROTECTION, RENEWAL
    since: dt.date

    def to_json(self) -> dict:
        return {"until": self.until.isoformat(), "by": self.how, "since": self.since.isoformat()}

    @classmethod
    def from_json(cls, data: Mapping) -> Keep:
        return cls(
            dt.date.fromisoformat(data["until"]), data["by"], dt.date.fromisoformat(data["since"])
        )

    def describe(self) -> str:
        """In words, for explanations and the report: 'in grace until 2027-02-26
        (stopped qualifying on 2026-11-26)'."""
        if self.how == GRACE:
            return f"in grace until {self.until} (stopped qualifying on {self.since})"
        if self.how == PROTECTION:
            return f"protected until {self.until} (held since {self.since})"
        return f"in its renewal window until {self.until} (renewal date {self.since})"


class Recalled(NamedTuple):
    """A partner in one earlier run: its as-of date, the programs it was
    enrolled in, those of them it was kept in (not qualifying), and its
    classifications."""

    as_of: dt.date
    programs: frozenset[str]
    kept: frozenset[str]
    classifications: Mapping[str, str]


class Enrolled(NamedTuple):
    """An earlier enrollment imported from a CSV file: held, and qualifying,
    from ``start`` to ``end`` (both included)."""

    program: str
    start: dt.date
    end: dt.date


@dataclass(frozen=True)
class Memory:
    """What is known of one partner before a run (see the module docstring).
    ``runs`` are oldest first, one per as-of date, all before the run's."""

    runs: tuple[Recalled, ...] = ()
    enrollments: tuple[Enrolled, ...] = ()

    def before(self, as_of: dt.date) -> Memory:
        """Only what was known before ``as_of``."""
        if not self.runs and not self.enrollments:  # most partners, every run without memory
            return self
        runs = tuple(r for r in self.runs if r.as_of < as_of)
        enrollments = tuple(
            e._replace(end=min(e.end, as_of - dt.timedelta(days=1)))
            for e in self.enrollments
            if e.start < as_of
        )
        if len(runs) == len(self.runs) and enrollments == self.enrollments:
            return self
        return Memory(runs, enrollments)

    # --- what metrics ask (a subject: a program id, or (classification, value)) ---

    def _held_in(self, run: Recalled, subject: str | tuple[str, str]) -> bool:
        if isinstance(subject, tuple):
            return run.classifications.get(subject[0]) == subject[1]
        return subject in run.programs

    def _dates_held(self, subject) -> list[tuple[dt.date, dt.date]]:
        """(first day, last day) of each record of holding ``subject``."""
        spans = [(r.as_of, r.as_of) for r in self.runs if self._held_in(r, subject)]
        if not isinstance(subject, tuple):
            spans += [(e.start, e.end) for e in self.enrollments if e.program == subject]
        return spans

    def held_since(self, subject, start: dt.date) -> bool:
        """Whether a record on or after ``start`` holds ``subject``."""
        return any(last >= start for _, last in self._dates_held(subject))

    def first_held(self, subject) -> dt.date | None:
        return min((first for first, _ in self._dates_held(subject)), default=None)

    def last_held(self, subject) -> dt.date | None:
        return max((last for _, last in self._dates_held(subject)), default=None)

    def runs_held(self, subject) -> int:
        """Consecutive recorded runs, newest first, that held ``subject``."""
        count = 0
        for run in reversed(self.runs):
            if not self._held_in(run, subject):
                break
            count += 1
        return count

    # --- what keeping asks -------------------------------------------------------

    def last_qualified(self, program: str) -> dt.date | None:
        """The last date the partner was enrolled by the program's conditions."""
        dates = [r.as_of for r in self.runs if program in r.programs and program not in r.kept]
        dates += [e.end for e in self.enrollments if e.program == program]
        return max(dates, default=None)

    def stopped_qualifying(self, program: str, as_of: dt.date) -> dt.date | None:
        """The first date after the last qualifying one on which a run did not
        enroll the partner by the program's conditions (``as_of`` if none did
        since), or the day after an imported enrollment ended, when that was
        the last qualifying date; None if it never qualified."""
        last = self.last_qualified(program)
        if last is None:
            return None
        ended = any(e.program == program and e.end == last for e in self.enrollments)
        by_run = any(r.as_of == last for r in self.runs)
        if ended and not by_run:  # an imported enrollment that ended then
            return last + dt.timedelta(days=1)
        return next(
            (
                r.as_of
                for r in self.runs
                if r.as_of > last and (program not in r.programs or program in r.kept)
            ),
            as_of,
        )

    def stretch_start(self, program: str) -> dt.date | None:
        """The start of the current stretch of holding the program: counting
        back from the newest record, up to the first run that did not enroll
        the partner in it. None when the newest record does not hold it."""
        records = [(r.as_of, r.as_of, program in r.programs) for r in self.runs]
        records += [(e.end, e.start, True) for e in self.enrollments if e.program == program]
        start = None
        for _, first, held in sorted(records, reverse=True):
            if not held:
                break
            start = first if start is None else min(start, first)
        return start


EMPTY = Memory()


def keep_offer(keeping: Keeping, program: str, memory: Memory, as_of: dt.date) -> Keep | None:
    """Whether ``keeping`` keeps the partner in ``program`` on ``as_of`` should
    its conditions not hold, and until when (the latest of its ways)."""
    offers: list[Keep] = []
    if keeping.grace is not None:
        stopped = memory.stopped_qualifying(program, as_of)
        if stopped is not None:
            offers.append(Keep(keeping.grace.after(stopped), GRACE, stopped))
    if keeping.protection is not None or keeping.renewal is not None:
        start = memory.stretch_start(program)
        if start is not None and keeping.protection is not None:
            offers.append(Keep(keeping.protection.after(start), PROTECTION, start))
        last = memory.last_qualified(program)
        if start is not None and keeping.renewal is not None and last is not None:
            anniversary, years = start, 0
            while anniversary <= last:
                years += 1
                anniversary = _times(keeping.renewal, years, start)
            window = keeping.renewal_window
            until = window.after(anniversary) if window else anniversary
            offers.append(Keep(until, RENEWAL, anniversary))
    offers = [o for o in offers if as_of < o.until]
    return max(offers, default=None)


def _times(period: Period, times: int, start: dt.date) -> dt.date:
    """``start`` plus ``times`` periods, counted from ``start`` (no drift)."""
    return Period(period.count * times, period.unit).after(start)


def quarters_before(as_of: dt.date, quarters: int) -> dt.date:
    """The first day of a window of ``quarters`` quarters that ends the day
    before ``as_of`` (``held(premier, 4)`` looks at runs in it)."""
    return add_months(as_of, -3 * quarters)


__all__ = [
    "EMPTY",
    "GRACE",
    "PROTECTION",
    "RENEWAL",
    "Enrolled",
    "Keep",
    "Keeping",
    "Memory",
    "Period",
    "Recalled",
    "keep_offer",
]
