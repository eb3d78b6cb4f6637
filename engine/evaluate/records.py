"""Partner records: typed field values and quarterly history.

Raw records (a CSV row, a JSON object) are checked against the rule set's
declarations. Problems name the field and the reason, never the whole
record, because rosters hold personal data.
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from engine.errors import DataError
from engine.ruleset.memory import EMPTY as EMPTY_MEMORY, Memory
from engine.ruleset.model import RuleSet, per_rule_set
from engine.ruleset.quarters import History, Quarter, parse_quarter
from engine.ruleset.value_types import format_value, plain_numbers, value_parser

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
    "é" typed as e and an accent is the same id as one typed as é); "" for none.
    A whole number stored as a float (a Parquet or JSON column of ids that
    went through a float, as pandas does to whole numbers with gaps) is
    that number: 1001.0 is the id 1001, as the CSV export writes it."""
    if raw.__class__ is str:
        text = raw.strip()
    elif raw is None:
        return ""
    elif raw.__class__ is float and raw.is_integer():
        return str(int(raw))
    else:
        text = str(raw).strip()
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def read_partner_id(record: Mapping[str, Any]) -> str:
    return partner_id_value(record.get(PARTNER_ID))


def partner_id_value(raw: Any) -> str:
    """A partner_id as read (see :func:`clean_partner_id`); DataError if it
    is missing or cannot be one."""
    if isinstance(raw, (list, tuple, dict, bool)):
        raise DataError("partner_id must be one value (text or a number), not a list or yes/no")
    if isinstance(raw, (bytes, bytearray)):  # a Parquet binary column that is not UTF-8
        raise DataError("partner_id is binary data that is not UTF-8 text; export it as text")
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


class HistoryRows(NamedTuple):
    """History rows as written, of several partners, as columns: how a chunk
    carries its partners' rows between processes (a few lists pickle in a
    fraction of the time a tuple per row took). Partner ``i`` has the rows
    ``starts[i]`` to ``starts[i + 1]`` (in file order) of ``rows`` (their
    numbers in the history file), ``quarters`` (each one's quarter as
    written) and each list of ``figures``: the values of the figure named
    by the same place in ``columns``. Figures are matched to the rule set's
    by those names, never by position (a what-if stages the history once for
    two rule sets)."""

    columns: tuple[str, ...]
    starts: list[int]
    rows: list[int]
    quarters: list[Any]
    figures: tuple[list[Any], ...]

    @classmethod
    def of(
        cls,
        columns: Sequence[str],
        partners: Iterable[Iterable[tuple[int, Any, Sequence[Any]]]],
    ) -> HistoryRows:
        """The columns of each partner's rows (row number, quarter, figure
        values in the order of ``columns``), partner after partner."""
        found = cls(tuple(columns), [0], [], [], tuple([] for _ in columns))
        for rows in partners:
            found.add(rows)
        return found

    def add(self, rows: Iterable[tuple[int, Any, Sequence[Any]]]) -> None:
        """The next partner's rows: (row number, quarter, figure values; a
        value missing at the end is None)."""
        rows = rows if isinstance(rows, (list, tuple)) else list(rows)
        if rows:
            numbers, quarters, values = zip(*rows)  # rows to columns, at C speed
            self.rows.extend(numbers)
            self.quarters.extend(quarters)
            width = len(self.figures)
            if set(map(len, values)) != {width}:
                values = tuple((tuple(v) + (None,) * width)[:width] for v in values)
            for column, cells in zip(self.figures, zip(*values)):
                column.extend(cells)
        self.starts.append(len(self.rows))


