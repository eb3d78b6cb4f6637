"""Explanations: why a partner got each decision, computed without durable_rules.

The explainer walks the same rule model as the compiler but evaluates it
directly in Python: for every table row and program condition it records
the partner's value, the operator, the threshold, and whether it held. Its
conclusions must equal durable_rules' decisions. The property-based test
``tests/test_differential.py`` checks exactly that, and it is the suite's
independent check on the engine.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.evaluate.decide import Decision, keep_offers, partner_values
from engine.evaluate.records import Partner
from engine.evaluate.requirements import (
    Requirement,
    brief_reasons,
    detailed,
    gap,
    leaf_test,
    unmet,
)
from engine.ruleset.conditions import (
    AllOf,
    AnyOf,
    Condition,
    Dated,
    IsMissing,
    NotOf,
    describe,
)
from engine.ruleset.memory import Keep
from engine.ruleset.metrics import T_NUM, Env, before_rounding, round_value
from engine.ruleset.model import ENGAGEMENT, Program, RuleSet, Table, per_rule_set
from engine.ruleset.quarters import Quarter, figures_through
from engine.ruleset.value_types import INTEGER, NUMBER, ValueType, format_value


@dataclass(frozen=True)
class Check:
    """One condition and whether it held for this partner: the tree that
    ``explain`` shows. Why a condition fails comes from
    :mod:`engine.evaluate.requirements`, as for runs and letters."""

    text: str
    holds: bool
    kind: str  # compare, missing, all, any, not
    name: str | None = None
    actual: str | None = None  # the partner's value, formatted
    detail: str = ""  # "has 1" or "needs at least 2, has 1 (1 short)"
    children: tuple[Check, ...] = ()

    def to_json(self) -> dict:
        data: dict[str, Any] = {"condition": self.text, "holds": self.holds}
        if self.kind in ("compare", "missing"):
            data.update(name=self.name, value=self.actual, detail=self.detail)
        else:
            data.update(kind=self.kind, items=[c.to_json() for c in self.children])
        return data


@dataclass(frozen=True)
class RowCheck:
    value: str
    check: Check
    note: str


@dataclass(frozen=True)
class TableExplanation:
    name: str
    label: str
    value: str
    row: int  # index of the deciding row, -1 for the default
    rows: tuple[RowCheck, ...]
    note: str  # the deciding row's note

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "value": self.value,
            "decided_by": "default" if self.row < 0 else f"row {self.row + 1}",
            "note": self.note,
            "rows": [{"value": r.value, **r.check.to_json()} for r in self.rows],
        }


@dataclass(frozen=True)
class ProgramExplanation:
    id: str
    name: str
    enrolled: bool
    eligible: bool  # in effect, condition held, and prerequisites met
    in_effect: bool
    check: Check | None
    missing_prerequisites: tuple[str, ...]
    lost_to: str | None  # the higher-priority group member that won
    group: str | None
    reasons: tuple[str, ...]  # why (or why not), in plain words
    benefits: Mapping[str, Any] = field(default_factory=dict)
    # Enrolled although its conditions do not hold: memory keeps the partner.
    kept: Keep | None = None

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "enrolled": self.enrolled,
            "eligible": self.eligible,
            "in_effect": self.in_effect,
            "group": self.group,
            "lost_to": self.lost_to,
            "missing_prerequisites": list(self.missing_prerequisites),
            "reasons": list(self.reasons),
            "condition": self.check.to_json() if self.check else None,
            "kept": self.kept.to_json() if self.kept else None,
        }


@dataclass(frozen=True)
class Explanation:
    partner_id: str
    as_of: dt.date
    through: Quarter  # the last quarter whose figures the metrics read
    values: Mapping[str, str]  # every field and metric, formatted
    classifications: tuple[TableExplanation, ...]
    engagement: TableExplanation
    programs: tuple[ProgramExplanation, ...]

    def decision(self) -> Decision:
        """The conclusions, in the same shape as the engine's decisions."""
        return Decision(
            partner_id=self.partner_id,
            classifications={t.name: t.value for t in self.classifications},
            rows={**{t.name: t.row for t in self.classifications}, ENGAGEMENT: self.engagement.row},
            engagement=self.engagement.value,
            enrolled=tuple(p.id for p in self.programs if p.enrolled),
            kept={p.id: p.kept for p in self.programs if p.kept is not None},
        )

    def to_json(self) -> dict:
        return {
            "partner_id": self.partner_id,
            "as_of": self.as_of.isoformat(),
            "figures_through": str(self.through),
            "values": dict(self.values),
            "classifications": [t.to_json() for t in self.classifications],
            "engagement_model": self.engagement.to_json(),
            "programs": [p.to_json() for p in self.programs],
        }


