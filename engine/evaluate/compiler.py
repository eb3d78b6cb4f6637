"""Compile a rule model into durable_rules' JSON ruleset form.

Each partner moves through *stages*, one per decision: every classification
table (in dependency order), the engagement model, then every program
(in dependency order). A stage's rules are exhaustive and mutually
exclusive, so exactly one rule fires per partner and stage, recording the
decision. Stages that do not test each other's decisions share a *level*
(:func:`_levels`): a stage's rules match the partner's fact for its level
(``st == k``), and once a level has fired, the fact for the next level is
asserted with the decisions made so far: this is the forward chaining. Each
level's fact holds only the attributes its rules test (``Stage.reads``); the
adapter keeps the rest of a partner's values and decisions outside the
engine until a later level tests them.

* A table row *i* fires when its condition holds and no earlier row's does;
  the default fires when no row holds.
* A program's "enrolled" rule requires: in effect on the as-of date, its
  condition, every required program enrolled, and no higher-priority member
  of its exclusive group enrolled. Its "not enrolled" rule is the negation.
* A program that keeps partners (grace, protection, renewal) has its
  condition decided first in a helper stage, which records whether the
  partner qualifies; its condition gate is then "qualifies, or memory keeps
  it" (the input :func:`kept_input`, worked out by engine.ruleset.memory).
* A *leaf* program (no group, and no other program requires or mentions it)
  has only its "enrolled" rule, on the final stage: the rule fires once for
  each partner it enrolls, and no action runs for partners it does not.

Conditions are compiled to disjunctive normal form: each outcome becomes
one or more durable rules whose conditions are flat conjunctions of simple
tests, with no ``$or``, for two reasons. durable_rules fires once per satisfied
``$or`` branch, and it rejects nested expressions longer than 31 items (error
113). The conjunctions of one stage are mutually exclusive by construction:
``a or b`` becomes ``a`` and ``not a and b``. Conjunctions that can never
hold (``x < 5 and x >= 10``) are dropped.

Negations are pushed down to the leaves. A comparison with a missing value
is false, so its negation is "missing, or the opposite comparison": the
same rule the explainer uses.

Nothing here imports durable_rules; :mod:`engine.evaluate.durable_adapter` runs it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from engine.ruleset.conditions import (
    AllOf,
    AnyOf,
    Compare,
    Condition,
    Dated,
    IsMissing,
    NotOf,
    describe,
    is_dated,
    names_read,
)
from engine.ruleset.model import ENGAGEMENT, Program, RuleSet, Table
from engine.ruleset.semantics import toposort

STAGE = "st"  # the stage a fact is at
PARTNER = "pid"  # the partner id (never read by a condition)
AS_OF = "asof"  # the run's as-of date, as a day number
VALUE_PREFIX = "v_"  # every user-named value; keeps clear of durable's own 'id' and 'sid'
ROW_PREFIX = "r_"  # which row of a table decided (-1 for the default)
COUNT_PREFIX = "n_"  # number of items in a list value (durable cannot test for [])


def attr(name: str) -> str:
    return VALUE_PREFIX + name


KEPT_PREFIX = "_kept_"  # an input: memory keeps the partner in a program (engine.ruleset.memory)


def kept_input(program_id: str) -> str:
    """The yes/no input saying a program's keeping (grace, protection,
    renewal) would keep the partner should its conditions not hold."""
    return KEPT_PREFIX + program_id


def count_attr(name: str) -> str:
    return COUNT_PREFIX + name


def _reads(names) -> set[str]:
    """Fact attributes a condition over these names reads (value and list size)."""
    return {a for n, _ in names for a in (attr(n), count_attr(n))}


def _condition_reads(conditions) -> set[str]:
    """Fact attributes some conditions read, the as-of date included if dated."""
    conditions = [c for c in conditions if c is not None]
    reads = _reads(n for c in conditions for n in names_read(c))
    return reads | ({AS_OF} if any(is_dated(c) for c in conditions) else set())


SCALE = 1_000_000  # numbers travel as whole millionths
MAX_ENCODED = 2**63 - 1  # durable_rules reads integers as 64-bit


def encode(value: Any) -> Any:
    """A typed value as durable_rules sees it.

    Numbers become whole millionths (``0.9`` is ``900000``) and dates become day
    numbers. durable_rules' JSON parser cannot read exponent notation, which
    Python writes for small or large floats (``5e-05``): a fact holding one
    crashes the engine or silently loses its batch. Values are kept on a
    six-decimal grid (:func:`engine.ruleset.value_types.canonical`), so this encoding
    is exact and the engine compares exactly what the explainer compares.
    """
    kind = type(value)
    if kind is float or kind is int:  # the common case first
        scaled = round(value * SCALE)
        if abs(scaled) > MAX_ENCODED:
            raise ValueError(f"{value} is too large for the rules engine")
        return scaled
    if isinstance(value, bool) or isinstance(value, str) or value is None:
        return value
    if isinstance(value, dt.date):
        return value.toordinal()
    if isinstance(value, (int, float)):
        scaled = round(value * SCALE)
        if abs(scaled) > MAX_ENCODED:
            raise ValueError(f"{value} is too large for the rules engine")
        return scaled
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__}")  # pragma: no cover


# A leaf test is (attribute, operator, value); a conjunction is a list of
# leaves; a DNF is a list of mutually exclusive conjunctions. [] is "never",
# [[]] is "always".
Leaf = tuple
DNF = list


@dataclass(frozen=True)
class Outcome:
    """What the rule's action records: ``decision`` becomes ``value``, and
    each (program id, yes/no) in ``also`` is recorded too."""

    decision: str  # table name, 'engagement', program id, or group stage
    value: Any  # row value, or True/False for a program
    row: int | None  # table row index (-1 default); None for programs
    also: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True)
class Stage:
    index: int
    kind: str  # classification, engagement, program, final
    decision: str
    rules: tuple[tuple[str, dict, Outcome | None], ...]  # (rule name, durable condition, outcome)
    reads: tuple[str, ...]  # attributes its rules test (the level number aside)
    level: int = 0  # the fact its rules match: st == level (see _levels)


@dataclass(frozen=True)
class CompiledRules:
    stages: tuple[Stage, ...]
    inputs: tuple[str, ...]  # the values rules test, which a partner's record starts with
    # For each program that keeps partners: the fact attribute of the helper
    # decision saying whether the partner qualifies by its conditions (a
    # partner enrolled without qualifying is kept by memory).
    qualifies: tuple[tuple[str, str], ...] = ()

    @property
    def final_stage(self) -> int:
        return len(self.stages) - 1

    @property
    def levels(self) -> tuple[tuple[Stage, ...], ...]:
        """The stages of each level, in order; a partner has one fact per level."""
        count = max(stage.level for stage in self.stages) + 1
        return tuple(tuple(s for s in self.stages if s.level == level) for level in range(count))


STAGE_BUDGET = 96  # rules per stage before sub-conditions move to helper stages
# More than 64 rules with a list test ($iany/$iall) that hold for a fact in
# one stage make durable_rules fail the batch with error 303
# (tests/test_durable_adapter.py); the differential test found a level of 64
# such rules among others that failed too, so the budget keeps a margin.
LIST_RULE_BUDGET = 48
LIST_OPS = ("iany", "iall_neq")
HELPER_PREFIX = "_h"  # helper decisions; user names cannot start with "_"
GROUP_BLOCK = 24  # members of an exclusive group decided per stage (see _Planner._group)
EARLIER_WINNER = "_earlier"  # a group stage's decision when a stage before it enrolled one


def compile_rules(ruleset: RuleSet) -> CompiledRules:
    try:
        return _Planner(ruleset).compile()
    finally:
        _NORMAL_FORMS.clear()


class _Planner:
    """Plans the stages, moving big sub-conditions into helper stages.

    The normal form of a table grows with the product of its rows'
    alternatives, and durable_rules overflows its evaluation stack (error 303)
    on stages with hundreds of rules. When a stage would exceed
    :data:`STAGE_BUDGET` rules, each row's (or the program's) condition is
    decided first in a helper stage of its own, which records yes or no, and
    the stage tests those answers instead. Helpers nest as deep as needed,
    so the size stays linear in the rule text.
    """

    def __init__(self, ruleset: RuleSet):
        self.ruleset = ruleset
        self.plans: list[tuple[str, str, list[tuple[str, DNF, Outcome]], set[str]]] = []
        self.leaves: list[tuple[str, str, list[tuple[str, DNF, Outcome]], set[str]]] = []
        self.helpers = 0
        self.qualifies: dict[str, str] = {}
        self.always = (
            {attr(t.name) for t in ruleset.classifications}
            | {attr(ENGAGEMENT), AS_OF}
            | {attr(p.id) for p in ruleset.programs}
        )

    def compile(self) -> CompiledRules:
        for table in self.ruleset.classifications:
            self._table(table, "classification")
        self._table(self.ruleset.engagement, "engagement")
        used = {r for p in self.ruleset.programs for r in p.requires} | {
            n for p in self.ruleset.programs if p.when is not None for n, _ in names_read(p.when)
        }
        units = self._program_units()
        for unit in units:
            if isinstance(unit, str):
                self._group(unit)
            else:
                self._program(unit, leaf=unit.group is None and unit.id not in used)
        return self._stages()

    def _program_units(self) -> list:
        """Programs in decision order, each exclusive group as one unit (its name).

        If deciding a group at once would put it in a circle with other
        programs (one member needed before, another after), its members are
        decided one by one instead.
        """
        programs = self.ruleset.programs
        unit_of = {p.id: (p.group or p.id) for p in programs}
        deps: dict[str, set[str]] = {}
        for p in programs:
            needed = set(p.requires) | ({n for n, _ in names_read(p.when)} if p.when else set())
            deps.setdefault(unit_of[p.id], set()).update(
                unit_of[n] for n in needed if n in unit_of and unit_of[n] != unit_of[p.id]
            )
        names = list(dict.fromkeys(unit_of[p.id] for p in programs))
        order, cycle = toposort(names, deps)
        if cycle:
            return list(programs)
        groups = {p.group for p in programs if p.group}
        by_id = {p.id: p for p in programs}
        return [name if name in groups else by_id[name] for name in order]

    # --- stages of decisions -------------------------------------------------

    def _table(self, table: Table, kind: str) -> None:
        rules, conditions = self._fit(
            lambda cs: _table_rules(table, cs), [self._bounded(row.when) for row in table.rows]
        )
        self._add(kind, table.name, rules, _condition_reads(conditions))

    def _fit(self, build, conditions: list):
        """Rules from ``build(conditions)`` within the budget: the biggest
        conditions move to helper stages, one at a time, until they fit;
        after four, twice as many each time (so a table or group of hundreds
        is rebuilt a dozen times, not hundreds)."""
        conditions = list(conditions)
        rules = self._sized(lambda: build(conditions))
        step = 0
        while rules is None:
            step += 1
            batch = 1 if step <= 4 else 2 ** (step - 4)
            sizes = sorted(
                ((size, i) for i, c in enumerate(conditions) if (size := _size(c)) > 2),
                reverse=True,
            )
            if not sizes:
                return build(conditions), conditions  # as small as it gets
            for _, i in sizes[:batch]:
                conditions[i] = self._helper(conditions[i])
            rules = self._sized(lambda: build(conditions))
        return rules, conditions

    def _program(self, program: Program, leaf: bool) -> None:
        """A program nothing else depends on (a *leaf*) is decided on the final
        stage by an "enrolled" rule alone: it costs an action only for the
        partners it enrolls. Other programs get a stage of their own. Leaves
        share the final stage, so they share its budget of list rules too."""
        when = self._remembered(program, self._bounded(program.when))
        rules = self._sized(lambda: self._program_rules(program, when, leaf))
        if rules is None:
            when = self._helper(when)
            rules = self._program_rules(program, when, leaf)
        if (
            leaf
            and self._list_rules(rules) + sum(self._list_rules(r) for _, _, r, _ in self.leaves)
            > LIST_RULE_BUDGET
        ):
            leaf = False
            rules = self._program_rules(program, when)
        reads = _condition_reads([when])
        if program.starts or program.ends:
            reads.add(AS_OF)
        reads |= {attr(r) for r in program.requires}
        reads |= {attr(m.id) for m in self._higher(program)}
        if leaf:
            self.leaves.append(("leaf", program.id, rules, reads))
        else:
            self._add("program", program.id, rules, reads)

    def _group(self, group: str) -> None:
        """An exclusive group as a first-match stage: its members, highest
        priority first, are its rows; a row holds when all of that member's
        gates hold. The winner is enrolled and every other member is not.

        A big group is decided :data:`GROUP_BLOCK` members per stage, in
        order: each stage records its winner, or "" when none of its members
        qualifies, and the next stage decides only when the one before
        recorded "". Its rules then stay within durable_rules' limits however
        many members the group has."""
        members = self.ruleset.group_members(group)
        blocks = [members[i : i + GROUP_BLOCK] for i in range(0, len(members), GROUP_BLOCK)]
        before = None  # the decision of the block before
        for number, block in enumerate(blocks, 1):
            decision = f"{HELPER_PREFIX}group_{group}" + (f"_{number}" if len(blocks) > 1 else "")
            rules, whens = self._fit(
                lambda ws, block=block, decision=decision, before=before: self._group_rules(
                    group, block, ws, decision, before
                ),
                [self._remembered(m, self._bounded(m.when)) for m in block],
            )
            self.always.add(attr(decision))
            reads = _condition_reads(whens)
            reads |= {attr(r) for m in block for r in m.requires}
            if before is not None:
                reads.add(attr(before))
            if any(m.starts or m.ends for m in block):
                reads.add(AS_OF)
            self._add("group", decision, rules, reads)
            before = decision

    def _group_rules(
        self,
        group: str,
        members: list[Program],
        whens: list,
        decision: str,
        before: str | None = None,
    ):
        """The rules of one stage of a group (see :meth:`_group`); ``before``:
        the decision of the stage before, which must be "" for these members
        to compete."""
        ids = [m.id for m in members]
        rules = []
        earlier_fail: list[DNF] = []
        if before is not None:
            rules.append(
                (
                    f"{decision}__decided_before",
                    [[(attr(before), "neq", "")]],
                    Outcome(decision, EARLIER_WINNER, None, tuple((i, False) for i in ids)),
                )
            )
            earlier_fail.append([[(attr(before), "eq", "")]])
        for member, when in zip(members, whens):
            gates = self._gates(member, when, with_group=False)
            holds = _product([g[0] for g in gates])
            rules.append(
                (
                    f"{member.id}__wins",
                    _product(earlier_fail + [holds]),
                    Outcome(decision, member.id, None, tuple((i, i == member.id) for i in ids)),
                )
            )
            earlier_fail.append(
                _exclusive_or([(fails, ok) for ok, fails in gates]) if gates else []
            )
        rules.append(
            (
                f"{decision}__none",
                _product(earlier_fail),
                Outcome(decision, "", None, tuple((i, False) for i in ids)),
            )
        )
        return rules

    def _remembered(self, program: Program, when: Condition | None) -> Condition | None:
        """A keeping program's gate: its condition, decided first in a helper
        stage (whose answer says whether the partner qualifies), or memory
        keeping the partner (see :func:`kept_input`)."""
        if program.keeping is None or when is None:
            return when
        qualifies = self._helper(when, force=True)
        self.qualifies[program.id] = attr(qualifies.name)
        kept = Compare(kept_input(program.id), "==", (True,), "kept by memory", when.loc)
        return AnyOf((qualifies, kept), when.loc)

    def _higher(self, program: Program) -> list[Program]:
        if not program.group:
            return []
        members = self.ruleset.group_members(program.group)
        return members[: members.index(program)]

    def _program_rules(self, program: Program, when: Condition | None, leaf: bool = False):
        gates = self._gates(program, when)
        rules = [
            (
                f"{program.id}__enrolled",
                _product([g[0] for g in gates]),
                Outcome(program.id, True, None),
            )
        ]
        if gates and not leaf:
            rules.append(
                (
                    f"{program.id}__not_enrolled",
                    _exclusive_or([(fails, holds) for holds, fails in gates]),
                    Outcome(program.id, False, None),
                )
            )
        return rules

    def _gates(
        self, program: Program, when: Condition | None, with_group: bool = True
    ) -> list[tuple[DNF, DNF]]:
        """What enrollment needs, each as (holds, fails) in normal form."""
        gates: list[tuple[DNF, DNF]] = _window(program.starts, program.ends)
        if when is not None:
            gates.append((dnf(when), dnf(when, negate=True)))
        for required in program.requires:
            gates.append(([[(attr(required), "eq", True)]], [[(attr(required), "eq", False)]]))
        for member in self._higher(program) if with_group else []:
            gates.append(([[(attr(member.id), "eq", False)]], [[(attr(member.id), "eq", True)]]))
        return gates

    # --- helpers ---------------------------------------------------------------

    def _sized(self, build):
        """The rules ``build`` makes, or None when they are over the budget."""
        try:
            rules = build()
        except CompileError:
            return None
        total = sum(len(_simplify(terms, self.always)) for _, terms, _ in rules)
        if total > STAGE_BUDGET or self._list_rules(rules) > LIST_RULE_BUDGET:
            return None
        return rules

    def _list_rules(self, rules) -> int:
        """How many of the rules' conjunctions test a list, once simplified."""
        return _list_rules(
            [(name, _simplify(terms, self.always), outcome) for name, terms, outcome in rules]
        )

    def _bounded(self, condition: Condition | None) -> Condition | None:
        """``condition`` with every part whose normal forms would exceed a
        stage's budget decided first in a helper stage, innermost first.

        Working from the leaves up, no part's normal form is ever built from
        parts bigger than the budget, so compile time stays linear in the
        rule text however deep the nesting (``a and (b or (c and (d or
        ...))))`` 500 levels deep grows a form of 250 cases otherwise, built
        again at each level)."""
        if isinstance(condition, NotOf):
            item = self._bounded(condition.item)
            return condition if item is condition.item else NotOf(item, condition.loc)
        if isinstance(condition, Dated):
            item = self._bounded(condition.item)
            if item is not condition.item:
                condition = Dated(item, condition.starts, condition.ends, condition.loc)
        elif isinstance(condition, (AllOf, AnyOf)):
            items = tuple(self._bounded(item) for item in condition.items)
            if any(new is not old for new, old in zip(items, condition.items)):
                condition = type(condition)(items, condition.loc)
        else:
            return condition  # a comparison, or None
        return self._helper(condition) if _size(condition) > STAGE_BUDGET else condition

    def _helper(self, condition: Condition, force: bool = False) -> Condition:
        """Decide ``condition`` in a helper stage; return a test of its answer
        (``force``: a stage of its own even for a negation)."""
        if isinstance(condition, Compare) and condition.name.startswith(HELPER_PREFIX):
            return condition
        if isinstance(condition, (AllOf, AnyOf)):
            inner = self._sized(lambda: self._helper_rules("_", condition))
            if inner is None:  # decide the parts first
                items = tuple(
                    c if isinstance(c, (Compare, IsMissing)) else self._helper(c)
                    for c in condition.items
                )
                condition = type(condition)(items, condition.loc)
        elif isinstance(condition, NotOf) and not force:
            return NotOf(self._helper(condition.item), condition.loc)
        self.helpers += 1
        name = f"{HELPER_PREFIX}{self.helpers}"
        self.always.add(attr(name))
        self._add(
            "helper", name, self._helper_rules(name, condition), _condition_reads([condition])
        )
        return Compare(name, "==", (True,), describe(condition), condition.loc)

    @staticmethod
    def _helper_rules(name: str, condition: Condition):
        return [
            (f"{name}__holds", dnf(condition), Outcome(name, True, None)),
            (f"{name}__fails", dnf(condition, negate=True), Outcome(name, False, None)),
        ]

    # --- assembling stages -----------------------------------------------------------

    def _add(self, kind, decision, rules, reads) -> None:
        self.plans.append((kind, decision, rules, reads))

    def _stages(self) -> CompiledRules:
        simple = lambda plans: [
            (
                kind,
                decision,
                [
                    (name, _simplify(terms, self.always), outcome)  # noqa: E731
                    for name, terms, outcome in rules
                ],
                reads,
            )
            for kind, decision, rules, reads in plans
        ]
        plans, leaves = simple(self.plans), simple(self.leaves)
        leaf_reads = set().union(set(), *[p[3] for p in leaves])
        stage_rules = [rules for _, _, rules, _ in plans] + [
            [("final", [[]], None)] + [rule for _, _, rules, _ in leaves for rule in rules]
        ]
        levels = _levels(stage_rules)
        decisions = [(kind, decision) for kind, decision, _, _ in plans] + [("final", "")]
        stages = tuple(
            Stage(
                index,
                kind,
                decision,
                _staged(index, levels[index], rules),
                tuple(sorted(_tests(rules))),
                levels[index],
            )
            for index, ((kind, decision), rules) in enumerate(zip(decisions, stage_rules))
        )
        inputs = sorted(
            a
            for a in set().union(leaf_reads, *[p[3] for p in plans])
            if a.startswith(VALUE_PREFIX) and not a.startswith(attr(HELPER_PREFIX))
        )
        return CompiledRules(stages, tuple(inputs), tuple(self.qualifies.items()))


