"""Reading partner rosters and performance history from CRM exports.

Supports CSV (UTF-8, with or without the byte-order mark Excel writes,
quoted fields with commas and newlines; separated by commas, semicolons or
tabs), JSON Lines, and Excel ``.xlsx``. Each record comes with its row
number in the source file so problems can point at it; a row that cannot be
read (a JSON line that is no object, a CSV row with values past the last
column) comes with its problem instead, to be set aside like any bad row.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import difflib
import functools
import hashlib
import io
import itertools
import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

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
from engine.ruleset.value_types import NUMERIC

FORMATS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".xlsx": "xlsx",
    ".parquet": "parquet",
}
PARQUET_BATCH = 10_000  # rows of a Parquet file converted at a time
MAX_CELL = 16 * 1024 * 1024  # characters of one CSV cell; a longer one rejects its row
MAX_JSON_DIGITS = 40  # digits of a JSON integer; a longer one rejects its row
csv.field_size_limit(MAX_CELL)


@dataclass(frozen=True)
class TextEncoding:
    """How a CSV file's bytes are read as text (see :func:`text_encoding`)."""

    codec: str  # the Python codec
    name: str  # what the run's summary says
    detected: bool = False  # not UTF-8: found by looking at the bytes
    # Some bytes do not decode: they are kept (as lone surrogates) and each
    # row holding one is set aside, instead of the whole file stopping.
    checked: bool = False

    def open(self, binary: io.BufferedReader) -> io.TextIOWrapper:
        errors = "surrogateescape" if self.checked else "strict"
        return io.TextIOWrapper(binary, encoding=self.codec, errors=errors, newline="")


_UTF8 = TextEncoding("utf-8-sig", "utf-8")
_UTF8_MULTIBYTE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)
_encodings: dict[tuple, TextEncoding] = {}


def text_encoding(path: Path) -> TextEncoding:
    """What a CSV export really is: UTF-8 (with or without the byte-order
    mark), UTF-16 (Excel's "Unicode text", with its mark), or, when the
    bytes are not UTF-8 and hold no UTF-8 character at all, Windows-1252
    (Excel's "CSV" on Windows in Western Europe and the Americas; latin-1
    is the same for the characters CRM exports hold). A UTF-8 file with a
    few bytes that are not (a damaged row) stays UTF-8, and those rows are
    set aside. Found once per file version."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    found = _encodings.get(key)
    if found is None:
        found = _encodings[key] = _detect_encoding(path)
    return found


def declare_encoding(path: Path, codec: str) -> None:
    """Read this version of ``path`` in ``codec`` (``--encoding``) instead of
    the one :func:`text_encoding` would find; bytes that do not decode still
    reject their rows only."""
    try:
        name = codecs.lookup(codec).name
    except LookupError:
        raise UsageError(
            f"unknown encoding '{codec}'; use utf-8, utf-16, cp1252 or latin-1, for example"
        ) from None
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    python_codec = "utf-8-sig" if name == "utf-8" else name
    _encodings[key] = TextEncoding(python_codec, name, detected=False, checked=True)


def _detect_encoding(path: Path) -> TextEncoding:
    with path.open("rb") as binary:
        head = binary.read(4)
        if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            return TextEncoding("utf-16", "utf-16", detected=True, checked=True)
        binary.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            for block in iter(lambda: binary.read(1 << 20), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
            return _UTF8
        except UnicodeDecodeError:
            pass
        binary.seek(0)
        for block in iter(lambda: binary.read(1 << 20), b""):
            if _UTF8_MULTIBYTE.search(block):
                return TextEncoding("utf-8-sig", "utf-8", checked=True)
    return TextEncoding("cp1252", "cp1252", detected=True, checked=True)


def _bad_bytes(values: Iterable[str | None], encoding: TextEncoding) -> str | None:
    """Why a row read with ``encoding.checked`` cannot be used: a byte that is
    not text in the file's encoding; None when every cell decoded."""
    joined = "".join(v for v in values if v)
    if joined.isascii():
        return None
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError as error:
        byte = ord(joined[error.start]) - 0xDC00
        return (
            f"byte 0x{byte:02X} is not {encoding.name} text (the rest of the file is); "
            "fix this row, or export the file again as UTF-8"
        )
    return None


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


