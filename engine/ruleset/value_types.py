"""The types a field can have, and how raw values become typed values.

Internal representations: text and one-of values are ``str``; integers are
``int``; numbers and money are ``float``; percentages are fractions
(``12%`` is ``0.12``); dates are ``datetime.date``; yes/no values are ``bool``;
lists of text are tuples of ``str``. ``None`` means "missing".
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

TEXT, INTEGER, NUMBER, MONEY, PERCENT, DATE, BOOL, LIST, CHOICE = (
    "text",
    "integer",
    "number",
    "money",
    "percent",
    "date",
    "yes/no",
    "list of text",
    "one of",
)
TYPE_NAMES = (TEXT, INTEGER, NUMBER, MONEY, PERCENT, DATE, BOOL, LIST, CHOICE)
NUMERIC = (INTEGER, NUMBER, MONEY, PERCENT)


@dataclass(frozen=True)
class ValueType:
    """A declared type; ``values`` lists the allowed values of one-of and list types."""

    kind: str
    values: tuple[str, ...] | None = None
    # A percentage written without a % sign is a fraction (0.6 is 60%), not
    # points (60 is 60%): a field's ``scale: fraction``.
    fraction: bool = False

    @property
    def is_numeric(self) -> bool:
        return self.kind in NUMERIC

    @property
    def family(self) -> str:
        """Kinds that compare with each other share a family (integer ~ number)."""
        return NUMBER if self.kind == INTEGER else TEXT if self.kind == CHOICE else self.kind

    def describe(self) -> str:
        if self.kind == CHOICE and self.values:
            return "one of " + ", ".join(self.values)
        return {
            BOOL: "yes/no value",
            LIST: "list of text",
            INTEGER: "whole number",
            MONEY: "money amount",
            PERCENT: "percentage",
        }.get(self.kind, self.kind)


_CURRENCY = re.compile(
    r"^(?:[$€£¥]|USD|EUR|GBP|CHF|CAD|AUD)\s*|\s*(?:[$€£¥]|USD|EUR|GBP|CHF|CAD|AUD)$", re.IGNORECASE
)
_PLAIN_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_GROUPED_NUMBER = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_TRUE = {"yes", "y", "true", "1"}
_FALSE = {"no", "n", "false", "0"}
LIST_SEPARATOR = ";"


_EXAMPLES = {
    "whole number": "1234 or 1,234",
    "number": "1234.5 or 1,234.5",
    "money amount": "1234.50 or 1,234.50",
    "percentage": "2.6%",
}


def _number(text: str, what: str) -> str:
    """Parse '1,234.50', '-12', '(12)' style numbers; reject ambiguous forms.
    The number as plain decimal text ('1234.50', '-12'), for :func:`_kept`."""
    if _plain_decimal(text):
        return text
    value = text.strip()
    negative = False
    if value.startswith("(") and value.endswith(")"):
        negative, value = True, value[1:-1].strip()
    if what != "money amount" and _CURRENCY.search(value) and _CURRENCY.sub("", value).strip():
        plain = _CURRENCY.sub("", value).strip()
        raise ValueError(
            f"'{text}' is a money amount, not a {what}; write the {what} alone, like {plain}"
        )
    if _GROUPED_NUMBER.match(value):
        value = value.replace(",", "")
    elif "," in value:
        raise ValueError(
            f"'{text}' is ambiguous as a {what} (is ',' a decimal or a "
            f"thousands separator?); write it like {_EXAMPLES[what]}"
        )
    if not _PLAIN_NUMBER.match(value):
        raise ValueError(f"'{text}' is not a {what}")
    if negative:
        value = value[1:] if value.startswith("-") else "-" + value.lstrip("+")
    return value


DECIMALS = 6  # every number is kept to six decimals (money to cents)
_PLACES = {MONEY: 2}  # the kinds kept to fewer (see canonical)
MAX_MAGNITUDE = 1e12  # larger figures are data errors, and too big for the engine


def canonical(kind: str, value: Any) -> Any:
    """Round a number to the grid all values live on: cents for money, 6 decimals
    otherwise, whole numbers for integers. The engine and the explainer then
    compare the same values exactly. A number between two points of the grid
    is rounded half away from zero as it reads in decimal (0.125 becomes
    0.13, 2.675 becomes 2.68), as metrics are (engine.ruleset.metrics), not
    as its binary float would round (0.12 and 2.67)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if kind == INTEGER:
        if value == int(value):
            return int(value)
        return int(Decimal(repr(float(value))).quantize(_ONE, ROUND_HALF_UP))
    places = _PLACES.get(kind, DECIMALS)
    rounded = round(float(value), places)
    if rounded == value or value != value:  # on the grid already (or not a number)
        return rounded + 0.0
    return _half_up(Decimal(repr(float(value))), places)