def _levels(stage_rules: list[list]) -> list[int]:
    """Each stage's *level*: the stages of one level share a fact, so a partner
    needs one fact per level rather than per stage (durable_rules' cost is
    mostly per fact). A stage goes one level after the last stage whose
    decisions it tests, and further on while its level would exceed the stage
    budgets, which hold per fact. The final stage (the last) has a level of
    its own."""
    levels: list[int] = []
    loads: list[list[int]] = []  # per level: rules, list rules
    made: list[set[str]] = []  # per stage: the attributes its actions record
    for index, rules in enumerate(stage_rules):
        tests = _tests(rules)
        if index == len(stage_rules) - 1:
            level = max(levels, default=-1) + 1
        else:
            level = max((levels[j] + 1 for j in range(index) if made[j] & tests), default=0)
        size = sum(len(terms) for _, terms, _ in rules)
        lists = _list_rules(rules)
        while level < len(loads) and (
            loads[level][0] + size > STAGE_BUDGET or loads[level][1] + lists > LIST_RULE_BUDGET
        ):
            level += 1
        while len(loads) <= level:
            loads.append([0, 0])
        loads[level][0] += size
        loads[level][1] += lists
        levels.append(level)
        made.append(
            {a for _, _, outcome in rules if outcome is not None for a in _recorded(outcome)}
        )
    return levels