def explain(
    ruleset: RuleSet, partner: Partner, as_of: dt.date, through: Quarter | None = None
) -> Explanation:
    through = figures_through(as_of, through)
    values = partner_values(ruleset, partner, as_of, through=through)
    shown = {
        name: format_value(ruleset.type_of(name), values.get(name))
        for name in list(ruleset.fields) + [m.name for m in ruleset.metrics]
    }
    env = Env(values, partner.history, as_of, through)
    for metric in ruleset.metrics:
        before = before_rounding(metric.expr, env)
        if before is not None and round_value(T_NUM, before) != values.get(metric.name):
            kind = ValueType(NUMBER) if metric.type.kind == INTEGER else metric.type
            unrounded = format_value(kind, round_value(T_NUM, before))
            shown[metric.name] += f" ({unrounded} rounded)"
    explainer = _Explainer(ruleset, values, as_of, keep_offers(ruleset, partner.memory, as_of))
    tables = []
    for table in ruleset.classifications:
        result = explainer.table(table)
        values[table.name] = result.value
        tables.append(result)
    engagement = explainer.table(ruleset.engagement)
    values[ENGAGEMENT] = engagement.value
    programs = []
    for program in ruleset.programs:
        result = explainer.program(program, as_of, {p.id: p for p in programs})
        values[program.id] = result.enrolled
        programs.append(result)
    return Explanation(
        partner.partner_id, as_of, through, shown, tuple(tables), engagement, tuple(programs)
    )


class _Explainer:
    def __init__(
        self,
        ruleset: RuleSet,
        values: dict[str, Any],
        as_of: dt.date,
        offers: Mapping[str, Keep] | None = None,
    ):
        self.ruleset = ruleset
        self.values = values
        self.as_of = as_of
        self.offers = offers or {}

    def table(self, table: Table) -> TableExplanation:
        rows = tuple(RowCheck(r.value, self.check(r.when), r.note) for r in table.rows)
        winner = next((i for i, r in enumerate(table.rows) if not self.unmet(r.when)), -1)
        value = rows[winner].value if winner >= 0 else table.default
        note = rows[winner].note if winner >= 0 else table.default_note
        return TableExplanation(table.name, table.label, value, winner, rows, note)

    def program(
        self, program: Program, as_of: dt.date, decided: Mapping[str, ProgramExplanation]
    ) -> ProgramExplanation:
        reasons: list[str] = []
        in_effect = program.in_effect(as_of)
        if not in_effect:
            if program.starts and as_of < program.starts:
                reasons.append(f"not in effect on {as_of}: starts {program.starts}")
            else:
                reasons.append(f"not in effect on {as_of}: ended {program.ends}")
        check = self.check(program.when) if program.when is not None else None
        failing = self.unmet(program.when) if program.when is not None else []
        if check is not None and check.holds == bool(failing):  # pragma: no cover
            raise AssertionError(f"the tree shown for {program.id} disagrees; this is a bug")
        reasons.extend(detailed(self.ruleset, failing))
        keep = self.offers.get(program.id) if failing else None
        missing = tuple(r for r in program.requires if not decided[r].enrolled)
        for required in missing:
            reasons.append(
                f"requires {self.ruleset.program(required).name}, which the partner "
                "is not enrolled in"
            )
        eligible = in_effect and (not failing or keep is not None) and not missing
        lost_to = None
        if program.group:
            for member in self.ruleset.group_members(program.group):
                if member.id == program.id:
                    break
                if decided[member.id].enrolled:
                    lost_to = member.id
                    break
        if eligible and lost_to:
            winner = self.ruleset.program(lost_to)
            reasons.append(
                f"eligible, but {winner.name} (priority {winner.priority}) ranks "
                f"higher in the '{program.group}' group and was chosen"
            )
        enrolled = eligible and lost_to is None
        if not enrolled:
            keep = None
        elif keep is not None:
            reasons.append(f"does not qualify now, but memory keeps it: {keep.describe()}")
        if enrolled and keep is None:
            reasons.append("all conditions hold" if check is not None else "open to every partner")
            if program.group:
                below = [
                    m
                    for m in self.ruleset.group_members(program.group)
                    if m.priority < program.priority
                ]
                if below:
                    reasons.append(
                        f"highest-priority program the partner qualifies for in "
                        f"the '{program.group}' group"
                    )
        return ProgramExplanation(
            program.id,
            program.name,
            enrolled,
            eligible,
            in_effect,
            check,
            missing,
            lost_to,
            program.group,
            tuple(reasons),
            program.benefits,
            keep,
        )

    def unmet(self, condition: Condition) -> list[Requirement]:
        """What keeps ``condition`` from holding (empty: it holds)."""
        return unmet(self.ruleset, condition)(self.values, self.as_of)

    def check(self, condition: Condition) -> Check:
        if isinstance(condition, AllOf):
            children = tuple(self.check(c) for c in condition.items)
            return Check(_text(condition), all(c.holds for c in children), "all", children=children)
        if isinstance(condition, AnyOf):
            children = tuple(self.check(c) for c in condition.items)
            return Check(_text(condition), any(c.holds for c in children), "any", children=children)
        if isinstance(condition, NotOf):
            child = self.check(condition.item)
            return Check(_text(condition), not child.holds, "not", children=(child,))
        if isinstance(condition, Dated):
            child = self.check(condition.item)
            if not condition.in_force(self.as_of):
                return Check(
                    _text(condition),
                    True,
                    "dated",
                    detail=f"not in force on {self.as_of}",
                    children=(child,),
                )
            return Check(_text(condition), child.holds, "dated", children=(child,))
        vtype = self.ruleset.type_of(condition.name)
        value = self.values.get(condition.name)
        shown = format_value(vtype, value)
        holds = leaf_test(condition)(value)
        detail = f"has {shown}" if holds else gap(condition, vtype, value)
        kind = "missing" if isinstance(condition, IsMissing) else "compare"
        return Check(condition.text, holds, kind, condition.name, shown, detail)