class CheckedHistory:
    """The history rows of a chunk (``HistoryRows``), checked against the rule
    set a column at a time, and each partner's History from them
    (:meth:`history`). Figures the rule set does not declare are ignored; a
    declared one missing from ``staged.columns`` has no value."""

    def __init__(self, ruleset: RuleSet, staged: HistoryRows):
        self.staged = staged
        parsers = _figure_parsers(ruleset, staged.columns)
        self.names = [name for name, *_ in parsers]
        count = len(staged.rows)
        # Each declared figure's values, row by row; a _Bad where a row's
        # value is unusable (the row is then left out, with the first
        # figure's problem in the declared order).
        self.columns = [
            _checked_column(definition, parse, [None] * count if at is None else staged.figures[at])
            for _, definition, parse, at in parsers
        ]
        # Each row's quarter, where its label is one seen before (else None),
        # and its figures by name: partners whose rows are all usable take
        # theirs as they are.
        self.when = _quarters_of(staged.quarters)
        self.figures = (
            [dict(zip(self.names, cells)) for cells in zip(*self.columns)]
            if self.columns
            else [{} for _ in staged.rows]  # a rule set without figures
        )
        self.bad = _bad_rows(self.columns)  # rows with an unusable value

    def history(self, index: int, problems: list[FieldProblem]) -> History:
        """Partner ``index``'s history. Unusable rows are appended to
        ``problems``, each with its row number, and left out; of a quarter
        given twice, the first row is kept."""
        staged = self.staged
        start, end = staged.starts[index], staged.starts[index + 1]
        if start == end:
            return History({})
        when = self.when[start:end]
        if None not in when and self.bad.isdisjoint(range(start, end)):
            # Every row usable: the figures as they are, unless a quarter repeats.
            quarters = dict(zip(when, self.figures[start:end]))
            if len(quarters) == end - start:
                return History(quarters)
        numbers, labels, names, columns, bad = (
            staged.rows,
            staged.quarters,
            self.names,
            self.columns,
            self.bad,
        )
        quarters: dict = {}
        first_row: dict = {}
        for at, quarter in enumerate(when, start):
            number, label = numbers[at], labels[at]
            if quarter is None:
                try:
                    quarter = parse_quarter(label or "")
                except ValueError as error:
                    problems.append(FieldProblem(QUARTER, shorten(label or ""), str(error), number))
                    continue
            if at in bad:
                name, failed = next(
                    (n, c[at]) for n, c in zip(names, columns) if c[at].__class__ is _Bad
                )
                problems.append(FieldProblem(name, failed.value, failed.reason, number))
                continue
            if quarter in quarters:
                problems.append(
                    FieldProblem(
                        QUARTER,
                        shorten(label),
                        f"{quarter} appears twice for this partner (first on row "
                        f"{first_row[quarter]})",
                        number,
                    )
                )
                continue
            quarters[quarter], first_row[quarter] = self.figures[at], number
        return History(quarters)


class _Bad(NamedTuple):
    """An unusable history value: as shown in its reject, and why."""

    value: str
    reason: str


def _checked_column(definition, parse: Any, raws: list[Any]) -> list[Any]:
    """A figure's values parsed (see :func:`bounded_parser`), its default in
    place of an empty one, a _Bad where a value cannot be used."""
    values = plain_numbers(definition.type.kind, raws)  # the common case, at C speed
    if values is not None and (
        (definition.minimum is None or min(values) >= definition.minimum)
        and (definition.maximum is None or max(values) <= definition.maximum)
    ):
        return values
    try:
        values = list(map(parse, raws))  # the next most common: every value parses
    except ValueError:
        values = []
        for raw in raws:
            try:
                values.append(parse(raw))
            except ValueError as error:
                values.append(_Bad(shorten(raw), str(error)))
    if None in values:
        empty = _Bad("", "a value is required") if definition.required else definition.default
        values = [empty if v is None else v for v in values]
    return values


def _bad_rows(columns: list[list[Any]]) -> set[int]:
    """The places where any of ``columns`` holds an unusable value (_Bad)."""
    return {
        at
        for column in columns
        if _Bad in map(type, column)
        for at, value in enumerate(column)
        if value.__class__ is _Bad
    }


_QUARTERS: dict[str, Quarter] = {}  # quarter labels as written, parsed


def _quarters_of(labels: list[Any]) -> list[Quarter | None]:
    """The quarter each label names, at C speed for labels seen before; None
    for a label that names none (its row's problem is worded where the row is
    checked) or that is not text."""
    try:
        found = list(map(_QUARTERS.get, labels))
    except TypeError:  # an unhashable label (a list, in JSON Lines)
        found = [_QUARTERS.get(label) if label.__class__ is str else None for label in labels]
    if None in found:
        for label in {label for label in labels if label.__class__ is str}.difference(_QUARTERS):
            with contextlib.suppress(ValueError):
                if len(_QUARTERS) < 4096:  # a file's few labels, each parsed once
                    _QUARTERS[label] = parse_quarter(label)
        found = [_QUARTERS.get(label) if label.__class__ is str else None for label in labels]
    return found


def checked_history(
    ruleset: RuleSet,
    rows: Iterable[tuple[int, Any, Sequence[Any]]],
    columns: Sequence[str],
    problems: list[FieldProblem],
) -> History:
    """A partner's history from rows as written: (row number, quarter, figure
    values), the values named by ``columns`` (see :class:`CheckedHistory`,
    which checks a whole chunk's rows at once)."""
    return CheckedHistory(ruleset, HistoryRows.of(columns, [rows])).history(0, problems)


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