def _tests(rules) -> set[str]:
    """The fact attributes the rules' conjunctions test (each leaf's name is
    the attribute its durable condition tests: see :func:`_leaf_json`)."""
    return {name for _, terms, _ in rules for conjunction in terms for name, _, _ in conjunction}


def _list_rules(rules) -> int:
    """How many of the rules' conjunctions test a list (see LIST_RULE_BUDGET)."""
    return sum(
        1
        for _, terms, _ in rules
        for conjunction in terms
        if any(op in LIST_OPS for _, op, _ in conjunction)
    )


def _recorded(outcome: Outcome) -> set[str]:
    """The fact attributes a rule's action records."""
    names = {attr(outcome.decision)} | {attr(program) for program, _ in outcome.also}
    return names | ({ROW_PREFIX + outcome.decision} if outcome.row is not None else set())


def _size(condition: Condition | None) -> int:
    """How many rules a condition and its negation make (helpers count as 2)."""
    if condition is None:
        return 0
    if isinstance(condition, Compare) and condition.name.startswith(HELPER_PREFIX):
        return 2
    try:
        return len(dnf(condition)) + len(dnf(condition, negate=True))
    except CompileError:
        return MAX_CONJUNCTIONS


def _staged(index: int, level: int, rules) -> tuple:
    """(rule name, durable condition, outcome) for each conjunction of each rule."""
    return tuple(
        (f"s{index}__{name}__{j + 1}", _at_level(level, conjunction), outcome)
        for name, terms, outcome in rules
        for j, conjunction in enumerate(terms)
    )


