"""Partner records: typed field values and quarterly history.

Raw records (a CSV row, a JSON object) are checked against the rule set's
declarations. Problems name the field and the reason, never the whole
record, because rosters hold personal data.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import DataError
from engine.ruleset.memory import EMPTY as EMPTY_MEMORY, Memory
from engine.ruleset.model import RuleSet, per_rule_set
from engine.ruleset.quarters import History, Quarter, parse_quarter
from engine.ruleset.value_types import format_value, value_parser

PARTNER_ID = "partner_id"
QUARTER = "quarter"
MAX_ID_LENGTH = 200


@dataclass(frozen=True)
class Partner:
    partner_id: str
    values: Mapping[str, Any]
    history: History = field(default_factory=History)
    # What the partner held in earlier runs (engine.ruleset.memory), only
    # what was known before the as-of date it is decided on.
    memory: Memory = EMPTY_MEMORY


@dataclass(frozen=True)
class FieldProblem:
    """One unusable value: which column, what it held (shortened), and why;
    for a history value, the number of its row in the history file."""

    column: str
    value: str
    reason: str
    row: int = 0

    def __str__(self) -> str:
        return f"{self.column}: {self.reason}"


def shorten(value: Any, limit: int = 40) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clean_partner_id(raw: Any) -> str:
    """A partner_id as written, trimmed, in Unicode's composed form (NFC: an
    "é" typed as e and an accent is the same id as one typed as é); "" for none."""
    text = raw.strip() if raw.__class__ is str else "" if raw is None else str(raw).strip()
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def read_partner_id(record: Mapping[str, Any]) -> str:
    return partner_id_value(record.get(PARTNER_ID))


def partner_id_value(raw: Any) -> str:
    """A partner_id as read (see :func:`clean_partner_id`); DataError if it
    is missing or cannot be one."""
    if isinstance(raw, (list, tuple, dict, bool)):
        raise DataError("partner_id must be one value (text or a number), not a list or yes/no")
    text = clean_partner_id(raw)
    if not text:
        raise DataError("partner_id is missing")
    if len(text) > MAX_ID_LENGTH:
        raise DataError(f"partner_id is longer than {MAX_ID_LENGTH} characters")
    if not text.isprintable():
        hidden = next(c for c in text if not c.isprintable())
        raise DataError(
            f"partner_id holds an invisible or control character (U+{ord(hidden):04X}), "
            "which would make two partners of one; remove it"
        )
    return text


def _declared(ruleset: RuleSet) -> tuple[list, list]:
    """(name, declaration, parser) for the rule set's fields and history figures."""
    return per_rule_set(
        "parsers",
        ruleset,
        lambda r: (
            [(n, d, bounded_parser(d)) for n, d in r.fields.items()],
            [(n, d, bounded_parser(d)) for n, d in r.figures.items()],
        ),
    )


def bounded_parser(definition) -> Any:
    """The parser of a field's values, refusing those outside its ``min`` and
    ``max`` (a count of -3, a share of 150%)."""
    parse = value_parser(definition.type)
    low, high = definition.minimum, definition.maximum
    if low is None and high is None:
        return parse
    vtype = definition.type

    def parse_within(raw: Any) -> Any:
        value = parse(raw)
        if value is not None:
            if low is not None and value < low:
                raise ValueError(
                    f"'{shorten(raw)}' is below {format_value(vtype, low)}, the least "
                    f"{definition.label} can be"
                )
            if high is not None and value > high:
                raise ValueError(
                    f"'{shorten(raw)}' is above {format_value(vtype, high)}, the most "
                    f"{definition.label} can be"
                )
        return value

    return parse_within


def field_values(
    ruleset: RuleSet, record: Mapping[str, Any], defaulted: list[str] | None = None
) -> tuple[dict, list[FieldProblem]]:
    """Typed values for every declared field, defaults applied; and the
    problems. ``defaulted`` collects the fields whose default was applied."""
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
            if defaulted is not None:
                defaulted.append(name)
        values[name] = value
    return values, problems


def _figure_parsers(ruleset: RuleSet, columns: Sequence[str]) -> list[tuple]:
    """(name, declaration, parser, position in ``columns`` or None) for each of
    the rule set's figures: history values are matched to figures by name,
    whatever order (or which other figures) the rows were read with."""
    cache = per_rule_set("figure_columns", ruleset, lambda _: {})
    found = cache.get(columns)
    if found is None:
        position = {name: index for index, name in enumerate(columns)}
        found = cache[columns] = [
            (name, definition, parse, position.get(name))
            for name, definition, parse in _declared(ruleset)[1]
        ]
    return found


def _history_row(
    parsers: list[tuple], number: int, quarter_label: Any, raw_figures: Sequence[Any]
) -> tuple[Quarter, dict] | FieldProblem:
    """One history row as (quarter, figures), or the problem that makes it unusable."""
    try:
        quarter = parse_quarter(quarter_label)
    except ValueError as error:
        return FieldProblem(QUARTER, shorten(quarter_label), str(error), number)
    figures: dict[str, Any] = {}
    for name, definition, parse, index in parsers:
        raw = None if index is None or index >= len(raw_figures) else raw_figures[index]
        try:
            value = parse(raw)
        except ValueError as error:
            return FieldProblem(name, shorten(raw), str(error), number)
        if value is None:
            if definition.required:
                return FieldProblem(name, "", "a value is required", number)
            value = definition.default
        figures[name] = value
    return quarter, figures


def checked_history(
    ruleset: RuleSet,
    rows: Iterable[tuple[int, Any, Sequence[Any]]],
    columns: Sequence[str],
    problems: list[FieldProblem],
) -> History:
    """A partner's history from rows as written: (row number, quarter, figure
    values), the values named by ``columns`` (figures the rule set does not
    declare are ignored, and a declared one missing from ``columns`` has no
    value).

    Unusable rows are appended to ``problems``, each with its row number, and
    left out; of a quarter given twice, the first row is kept.
    """
    quarters: dict = {}
    first_row: dict = {}
    parsers = _figure_parsers(ruleset, tuple(columns))
    for number, quarter, figures in rows:
        checked = _history_row(parsers, number, quarter or "", figures)
        if isinstance(checked, FieldProblem):
            problems.append(checked)
            continue
        when, values = checked
        if when in quarters:
            problems.append(
                FieldProblem(
                    QUARTER,
                    shorten(quarter),
                    f"{when} appears twice for this partner (first on row {first_row[when]})",
                    number,
                )
            )
            continue
        quarters[when], first_row[when] = values, number
    return History(quarters)


def build_history(ruleset: RuleSet, rows: Iterable[Mapping[str, Any]]) -> History:
    """History from records such as {"quarter": "2026Q3", "revenue": ...};
    raises DataError at the first unusable row."""
    problems: list[FieldProblem] = []
    columns = tuple(ruleset.figures)
    history = checked_history(
        ruleset,
        (
            (number, record.get(QUARTER), tuple(record.get(name) for name in columns))
            for number, record in enumerate(rows, 1)
        ),
        columns,
        problems,
    )
    if problems:
        raise DataError(str(problems[0]))
    return history


def partner_from_record(
    ruleset: RuleSet, record: Mapping[str, Any], history_rows: Iterable[Mapping[str, Any]] = ()
) -> Partner:
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
