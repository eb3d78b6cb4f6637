"""The rule model: what a loaded, validated rule set says.

Everything here is produced by :mod:`engine.ruleset.loader` and is immutable.
Stages are listed in the order they are decided: classifications (in
dependency order), then the engagement model, then programs (in dependency
order, exclusive groups by descending priority).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from engine.ruleset.conditions import Condition
from engine.ruleset.expressions import Expr, recalls
from engine.ruleset.memory import Keeping
from engine.ruleset.value_types import BOOL, CHOICE, ValueType
from engine.ruleset.yaml_source import Loc

ENGAGEMENT = "engagement"
NO_ENGAGEMENT = "standard"  # the one model of a rule set without an engagement section


@dataclass(frozen=True)
class FieldDef:
    """A roster attribute (or, in ``history``, a per-quarter figure)."""

    name: str
    type: ValueType
    required: bool
    default: Any
    label: str
    description: str
    loc: Loc
    # Other names the column may have in an export: the CRM's header
    # (``column:``) and ``aliases:``; matched as names are (see
    # engine.data.readers.canonical_header).
    columns: tuple[str, ...] = ()
    # The column may be missing from a file, every partner then getting the
    # default (``may_be_absent: true``); otherwise a missing column stops a run.
    may_be_absent: bool = False
    # The least and most a value may be (``min:``, ``max:``), in the field's
    # type; None: no bound. Counts (integers) are at least 0 and shares
    # (percentages) from 0% to 100% unless the field says otherwise.
    minimum: Any = None
    maximum: Any = None
    # Whether a partner can change it by its own work (``actionable: false``:
    # an invitation, a manager's hold): letters do not list a requirement on
    # it as a step to take.
    actionable: bool = True
    # How a percentage without a % sign reads (``scale:``): "points" (60 is
    # 60%), "fraction" (0.6 is 60%), or "" when the rules do not say; a
    # run then stops rather than guess when every such value is under 1.
    scale: str = ""


@dataclass(frozen=True)
class Parameter:
    """A named constant of the vendor's, such as this year's priority verticals."""

    name: str
    type: ValueType
    value: Any
    description: str
    loc: Loc


@dataclass(frozen=True)
class Metric:
    name: str
    expr: Expr
    source: str
    type: ValueType
    label: str
    description: str
    loc: Loc


@dataclass(frozen=True)
class Row:
    value: str
    when: Condition
    note: str
    loc: Loc


@dataclass(frozen=True)
class Table:
    """An ordered decision table: the first row whose condition holds wins,
    otherwise the default."""

    name: str
    label: str
    description: str
    rows: tuple[Row, ...]
    default: str
    default_note: str
    loc: Loc
    order: tuple[str, ...] = ()  # values from lowest to highest, when they rank

    def direction(self, before: str, after: str) -> str:
        """'up', 'down', or 'changed' (when the values do not rank)."""
        if before in self.order and after in self.order:
            return "up" if self.order.index(after) > self.order.index(before) else "down"
        return "changed"

    @property
    def values(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for value in [r.value for r in self.rows] + [self.default]:
            seen.setdefault(value, None)
        return tuple(seen)


@dataclass(frozen=True)
class EngagementModel:
    id: str
    name: str
    description: str
    resources: Mapping[str, Any]
    loc: Loc


@dataclass(frozen=True)
class Program:
    id: str
    name: str
    description: str
    when: Condition | None
    group: str | None
    priority: int
    starts: dt.date | None
    ends: dt.date | None
    requires: tuple[str, ...]
    benefits: Mapping[str, Any]
    loc: Loc
    # How the program keeps a partner after its conditions stop holding
    # (grace, protection, renewal: engine.ruleset.memory); None: it does not.
    keeping: Keeping | None = None

    def in_effect(self, as_of: dt.date) -> bool:
        return (self.starts is None or self.starts <= as_of) and (
            self.ends is None or as_of <= self.ends
        )


@dataclass(frozen=True)
class RuleSet:
    name: str
    description: str
    currency: str
    folder: str
    fingerprint: str
    fields: Mapping[str, FieldDef]
    figures: Mapping[str, FieldDef]
    parameters: Mapping[str, Parameter]
    metrics: tuple[Metric, ...]
    classifications: tuple[Table, ...]
    engagement: Table
    engagement_models: Mapping[str, EngagementModel]
    programs: tuple[Program, ...]
    files: tuple[str, ...] = field(default=())
    # False when the rule files have no engagement section: every partner then
    # gets the one implicit model NO_ENGAGEMENT, which outputs do not show.
    engagement_declared: bool = True
    # The share of a roster's rows that may be rejected; more stops a run
    # before anything is recorded (``ruleset: max_rejects:``, ``--max-rejects``).
    max_rejects: float = 0.05
    # The share of decided partners whose tier, classification or engagement
    # model may change against the previous run before the run is held: its
    # letters wait for a manager (``ruleset: max_moves:``, ``--max-moves``).
    max_moves: float = 0.20

    @cached_property
    def uses_memory(self) -> bool:
        """Whether decisions read what partners held in earlier runs: a
        program keeps partners (grace, protection, renewal) or a metric
        recalls (held, runs_held, ...). Runs then load each partner's memory."""
        return any(p.keeping for p in self.programs) or any(recalls(m.expr) for m in self.metrics)

    @cached_property
    def keeping_programs(self) -> tuple[Program, ...]:
        return tuple(p for p in self.programs if p.keeping is not None)

    def program(self, program_id: str) -> Program:
        return self._programs_by_id[program_id]

    @cached_property
    def _programs_by_id(self) -> dict[str, Program]:
        return {p.id: p for p in self.programs}

    def group_members(self, group: str) -> list[Program]:
        """Members of an exclusive group, highest priority first."""
        return [p for p in self.programs if p.group == group]

    @cached_property
    def _types(self) -> dict[str, ValueType]:
        types = {name: f.type for name, f in self.fields.items()}
        types.update({m.name: m.type for m in self.metrics})
        types.update({t.name: ValueType(CHOICE, t.values) for t in self.classifications})
        types[ENGAGEMENT] = ValueType(CHOICE, self.engagement.values)
        types.update({p.id: ValueType(BOOL) for p in self.programs})
        return types

    def type_of(self, name: str) -> ValueType | None:
        """The type of anything a condition can name."""
        return self._types.get(name)

    def label_of(self, name: str) -> str:
        """The label of anything a condition can name (the name itself if none)."""
        return self._labels.get(name, name)

    @cached_property
    def _labels(self) -> dict[str, str]:
        labels = {p.id: p.name for p in reversed(self.programs)}
        labels[ENGAGEMENT] = self.engagement.label
        named = self.metrics + self.classifications
        labels.update({item.name: item.label for item in reversed(named)})
        labels.update({name: f.label for name, f in self.fields.items()})
        return labels


_made: dict[tuple[str, str], Any] = {}


def per_rule_set(what: str, ruleset: RuleSet, build: Callable[[RuleSet], Any]) -> Any:
    """``build(ruleset)``, made once per process and rule set.

    For what is costly to make and cannot travel to a worker process with the
    rule set: a compiled engine, parsers, closures. Keyed by the rule set's
    fingerprint (a digest of its files).
    """
    key = (what, ruleset.fingerprint)
    found = _made.get(key)
    if found is None:
        if len(_made) >= 32:  # a process rarely sees more than two rule sets
            _made.clear()
        found = _made[key] = build(ruleset)
    return found


def per_part(what: str, ruleset: RuleSet, part: Any, build: Callable[[Any], Any]) -> Any:
    """``build(part)`` for one part of a rule set (a condition, a leaf, the rule
    set object itself), made once per process. Kept with the part it was
    made for: a part made later at the same address is never given another's,
    and rule sets that share a fingerprint share nothing here."""
    made = per_rule_set(what, ruleset, lambda _: {})
    found = made.get(id(part))
    if found is None or found[0] is not part:
        found = made[id(part)] = (part, build(part))
    return found[1]