def ruleset_definition(compiled: CompiledRules) -> dict[str, dict]:
    """The JSON ruleset (without actions): {rule name: {"all": [{"m": condition}]}}."""
    return {
        name: {"all": [{"m": cond}]} for stage in compiled.stages for name, cond, _ in stage.rules
    }


def _at_level(level: int, conjunction: list[Leaf]) -> dict:
    tests = [{STAGE: level}] + [_leaf_json(leaf) for leaf in conjunction]
    return tests[0] if len(tests) == 1 else {"$and": tests}


def _leaf_json(leaf: Leaf) -> dict:
    name, op, value = leaf
    if op == "eq":
        return {name: value}
    if op in ("ex", "nex"):
        return {"$" + op: {name: 1}}
    if op == "iany":
        return {"$iany": {name: {"$i": value}}}
    if op == "iall_neq":
        return {"$iall": {name: {"$neq": {"$i": value}}}}
    return {"$" + op: {name: value}}  # neq lt lte gt gte


def _table_rules(table: Table, conditions: list[Condition]) -> list[tuple[str, DNF, Outcome]]:
    """Row i fires when its condition holds and no earlier row's does."""
    rules = []
    earlier_fail: list[DNF] = []
    for index, (row, condition) in enumerate(zip(table.rows, conditions)):
        terms = _product(earlier_fail + [dnf(condition)])
        rules.append(
            (f"{table.name}__row{index + 1}", terms, Outcome(table.name, row.value, index))
        )
        earlier_fail.append(dnf(condition, negate=True))
    rules.append(
        (f"{table.name}__default", _product(earlier_fail), Outcome(table.name, table.default, -1))
    )
    return rules