def _kept(kind: str, text: str, shift: int = 0) -> float:
    """A number written as plain decimal text ('-1234.565', from
    :func:`_number`), divided by 10 ** ``shift`` (percentages: 2), on the grid
    of ``kind`` (see :func:`canonical`), rounded from the text itself."""
    places = _PLACES.get(kind, DECIMALS)
    point = text.find(".")
    if point < 0 or len(text) - point - 1 + shift <= places:  # on the grid as written
        number = float(text)
        return canonical(kind, number / 10**shift if shift else number)
    return _half_up(Decimal(text).scaleb(-shift), places)


def _half_up(value: Decimal, places: int) -> float:
    return float(value.quantize(_QUANTA[places], ROUND_HALF_UP)) + 0.0


_ONE = Decimal(1)
_QUANTA = {places: Decimal(1).scaleb(-places) for places in (*_PLACES.values(), DECIMALS)}


def finer_than_kept(kind: str, raw: Any) -> str:
    """Why a number written in a rule file (``raw``: a YAML number, or text
    such as "$100.555" or "12.5%") is finer than values of ``kind`` are kept
    (a sentence starting with the number), or "" when it is not: a threshold
    of $100.555 or a minimum of 0.0000001 would be rounded without a word,
    and the rule would not do what it says.
    Data values are rounded onto the grid (:func:`canonical`); rules are
    refused, so that their author chooses."""
    allowed = _KEPT_DECIMALS.get(kind)
    if allowed is None or isinstance(raw, bool):
        return ""
    if isinstance(raw, (int, float)):
        text = f"{Decimal(repr(float(raw))):f}" if isinstance(raw, float) else str(raw)
    elif isinstance(raw, str):
        text = raw.strip().rstrip("%")
    else:
        return ""
    if len(text.partition(".")[2].rstrip("0")) <= allowed:
        return ""
    written = _short(raw.strip() if isinstance(raw, str) else text)
    if kind == MONEY:
        return f"'{written}' has more decimals than money amounts keep: write at most 2 (cents)"
    if kind == PERCENT:
        return (
            f"'{written}' has more decimals than percentages keep: write at most 4 decimal places"
        )
    return (
        f"'{written}' has more decimals than numbers keep: write at most {DECIMALS} decimal places"
    )


# Decimal places a value of each kind keeps, as written (a percentage in
# percent: 12.3456% is the fraction 0.123456).
_KEPT_DECIMALS = {MONEY: _PLACES[MONEY], PERCENT: DECIMALS - 2, NUMBER: DECIMALS}


