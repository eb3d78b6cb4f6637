"""Parsing what CRM exports contain, and rejecting what is ambiguous."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import event, given, settings, strategies as st

from engine.errors import UsageError
from engine.ruleset.quarters import (
    Quarter,
    figures_through,
    last_complete_quarter,
    parse_quarter,
    window,
)
from engine.ruleset.value_types import (
    ValueType,
    format_value,
    parse_value,
    plain_numbers,
    value_parser,
)

MONEY, PERCENT, INTEGER = ValueType("money"), ValueType("percent"), ValueType("integer")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("1,234.50", 1234.5),
        ("$1,200", 1200.0),
        ("USD 99", 99.0),
        ("(100)", -100.0),
        ("  42 ", 42.0),
        (1500, 1500.0),
        ("0.005", 0.01),
        ("-3", -3.0),
    ],
)
def test_money(raw, expected):
    assert parse_value(MONEY, raw) == expected


@pytest.mark.parametrize("raw", ["1.234,50", "1,23", "12abc", "$", "1e400", "--1"])
def test_money_rejects_ambiguous_or_bad(raw):
    with pytest.raises(ValueError):
        parse_value(MONEY, raw)


@pytest.mark.parametrize(
    "raw, expected",
    [("12%", 0.12), ("12", 0.12), ("0.005%", 0.00005), ("12.3456789%", 0.123457), (60, 0.6)],
)
def test_percent(raw, expected):
    assert parse_value(PERCENT, raw) == expected


def test_integer_rejects_fractions():
    assert parse_value(INTEGER, "1,000") == 1000
    with pytest.raises(ValueError, match="whole number"):
        parse_value(INTEGER, "2.5")


@pytest.mark.parametrize(
    "raw, expected", [("yes", True), ("NO", False), ("1", True), ("false", False), ("Y", True)]
)
def test_yes_no(raw, expected):
    assert parse_value(ValueType("yes/no"), raw) is expected


def test_choice_is_case_insensitive_and_canonical():
    choice = ValueType("one of", ("en", "fr"))
    assert parse_value(choice, "FR") == "fr"
    with pytest.raises(ValueError, match="not one of the allowed values"):
        parse_value(choice, "it")


def test_list_of_text_splits_dedupes_and_checks_values():
    listing = ValueType("list of text", ("healthcare", "retail"))
    assert parse_value(listing, "Healthcare; retail;healthcare;") == ("healthcare", "retail")
    with pytest.raises(ValueError):
        parse_value(listing, "healthcare;space")


@pytest.mark.parametrize("raw", ["31/12/2026", "2026-02-30", "yesterday"])
def test_bad_dates(raw):
    with pytest.raises(ValueError):
        parse_value(ValueType("date"), raw)


def test_dates_with_time_from_spreadsheets():
    assert parse_value(ValueType("date"), "2026-03-31 00:00:00") == dt.date(2026, 3, 31)


def test_money_from_a_spreadsheet_date_cell_is_an_error():
    with pytest.raises(ValueError):
        parse_value(MONEY, dt.date(2026, 1, 1))


def test_empty_is_missing():
    assert parse_value(MONEY, "  ") is None


def test_errors_do_not_repeat_long_values():
    with pytest.raises(ValueError) as caught:
        parse_value(ValueType("yes/no"), "x" * 500)
    assert len(str(caught.value)) < 100


@pytest.mark.parametrize("label", ["2026Q3", "2026-Q3", "Q3 2026", "q3-2026", " 2026 Q3 "])
def test_quarter_labels(label):
    assert parse_quarter(label) == Quarter(2026, 3)


def test_bad_quarter_label():
    with pytest.raises(ValueError, match="2026Q3"):
        parse_quarter("2026Q5")


def test_quarter_windows_count_only_ended_quarters():
    assert last_complete_quarter(dt.date(2026, 11, 26)) == Quarter(2026, 3)
    assert last_complete_quarter(dt.date(2026, 9, 30)) == Quarter(2026, 3)
    assert last_complete_quarter(dt.date(2026, 1, 1)) == Quarter(2025, 4)
    assert window(last_complete_quarter(dt.date(2026, 11, 26)), 3) == (
        Quarter(2026, 3),
        Quarter(2026, 2),
        Quarter(2026, 1),
    )


def test_figures_through_an_earlier_quarter_but_never_one_not_ended():
    day = dt.date(2027, 1, 15)
    assert figures_through(day) == Quarter(2026, 4)
    assert figures_through(day, Quarter(2026, 3)) == Quarter(2026, 3)
    assert figures_through(day, Quarter(2026, 4)) == Quarter(2026, 4)
    with pytest.raises(UsageError, match="2027Q1 has not ended on 2027-01-15.*has is 2026Q4"):
        figures_through(day, Quarter(2027, 1))


def test_format_value():
    assert format_value(PERCENT, 0.925) == "92.5%"
    assert format_value(MONEY, 1234567.5) == "$1,234,567.50"
    assert format_value(None, None) == "no value"


def test_a_remembering_parser_gives_what_parse_value_gives():
    choice = ValueType("one of", ("US", "DE"))
    listed = ValueType("list of text", ("healthcare", "retail"))
    cases = [
        (MONEY, ["$1,200", "$1,200", 1500, "1,23"]),
        (choice, ["us", "US", " de", "FR"]),
        (listed, ["retail; healthcare", "retail; healthcare", "retail;x"]),
        (INTEGER, ["3", "3", "3.5"]),
        (ValueType("date"), ["2026-03-31", "2026-02-30"]),
        # plain decimals take a short path: these must still agree
        (
            MONEY,
            [
                "161938.21",
                ".5",
                "5.",
                "00012",
                "１２",
                "²",
                "2²",
                "1.2.3",
                "1e5",
                "99999999999.5",
                "999999999999",
                "1000000000000",
            ],
        ),
        (ValueType("number"), ["0.1234565", "12.5", "²", "1000000000000.0"]),
    ]
    for vtype, raws in cases:
        parse = value_parser(vtype, remember=2)
        for raw in raws * 2:  # the second time from memory, where remembered
            try:
                expected = parse_value(vtype, raw)
            except ValueError as error:
                with pytest.raises(ValueError, match=str(error)[:20]):
                    parse(raw)  # errors are raised every time, never remembered
            else:
                assert parse(raw) == expected and type(parse(raw)) is type(expected)


_CELLS = st.one_of(
    st.from_regex(r"[0-9]{0,11}(\.[0-9]{0,8})?", fullmatch=True),  # plain, mostly
    st.text(alphabet="0123456789.,-+ $e%٣", max_size=14),
)


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(["money", "number", "integer", "percent"]), raws=st.lists(_CELLS))
def test_a_column_parsed_at_once_is_what_the_parser_gives_each_value(kind, raws):
    """plain_numbers answers only for columns it parses exactly as
    value_parser would, value by value; else None (the parser's turn)."""
    found = plain_numbers(kind, raws)
    event("parsed at once" if found is not None else "left to the parser")
    if found is None:
        return
    parse = value_parser(ValueType(kind))
    expected = [parse(raw) for raw in raws]
    assert found == expected and [type(v) for v in found] == [type(v) for v in expected]


def test_a_column_of_plain_figures_is_parsed_at_once():
    assert plain_numbers("money", ["1200.5", "0.12", "7", ".5", "3."]) == [
        1200.5,
        0.12,
        7.0,
        0.5,
        3.0,
    ]
    assert plain_numbers("number", ["0.123456", "2"]) == [0.123456, 2.0]
    assert plain_numbers("integer", ["007", "12"]) == [7, 12]
    for column in (["1", ""], ["1", None], ["1,200"], ["-3"], ["99999999999.5"], [1200], []):
        assert plain_numbers("money", column) is None, column
    # More decimals than kept: the parser rounds them (half away from zero, as written).
    assert plain_numbers("money", ["1200.5", "0.125"]) is None
    assert plain_numbers("number", ["0.1234565"]) is None


# Each is between two points of its grid; its binary float rounds the other way
# (0.125 and 2.675 to 0.12 and 2.67, 12.34565% to 0.123456), or the same way
# only by luck of the binary digits (0.005).
@pytest.mark.parametrize(
    ("vtype", "raw", "expected"),
    [
        (MONEY, "0.125", 0.13),
        (MONEY, "2.675", 2.68),
        (MONEY, "-2.675", -2.68),
        (MONEY, "(0.125)", -0.13),
        (MONEY, "$1,999,999.995", 2_000_000.0),
        (MONEY, "0.124999", 0.12),
        (MONEY, 0.125, 0.13),  # typed data, as JSON Lines and Parquet give it
        (MONEY, 2.675, 2.68),
        (PERCENT, "12.34565%", 0.123457),
        (PERCENT, 12.34565, 0.123457),
        (ValueType("number"), "0.0000025", 0.000003),
        (ValueType("number"), "-0.0000025", -0.000003),
    ],
)
def test_values_between_grid_points_round_half_away_from_zero_as_written(vtype, raw, expected):
    """As metrics round (engine.ruleset.metrics.round_value), and as a person
    reading the number would: the data's values and the rules' arithmetic
    follow one rule."""
    assert parse_value(vtype, raw) == expected
    assert value_parser(vtype)(raw) == expected


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(["money", "number", "percent"]),
    text=st.from_regex(r"-?[0-9]{1,9}\.[0-9]{1,12}", fullmatch=True),
)
def test_a_decimal_text_is_kept_as_decimal_arithmetic_rounds_it(kind, text):
    """Whatever its digits: the value is the text's exact decimal rounded
    half away from zero onto the grid, never its binary float's rounding."""
    from decimal import ROUND_HALF_UP, Decimal

    exact = Decimal(text) / (100 if kind == "percent" else 1)
    grid = Decimal("0.01") if kind == "money" else Decimal("0.000001")
    expected = float(exact.quantize(grid, ROUND_HALF_UP))
    assert parse_value(ValueType(kind), text) == expected
    assert value_parser(ValueType(kind))(text) == expected