# dnf() of each (condition, negate) while a rule set compiles, by identity:
# an any/all needs both forms of each item, so without this the work would
# double with each level of nesting. The condition is kept with its form, so
# its id is not reused while the entry lives. The forms are never mutated.
_NORMAL_FORMS: dict[tuple[int, bool], tuple[Condition, DNF]] = {}


def dnf(condition: Condition, negate: bool = False) -> DNF:
    """A condition (or its negation) as mutually exclusive flat conjunctions."""
    key = (id(condition), negate)
    found = _NORMAL_FORMS.get(key)
    if found is None or found[0] is not condition:
        found = _NORMAL_FORMS[key] = (condition, _dnf(condition, negate))
    return found[1]


def _dnf(condition: Condition, negate: bool) -> DNF:
    if isinstance(condition, NotOf):
        return dnf(condition.item, not negate)
    if isinstance(condition, Dated):
        # Holds when the date is outside the window, or when the item holds.
        gates = [(outside, inside) for inside, outside in _window(condition.starts, condition.ends)]
        gates.append((dnf(condition.item), dnf(condition.item, negate=True)))
        if negate:
            return _product([fails for _, fails in gates])
        return _exclusive_or(gates)
    if isinstance(condition, (AllOf, AnyOf)):
        if isinstance(condition, AllOf) != negate:
            return _product([dnf(item, negate) for item in condition.items])
        return _exclusive_or(
            [(dnf(item, negate), dnf(item, not negate)) for item in condition.items]
        )
    name = attr(condition.name)
    if isinstance(condition, IsMissing):
        return [[(name, "ex" if condition.negated != negate else "nex", 1)]]
    return _compare(condition, name, negate)