class ColumnBatch(NamedTuple):
    """Consecutive rows of a Parquet file, as columns: a pyarrow RecordBatch
    whose columns are named ``names`` (as the rules name them), its first
    row numbered ``first_row``. Rows whose every value is empty are no rows,
    as blank lines of a CSV file are not (they keep their numbers)."""

    file: str
    first_row: int
    names: tuple[str, ...]
    batch: Any

    def column(self, name: str) -> list:
        """One column's values (None for each row where it is absent)."""
        if name not in self.names:
            return [None] * self.batch.num_rows
        return _python_values(self.batch.column(self.names.index(name)))

    def is_empty(self, index: int) -> bool:
        """Whether every value of the batch's row ``index`` is empty."""
        return _empty(tuple(_as_text(column[index].as_py()) for column in self.batch.columns))

    def plain_text(self, name: str, longest: int) -> list[bool]:
        """Whether each row's value in column ``name`` is text of 1 to
        ``longest`` printable ASCII characters without a space at either end:
        text that reads as itself, found for the whole column at once."""
        if name not in self.names:
            return [False] * self.batch.num_rows
        pyarrow, pc = _arrow()
        column = self.batch.column(self.names.index(name))
        if not (pyarrow.types.is_string(column.type) or pyarrow.types.is_large_string(column.type)):
            return [False] * self.batch.num_rows
        length = pc.utf8_length(column)
        trimmed = pc.equal(pc.utf8_trim_whitespace(column), column)
        plain = pc.and_(
            pc.and_(pc.ascii_is_printable(column), trimmed),
            pc.and_(pc.greater_equal(length, 1), pc.less_equal(length, longest)),
        )
        return pc.fill_null(plain, False).to_pylist()

    def slice(self, start: int, length: int) -> ColumnBatch:
        """Rows ``start`` to ``start + length`` of the batch (not copied)."""
        rows = self.batch.slice(start, length)
        return self._replace(first_row=self.first_row + start, batch=rows)

    def __reduce__(self):
        # As Arrow's IPC stream, which holds a slice's rows only (pickling
        # the batch itself would copy all the buffers a slice shares).
        pyarrow, _ = _arrow()
        sink = pyarrow.BufferOutputStream()
        with pyarrow.ipc.new_stream(sink, self.batch.schema) as stream:
            stream.write_batch(self.batch)
        return _column_batch, (self.file, self.first_row, self.names, sink.getvalue())

    def rows(self) -> Iterator[tuple]:
        """Each row's values, in the order of ``names``."""
        return zip(*(_python_values(column) for column in self.batch.columns))

    def records(self) -> Iterator[tuple[int, dict]]:
        """(row number, record) of each row that is not empty."""
        names = self.names
        for number, values in enumerate(self.rows(), self.first_row):
            if not _empty(values):
                yield number, dict(zip(names, values))


def _python_values(column: Any) -> list:
    """A Parquet column's values as Python values. Text stored as bytes (a
    binary column without its UTF-8 mark, as some warehouses write text) is
    read as the text it is; bytes that are not UTF-8 stay bytes, which no
    field accepts (engine.ruleset.value_types.parse_value says why), never
    their Python form b'...'."""
    values = column.to_pylist()
    return [_as_text(v) for v in values] if _holds_bytes(column.type) else values


def _holds_bytes(kind: Any) -> bool:
    pyarrow, _ = _arrow()
    types = pyarrow.types
    if types.is_binary(kind) or types.is_large_binary(kind) or types.is_fixed_size_binary(kind):
        return True
    if types.is_list(kind) or types.is_large_list(kind) or types.is_fixed_size_list(kind):
        return _holds_bytes(kind.value_type)
    if types.is_dictionary(kind):
        return _holds_bytes(kind.value_type)
    return False


def _as_text(value: Any) -> Any:
    if value.__class__ is bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    if value.__class__ is list:
        return [_as_text(v) for v in value]
    return value


def _empty(values: tuple) -> bool:
    """Whether a row's values are all missing or empty text (no row)."""
    return values.count(None) + values.count("") == len(values)


