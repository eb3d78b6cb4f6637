"""The metric expression language: parsing, typing, and evaluation."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from engine.ruleset.expressions import ParseError, parse_expression
from engine.ruleset.metrics import Checker, Env, compile_expression, evaluate
from engine.ruleset.quarters import History, Quarter
from engine.ruleset.value_types import ValueType

TYPES = {
    "n": ValueType("integer"),
    "m": ValueType("money"),
    "p": ValueType("percent"),
    "t": ValueType("text"),
    "l": ValueType("list of text"),
    "d": ValueType("date"),
}
FIGURES = {
    "revenue": ValueType("money"),
    "target": ValueType("money"),
    "deals_closed": ValueType("integer"),
}


def type_of(text):
    def resolve(name):
        return TYPES[name.name]

    def figure(name):
        if name.name not in FIGURES:
            raise ParseError(f"unknown history figure '{name.name}'", name.offset)
        return FIGURES[name.name]

    return Checker(resolve, figure).type_of(parse_expression(text)).kind


@pytest.mark.parametrize(
    "text, kind",
    [
        ("min(4 * n, 20)", "number"),
        ("n + n", "integer"),
        ("m * p", "money"),
        ("m / m", "number"),
        ("attainment(4)", "percent"),
        ("total(revenue, 4)", "money"),
        ("quarters_below_target()", "integer"),
        ("growth(revenue, 4) >= 10%", "yes/no"),
        ("overlap(l, l)", "integer"),
        ("quarters_since(d)", "integer"),
        ("round(m / 3, 2)", "money"),
    ],
)
def test_types(text, kind):
    assert type_of(text) == kind


@pytest.mark.parametrize(
    "text, message, offset",
    [
        ("m + p", "cannot use '+' between a money amount and a percentage", 2),
        ("t > 3", "cannot compare a text with a number", 2),
        ("total(revnue, 4)", "unknown history figure 'revnue'", 6),
        ("attainment(0)", "whole number from 1 to 40", 11),
        ("min(n)", "at least two values", 0),
        ("n +", "ends too early", 3),
        ("__import__('os')", "unknown function", 0),
    ],
)
def test_type_errors_have_columns(text, message, offset):
    with pytest.raises(ParseError) as caught:
        type_of(text)
    assert message in caught.value.message
    assert caught.value.offset == offset


def test_no_python_is_evaluated():
    # Attribute access and subscripts are simply not in the language.
    for text in ("n.__class__", "t[0]", "lambda: 1"):
        with pytest.raises(ParseError):
            parse_expression(text)


def history(*rows):
    return History({Quarter(2026, 3).previous(i): r for i, r in enumerate(rows)})


def run(text, values=None, hist=None, as_of=dt.date(2026, 11, 26)):
    """The value of an expression, interpreted (as explain does) and compiled
    (as runs do): the two must agree."""
    env = Env(values or {}, hist or History(), as_of)
    interpreted = evaluate(parse_expression(text), env)
    assert compile_expression(parse_expression(text))(env) == interpreted
    return interpreted


def test_history_functions():
    h = history(
        {"revenue": 80, "target": 100},
        {"revenue": 90, "target": 100},
        {"revenue": 120, "target": 100},
        {"revenue": 50, "target": 100},
        {"revenue": 100, "target": 100},
    )
    assert run("attainment(4)", hist=h) == Decimal("0.85")  # exactly
    assert run("quarters_below_target()", hist=h) == 2
    assert run("total(revenue, 2)", hist=h) == 170
    assert run("growth(revenue, 2)", hist=h) == 0
    assert run("quarters_reported(8)", hist=h) == 5
    # Through the quarter before (2026Q2): every window starts a quarter earlier.
    earlier = Env({}, h, dt.date(2026, 11, 26), Quarter(2026, 2))
    assert evaluate(parse_expression("total(revenue, 2)"), earlier) == 210
    assert evaluate(parse_expression("quarters_below_target()"), earlier) == 1
    assert evaluate(parse_expression("growth(revenue, 2)"), earlier) == Decimal("0.4")
    assert evaluate(parse_expression("quarters_reported(8)"), earlier) == 4
    assert evaluate(parse_expression("attainment(1)"), earlier) == Decimal("0.9")


def test_missing_values_propagate_and_division_by_zero_is_missing():
    assert run("n + 1") is None
    assert run("attainment(4)") is None
    assert run("m / n", {"m": 5.0, "n": 0}) is None


def test_capped_points():
    assert run("min(4 * n, 20)", {"n": 3}) == 12
    assert run("min(4 * n, 20)", {"n": 9}) == 20


def test_highest_lowest_first_and_last_of_a_figure_skip_quarters_not_reported():
    h = History(
        {
            Quarter(2026, 3): {"revenue": 80.1},  # 2026Q2 not reported
            Quarter(2026, 1): {"revenue": 120.5},
            Quarter(2025, 4): {"revenue": 50},
            Quarter(2025, 3): {"revenue": 999},  # outside a 4-quarter window
        }
    )
    assert run("highest(revenue, 4)", hist=h) == Decimal("120.5")
    assert run("lowest(revenue, 4)", hist=h) == 50
    assert run("first(revenue, 4)", hist=h) == 50
    assert run("last(revenue, 4)", hist=h) == Decimal("80.1")
    assert run("highest(revenue, 5)", hist=h) == 999
    assert run("highest(revenue, 4)") is None  # no figures at all
    with pytest.raises(ParseError, match="the number of quarters must be a whole number"):
        type_of("highest(revenue, 0)")


def test_if_chooses_a_value_and_is_missing_when_its_condition_is():
    assert run("if(n >= 10, 2, 1)", {"n": 12}) == 2
    assert run("if(n >= 10, 2, 1)", {"n": 3}) == 1
    assert run("if(n >= 10, 2, 1)") is None
    assert run("if(n >= 10, m / 0, 5)", {"n": 3, "m": 1}) == 5  # only the chosen value
    assert type_of("if(n >= 10, $5, $1)") == "money"
    with pytest.raises(ParseError, match="if needs yes/no first"):
        type_of("if(n, 1, 2)")
    with pytest.raises(ParseError, match="if cannot mix a money amount with a percentage"):
        type_of("if(n > 1, $5, 5%)")