def _window(starts, ends) -> list[tuple[DNF, DNF]]:
    """(the as-of date is inside, it is outside) for each bound of a date window."""
    gates: list[tuple[DNF, DNF]] = []
    if starts:
        gates.append(([[(AS_OF, "gte", encode(starts))]], [[(AS_OF, "lt", encode(starts))]]))
    if ends:
        gates.append(([[(AS_OF, "lte", encode(ends))]], [[(AS_OF, "gt", encode(ends))]]))
    return gates


def _exclusive_or(terms: list[tuple[DNF, DNF]]) -> DNF:
    """``t1 or t2 or ...`` from (holds, fails) pairs: t1, (not t1 and t2), ..."""
    result: DNF = []
    for i, (holds, _) in enumerate(terms):
        result += _product([fails for _, fails in terms[:i]] + [holds])
    return result


def _product(parts: list[DNF]) -> DNF:
    """The conjunction of DNFs, distributed; contradictions dropped."""
    result: DNF = [[]]
    for part in parts:
        result = [
            merged
            for left in result
            for right in part
            if (merged := _conjoin(left, right)) is not None
        ]
        if len(result) > MAX_CONJUNCTIONS:
            raise CompileError(f"a condition expands to more than {MAX_CONJUNCTIONS} cases")
    return result