def parse_value(vtype: ValueType, raw: Any) -> Any:
    """Turn a raw value (from CSV text, JSON, or YAML) into the typed value.

    Returns None for an empty value. Raises ValueError with a short reason that
    names what was expected, never the whole record.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, (bytes, bytearray)):  # from a Parquet binary column
        raise ValueError("is binary data that is not UTF-8 text; export the column as text (UTF-8)")
    kind = vtype.kind
    if isinstance(raw, bool) and kind != BOOL:
        raise ValueError(f"expected a {vtype.describe()}, got a yes/no value")
    if kind == TEXT:
        if isinstance(raw, (list, tuple, dict)):
            raise ValueError("expected text")
        text = str(raw).strip()
        if not text.isprintable():
            control = next((c for c in text if ord(c) < 32 and c not in "\t\n\r"), None)
            if control is not None or "\x7f" in text:
                code = ord(control) if control is not None else 0x7F
                raise ValueError(
                    f"holds a control character (U+{code:04X}), which letters and "
                    "spreadsheets cannot show; remove it"
                )
        return text
    if kind == CHOICE:
        text = str(raw).strip()
        for allowed in vtype.values or ():
            if allowed.casefold() == text.casefold():
                return allowed
        raise ValueError(
            f"'{_short(text)}' is not one of the allowed values ({', '.join(vtype.values or ())})"
        )
    if kind == LIST:
        items = raw if isinstance(raw, (list, tuple)) else str(raw).split(LIST_SEPARATOR)
        result = []
        for item in items:
            if isinstance(item, (bytes, bytearray, list, tuple, dict)):
                raise ValueError(
                    "holds an item that is not text (binary data, a list or a record); "
                    "write each item as plain text"
                )
            text = str(item).strip()
            if not text:
                continue
            if vtype.values:
                text = parse_value(ValueType(CHOICE, vtype.values), text)
            if text not in result:
                result.append(text)
        return tuple(result)
    if kind == BOOL:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().casefold()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"'{_short(str(raw))}' is not yes or no")
    if kind == DATE:
        return parse_date(raw)
    if isinstance(raw, (list, tuple, dict)):
        raise ValueError(f"expected a {vtype.describe()}")
    if kind == INTEGER:
        number = (
            float(raw)
            if isinstance(raw, (int, float))
            else float(_number(str(raw), "whole number"))
        )
        _check_range(number, raw)  # first: NaN and infinity are no whole numbers either
        if number != int(number):
            raise ValueError(f"'{_short(str(raw))}' is not a whole number")
        return int(number)
    if isinstance(raw, (int, float)):  # typed data (JSON Lines, Parquet, YAML)
        number = float(raw) / 100 if kind == PERCENT and not vtype.fraction else float(raw)
        _check_range(number, raw)
        return canonical(kind, number)
    text = str(raw).strip()
    if kind == PERCENT:
        points = text.endswith("%") or not vtype.fraction
        plain = _number(text[:-1] if text.endswith("%") else text, "percentage")
        shift = 2 if points else 0
    elif kind == MONEY:
        plain = text if _plain_decimal(text) else _number(_CURRENCY.sub("", text), "money amount")
        shift = 0
    elif kind == NUMBER:
        plain, shift = _number(text, "number"), 0
    else:
        raise AssertionError(f"unknown kind {kind}")  # pragma: no cover
    _check_range(float(plain) / 10**shift, raw)
    return _kept(kind, plain, shift)


def _check_range(number: float, raw: Any) -> None:
    if number != number or abs(number) >= MAX_MAGNITUDE:
        raise ValueError(f"'{_short(str(raw))}' is out of range")


def bare_share(raw: Any) -> float | None:
    """A percentage's value written without a % sign (text or a typed
    number), as a number: 0.6 for "0.6" or 0.6; None for "60%", an empty
    value or one that is no number. Whether 0.6 means 60% or 0.6% is what
    a field's ``scale:`` says; a run refuses to guess (engine.run.driver)."""
    if raw.__class__ is str:
        text = raw.strip()
        if not text or text.endswith("%"):
            return None
        try:
            return float(_number(text, "percentage"))  # as parse_value reads it
        except ValueError:
            return None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    return None


def value_parser(vtype: ValueType, remember: int = 4096) -> Callable[[Any], Any]:
    """:func:`parse_value` for one type, remembering what text it has parsed.

    Roster columns repeat the same few texts (countries, tiers, yes/no,
    small counts), so most values are found, not parsed again. Only text is
    remembered (the values are immutable: lists become tuples), at most
    ``remember`` texts per parser; errors are raised every time.
    """
    seen: dict[str, Any] = {}
    kind = vtype.kind
    numeric = kind in (MONEY, NUMBER)

    def parse(raw: Any) -> Any:
        if type(raw) is not str:
            return parse_value(vtype, raw)
        value = seen.get(raw, _UNSEEN)
        if value is _UNSEEN:
            if numeric and _plain_decimal(raw) and len(raw) < 12:  # below MAX_MAGNITUDE
                return _kept(kind, raw)  # figures such as revenue rarely repeat
            value = parse_value(vtype, raw)
            if len(seen) < remember:
                seen[raw] = value
        return value

    return parse


