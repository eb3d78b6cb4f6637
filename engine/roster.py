"""Reading partner rosters and performance history from CRM exports.

Supports CSV (UTF-8, with or without the byte-order mark Excel writes,
quoted fields with commas and newlines) and JSON Lines. Each record comes
with its row number in the source file so problems can point at it.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import DataError, UsageError
from .model import RuleSet
from .partners import PARTNER_ID, Partner, partner_from_record

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True)
class SourceRow:
    file: str
    row: int  # 1-based line of the record (the CSV header is row 1)
    record: Mapping[str, Any]


def read_rows(path: str | Path) -> Iterator[SourceRow]:
    """Yield the records of a CSV or JSON Lines file, with their row numbers."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UsageError(f"{path}: unsupported file type '{path.suffix}'; use .csv or .jsonl")
    if not path.is_file():
        raise UsageError(f"{path}: file not found")
    if kind == "csv":
        yield from _read_csv(path)
    else:
        yield from _read_jsonl(path)


def _read_csv(path: Path) -> Iterator[SourceRow]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            return
        headers = [h.strip() for h in reader.fieldnames]
        if PARTNER_ID not in headers:
            raise DataError(f"{path}: no '{PARTNER_ID}' column (columns: {', '.join(headers[:12])})")
        reader.fieldnames = headers
        try:
            for record in reader:
                yield SourceRow(str(path), reader.line_num, record)
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 text near line {reader.line_num + 1} "
                            f"({error.reason}); export the file as UTF-8") from None
        except csv.Error as error:
            raise DataError(f"{path}:{reader.line_num}: unreadable CSV ({error})") from None


def _read_jsonl(path: Path) -> Iterator[SourceRow]:
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{number}: each line must be a JSON object")
            yield SourceRow(str(path), number, record)


def find_partner(ruleset: RuleSet, roster: str | Path, performance: str | Path | None,
                 partner_id: str) -> Partner:
    """One partner from a roster and its history, by partner_id."""
    found = None
    for row in read_rows(roster):
        if str(row.record.get(PARTNER_ID, "")).strip() == partner_id:
            found = row
            break
    if found is None:
        raise UsageError(f"partner '{partner_id}' is not in {roster}")
    history = []
    if performance is not None:
        history = [r.record for r in read_rows(performance)
                   if str(r.record.get(PARTNER_ID, "")).strip() == partner_id]
    try:
        return partner_from_record(ruleset, found.record, history)
    except DataError as error:
        raise DataError(f"{found.file}:{found.row}: {error}") from None


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