MAX_CONJUNCTIONS = 2000


class CompileError(ValueError):
    """A condition is too complex for durable_rules; the caller names where."""


def _simplify(terms: DNF, always: set[str]) -> DNF:
    """Drop cases that test decisions for being missing (they never are), and
    tests implied by an equality on the same attribute."""
    result = []
    for conjunction in terms:
        if any(op == "nex" and name in always for name, op, _ in conjunction):
            continue
        equal = {name for name, op, _ in conjunction if op == "eq"}
        result.append(
            [
                leaf
                for leaf in conjunction
                if not (
                    leaf[1] in ("ex", "neq")
                    and (leaf[0] in equal or (leaf[1] == "ex" and leaf[0] in always))
                )
            ]
        )
    return result


def _conjoin(left: list[Leaf], right: list[Leaf]) -> list[Leaf] | None:
    present = set(left)
    merged = list(left)
    for leaf in right:
        if leaf not in present:
            present.add(leaf)
            merged.append(leaf)
    return None if _contradicts(merged) else merged


def _contradicts(conjunction: list[Leaf]) -> bool:
    by_name: dict[str, list[tuple[str, Any]]] = {}
    for name, op, value in conjunction:
        by_name.setdefault(name, []).append((op, value))
    for name, tests in by_name.items():
        ops = {op for op, _ in tests}
        if "nex" in ops and len(ops) > 1:
            return True
        equal = {_key(v) for op, v in tests if op == "eq"}
        if len(equal) > 1:
            return True
        unequal = {_key(v) for op, v in tests if op == "neq"}
        if equal & unequal:
            return True
        if {_key(v) for op, v in tests if op == "iany"} & {
            _key(v) for op, v in tests if op == "iall_neq"
        }:
            return True
        if _empty_range(tests):
            return True
        if name.startswith(COUNT_PREFIX) and (VALUE_PREFIX + name[len(COUNT_PREFIX) :]) in by_name:
            if ("eq", 0) in tests and any(
                op == "iany" for op, _ in by_name[VALUE_PREFIX + name[len(COUNT_PREFIX) :]]
            ):
                return True
    return False