def _column_batch(file: str, first_row: int, names: tuple[str, ...], stream: Any) -> ColumnBatch:
    """A ColumnBatch from its pickle (see ``ColumnBatch.__reduce__``)."""
    pyarrow, _ = _arrow()
    return ColumnBatch(file, first_row, names, pyarrow.ipc.open_stream(stream).read_next_batch())


def unreadable_row(row: SourceRow) -> Reject:
    """The reject for a row that could not be read (see
    :attr:`SourceRow.problem`): its value is the row's text, or
    the value out of place."""
    return Reject(
        row.file, row.row, clean_partner_id(row.record.get(PARTNER_ID)), "", row.text, row.problem
    )


class RowReader:
    """The records of a CSV, JSON Lines, .xlsx or Parquet file, with their
    row numbers. A folder of Parquet files is one partitioned dataset: its
    files (``*.parquet``, in its subfolders too) in the order of their paths,
    its rows numbered across them in that order as the rows of one CSV file
    with a header would be (the first row is row 2), so that a roster
    exported either way has the same row numbers.

    ``bytes_read`` tells how far into the file reading has got, for progress.
    ``columns`` (the fields the rules read: their names, or the rule set's
    field declarations, whose ``column:`` and ``aliases:`` then count) must
    not repeat in the header, nor may partner_id: which of two values to use
    would be a guess. Headers are matched to them as :func:`canonical_header`
    says.
    """

    def __init__(self, path: str | Path, columns: Iterable[str] | Mapping[str, Any] = ()):
        self.path = Path(path)
        self.columns = column_names(columns)
        self.numeric = numeric_columns(columns)
        self.kind = FORMATS.get(self.path.suffix.lower())
        if self.kind is None and self.path.is_dir():
            self.kind = "parquet" if parquet_files(self.path) else None
        if self.kind is None:
            raise UsageError(
                f"{self.path}: unsupported file type '{self.path.suffix}'; use .csv, "
                ".jsonl, .xlsx or .parquet (or a folder of .parquet files)"
            )
        if self.kind == "parquet" and self.path.is_dir():
            self.size = sum(f.stat().st_size for f in parquet_files(self.path))
        elif not self.path.is_file():
            raise UsageError(f"{self.path}: file not found")
        else:
            self.size = self.path.stat().st_size
        self._binary: io.BufferedReader | None = None
        self._parquet_read = 0  # bytes of the Parquet files read so far

    @property
    def bytes_read(self) -> int:
        if self.kind == "parquet":
            return self._parquet_read
        try:
            return self._binary.tell() if self._binary and not self._binary.closed else 0
        except (OSError, ValueError):
            return 0

    def __iter__(self) -> Iterator[SourceRow]:
        if self.kind == "xlsx":
            yield from _read_xlsx(self.path, self.columns)
            return
        if self.kind == "parquet":
            yield from self._read_parquet()
            return
        with self.path.open("rb") as binary:
            self._binary = binary
            if self.kind == "csv":
                encoding = self.encoding
                with encoding.open(binary) as text:
                    yield from _read_csv(self.path, text, self.columns, encoding, self.numeric)
            else:
                yield from _read_jsonl(self.path, binary)

    def _read_parquet(self) -> Iterator[SourceRow]:
        """The rows of a Parquet file or dataset as records, with the values
        Parquet typed (numbers, dates, text, yes/no, lists), checked as any
        roster's are."""
        for batch in self.parquet_batches(PARQUET_BATCH):
            for number, record in batch.records():
                yield SourceRow(batch.file, number, record)

    def parquet_batches(self, size: int, only: Iterable[str] = ()) -> Iterator[ColumnBatch]:
        """The rows of a Parquet file or dataset in batches of at most
        ``size`` rows, as columns (memory stays flat): a run sends them to
        its workers so, and they make each row's record, not the main
        process. ``only``: read just these columns (as the rules name
        them), for a look at the ids; emptiness of rows is then not known."""
        number = 2  # as in a CSV file with its header: the first row is row 2
        only = frozenset(only)
        for path in parquet_files(self.path):
            names = canonical_header(_parquet_schema(path), self.columns)
            _check_header(path, names, self.columns)
            kept = [i for i, name in enumerate(names) if name and (not only or name in only)]
            kept_names = tuple(names[i] for i in kept)
            file = _parquet_file(path)
            written = file.schema_arrow.names
            by_name = len(set(written)) == len(written)  # else all are read, then picked
            # One thread: the workers have the other cores, and each thread
            # would keep memory of its own.
            batches = file.iter_batches(
                batch_size=size,
                columns=[written[i] for i in kept] if by_name else None,
                use_threads=False,
            )
            for batch in batches:
                yield ColumnBatch(
                    str(path), number, kept_names, batch if by_name else batch.select(kept)
                )
                number += batch.num_rows
            self._parquet_read += path.stat().st_size

    @property
    def encoding(self) -> TextEncoding:
        """How the file's bytes are read as text (JSON Lines, .xlsx and
        Parquet: UTF-8)."""
        return text_encoding(self.path) if self.kind == "csv" else _UTF8


