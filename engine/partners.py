"""Partner records: typed field values and quarterly history.

Raw records (a CSV row, a JSON object) are checked against the rule set's
declarations. Problems name the field and the reason, never the whole
record, because rosters hold personal data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .errors import DataError
from .history import History, Quarter, parse_quarter
from .model import RuleSet
from .valuetypes import ValueType, parse_value

PARTNER_ID = "partner_id"
QUARTER = "quarter"
MAX_ID_LENGTH = 200


@dataclass(frozen=True)
class Partner:
    partner_id: str
    values: Mapping[str, Any]
    history: History = field(default_factory=History)


@dataclass(frozen=True)
class FieldProblem:
    """One unusable value: which column, what it held (shortened), and why."""

    column: str
    value: str
    reason: str

    def __str__(self) -> str:
        return f"{self.column}: {self.reason}"


def shorten(value: Any, limit: int = 40) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_partner_id(record: Mapping[str, Any]) -> str:
    raw = record.get(PARTNER_ID)
    text = "" if raw is None else str(raw).strip()
    if not text:
        raise DataError("partner_id is missing")
    if len(text) > MAX_ID_LENGTH:
        raise DataError(f"partner_id is longer than {MAX_ID_LENGTH} characters")
    return text


def field_values(ruleset: RuleSet, record: Mapping[str, Any]) -> tuple[dict, list[FieldProblem]]:
    """Typed values for every declared field, defaults applied; and the problems."""
    values: dict[str, Any] = {}
    problems: list[FieldProblem] = []
    for name, definition in ruleset.fields.items():
        raw = record.get(name)
        try:
            value = parse_value(definition.type, raw)
        except ValueError as error:
            problems.append(FieldProblem(name, shorten(raw), str(error)))
            continue
        if value is None:
            if definition.required:
                problems.append(FieldProblem(name, "", "a value is required"))
                continue
            value = definition.default
        values[name] = value
    return values, problems


def history_row(ruleset: RuleSet, record: Mapping[str, Any]) -> tuple[Quarter, dict]:
    """One history row as (quarter, figures); raises DataError naming the column."""
    try:
        quarter = parse_quarter(record.get(QUARTER, ""))
    except ValueError as error:
        raise DataError(f"{QUARTER}: {error}") from None
    figures: dict[str, Any] = {}
    for name, definition in ruleset.figures.items():
        raw = record.get(name)
        try:
            value = parse_value(definition.type, raw)
        except ValueError as error:
            raise DataError(f"{name}: {error}") from None
        if value is None:
            if definition.required:
                raise DataError(f"{name}: a value is required")
            value = definition.default
        figures[name] = value
    return quarter, figures


def build_history(ruleset: RuleSet, rows: Iterable[Mapping[str, Any]]) -> History:
    quarters: dict[Quarter, dict] = {}
    for row in rows:
        quarter, figures = history_row(ruleset, row)
        if quarter in quarters:
            raise DataError(f"{QUARTER}: {quarter} appears twice")
        quarters[quarter] = figures
    return History(quarters)


def partner_from_record(ruleset: RuleSet, record: Mapping[str, Any],
                        history_rows: Iterable[Mapping[str, Any]] = ()) -> Partner:
    """A partner from one record; raises DataError listing every bad value."""
    partner_id = read_partner_id(record)
    values, problems = field_values(ruleset, record)
    if problems:
        raise DataError(f"partner {shorten(partner_id)}: " + "; ".join(map(str, problems)))
    try:
        history = build_history(ruleset, history_rows)
    except DataError as error:
        raise DataError(f"partner {shorten(partner_id)}, history: {error}") from None
    return Partner(partner_id, values, history)


def partner_to_record(ruleset: RuleSet, partner: Partner) -> dict:
    """The inverse of :func:`partner_from_record`, as JSON-friendly values."""
    from .valuetypes import DATE, LIST, PERCENT
    record: dict[str, Any] = {PARTNER_ID: partner.partner_id}
    for name, definition in ruleset.fields.items():
        value = partner.values.get(name)
        kind = definition.type.kind
        if value is None:
            record[name] = None
        elif kind == DATE:
            record[name] = value.isoformat()
        elif kind == PERCENT:
            record[name] = f"{round(value * 100, 6):g}%"
        elif kind == LIST:
            record[name] = list(value)
        else:
            record[name] = value
    record["history"] = partner.history.to_json()
    return record


def figure_type(ruleset: RuleSet, name: str) -> ValueType:
    return ruleset.figures[name].type