def _text(condition: Condition) -> str:
    return describe(condition)


def program_failures(
    ruleset: RuleSet, values: Mapping[str, Any], decision: Decision, as_of: dt.date
) -> dict[str, list[str]]:
    """Why each program the partner is not enrolled in was missed, in short lines
    such as ``certified_technical >= 10: has 8``.

    A lean version of :func:`explain` for batch runs: it evaluates only the
    programs the engine did not enroll, and formats only what failed. Every
    program it returns has at least one reason; a program without one would
    mean the engine and the rules disagree (see :class:`EngineError`).
    """
    known = dict(values)
    known.update(decision.classifications)
    known[ENGAGEMENT] = decision.engagement
    enrolled = decision.enrolled
    ids, plan = per_rule_set("failures", ruleset, _compile_program_failures)
    known.update(dict.fromkeys(ids, False))
    known.update(dict.fromkeys(enrolled, True))
    result: dict[str, list[str]] = {}
    for program_id, higher, dated, failed, requires, group in plan:
        if program_id in enrolled:
            continue
        winner = None
        for member in higher:
            if member in enrolled:
                winner = member
                break
        if winner is not None:
            # The partner holds a higher place in the group: that is the
            # reason; 'explain' gives this program's conditions too.
            result[program_id] = [f"{winner} ranks higher in group {group}"]
            continue
        reasons: list[str] = []
        if dated is not None and not dated.in_effect(as_of):
            reasons.append(f"not in effect on {as_of}")
        if failed is not None:
            reasons += failed(known, as_of)
        if requires:
            reasons += [f"requires {r}" for r in requires if r not in enrolled]
        result[program_id] = reasons
    return result


def _higher(ruleset: RuleSet, program: Program) -> tuple[str, ...]:
    """The members of a program's group that rank above it."""
    if not program.group:
        return ()
    members = [m.id for m in ruleset.group_members(program.group)]
    return tuple(members[: members.index(program.id)])


def _compile_program_failures(ruleset: RuleSet) -> tuple[tuple[str, ...], list[tuple]]:
    """The program ids, and for each program: its id, the group members above
    it, the program when it has dates (else None), the function wording its
    failed conditions (None without conditions), what it requires, its group."""
    plan = [
        (
            p.id,
            _higher(ruleset, p),
            p if p.starts is not None or p.ends is not None else None,
            None if p.when is None else brief_reasons(ruleset, p.when),
            p.requires,
            p.group,
        )
        for p in ruleset.programs
    ]
    return tuple(p.id for p in ruleset.programs), plan
