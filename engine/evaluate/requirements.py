"""What a condition requires of a partner: the one walker of condition trees.

Explanations (``eligibility explain``), a run's reasons for each missed
program (``not_enrolled`` in decisions.jsonl, diff and the report) and the
letters' requirements ("needs 10 certified technical staff, has 8") all come
from :func:`unmet`: a condition compiled once per rule set into a function
of a partner's values that gives the requirements keeping it from holding.
One treatment of ``all``, ``any``, ``not`` and dated parts, and one source of
wording (:func:`brief`, :func:`detailed`, :func:`gap`), so the three never
drift apart.

The requirements come as a small tree:

* :class:`Unmet`: one comparison (or missing-value check) that fails, or
  under a ``not``, holds and must not (``negated``);
* :class:`NoneOf`: an ``any`` (or a negated ``all``) none of whose ways
  holds, with each way's own requirements;
* :class:`Within`: requirements of a dated part, under its window label
  ("from 2027-01-01").

``not`` is pushed down to the leaves (De Morgan), so a refusal names the
exact comparison that holds and must not.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from engine.ruleset.conditions import (
    AllOf,
    AnyOf,
    Compare,
    Condition,
    Dated,
    IsMissing,
    NotOf,
    describe,
    names_read,
)
from engine.ruleset.model import RuleSet, per_part
from engine.ruleset.value_types import NUMERIC, ValueType, value_formatter

_TESTS: dict[str, Callable[[Any, tuple], bool]] = {
    "==": lambda value, v: value == v[0],
    "!=": lambda value, v: value != v[0],
    "<": lambda value, v: value < v[0],
    "<=": lambda value, v: value <= v[0],
    ">": lambda value, v: value > v[0],
    ">=": lambda value, v: value >= v[0],
    "in": lambda value, v: value in v,
    "not in": lambda value, v: value not in v,
    "between": lambda value, v: v[0] <= value <= v[1],
    "contains": lambda value, v: v[0] in value,
}


def compare_holds(c: Compare, value: Any) -> bool:
    """Whether a comparison holds for a value (never for a missing value)."""
    return value is not None and _TESTS[c.op](value, c.values)


def compare_test(c: Compare) -> Callable[[Any], bool]:
    """:func:`compare_holds` for one comparison, for code that tests many values."""
    test, v = _TESTS[c.op], c.values
    return lambda value: value is not None and test(value, v)


def leaf_test(condition: Compare | IsMissing) -> Callable[[Any], bool]:
    """Whether a leaf (a comparison or a missing-value check) holds for a value."""
    if isinstance(condition, IsMissing):
        if condition.negated:
            return lambda value: value is not None
        return lambda value: value is None
    return compare_test(condition)


class Unmet(NamedTuple):
    """One leaf that keeps a condition from holding."""

    condition: Condition  # a Compare or IsMissing; a Dated part not in force, under a 'not'
    value: Any  # the partner's value (None: it has none)
    negated: bool  # it holds, and must not (it sits under a 'not')
    line: str  # its brief wording (see :func:`brief`), made once per value


class NoneOf(NamedTuple):
    """An ``any`` (or a negated ``all``) none of whose ways holds."""

    ways: tuple[tuple[Requirement, ...], ...]


class Within(NamedTuple):
    """Requirements of a dated part, which is in force."""

    label: str  # "from 2027-01-01", "until 2026-12-31"
    items: tuple[Requirement, ...]


Requirement = Unmet | NoneOf | Within
Unmets = Callable[[Mapping[str, Any], dt.date], list]

_REMEMBERED = 4096  # per leaf: failed values repeat (counts, yes/no, tiers)


def unmet(ruleset: RuleSet, condition: Condition) -> Unmets:
    """A function (values, as_of) -> the requirements keeping ``condition``
    from holding (empty when it holds). Compiled once per rule set and
    condition: runs call it for every program every partner misses."""
    return _compiled(ruleset, condition, negate=False)


def held(ruleset: RuleSet, condition: Condition) -> Unmets:
    """A function (values, as_of) -> the leaves that make ``condition`` hold
    (empty when it does not), as :class:`Unmet` marked ``negated``: what
    ``not condition`` would refuse. For letters that say why a standing was
    decided."""
    return _compiled(ruleset, condition, negate=True)


def _compiled(ruleset: RuleSet, condition: Condition, negate: bool) -> Unmets:
    what = "held" if negate else "unmet"
    return per_part(what, ruleset, condition, lambda part: _compile(ruleset, part, negate))


def _compile(ruleset: RuleSet, condition: Condition, negate: bool) -> Unmets:
    if isinstance(condition, NotOf):
        return _compile(ruleset, condition.item, not negate)
    if isinstance(condition, Dated):
        return _compile_dated(ruleset, condition, negate)
    if isinstance(condition, (AllOf, AnyOf)):
        parts = [_compile(ruleset, item, negate) for item in condition.items]
        if isinstance(condition, AllOf) != negate:  # every part must hold

            def every(values: Mapping[str, Any], as_of: dt.date) -> list:
                return [item for part in parts for item in part(values, as_of)]

            return every

        def some(values: Mapping[str, Any], as_of: dt.date) -> list:
            ways = []
            for part in parts:
                failed = part(values, as_of)
                if not failed:  # one way holds: the whole holds
                    return []
                ways.append(tuple(failed))
            return [NoneOf(tuple(ways))]

        return some
    return _compile_leaf(ruleset, condition, negate)


def _compile_dated(ruleset: RuleSet, condition: Dated, negate: bool) -> Unmets:
    inner = _compile(ruleset, condition.item, negate)
    text = describe(condition)
    label = text.split(":")[0]
    # Not in force, a dated part holds: under a 'not', that is the refusal.
    refusal = [Unmet(condition, None, True, f"must not hold: {text}")]

    def dated(values: Mapping[str, Any], as_of: dt.date) -> list:
        if not condition.in_force(as_of):
            return list(refusal) if negate else []
        items = inner(values, as_of)
        return [Within(label, tuple(items))] if items else []

    return dated


def _compile_leaf(ruleset: RuleSet, condition: Compare | IsMissing, negate: bool) -> Unmets:
    name, holds = condition.name, leaf_test(condition)
    if negate:
        refusal = f"must not hold: {condition.text}"

        def must_not(values: Mapping[str, Any], as_of: dt.date) -> list:
            value = values.get(name)
            return [Unmet(condition, value, True, refusal)] if holds(value) else []

        return must_not
    prefix, fmt = f"{condition.text}: has ", value_formatter(ruleset.type_of(name))
    known: dict[Any, Unmet] = {}  # value -> its requirement; a name's values all have one type

    def leaf(values: Mapping[str, Any], as_of: dt.date) -> list:
        value = values.get(name)
        if holds(value):
            return []
        try:
            found = known.get(value)
        except TypeError:  # an unhashable value, such as a list parameter
            return [Unmet(condition, value, False, prefix + fmt(value))]
        if found is None:
            found = Unmet(condition, value, False, prefix + fmt(value))
            if len(known) < _REMEMBERED:
                known[value] = found
        return [found]

    return leaf


def brief_reasons(
    ruleset: RuleSet, condition: Condition
) -> Callable[[Mapping[str, Any], dt.date], list]:
    """``brief(unmet(...)(values, as_of))``, remembered by the values of the
    names the condition reads: partners repeat the same standings, counts
    and yes/no values, so a run words most missed programs once. The lists
    returned are shared: callers copy before changing them."""
    return per_part("reasons", ruleset, condition, lambda part: _remembering(ruleset, part))


def _remembering(ruleset: RuleSet, condition: Condition) -> Callable:
    failing = unmet(ruleset, condition)
    names = sorted({name for name, _ in names_read(condition)})
    pick = operator.itemgetter(*names) if names else (lambda values: ())
    known: dict[tuple, list[str]] = {}

    def remembered(values: Mapping[str, Any], as_of: dt.date) -> list[str]:
        try:
            key = (as_of, pick(values))  # at C speed; every name read is among the values
            lines = known.get(key)
        except (KeyError, TypeError):  # a name without a value; an unhashable value
            return brief(failing(values, as_of))
        if lines is None:
            lines = brief(failing(values, as_of))
            if len(known) < _REMEMBERED:
                known[key] = lines
        return lines

    return remembered


# --- wording -----------------------------------------------------------------


def brief(items: Sequence[Requirement]) -> list[str]:
    """One short line per requirement, as runs record them:
    ``certified_technical >= 10: has 8``, ``must not hold: standing == probation``,
    ``none of: a; b``, ``from 2027-01-01: ...``."""
    lines: list[str] = []
    for item in items:
        if item.__class__ is Unmet:
            lines.append(item.line)
        elif item.__class__ is Within:
            lines += [f"{item.label}: {line}" for line in brief(item.items)]
        else:
            lines.append("none of: " + "; ".join(brief([i for way in item.ways for i in way])))
    return lines


def detailed(ruleset: RuleSet, items: Sequence[Requirement]) -> list[str]:
    """One line per requirement, with what is missing, as ``explain`` shows
    them: ``certified_technical >= 10: needs at least 10, has 8 (2 short)``."""
    lines: list[str] = []
    for item in items:
        if isinstance(item, Within):
            lines += [f"{item.label}: {line}" for line in detailed(ruleset, item.items)]
        elif isinstance(item, NoneOf):
            ways = [line for way in item.ways for line in detailed(ruleset, way)]
            lines.append("none of these holds: " + "; ".join(ways))
        elif item.negated:
            lines.append(item.line)
        else:
            vtype = ruleset.type_of(item.condition.name)
            lines.append(f"{item.condition.text}: {gap(item.condition, vtype, item.value)}")
    return lines


def gap(c: Compare | IsMissing, vtype: ValueType | None, value: Any) -> str:
    """Why a leaf failed, with the distance to the threshold where it helps."""
    fmt = value_formatter(vtype)
    has = "has no value" if value is None else f"has {fmt(value)}"
    if isinstance(c, IsMissing):
        return has
    v = c.values
    numeric = vtype is not None and vtype.kind in NUMERIC and value is not None
    if c.op in (">=", ">"):
        short = f" ({fmt(v[0] - value)} short)" if numeric and c.op == ">=" else ""
        need = "at least" if c.op == ">=" else "more than"
        return f"needs {need} {fmt(v[0])}, {has}{short}"
    if c.op in ("<=", "<"):
        over = f" ({fmt(value - v[0])} over)" if numeric and c.op == "<=" else ""
        limit = "at most" if c.op == "<=" else "below"
        return f"must be {limit} {fmt(v[0])}, {has}{over}"
    if c.op == "==":
        return f"needs {fmt(v[0])}, {has}"
    if c.op == "!=":
        return f"must not be {fmt(v[0])}" if value is not None else has
    if c.op == "in":
        return f"needs one of {', '.join(fmt(x) for x in v)}; {has}"
    if c.op == "not in":
        return f"must not be one of {', '.join(fmt(x) for x in v)}; {has}"
    if c.op == "between":
        return f"needs between {fmt(v[0])} and {fmt(v[1])}, {has}"
    return f"needs {v[0]} in the list, {has}"


# --- what a letter can ask of a partner ----------------------------------------


def actionable(items: Sequence[Requirement], *, met: bool = False) -> list[Unmet]:
    """The comparisons a letter talks about: thresholds, not missing-value
    checks, refusals or expired dated parts. Of an ``any`` that fails, the way
    with the fewest comparisons (the nearest way in); with ``met`` (items from
    :func:`held`), every comparison that makes the condition hold."""
    found: list[Unmet] = []
    for item in items:
        if isinstance(item, Within):
            found += actionable(item.items, met=met)
        elif isinstance(item, NoneOf):
            ways = [actionable(way, met=met) for way in item.ways]
            if met:  # a negated 'all' of parts that all hold: each one counts
                found += [leaf for way in ways for leaf in way]
            else:
                found += min((way for way in ways if way), key=len, default=[])
        elif isinstance(item.condition, Compare) and item.negated == met:
            found.append(item)
    return found