def _key(value: Any) -> tuple:
    return (type(value) is bool, value)


def _empty_range(tests: list[tuple[str, Any]]) -> bool:
    numbers = [
        (op, v)
        for op, v in tests
        if op in ("eq", "lt", "lte", "gt", "gte")
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
    ]
    low, low_inclusive, high, high_inclusive = None, True, None, True
    for op, v in numbers:
        if op in ("gt", "gte", "eq") and (low is None or v > low or (v == low and op == "gt")):
            low, low_inclusive = v, op != "gt"
        if op in ("lt", "lte", "eq") and (high is None or v < high or (v == high and op == "lt")):
            high, high_inclusive = v, op != "lt"
    if low is None or high is None:
        return False
    return low > high or (low == high and not (low_inclusive and high_inclusive))


def _compare(c: Compare, name: str, negate: bool) -> DNF:
    values = [encode(v) for v in c.values]
    if c.op in ("in", "not in"):
        values = list(dict.fromkeys(values))  # equal values would overlap
    missing: DNF = [[(name, "nex", 1)]]
    op = c.op
    if op == "contains":
        if not negate:
            return [[(name, "iany", values[0])]]
        # $iall does not match an empty list, so emptiness is tested on the count.
        size = count_attr(c.name)
        return missing + [[(size, "eq", 0)], [(size, "gt", 0), (name, "iall_neq", values[0])]]
    if op == "between":
        low, high = values
        if not negate:
            return [[(name, "gte", low), (name, "lte", high)]]
        return missing + [[(name, "lt", low)], [(name, "gt", high)]]
    if c.name.startswith(HELPER_PREFIX):  # a decision made earlier: yes or no, never missing
        return [[(name, "eq", values[0] != negate)]]
    if op in ("in", "not in"):
        member = [[(name, "eq", v)] for v in values]
        outside = [[(name, "ex", 1)] + [(name, "neq", v) for v in values]]
        if (op == "in") != negate:
            return member if op == "in" else missing + member
        return outside if op == "not in" else missing + outside
    if negate:
        op = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}[op]
    leaf = (
        name,
        {"==": "eq", "!=": "neq", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}[op],
        values[0],
    )
    test = [[(name, "ex", 1), leaf]] if op == "!=" else [[leaf]]
    return missing + test if negate else test
