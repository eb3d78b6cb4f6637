"""How a letter states a requirement of the rules, in each language.

A requirement (see :func:`engine.letters.facts.leaves`) is one comparison:
what is measured, the operator, what the rule asks, the partner's value and
how far it is short. ``templates/<language>/phrases.yaml`` holds one pattern
per kind of comparison, written by whoever writes the letters, not by
Python::

    at_least: "{name}: at least {threshold} needed, {you_have}{short}"
    you_have: "you have {actual}"
    nothing_on_record: nothing is on record for you
    short: {one: " ({amount} to go)", other: " ({amount} to go)"}

Patterns name their slots in braces; only the slots listed in
:data:`SLOTS` exist, so a pattern cannot reach into Python the way
``str.format`` could (``{name.__class__}``). A value in a slot is
formatted for the letter's locale (money with its currency, percentages
rounded for reading: :meth:`engine.letters.rendering.Formats.value`),
choices are joined the locale's way ("good, at risk or probation", Babel's
list patterns), a missing value says so (``nothing_on_record``), and words
that agree with a number (``short``) take the CLDR plural form of the
language (Babel's plural rules).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babel import Locale
from babel.lists import format_list

from engine.errors import Problem, RuleSetError
from engine.ruleset.value_types import BOOL, LIST, NUMERIC
from engine.ruleset.yaml_source import YMap, load_yaml

PHRASES_FILE = "phrases.yaml"
# Each kind of requirement and the slots its pattern may use. {you_have} is
# the ``you_have`` pattern with the partner's value, or ``nothing_on_record``.
_REQUIREMENT = ("name", "you_have")
KINDS: dict[str, tuple[str, ...]] = {
    "needed": ("name",),  # a yes/no that must be yes
    "not_allowed": ("name",),  # a yes/no that must be no
    "at_least": (*_REQUIREMENT, "threshold", "short"),  # >=
    "more_than": (*_REQUIREMENT, "threshold", "short"),  # >
    "at_most": (*_REQUIREMENT, "threshold", "short"),  # <=
    "less_than": (*_REQUIREMENT, "threshold", "short"),  # <
    "between": (*_REQUIREMENT, "low", "high"),
    "equals": (*_REQUIREMENT, "threshold"),  # ==
    "not_equals": (*_REQUIREMENT, "threshold"),  # !=
    "one_of": (*_REQUIREMENT, "choices"),  # in
    "none_of": (*_REQUIREMENT, "choices"),  # not in
    "contains": (*_REQUIREMENT, "threshold"),  # a list that must hold an item
    "you_have": ("actual",),
    "nothing_on_record": (),
    "no_items": (),  # an empty list, as the partner's value
}
# Patterns by CLDR plural category, for {short}: how far a partner is below
# a minimum (short) or above a maximum (over).
PLURAL_KINDS = {"short": ("amount",), "over": ("amount",)}
SLOTS = frozenset(slot for slots in (*KINDS.values(), *PLURAL_KINDS.values()) for slot in slots)
_OPERATORS = {
    ">=": "at_least",
    ">": "more_than",
    "<=": "at_most",
    "<": "less_than",
    "between": "between",
    "==": "equals",
    "!=": "not_equals",
    "in": "one_of",
    "not in": "none_of",
    "contains": "contains",
}
_CATEGORIES = ("zero", "one", "two", "few", "many", "other")


@dataclass(frozen=True)
class Phrases:
    """One language's patterns (see the module docstring)."""

    patterns: Mapping[str, str]
    plurals: Mapping[str, Mapping[str, str]]

    def requirement(
        self,
        requirement: Mapping[str, Any],
        locale: Locale,
        value: Callable[..., str],
        term: Callable[[str, str | None], str],
    ) -> str:
        """The sentence for one requirement. ``value(v, kind, near)`` formats a
        value for the letter (``near``: the threshold it is compared with);
        ``term(id, label)`` is the language's word for a rule id."""
        kind_of_value = requirement["type"]
        op = requirement["op"]
        threshold = requirement.get("threshold")
        slots: dict[str, str] = {"name": term(requirement["name"], requirement.get("label"))}
        if kind_of_value == BOOL:
            wanted = bool(threshold) if op == "==" else not threshold
            return self._fill("needed" if wanted else "not_allowed", slots)
        kind = _OPERATORS[op]
        actual = requirement.get("actual")
        near = threshold if kind_of_value in NUMERIC else None
        if actual is None:
            slots["you_have"] = self._fill("nothing_on_record", {})
        else:
            shown = (
                self._fill("no_items", {})
                if kind_of_value == LIST and not actual
                else value(actual, kind_of_value, near)
            )
            slots["you_have"] = self._fill("you_have", {"actual": shown})
        if kind == "between":
            low, high = requirement["choices"]
            slots["low"] = value(low, kind_of_value, low)
            slots["high"] = value(high, kind_of_value, high)
        elif kind in ("one_of", "none_of"):
            words = [value(choice, kind_of_value, None) for choice in requirement["choices"]]
            slots["choices"] = format_list(words, style="or", locale=locale)
        elif kind == "contains":
            slots["threshold"] = value(threshold, None, None)
        else:
            slots["threshold"] = value(threshold, kind_of_value, near)
        short = requirement.get("short")
        slots["short"] = ""
        if short is not None and kind in ("at_least", "more_than", "at_most", "less_than"):
            plural = "short" if kind in ("at_least", "more_than") else "over"
            slots["short"] = self._plural(plural, short, locale, value(short, kind_of_value, near))
        return self._fill(kind, slots)

    def _plural(self, kind: str, count: Any, locale: Locale, shown: str) -> str:
        forms = self.plurals[kind]
        category = locale.plural_form(abs(count))
        return forms.get(category, forms["other"]).format_map({"amount": shown})

    def _fill(self, kind: str, slots: Mapping[str, str]) -> str:
        return self.patterns[kind].format_map(slots)


