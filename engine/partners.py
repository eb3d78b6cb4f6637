"""Partner records: typed field values and quarterly history.

Raw records (a CSV row, a JSON object) are checked against the rule set's
declarations. Problems name the field and the reason, never the whole
record, because rosters hold personal data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .errors import DataError
from .history import History, Quarter, parse_quarter
from .model import RuleSet, per_rule_set
from .valuetypes import value_parser

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


def clean_partner_id(raw: Any) -> str:
    """A partner_id as written, trimmed; "" for none."""
    if raw.__class__ is str:
        return raw.strip()
    return "" if raw is None else str(raw).strip()


def read_partner_id(record: Mapping[str, Any]) -> str:
    text = clean_partner_id(record.get(PARTNER_ID))
    if not text:
        raise DataError("partner_id is missing")
    if len(text) > MAX_ID_LENGTH:
        raise DataError(f"partner_id is longer than {MAX_ID_LENGTH} characters")
    return text


def _declared(ruleset: RuleSet) -> tuple[list, list]:
    """(name, declaration, parser) for the rule set's fields and history figures."""
    return per_rule_set("parsers", ruleset, lambda r: (
        [(n, d, value_parser(d.type)) for n, d in r.fields.items()],
        [(n, d, value_parser(d.type)) for n, d in r.figures.items()]))


def field_values(ruleset: RuleSet, record: Mapping[str, Any]) -> tuple[dict, list[FieldProblem]]:
    """Typed values for every declared field, defaults applied; and the problems."""
    values: dict[str, Any] = {}
    problems: list[FieldProblem] = []
    for name, definition, parse in _declared(ruleset)[0]:
        raw = record.get(name)
        try:
            value = parse(raw)
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


def _history_row(figure_parsers: list, quarter_label: Any,
                 raw_figures: Sequence[Any]) -> tuple[Quarter, dict]:
    """One history row as (quarter, figures); raises DataError naming the column."""
    try:
        quarter = parse_quarter(quarter_label)
    except ValueError as error:
        raise DataError(f"{QUARTER}: {error}") from None
    figures: dict[str, Any] = {}
    for (name, definition, parse), raw in zip(figure_parsers, raw_figures):
        try:
            value = parse(raw)
        except ValueError as error:
            raise DataError(f"{name}: {error}") from None
        if value is None:
            if definition.required:
                raise DataError(f"{name}: a value is required")
            value = definition.default
        figures[name] = value
    return quarter, figures


def checked_history(ruleset: RuleSet, rows: Iterable[tuple[int, Any, Sequence[Any]]],
                    source: str, partner_id: str, rejects: list) -> History:
    """A partner's history from rows as written: (row number, quarter, the value
    of each of the rule set's figures, in their declared order).

    Unusable rows are appended to ``rejects`` (as :class:`~engine.rejects.Reject`)
    and left out; of a quarter given twice, the first row is kept.
    """
    from .rejects import Reject
    quarters: dict = {}
    first_row: dict = {}
    figure_parsers = _declared(ruleset)[1]
    for number, quarter, figures in rows:
        try:
            when, values = _history_row(figure_parsers, quarter or "", figures)
        except DataError as error:
            column, _, reason = str(error).partition(": ")
            raw = quarter if column == QUARTER else figures[list(ruleset.figures).index(column)]
            rejects.append(Reject(source, number, partner_id, column, shorten(raw), reason))
            continue
        if when in quarters:
            rejects.append(Reject(source, number, partner_id, QUARTER, str(quarter),
                                  f"{when} appears twice for this partner (first on row "
                                  f"{first_row[when]})"))
            continue
        quarters[when], first_row[when] = values, number
    return History(quarters)


def history_row(ruleset: RuleSet, number: int, record: Mapping[str, Any]) -> tuple:
    """A history record as :func:`checked_history` takes it: (row number,
    quarter, each figure's value in the rule set's order), all as written."""
    return number, record.get(QUARTER), tuple(record.get(name) for name in ruleset.figures)


def build_history(ruleset: RuleSet, rows: Iterable[Mapping[str, Any]]) -> History:
    """History from records such as {"quarter": "2026Q3", "revenue": ...};
    raises DataError at the first unusable row."""
    rejects: list = []
    history = checked_history(ruleset, (history_row(ruleset, i, r) for i, r in enumerate(rows, 1)),
                              "", "", rejects)
    if rejects:
        raise DataError(f"{rejects[0].column}: {rejects[0].reason}")
    return history


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
