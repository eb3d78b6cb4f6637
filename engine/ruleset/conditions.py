"""Condition trees: what a table row or a program requires.

In a rule file a condition is either one line of text that reads aloud,
``certified_technical >= 2``, ``standing in [good, at_risk]``,
``focus_verticals contains healthcare``, ``revenue_share between 1% and 5%``,
``business_plan is missing``, a yes/no name on its own (``business_plan_on_file``),
or a mapping with one key: ``all: [...]``, ``any: [...]``, or ``not: ...``,
or a dated requirement ``{from: 2027-01-01, when: ...}`` (``until`` too).

Parsing here is purely syntactic; :mod:`engine.ruleset.loader` checks names and types
and replaces the raw literals with typed values.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from engine.errors import Problem
from engine.ruleset.expressions import Literal, ParseError, TokenStream, literal_from_token
from engine.ruleset.yaml_source import Loc, YList, YMap

OPERATORS = ("==", "!=", "<", "<=", ">", ">=", "in", "not in", "contains", "between")
ORDERING_OPERATORS = ("<", "<=", ">", ">=", "between")
NEGATED = {
    "==": "!=",
    "!=": "==",
    "<": ">=",
    "<=": ">",
    ">": "<=",
    ">=": "<",
    "in": "not in",
    "not in": "in",
}
GROUP_KEYS = ("all", "any", "not")


@dataclass(frozen=True)
class Compare:
    """``name op value(s)``; false whenever the name has no value.

    ``loc`` is where the condition's text starts; a literal's own location
    is ``loc.at(literal.offset)``.
    """

    name: str
    op: str
    values: tuple
    text: str
    loc: Loc
    literals: tuple[Literal, ...] = ()


@dataclass(frozen=True)
class IsMissing:
    """``name is missing`` (or ``is not missing`` when negated)."""

    name: str
    negated: bool
    text: str
    loc: Loc


@dataclass(frozen=True)
class AllOf:
    items: tuple[Condition, ...]
    loc: Loc


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Condition, ...]
    loc: Loc


@dataclass(frozen=True)
class NotOf:
    item: Condition
    loc: Loc


@dataclass(frozen=True)
class Dated:
    """A requirement in force only from ``starts`` and/or until ``ends``
    (inclusive): outside that window it holds; inside, ``item`` must hold."""

    item: Condition
    starts: object  # datetime.date or None
    ends: object
    loc: Loc

    def in_force(self, as_of) -> bool:
        return (self.starts is None or self.starts <= as_of) and (
            self.ends is None or as_of <= self.ends
        )


Condition = Compare | IsMissing | AllOf | AnyOf | NotOf | Dated
DATED_KEYS = ("from", "until", "when")


def parse_condition(raw: Any, loc: Loc, problems: list[Problem]) -> Condition | None:
    """Parse a condition from YAML data; problems are appended, None on failure."""
    if isinstance(raw, str):
        try:
            return parse_condition_text(raw, loc)
        except ParseError as error:
            shown = raw if len(raw) <= 80 else raw[:77] + "..."
            problems.append(
                loc.at(error.offset).problem(f"in condition '{shown}': {error.message}")
            )
            return None
    if isinstance(raw, bool) or raw is None or isinstance(raw, (int, float)):
        problems.append(
            loc.problem(
                "a condition must be text such as 'certified_technical >= 2' "
                "or a mapping with one of: all, any, not"
            )
        )
        return None
    if isinstance(raw, YList):
        problems.append(
            loc.problem(
                "a list of conditions needs 'all:' (every one must hold) or 'any:' "
                "(at least one must hold) in front of it"
            )
        )
        return None
    if isinstance(raw, YMap) and ("from" in raw or "until" in raw):
        return _parse_dated(raw, loc, problems)
    if not isinstance(raw, YMap) or len(raw) != 1:
        problems.append(
            loc.problem(
                "a condition mapping must have exactly one key: all, any, or not "
                "(or 'from'/'until' with 'when', for a dated requirement)"
            )
        )
        return None
    ((key, value),) = raw.items()
    key_loc, value_loc = raw.key_loc(key), raw.value_loc(key)
    if key not in GROUP_KEYS:
        problems.append(key_loc.problem(unknown_key_message(key, GROUP_KEYS, "condition")))
        return None
    if key == "not":
        inner = parse_condition(value, value_loc, problems)
        return NotOf(inner, key_loc) if inner is not None else None
    if not isinstance(value, YList) or not value:
        problems.append(value_loc.problem(f"'{key}' needs a list of at least one condition"))
        return None
    items = [parse_condition(item, value.item_loc(i), problems) for i, item in enumerate(value)]
    if any(item is None for item in items):
        return None
    return (AllOf if key == "all" else AnyOf)(tuple(items), key_loc)


def _parse_dated(raw: YMap, loc: Loc, problems: list[Problem]) -> Condition | None:
    import datetime as dt

    ok = True
    for key in raw:
        if key not in DATED_KEYS:
            problems.append(
                raw.key_loc(key).problem(
                    unknown_key_message(key, DATED_KEYS, "a dated requirement")
                )
            )
            ok = False
    dates = {}
    for key in ("from", "until"):
        value = raw.get(key)
        if value is not None and not (
            isinstance(value, dt.date) and not isinstance(value, dt.datetime)
        ):
            problems.append(
                raw.value_loc(key).problem(
                    f"'{key}' must be a date written as YYYY-MM-DD, like 2027-01-01"
                )
            )
            ok = False
        dates[key] = value
    if dates["from"] and dates["until"] and dates["until"] < dates["from"]:
        problems.append(raw.value_loc("until").problem("'until' is before 'from'"))
        ok = False
    if "when" not in raw:
        problems.append(
            loc.problem(
                "a dated requirement needs 'when': the condition that applies from that date"
            )
        )
        return None
    item = parse_condition(raw["when"], raw.value_loc("when"), problems)
    if item is None or not ok:
        return None
    return Dated(item, dates["from"], dates["until"], raw.key_loc("when"))


def parse_condition_text(text: str, loc: Loc) -> Condition:
    stream = TokenStream(text)
    head = stream.current
    if head.kind != "NAME":
        raise ParseError(
            "a condition starts with the name of a field, metric, classification, or program",
            head.offset,
        )
    name = stream.advance().text
    if stream.at("END"):
        return Compare(
            name, "==", (True,), text.strip(), loc, (Literal(True, "yes/no", head.offset, name),)
        )
    op_token = stream.current
    if stream.accept("NAME", "is"):
        negated = bool(stream.accept("NAME", "not"))
        stream.expect("NAME", "missing", "'missing' (as in 'x is missing')")
        stream.expect_end()
        return IsMissing(name, negated, text.strip(), loc)
    if stream.accept("NAME", "not"):
        stream.expect("NAME", "in", "'in' (as in 'x not in [a, b]')")
        op = "not in"
    elif op_token.kind == "OP" and op_token.text in ("==", "!=", "<", "<=", ">", ">="):
        op = stream.advance().text
    elif op_token.kind == "NAME" and op_token.text in ("in", "contains", "between"):
        op = stream.advance().text
    else:
        close = difflib.get_close_matches(op_token.text, OPERATORS, n=1)
        hint = (
            f"; did you mean '{close[0]}'?"
            if close
            else f"; use one of {', '.join(OPERATORS)}, is missing"
        )
        raise ParseError(f"unknown operator {stream.describe(op_token)}{hint}", op_token.offset)
    if op in ("in", "not in"):
        stream.expect("OP", "[", "a list in brackets, like [gold, silver]")
        literals = [_literal(stream)]
        while stream.accept("OP", ","):
            literals.append(_literal(stream))
        stream.expect("OP", "]", "',' or ']' to close the list")
    elif op == "between":
        literals = [_literal(stream)]
        stream.expect("NAME", "and", "'and' (as in 'x between 1 and 5')")
        literals.append(_literal(stream))
    else:
        literals = [_literal(stream)]
    stream.expect_end()
    return Compare(
        name, op, tuple(literal.value for literal in literals), text.strip(), loc, tuple(literals)
    )


def _literal(stream: TokenStream) -> Literal:
    token = stream.current
    if (
        token.kind == "OP"
        and token.text == "-"
        and stream.peek().kind in ("NUMBER", "MONEY", "PERCENT")
    ):
        stream.advance()
        number = literal_from_token(stream.advance())
        return Literal(-number.value, number.kind, token.offset, "-" + number.text)
    if token.kind in ("NUMBER", "PERCENT", "MONEY", "DATE", "STRING", "NAME"):
        if token.kind == "NAME" and stream.peek().kind == "OP" and stream.peek().text == "-":
            raise ParseError(
                "put text with spaces or dashes in quotes, like 'mid-market'", token.offset
            )
        return literal_from_token(stream.advance())
    raise ParseError(f"expected a value, found {stream.describe(token)}", token.offset)


def unknown_key_message(key: str, allowed: tuple[str, ...] | list[str], where: str) -> str:
    """'unknown key X in <where>; allowed: ...; did you mean Y?'"""
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown key '{key}' in {where} (allowed: {', '.join(allowed)}){hint}"


def names_read(condition: Condition) -> list[tuple[str, Loc]]:
    """Every (name, location) a condition reads."""
    if isinstance(condition, (Compare, IsMissing)):
        return [(condition.name, condition.loc)]
    if isinstance(condition, (NotOf, Dated)):
        return names_read(condition.item)
    return [pair for item in condition.items for pair in names_read(item)]


def is_dated(condition: Condition) -> bool:
    """Whether the condition depends on the as-of date."""
    if isinstance(condition, Dated):
        return True
    if isinstance(condition, NotOf):
        return is_dated(condition.item)
    if isinstance(condition, (AllOf, AnyOf)):
        return any(is_dated(item) for item in condition.items)
    return False


def describe(condition: Condition) -> str:
    """The condition as one line of text, as a manager would write it."""
    if isinstance(condition, (Compare, IsMissing)):
        return condition.text
    if isinstance(condition, NotOf):
        return f"not ({describe(condition.item)})"
    if isinstance(condition, Dated):
        window = (
            (f"from {condition.starts}" if condition.starts else "")
            + (" " if condition.starts and condition.ends else "")
            + (f"until {condition.ends}" if condition.ends else "")
        )
        return f"{window}: {describe(condition.item)}"
    joiner = " and " if isinstance(condition, AllOf) else " or "
    return "(" + joiner.join(describe(item) for item in condition.items) + ")"