def plain_numbers(kind: str, raws: list[Any]) -> list[Any] | None:
    """A column of values (a chunk's revenue figures) parsed at C speed when
    every one is plain text on the grid as written: digits with at most 2
    decimals for money and 6 for numbers, digits for whole numbers, each
    shorter than 12 characters (below MAX_MAGNITUDE). The values are those
    :func:`value_parser` gives; None when any value needs it (an empty one,
    a sign, a currency, a thousands separator, more decimals than kept, a
    value that is not text)."""
    pattern = _PLAIN_COLUMNS.get(kind)
    if pattern is None or not raws or None in raws:
        return None
    try:
        text = "\n".join(raws)
    except TypeError:  # a value that is not text (JSON Lines, Parquet)
        return None
    if max(map(len, raws)) >= 12 or pattern.fullmatch(text) is None:
        return None
    if kind == INTEGER:
        return list(map(int, raws))
    places = _PLACES.get(kind, DECIMALS)  # as canonical rounds
    return [round(float(raw), places) + 0.0 for raw in raws]


def _plain_column(places: int) -> re.Pattern:
    """Lines of digits with at most ``places`` decimals: values on the grid as written."""
    one = rf"(?:[0-9]+(?:\.[0-9]{{0,{places}}})?|\.[0-9]{{1,{places}}})"
    return re.compile(rf"{one}(?:\n{one})*")


_PLAIN_COLUMNS = {
    MONEY: _plain_column(_PLACES[MONEY]),
    NUMBER: _plain_column(DECIMALS),
    INTEGER: re.compile(r"[0-9]+(?:\n[0-9]+)*"),
}


def _plain_decimal(text: str) -> bool:
    """Digits with at most one decimal point: the common case, without regexes."""
    return text.replace(".", "", 1).isdecimal()


_UNSEEN = object()


def parse_date(raw: Any) -> dt.date:
    """ISO dates (2026-03-31), also with a time part as spreadsheets export them."""
    if isinstance(raw, dt.datetime):
        return raw.date()
    if isinstance(raw, dt.date):
        return raw
    text = str(raw).strip()
    match = re.match(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$", text)
    if not match:
        raise ValueError(
            f"'{_short(text)}' is not a date; write it as YYYY-MM-DD, for example 2026-03-31"
        )
    try:
        return dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise ValueError(f"'{text[:10]}' is not a real calendar date") from None


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plain_text(value: Any) -> str:
    """A benefit, resource, or template value as text: yes/no, lists joined."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def _format_percent(value: Any) -> str:
    return f"{value * 100:,.4g}%" if abs(value) < 100 else f"{value * 100:,.0f}%"


def _format_money(value: Any) -> str:
    return (f"${value:,.2f}" if value >= 0 else f"-${-value:,.2f}").replace(".00", "")


def _format_number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if value != int(value) else f"{int(value):,}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


_FORMATS = {
    PERCENT: _format_percent,
    MONEY: _format_money,
    BOOL: lambda value: "yes" if value else "no",
    LIST: lambda value: "[" + ", ".join(value) + "]" if value else "none",
    DATE: lambda value: value.isoformat(),
}


def value_formatter(vtype: ValueType | None) -> Callable[[Any], str]:
    """:func:`format_value` for one type, for code that formats many values."""
    kind_format = _FORMATS.get(vtype.kind if vtype else None, _format_number)
    return lambda value: "no value" if value is None else kind_format(value)


def format_value(vtype: ValueType | None, value: Any) -> str:
    """A plain, locale-neutral rendering for explanations and error messages."""
    return value_formatter(vtype)(value)
