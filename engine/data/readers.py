"""Reading partner rosters and performance history from CRM exports.

Supports CSV (UTF-8, with or without the byte-order mark Excel writes,
quoted fields with commas and newlines; separated by commas, semicolons or
tabs), JSON Lines, and Excel ``.xlsx``. Each record comes with its row
number in the source file so problems can point at it; a row that cannot be
read (a JSON line that is no object, a CSV row with values past the last
column) comes with its problem instead, to be set aside like any bad row.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import hashlib
import io
import itertools
import json
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.data.rejects import Reject
from engine.errors import DataError, UsageError
from engine.evaluate.records import (
    PARTNER_ID,
    QUARTER,
    FieldProblem,
    Partner,
    checked_history,
    clean_partner_id,
    field_values,
    partner_from_record,
    shorten,
)
from engine.ruleset.model import RuleSet

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".xlsx": "xlsx"}


@dataclass(frozen=True)
class SourceRow:
    file: str
    row: int  # 1-based line of the record (the CSV header is row 1)
    record: Mapping[str, Any]
    # Why the row cannot be used as read (a JSON line that is no object, a CSV
    # row with values past the last column), and what to show of it: such a
    # row is set aside like any bad row, never decided.
    problem: str = ""
    text: str = ""


def unreadable_row(row: SourceRow) -> Reject:
    """The reject for a row that could not be read (see
    :attr:`SourceRow.problem`): its value is the row's text, or
    the value out of place."""
    return Reject(
        row.file, row.row, clean_partner_id(row.record.get(PARTNER_ID)), "", row.text, row.problem
    )


class RowReader:
    """The records of a CSV, JSON Lines, or .xlsx file, with their row numbers.

    ``bytes_read`` tells how far into the file reading has got, for progress.
    ``columns`` (the fields the rules read) must not repeat in the header,
    nor may partner_id: which of two values to use would be a guess.
    """

    def __init__(self, path: str | Path, columns: Iterable[str] = ()):
        self.path = Path(path)
        self.columns = (PARTNER_ID, *columns)
        self.kind = FORMATS.get(self.path.suffix.lower())
        if self.kind is None:
            raise UsageError(
                f"{self.path}: unsupported file type '{self.path.suffix}'; "
                "use .csv, .jsonl, or .xlsx"
            )
        if not self.path.is_file():
            raise UsageError(f"{self.path}: file not found")
        self.size = self.path.stat().st_size
        self._binary: io.BufferedReader | None = None

    @property
    def bytes_read(self) -> int:
        try:
            return self._binary.tell() if self._binary and not self._binary.closed else 0
        except (OSError, ValueError):
            return 0

    def __iter__(self) -> Iterator[SourceRow]:
        if self.kind == "xlsx":
            yield from _read_xlsx(self.path, self.columns)
            return
        with self.path.open("rb") as binary:
            self._binary = binary
            text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
            if self.kind == "csv":
                yield from _read_csv(self.path, text, self.columns)
            else:
                yield from _read_jsonl(self.path, text)


def read_rows(path: str | Path, columns: Iterable[str] = ()) -> Iterator[SourceRow]:
    """Yield the records of a CSV, JSON Lines, or .xlsx file, with their row
    numbers (see :class:`RowReader` for ``columns``)."""
    return iter(RowReader(path, columns))


def read_columns(
    path: str | Path, columns: list[str], unreadable: Callable[[SourceRow], None] | None = None
) -> Iterator[tuple[int, tuple]]:
    """(row number, (value of each column)) for every record: a faster path
    than :func:`read_rows` for big CSV files when only some columns matter.
    A column the file lacks, or a row too short to have it, gives None. Rows
    that cannot be read (see :attr:`SourceRow.problem`) go to ``unreadable``
    instead, when given."""
    reader = RowReader(path, columns)
    if reader.kind != "csv":
        for row in reader:
            if row.problem:
                if unreadable is not None:
                    unreadable(row)
                continue
            yield row.row, tuple(row.record.get(c) for c in columns)
        return
    with reader.path.open(newline="", encoding="utf-8-sig") as handle:
        rows = _csv_reader(handle)
        number = 1
        try:
            header = _csv_header(reader.path, next(rows, []), columns)
            where = [header.index(c) if c in header else None for c in columns]
            width = max((i for i in where if i is not None), default=-1) + 1
            size = len(header)
            pick = _picker(where)
            for number, values in enumerate(rows, start=2):
                if len(values) > size:
                    problem = _overlong(reader.path, number, values, header, rows)
                    if problem is not None:
                        if unreadable is not None:
                            unreadable(problem)
                        continue
                if len(values) >= width and pick is not None:
                    yield number, pick(values)
                elif values:  # a short row, or a column the file lacks
                    yield (
                        number,
                        tuple(
                            values[i] if i is not None and i < len(values) else None for i in where
                        ),
                    )
        except (UnicodeDecodeError, csv.Error) as error:
            raise _unreadable(reader.path, number, error) from None


def partner_id_runs(path: str | Path) -> Iterator[tuple[int, Any, int]]:
    """(first row number, partner_id as written, how many rows) for each run of
    consecutive records with the same partner_id. For checking the order of
    big files: in CSV, the rows are grouped without Python code per row."""
    reader = RowReader(path)
    if reader.kind != "csv":
        for value, group in itertools.groupby(
            read_columns(path, [PARTNER_ID]), key=lambda row: row[1][0]
        ):
            rows = list(group)
            yield rows[0][0], value, len(rows)
        return
    with reader.path.open(newline="", encoding="utf-8-sig") as handle:
        rows = _csv_reader(handle)
        number = 2
        try:
            column = _csv_header(reader.path, next(rows, [])).index(PARTNER_ID)
            cells = map(
                lambda values: (
                    values[column]
                    if len(values) > column
                    # noqa: E731
                    else (None if values else _BLANK_LINE)
                ),
                rows,
            )
            for value, group in itertools.groupby(cells):
                count = len(list(group))
                if value is not _BLANK_LINE:  # blank lines are no records, but are numbered
                    yield number, value, count
                number += count
        except (UnicodeDecodeError, csv.Error) as error:
            raise _unreadable(reader.path, number, error) from None


def file_fingerprint(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256: which input a run read."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def check_columns(path: str | Path, required: Iterable[str], what: str) -> None:
    """Stop before anything is decided when a CSV or .xlsx file lacks a
    column the rules read (``required``): without it every row would be
    decided on a default, or rejected one by one. The error names each
    missing column and the header closest to it. JSON Lines files have no
    header; their records are checked one by one."""
    reader = RowReader(path)
    if reader.kind == "jsonl":
        return
    header = _header_of(reader)
    missing = [name for name in dict.fromkeys(required) if name not in header]
    if not missing:
        return
    hints = []
    for name in missing:
        close = _closest_header(name, header)
        hints.append(f"{name} (the file has '{close}')" if close else name)
    count = len(missing)
    raise DataError(
        f"{path}: this {what} lacks {count} column{'s' if count != 1 else ''} the rules read: "
        + ", ".join(hints)
        + "; name the columns as the rules do (or give the right file), so that nothing "
        "is decided on defaults. Nothing was decided"
    )


def _header_of(reader: RowReader) -> list[str]:
    """The column names of a CSV or .xlsx file (partner_id checked)."""
    if reader.kind == "xlsx":
        with _first_sheet(reader.path) as rows:
            names = _xlsx_names(next(rows, ()))
        _check_header(reader.path, names, ())
        return names
    with reader.path.open(newline="", encoding="utf-8-sig") as handle:
        try:
            return _csv_header(reader.path, next(_csv_reader(handle), []))
        except (UnicodeDecodeError, csv.Error) as error:
            raise _unreadable(reader.path, 1, error) from None


def _closest_header(name: str, header: list[str]) -> str | None:
    """The header a column was probably meant to be: the same name but for
    case, spaces and hyphens ("Joined On" for joined_on), else a close spelling."""

    def simple(text: str) -> str:
        return text.strip().casefold().replace(" ", "_").replace("-", "_")

    same = [h for h in header if simple(h) == simple(name)]
    if same:
        return same[0]
    close = difflib.get_close_matches(simple(name), [simple(h) for h in header], n=1, cutoff=0.75)
    return next((h for h in header if close and simple(h) == close[0]), None)


_BLANK_LINE = object()
_DELIMITERS = (",", ";", "\t")
_DELIMITER_NAMES = {",": "a comma", ";": "a semicolon", "\t": "a tab"}


def _csv_reader(handle: io.TextIOBase) -> Iterator[list[str]]:
    """Rows of a CSV file separated by commas, or by semicolons or tabs (what
    Excel writes as "CSV" in many European locales, and as "Text"): the
    first of them that splits the header into columns naming partner_id."""
    first = handle.readline()
    delimiter = ","
    for candidate in _DELIMITERS:
        if PARTNER_ID in (h.strip() for h in next(csv.reader([first], delimiter=candidate), [])):
            delimiter = candidate
            break
    return csv.reader(itertools.chain([first], handle) if first else handle, delimiter=delimiter)


def _csv_header(path: Path, row: list[str], columns: Iterable[str] = ()) -> list[str]:
    """The column names of a CSV file's first row, which must name partner_id
    once, and each of ``columns`` at most once."""
    if not row:
        raise DataError(
            f"{path}: "
            + (
                "the file is empty"
                if path.stat().st_size == 0
                else "the first line is blank; it must name the columns"
            )
        )
    header = [h.strip() for h in row]
    _check_header(path, header, columns)
    return header


def _check_header(path: Path, names: list[str], columns: Iterable[str]) -> None:
    """A header (CSV or .xlsx) must name partner_id once, and each of
    ``columns`` at most once."""
    if PARTNER_ID not in names:
        raise DataError(f"{path}: no '{PARTNER_ID}' column (columns: {', '.join(names[:12])})")
    for name in dict.fromkeys((PARTNER_ID, *columns)):
        where = [str(index) for index, found in enumerate(names, 1) if found == name]
        if len(where) > 1:
            raise DataError(
                f"{path}: column '{name}' appears {len(where)} times (columns "
                f"{', '.join(where)}); keep one, so that no value is guessed"
            )


def _overlong(
    path: Path, number: int, values: list[str], header: list[str], rows: Any
) -> SourceRow | None:
    """A row with more values than the header has columns: a value holding the
    delimiter without quotes (``Contoso, Inc``, ``1,234.50``) has shifted the
    values after it into the wrong columns, so the row is not used. Empty
    cells past the last column are harmless (None then)."""
    extra = [value for value in values[len(header) :] if value.strip()]
    if not extra:
        return None
    delimiter = rows.dialect.delimiter
    return SourceRow(
        str(path),
        number,
        {PARTNER_ID: values[header.index(PARTNER_ID)]},
        f"{len(values)} values for {len(header)} columns; a value holding "
        f"{_DELIMITER_NAMES.get(delimiter, repr(delimiter))} must be in double "
        "quotes",
        shorten(extra[0]),
    )


def _unreadable(path: Path, number: int, error: Exception) -> DataError:
    if isinstance(error, UnicodeDecodeError):
        return DataError(
            f"{path}: not UTF-8 text after row {number} ({error.reason}); export the file as UTF-8"
        )
    return DataError(f"{path}: unreadable CSV after row {number} ({error})")


def _picker(where: list[int | None]):
    """A C-speed function taking the wanted cells of a row, as a tuple; None
    when some column is missing (the slow path handles those rows)."""
    if None in where or not where:
        return None
    if len(where) == 1:
        return lambda values: (values[where[0]],)
    return operator.itemgetter(*where)


def _read_csv(
    path: Path, handle: io.TextIOBase, columns: Iterable[str] = ()
) -> Iterator[SourceRow]:
    """Rows are numbered as a spreadsheet shows them: the header is row 1, a
    quoted value spanning several lines still makes one row, and a blank line
    is no record but keeps its row number. Missing cells are None; empty
    cells past the last column name are dropped, and a row with values there
    comes with its problem (see :func:`_overlong`)."""
    rows = _csv_reader(handle)
    number = 1
    try:
        header = next(rows, None)
        if header is None:
            return
        names = _csv_header(path, header, columns)
        width = len(names)
        for number, values in enumerate(rows, start=2):
            if not values:
                continue
            if len(values) < width:
                values += [None] * (width - len(values))
            elif len(values) > width:
                problem = _overlong(path, number, values, names, rows)
                if problem is not None:
                    yield problem
                    continue
            yield SourceRow(str(path), number, dict(zip(names, values)))
    except (UnicodeDecodeError, csv.Error) as error:
        raise _unreadable(path, number, error) from None


def _read_xlsx(path: Path, columns: Iterable[str] = ()) -> Iterator[SourceRow]:
    """The first worksheet; the first row holds the column names."""
    with _first_sheet(path) as rows:
        header = next(rows, None)
        if header is None:
            return
        names = _xlsx_names(header)
        _check_header(path, names, columns)
        for number, cells in enumerate(rows, start=2):
            record = {name: _cell_value(cell) for name, cell in zip(names, cells) if name}
            if any(v not in (None, "") for v in record.values()):
                yield SourceRow(str(path), number, record)


@contextlib.contextmanager
def _first_sheet(path: Path) -> Iterator[Iterator[tuple]]:
    """The rows of a workbook's first worksheet, the workbook closed after."""
    import openpyxl  # imported here: only Excel users pay for it

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises many types for damaged files
        raise DataError(f"{path}: not a readable .xlsx workbook ({type(error).__name__})") from None
    try:
        yield book.worksheets[0].iter_rows()
    finally:
        book.close()