def read_rows(path: str | Path, columns: Iterable[str] = ()) -> Iterator[SourceRow]:
    """Yield the records of a CSV, JSON Lines, or .xlsx file, with their row
    numbers (see :class:`RowReader` for ``columns``)."""
    return iter(RowReader(path, columns))


def read_columns(
    path: str | Path,
    columns: list[str],
    unreadable: Callable[[SourceRow], None] | None = None,
    aliases: Mapping[str, Any] | None = None,
) -> Iterator[tuple[int, tuple]]:
    """(row number, (value of each column)) for every record: a faster path
    than :func:`read_rows` for big CSV files when only some columns matter.
    A column the file lacks, or a row too short to have it, gives None. Rows
    that cannot be read (see :attr:`SourceRow.problem`) go to ``unreadable``
    instead, when given. ``aliases``: the declarations of (some of) the
    columns, whose ``column:`` and ``aliases:`` count (see :class:`RowReader`)."""
    reader = RowReader(path, {name: (aliases or {}).get(name) for name in columns})
    if reader.kind == "parquet":  # the columns of each batch, not a record per row
        for batch in reader.parquet_batches(PARQUET_BATCH):
            for index, values in enumerate(zip(*(batch.column(c) for c in columns))):
                if _empty(values) and batch.is_empty(index):
                    continue  # no row (see ColumnBatch)
                yield batch.first_row + index, values
        return
    if reader.kind != "csv":
        for row in reader:
            if row.problem:
                if unreadable is not None:
                    unreadable(row)
                continue
            yield row.row, tuple(row.record.get(c) for c in columns)
        return
    encoding = reader.encoding
    with reader.path.open("rb") as binary, encoding.open(binary) as text:
        rows = _csv_reader(text)
        number = 1
        try:
            header = _csv_header(reader.path, next(rows, []), reader.columns)
            where = [header.index(c) if c in header else None for c in columns]
            width = max((i for i in where if i is not None), default=-1) + 1
            size = len(header)
            pick = _picker(where)
            commas = (
                [i for i, n in enumerate(header) if n in reader.numeric]
                if rows.dialect.delimiter == ";"
                else []
            )
            for number, values in enumerate(_csv_records(rows), start=2):
                if commas and values.__class__ is list:
                    problem = _with_decimal_commas(reader.path, number, values, header, commas)
                    if problem is not None:
                        if unreadable is not None:
                            unreadable(problem)
                        continue
                if values.__class__ is not list or (
                    encoding.checked and _bad_bytes(values, encoding)
                ):
                    if unreadable is not None:
                        unreadable(
                            _unreadable_record(reader.path, number, values, header, encoding)
                        )
                    continue
                if len(values) > size:
                    if unreadable is not None:
                        unreadable(_overlong(reader.path, number, values, header, rows))
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
    with reader.path.open("rb") as binary, reader.encoding.open(binary) as text:
        rows = _csv_reader(text)
        number = 2
        try:
            column = _csv_header(reader.path, next(rows, []), reader.columns).index(PARTNER_ID)
            cells = map(
                lambda values: (
                    values[column]
                    if len(values) > column
                    # noqa: E731
                    else (None if values else _BLANK_LINE)
                ),
                _csv_records(rows, []),
            )
            for value, group in itertools.groupby(cells):
                count = len(list(group))
                if value is not _BLANK_LINE:  # blank lines are no records, but are numbered
                    yield number, value, count
                number += count
        except (UnicodeDecodeError, csv.Error) as error:
            raise _unreadable(reader.path, number, error) from None