def load_phrases(folder: str | Path, language: str) -> Phrases:
    """A language's patterns from ``<folder>/<language>/phrases.yaml``;
    every problem is reported with its line (RuleSetError)."""
    path = Path(folder) / language / PHRASES_FILE
    name = str(path)
    if not path.is_file():
        raise RuleSetError(
            [
                Problem(
                    name,
                    1,
                    1,
                    f"missing: each language folder needs a {PHRASES_FILE} (how its letters "
                    f"state requirements); copy templates/{language}/{PHRASES_FILE} from the "
                    "templates shipped with eligibility, or one of another language to translate",
                )
            ],
            "the letter templates",
        )
    data, problems = load_yaml(path, folder=Path(folder))
    patterns: dict[str, str] = {}
    plurals: dict[str, dict[str, str]] = {}
    if data is not None and not isinstance(data, YMap):
        problems.append(Problem(name, 1, 1, f"{PHRASES_FILE} must map kinds to patterns"))
    elif data is not None:
        for key in data:
            if key not in KINDS and key not in PLURAL_KINDS:
                allowed = ", ".join([*KINDS, *PLURAL_KINDS])
                problems.append(
                    data.key_loc(key).problem(f"unknown phrase '{key}' (phrases: {allowed})")
                )
        for key, slots in KINDS.items():
            if key not in data:
                problems.append(data.loc.problem(f"missing phrase '{key}'"))
                continue
            pattern = _pattern(data, key, data[key], slots, problems)
            if pattern is not None:
                patterns[key] = pattern
        for key, slots in PLURAL_KINDS.items():
            forms = data.get(key)
            if not isinstance(forms, YMap) or "other" not in forms:
                problems.append(
                    data.loc.problem(
                        f"missing phrase '{key}': its forms by plural category, at least "
                        f"'other' (like {key}: {{one: ..., other: ...}})"
                    )
                )
                continue
            plurals[key] = {}
            for category, raw in forms.items():
                if category not in _CATEGORIES:
                    problems.append(
                        forms.key_loc(category).problem(
                            f"'{category}' is not a plural category ({', '.join(_CATEGORIES)})"
                        )
                    )
                    continue
                pattern = _pattern(forms, category, raw, slots, problems)
                if pattern is not None:
                    plurals[key][category] = pattern
    if problems:
        raise RuleSetError(problems, "the letter templates")
    return Phrases(patterns, plurals)


def _pattern(
    data: YMap, key: str, raw: Any, slots: tuple[str, ...], problems: list[Problem]
) -> str | None:
    """A pattern whose braces name only its own slots (no attributes, indexes,
    conversions or format specifications)."""
    where = data.value_loc(key)
    if not isinstance(raw, str):
        problems.append(where.problem(f"phrase '{key}' must be text"))
        return None
    try:
        fields = list(string.Formatter().parse(raw))
    except ValueError as error:
        problems.append(where.problem(f"phrase '{key}': {error} (write a brace as {{{{ or }}}})"))
        return None
    for _, field, spec, conversion in fields:
        if field is None:
            continue
        if field not in slots or spec or conversion:
            allowed = ", ".join("{" + s + "}" for s in slots) or "none"
            problems.append(
                where.problem(f"phrase '{key}' cannot use {{{field}}} (its slots: {allowed})")
            )
            return None
    return raw