def _xlsx_names(header: Iterable[Any]) -> list[str]:
    return [str(c.value).strip() if c.value is not None else "" for c in header]


def _cell_value(cell: Any) -> Any:
    # A cell shown as 12% holds 0.12; say so, since bare numbers mean points.
    value = cell.value
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and "%" in (cell.number_format or "")
    ):
        return f"{value * 100!r}%"
    return value


def _read_jsonl(path: Path, handle: io.TextIOBase) -> Iterator[SourceRow]:
    """A line that is not a JSON object is a bad row, like any other: it comes
    with its problem, to be set aside, and reading goes on."""
    try:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                where = (
                    "at the end of the line"
                    if error.pos >= len(text)
                    else f"at character {error.pos + 1}"
                )
                yield SourceRow(
                    str(path), number, {}, f"not valid JSON ({error.msg}, {where})", shorten(text)
                )
                continue
            if not isinstance(record, dict):
                yield SourceRow(
                    str(path),
                    number,
                    {},
                    "not a JSON object ({...}); each line must hold one partner's fields",
                    shorten(text),
                )
                continue
            yield SourceRow(str(path), number, record)
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: not UTF-8 text ({error.reason}); export the file as UTF-8"
        ) from None


def find_partner(
    ruleset: RuleSet, roster: str | Path, performance: str | Path | None, partner_id: str
) -> tuple[Partner, list]:
    """One partner from a roster and its history, by partner_id.

    Returns the partner and the history rows set aside (as a run would).
    """
    found = None
    for row in read_rows(roster, ruleset.fields):
        if clean_partner_id(row.record.get(PARTNER_ID)) == partner_id:
            found = row
            break
    if found is None:
        raise UsageError(f"partner '{partner_id}' is not in {roster}")
    if found.problem:
        raise DataError(f"{found.file}:{found.row}: partner {shorten(partner_id)}: {found.problem}")
    values, problems = field_values(ruleset, found.record)
    if problems:
        raise DataError(
            f"{found.file}:{found.row}: partner {shorten(partner_id)}: "
            + "; ".join(map(str, problems))
        )
    rows, unusable = [], []
    if performance is not None:  # read by columns: C speed for CSV
        for number, cells in read_columns(
            performance, [PARTNER_ID, QUARTER, *ruleset.figures], unusable.append
        ):
            if clean_partner_id(cells[0]) == partner_id:
                rows.append((number, cells[1], cells[2:]))
    rejects = [
        unreadable_row(r)
        for r in unusable
        if clean_partner_id(r.record.get(PARTNER_ID)) == partner_id
    ]
    history_problems: list[FieldProblem] = []
    history = checked_history(ruleset, rows, tuple(ruleset.figures), history_problems)
    rejects += [Reject.of(str(performance), 0, partner_id, p) for p in history_problems]
    return Partner(partner_id, values, history), rejects


def partner_from_json_file(ruleset: RuleSet, path: str | Path) -> Partner:
    """A partner from a JSON file: its fields, plus "history": [{quarter, ...}]."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise UsageError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a valid JSON file ({error})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected one JSON object with the partner's fields")
    history = data.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise DataError(f"{path}: 'history' must be a list of objects with a quarter")
    try:
        return partner_from_record(ruleset, data, history)
    except DataError as error:
        raise DataError(f"{path}: {error}") from None