def file_fingerprint(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256 (for a Parquet dataset,
    of its files' paths and bytes, in order): which input a run read."""
    digest = hashlib.sha256()
    for part in parquet_files(path) if path.is_dir() else [path]:
        if part != path:
            digest.update(str(part.relative_to(path)).encode() + b"\0")
        with part.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def parquet_files(path: Path) -> list[Path]:
    """The files of a Parquet dataset (a folder), in the order of their
    paths; a Parquet file is a dataset of one."""
    if not path.is_dir():
        return [path]
    return sorted(p for p in path.rglob("*.parquet") if p.is_file())


@functools.cache
def _arrow():
    """pyarrow and its compute functions, imported once (only Parquet users
    pay for them)."""
    import pyarrow
    import pyarrow.compute
    import pyarrow.ipc

    return pyarrow, pyarrow.compute


def _parquet_file(path: Path):
    try:
        import pyarrow.parquet as pq  # imported here: only Parquet users pay for it
    except ImportError:
        raise UsageError(
            f"{path}: reading Parquet needs pyarrow, an optional extra: pip install "
            "'partner-eligibility[cluster]' (or, in a checkout, pip install -e '.[cluster]')"
        ) from None
    try:
        return pq.ParquetFile(path)
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for damaged files
        raise DataError(f"{path}: not a readable Parquet file ({error})") from None


def _parquet_schema(path: Path) -> list[str]:
    return [str(name).strip() for name in _parquet_file(path).schema_arrow.names]


def check_columns(
    path: str | Path,
    required: Iterable[str] | Mapping[str, Any],
    what: str,
) -> None:
    """Stop before anything is decided when a CSV or .xlsx file lacks a
    column the rules read (``required``): without it every row would be
    decided on a default, or rejected one by one. The error names each
    missing column and the header closest to it. JSON Lines files have no
    header; their records are checked one by one. ``required`` may be the
    rule set's declarations: their other names count, and a field that may be
    absent (``may_be_absent: true``) is not required."""
    reader = RowReader(path, required)
    if reader.kind == "jsonl":
        return
    header = _header_of(reader)
    declared = required if isinstance(required, Mapping) else {}
    missing = [
        name
        for name in dict.fromkeys(required)
        if name not in header and not getattr(declared.get(name), "may_be_absent", False)
    ]
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
    """The column names of a CSV, .xlsx or Parquet file (partner_id
    checked); the files of a Parquet dataset must all have the same ones."""
    if reader.kind == "parquet":
        files = parquet_files(reader.path)
        first = _parquet_schema(files[0])
        for other in files[1:]:
            if _parquet_schema(other) != first:
                raise DataError(
                    f"{other}: its columns differ from those of {files[0]}; the files of a "
                    "Parquet dataset must have the same columns"
                )
        names = canonical_header(first, reader.columns)
        _check_header(files[0], names, reader.columns)
        return names
    if reader.kind == "xlsx":
        with _first_sheet(reader.path) as rows:
            names = canonical_header(_xlsx_names(next(rows, ())), reader.columns)
        _check_header(reader.path, names, reader.columns)
        return names
    with reader.path.open("rb") as binary, reader.encoding.open(binary) as text:
        try:
            return _csv_header(reader.path, next(_csv_reader(text), []), reader.columns)
        except (UnicodeDecodeError, csv.Error) as error:
            raise _unreadable(reader.path, 1, error) from None


def _closest_header(name: str, header: list[str]) -> str | None:
    """The header a missing column was probably meant to be: a close spelling."""
    close = difflib.get_close_matches(_simple(name), [_simple(h) for h in header], n=1, cutoff=0.75)
    return next((h for h in header if close and _simple(h) == close[0]), None)


_SEPARATORS = re.compile(r"[\s_\-]+")


def _simple(text: str) -> str:
    """A header as it is matched: case, and spaces, underscores and hyphens
    between words, do not count ("Joined On", "JOINED-ON", "joined__on")."""
    return _SEPARATORS.sub("_", text.strip().casefold()).strip("_")


def column_names(columns: Iterable[str] | Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Each column a reader looks for (partner_id first), with the other
    names its declaration gives it (``column:``, ``aliases:``)."""
    names: dict[str, tuple[str, ...]] = {PARTNER_ID: ()}
    declared = columns if isinstance(columns, Mapping) else {}
    for name in columns:
        names[name] = tuple(getattr(declared.get(name), "columns", ()) or ())
    return names


def numeric_columns(columns: Iterable[str] | Mapping[str, Any]) -> frozenset[str]:
    """The columns declared numbers, money or percentages (read with a decimal
    comma in files separated by semicolons)."""
    if not isinstance(columns, Mapping):
        return frozenset()
    return frozenset(
        name
        for name, declared in columns.items()
        if getattr(getattr(declared, "type", None), "kind", None) in NUMERIC
    )


_THOUSANDS_POINT = re.compile(r"(?<=\d)[. \u00a0\u202f](?=\d{3}(?!\d))")
_GROUPED_BY_POINTS = re.compile(r"\D*[1-9]\d{0,2}(?:\.\d{3})+\D*")  # not 0.005


def decimal_comma(text: str) -> str:
    """A number from a file separated by semicolons, where Excel writes a
    decimal comma and a point (or space) between thousands (``1.234,50``,
    ``2,6 %``), in the form the value parsers read (``1234.50``, ``2.6 %``).
    ``1.234`` there is ambiguous (1234, or one and a bit?): ValueError."""
    value = text.strip()
    if "," in value:
        whole, _, fraction = value.partition(",")
        whole = _THOUSANDS_POINT.sub("", whole)
        if "," in fraction or "." in fraction or "." in whole:
            raise ValueError(
                f"'{shorten(value)}' is not a number as this file writes them (a decimal "
                "comma, and points or spaces between thousands: 1.234,50)"
            )
        return f"{whole}.{fraction}"
    if _GROUPED_BY_POINTS.fullmatch(value):
        raise ValueError(
            f"'{shorten(value)}' is ambiguous in a file separated by semicolons, whose "
            f"numbers have decimal commas: is it {value.replace('.', '')} or "
            f"{value.replace('.', ',', 1) if value.count('.') == 1 else value}? Write it "
            "without the point, or with a decimal comma"
        )
    return text


def _with_decimal_commas(
    path: Path, number: int, values: list, names: list[str], where: list[int]
) -> SourceRow | None:
    """Turn a semicolon file's numeric cells (at ``where``) into the parsers'
    form, in place; a row with one that cannot be read comes as its problem."""
    for index in where:
        cell = values[index] if index < len(values) else None
        if cell and ("," in cell or "." in cell):
            try:
                values[index] = decimal_comma(cell)
            except ValueError as error:
                partner = values[names.index(PARTNER_ID)] if PARTNER_ID in names else None
                return SourceRow(
                    str(path), number, {PARTNER_ID: partner}, f"{names[index]}: {error}", cell
                )
    return None


def canonical_header(header: list[str], columns: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Each header as the rules name its column: the name itself, the same
    but for case, spaces, underscores and hyphens ("Joined On" is joined_on),
    or one of the names the field declares (``column:``, ``aliases:``,
    matched the same way). Other headers stay as written."""
    lookup: dict[str, str] = {}
    for name in (*columns, QUARTER):
        for other in (name, *columns.get(name, ())):
            lookup.setdefault(_simple(other), name)
    return [h if h in columns else lookup.get(_simple(h), h) for h in header]


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
        if PARTNER_ID in (_simple(h) for h in next(csv.reader([first], delimiter=candidate), [])):
            delimiter = candidate
            break
    return csv.reader(itertools.chain([first], handle) if first else handle, delimiter=delimiter)


def _csv_header(
    path: Path, row: list[str], columns: Mapping[str, tuple[str, ...]] | None = None
) -> list[str]:
    """The column names of a CSV file's first row, as the rules name them
    (:func:`canonical_header`), which must name partner_id once, and each of
    ``columns`` at most once."""
    if not row:
        raise DataError(
            f"{path}: "
            + (
                "the file is empty"
                if path.stat().st_size == 0
                else "the first line is blank; it must name the columns"
            )
        )
    columns = columns or column_names(())
    header = canonical_header([h.strip() for h in row], columns)
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
) -> SourceRow:
    """A row with more values than the header has columns: a value holding the
    delimiter without quotes (``Contoso, Inc``, ``1,234.50``) has shifted the
    values after it into the wrong columns, so the row is not used, whatever
    the cells past the last column hold (an empty one only means the row's
    last value was empty). The reason points at the likely culprit."""
    delimiter = rows.dialect.delimiter
    name = _DELIMITER_NAMES.get(delimiter, repr(delimiter))
    extra = [value for value in values[len(header) :] if value.strip()]
    culprit = _split_value(values, delimiter)
    return SourceRow(
        str(path),
        number,
        {PARTNER_ID: values[header.index(PARTNER_ID)]},
        f"{len(values)} values for {len(header)} columns: "
        + (
            f"an unquoted {name.split()[-1]} in '{shorten(culprit)}'? A value"
            if culprit
            else "more values than columns; a value"
        )
        + f" holding {name} must be in double quotes",
        shorten(culprit or (extra[0] if extra else values[-1])),
    )


_THOUSANDS = re.compile(r"[-+(]?[$€£¥]?\d{1,3}\Z")


def _split_value(values: list[str], delimiter: str) -> str:
    """The value most likely split in two by an unquoted delimiter: a number
    with a thousands separator (``1,200``), or a name with a comma
    (``Contoso, Inc``); empty when nothing looks so."""
    for before, after in itertools.pairwise(values):
        if not before or not after:
            continue
        if _THOUSANDS.match(before.strip()) and len(after) >= 3 and after[:3].isdigit():
            return f"{before}{delimiter}{after}"
        if after[0] == " " and not before[-1:].isspace() and not before.strip().isdigit():
            return f"{before}{delimiter}{after}"
    return ""


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


def _csv_records(rows: Iterator[list[str]], bad: Any = None) -> Iterator[Any]:
    """The records of a CSV reader; one that cannot be read (a cell longer
    than MAX_CELL characters, a stray quote) comes as its csv.Error (or as
    ``bad``, given), and reading goes on with the next."""
    while True:
        try:
            yield next(rows)
        except StopIteration:
            return
        except csv.Error as error:
            yield error if bad is None else bad


def _unreadable_record(
    path: Path, number: int, values: Any, header: list[str], encoding: TextEncoding
) -> SourceRow:
    """A CSV record set aside as read: unparsable (``values`` is the csv.Error),
    or holding bytes that are not text (see :func:`_bad_bytes`)."""
    if values.__class__ is not list:
        message = str(values)
        if "field larger than field limit" in message:
            message = (
                f"a value is longer than {MAX_CELL:,} characters (the most a cell may "
                "hold); a quote left open may have joined rows into it"
            )
        return SourceRow(str(path), number, {}, f"unreadable CSV row ({message})")
    record = dict(zip(header, values))
    text = next((v for v in values if v and not v.isascii() and _bad_bytes([v], encoding)), "")
    return SourceRow(
        str(path),
        number,
        {PARTNER_ID: record.get(PARTNER_ID)}
        if not _bad_bytes([record.get(PARTNER_ID)], encoding)
        else {},
        _bad_bytes(values, encoding) or "",
        shorten(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")),
    )


def _read_csv(
    path: Path,
    handle: io.TextIOBase,
    columns: Mapping[str, tuple[str, ...]],
    encoding: TextEncoding = _UTF8,
    numeric: frozenset[str] = frozenset(),
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
        checked = encoding.checked
        commas = (
            [i for i, n in enumerate(names) if n in numeric]
            if rows.dialect.delimiter == ";"
            else []
        )
        for number, values in enumerate(_csv_records(rows), start=2):
            if values.__class__ is not list or (checked and _bad_bytes(values, encoding)):
                yield _unreadable_record(path, number, values, names, encoding)
                continue
            if not values:
                continue
            if commas:
                problem = _with_decimal_commas(path, number, values, names, commas)
                if problem is not None:
                    yield problem
                    continue
            if len(values) < width:
                values += [None] * (width - len(values))
            elif len(values) > width:
                yield _overlong(path, number, values, names, rows)
                continue
            yield SourceRow(str(path), number, dict(zip(names, values)))
    except (UnicodeDecodeError, csv.Error) as error:
        raise _unreadable(path, number, error) from None


def _read_xlsx(path: Path, columns: Mapping[str, tuple[str, ...]]) -> Iterator[SourceRow]:
    """The first worksheet; the first row holds the column names."""
    with _first_sheet(path) as rows:
        header = next(rows, None)
        if header is None:
            return
        names = canonical_header(_xlsx_names(header), columns)
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


def _read_jsonl(path: Path, binary: io.BufferedReader) -> Iterator[SourceRow]:
    """A line that cannot be used (not UTF-8, not JSON, no object, a number
    out of range, nested too deep) is a bad row, like any other: it comes
    with its problem, to be set aside, and reading goes on."""
    for number, raw in enumerate(binary, start=1):
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as error:
            yield SourceRow(
                str(path),
                number,
                {},
                f"byte 0x{raw[error.start]:02X} is not UTF-8 text; JSON Lines files are UTF-8",
                shorten(raw.decode("utf-8", "replace").strip()),
            )
            continue
        if not text:
            continue
        problem, record = _json_record(text)
        if problem:
            yield SourceRow(str(path), number, {}, problem, shorten(text))
        else:
            yield SourceRow(str(path), number, record)


class _NotANumber(ValueError):
    pass


def _json_constant(name: str) -> float:
    raise _NotANumber(f"{name} is not a number a partner can have")


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotANumber(f"{text} is too large a number")
    return value


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_DIGITS:
        raise _NotANumber(f"a {len(text.lstrip('-'))}-digit number is too large")
    return int(text)


def _json_record(text: str) -> tuple[str, dict]:
    """(problem, record) for one JSON line: problem is empty when it is usable."""
    try:
        record = json.loads(
            text, parse_constant=_json_constant, parse_float=_json_float, parse_int=_json_int
        )
    except _NotANumber as error:
        return f"{error}; write the value as a plain number, or leave it empty", {}
    except json.JSONDecodeError as error:
        where = (
            "at the end of the line" if error.pos >= len(text) else f"at character {error.pos + 1}"
        )
        return f"not valid JSON ({error.msg}, {where})", {}
    except RecursionError:
        return "not usable JSON (nested too deeply); each line must hold one partner's fields", {}
    if not isinstance(record, dict):
        return "not a JSON object ({...}); each line must hold one partner's fields", {}
    return "", record


def find_partner(
    ruleset: RuleSet, roster: str | Path, performance: str | Path | None, partner_id: str
) -> tuple[Partner, list]:
    """One partner from a roster and its history, by partner_id.

    Returns the partner and the history rows set aside (as a run would).
    """
    check_columns(roster, ruleset.fields, "roster")
    found = None
    folded: list[str] = []  # ids differing only by case, for the message
    for row in read_rows(roster, ruleset.fields):
        candidate = clean_partner_id(row.record.get(PARTNER_ID))
        if candidate == partner_id:
            found = row
            break
        if isinstance(candidate, str) and candidate.casefold() == partner_id.casefold():
            folded.append(candidate)
    if found is None:
        hint = f"; did you mean '{folded[0]}'? (ids are case-sensitive)" if folded else ""
        raise UsageError(f"partner '{partner_id}' is not in {roster}{hint}")
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


def _known_keys(path: Path, data: Mapping[str, Any], known: tuple[str, ...], what: str) -> None:
    """A key the rules do not read is an error (a misspelt field would
    otherwise be decided on its default, silently)."""
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(known)})"
            raise DataError(f"{path}: unknown key '{key}' in {what}{hint}")


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
    _known_keys(path, data, (PARTNER_ID, *ruleset.fields, "history"), "the partner")
    for number, row in enumerate(history, 1):
        _known_keys(path, row, (QUARTER, *ruleset.figures), f"history entry {number}")
    try:
        return partner_from_record(ruleset, data, history)
    except DataError as error:
        raise DataError(f"{path}: {error}") from None
