"""Checks of meaning over a parsed rule set.

Names must exist (with a suggestion when they do not), values must suit the
type of what they are compared with (money is not compared with text),
nothing may depend on itself, exclusive groups need distinct priorities,
and no table row may be hidden behind an earlier row that always matches
first. Checks also fix the order stages are decided in.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import replace

from engine.errors import Problem
from engine.ruleset.conditions import (
    ORDERING_OPERATORS,
    AllOf,
    AnyOf,
    Compare,
    Condition,
    Dated,
    IsMissing,
    NotOf,
    names_read,
)
from engine.ruleset.expressions import Literal, Name, ParseError, names_in
from engine.ruleset.metrics import Checker
from engine.ruleset.model import (
    ENGAGEMENT,
    EngagementModel,
    FieldDef,
    Metric,
    Parameter,
    Program,
    Table,
)
from engine.ruleset.value_types import (
    BOOL,
    CHOICE,
    DATE,
    LIST,
    MONEY,
    NUMBER,
    PERCENT,
    ValueType,
    canonical,
    finer_than_kept,
    format_value,
)
from engine.ruleset.yaml_source import Loc

# What each kind of stage may look at.
TABLE_SCOPE = ("field", "metric", "classification")
ENGAGEMENT_SCOPE = TABLE_SCOPE
PROGRAM_SCOPE = ("field", "metric", "classification", "engagement", "program")
KIND_WORDS = {
    "field": "a field",
    "metric": "a metric",
    "parameter": "a parameter",
    "classification": "a classification",
    "engagement": "the engagement model",
    "program": "a program",
    "figure": "a history figure",
}


def toposort(names: list[str], deps: dict[str, list[str]]) -> tuple[list[str], list[str] | None]:
    """Stable topological order; returns (order, a cycle or None)."""
    order: list[str] = []
    placed: set[str] = set()
    pending = list(names)
    while pending:
        for name in pending:
            if all(d in placed or d not in deps for d in deps.get(name, [])):
                order.append(name)
                placed.add(name)
                pending.remove(name)
                break
        else:
            return order, _find_cycle(pending, deps)
    return order, None


def _find_cycle(pending: list[str], deps: dict[str, list[str]]) -> list[str]:
    path: list[str] = []
    node = pending[0]
    while node not in path:
        path.append(node)
        node = next(d for d in deps[node] if d in pending)
    return path[path.index(node) :] + [node]


class Checks:
    def __init__(
        self,
        problems: list[Problem],
        fields: dict[str, FieldDef],
        figures: dict[str, FieldDef],
        parameters: dict[str, Parameter],
        metric_defs: list,
        tables: list[Table],
        engagement: Table | None,
        models: dict[str, EngagementModel],
        programs: list[Program],
        quiet_names: set[str] | None = frozenset(),
    ):
        self.problems = problems
        # Unknown names not to report: declared but broken (reported where they
        # are defined). None: a file was unreadable, so any name may be declared.
        self.quiet_names = quiet_names
        self.fields, self.figures, self.parameters = fields, figures, parameters
        self.metric_defs = metric_defs
        self.tables, self.engagement, self.models = tables, engagement, models
        self.programs = programs
        self.kinds: dict[str, str] = {}
        self.types: dict[str, ValueType] = {}

    def problem(self, loc: Loc, message: str) -> None:
        self.problems.append(loc.problem(message))

    def run(self, make: Callable) -> object:
        self._register_names()
        metrics = self._metrics()
        tables = self._tables()
        engagement = self._engagement_table()
        programs = self._programs()
        self._misspelt_declarations()
        if self.problems or engagement is None:
            return None
        return make(
            fields=self.fields,
            figures=self.figures,
            parameters=self.parameters,
            metrics=tuple(metrics),
            classifications=tuple(tables),
            engagement=engagement,
            engagement_models=self.models,
            programs=tuple(programs),
        )

    # --- names ------------------------------------------------------------------

    def _register_names(self) -> None:
        where: dict[str, Loc] = {}
        entries: list[tuple[str, str, Loc, ValueType | None]] = []
        entries += [(n, "field", f.loc, f.type) for n, f in self.fields.items()]
        entries += [(n, "parameter", p.loc, p.type) for n, p in self.parameters.items()]
        entries += [(d[0], "metric", d[5], None) for d in self.metric_defs]
        entries += [
            (t.name, "classification", t.loc, ValueType(CHOICE, t.values)) for t in self.tables
        ]
        entries += [(p.id, "program", p.loc, ValueType(BOOL)) for p in self.programs]
        for name, kind, loc, vtype in entries:
            if name in self.kinds:
                first = where[name]
                self.problem(
                    loc,
                    f"'{name}' is already used for {KIND_WORDS[self.kinds[name]]} "
                    f"at {first.file}:{first.line}; names must be unique",
                )
                continue
            self.kinds[name], where[name] = kind, loc
            if vtype is not None:
                self.types[name] = vtype
        if self.engagement is not None:
            self.kinds[ENGAGEMENT] = "engagement"
            self.types[ENGAGEMENT] = ValueType(CHOICE, self.engagement.values)

    def _misspelt_declarations(self) -> None:
        """A field misspelt where it is declared makes every correct use an
        "unknown name" suggesting the misspelling. When an unknown name is
        close to a declared field that nothing reads, the declaration is the
        mistake: said once, at the declaration, instead of at every use."""
        uses: dict[str, list[int]] = {}
        for index, problem in enumerate(self.problems):
            found = _UNKNOWN_NAME.search(problem.message)
            if found:
                uses.setdefault(found.group(1), []).append(index)
        if not uses:
            return
        read = {n.name for d in self.metric_defs for n in names_in(d[1])}
        for condition in self._conditions():
            read.update(name for name, _ in names_read(condition))
        unread = [name for name in self.fields if name not in read]
        doomed: set[int] = set()
        for name, indexes in uses.items():
            close = difflib.get_close_matches(name, unread, n=1, cutoff=0.8)
            if not close:
                continue
            declared = self.fields[close[0]]
            self.problem(
                declared.loc,
                f"field '{close[0]}' is declared here but nothing reads it, while "
                f"'{name}' is read {len(indexes)} time{'s' if len(indexes) != 1 else ''} "
                f"and declared nowhere: is the declaration misspelt? (write '{name}')",
            )
            doomed.update(indexes)
        self.problems[:] = [p for i, p in enumerate(self.problems) if i not in doomed]

    def _conditions(self) -> Iterable[Condition]:
        for table in [*self.tables, *([self.engagement] if self.engagement else [])]:
            yield from (row.when for row in table.rows if row.when is not None)
        yield from (p.when for p in self.programs if p.when is not None)

    def _quiet(self, name: str) -> bool:
        return self.quiet_names is None or name in self.quiet_names

    def _unknown(self, name: str, allowed: Iterable[str]) -> str:
        candidates = [n for n, k in self.kinds.items() if k in allowed]
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        if name in self.figures:
            hint = (
                f"; '{name}' is a history figure: use it through a metric such as total({name}, 4)"
            )
        return f"unknown name '{name}'{hint}"

    # --- metrics ----------------------------------------------------------------

    def _metrics(self) -> list[Metric]:
        defs = {d[0]: d for d in self.metric_defs}
        deps = {
            name: [n.name for n in names_in(d[1]) if self.kinds.get(n.name) == "metric"]
            for name, d in defs.items()
        }
        order, cycle = toposort(list(defs), deps)
        if cycle:
            loc = defs[cycle[0]][5]
            self.problem(loc, "metrics depend on each other in a circle: " + " -> ".join(cycle))
        metrics = []
        for name in order:
            _, expr, source, label, description, loc, sloc = defs[name]
            checker = Checker(
                lambda n: self._metric_name_type(n), self._figure_type, self._recalled
            )
            try:
                vtype = checker.type_of(expr)
            except _BrokenName:
                continue
            except ParseError as error:
                self.problem(sloc.at(error.offset), f"in metric '{name}': {error.message}")
                continue
            self.types[name] = vtype
            metrics.append(Metric(name, expr, source, vtype, label, description, loc))
        return metrics

    def _metric_name_type(self, name: Name) -> ValueType:
        kind = self.kinds.get(name.name)
        if kind in ("field", "parameter", "metric"):
            if name.name not in self.types:  # a metric that failed its own check
                raise _BrokenName()
            return self.types[name.name]
        if kind is None and self._quiet(name.name):
            raise _BrokenName()
        if kind is not None:
            raise ParseError(
                f"metrics are computed before decisions, so they cannot use "
                f"{KIND_WORDS[kind]} ('{name.name}')",
                name.offset,
            )
        raise ParseError(self._unknown(name.name, ("field", "parameter", "metric")), name.offset)

    def _recalled(self, name: Name) -> tuple[str, ...] | None:
        """What a memory function may name (see Checker.recall)."""
        kind = self.kinds.get(name.name)
        if kind == "program":
            return None
        if kind == "classification":
            return self.types[name.name].values
        if kind is None and self._quiet(name.name):
            raise _BrokenName()
        if kind is None:
            raise ParseError(self._unknown(name.name, ("program", "classification")), name.offset)
        raise ParseError(
            f"memory functions recall a program or a classification, and "
            f"'{name.name}' is {KIND_WORDS[kind]}",
            name.offset,
        )

    def _figure_type(self, name: Name) -> ValueType:
        if name.name in self.figures:
            return self.figures[name.name].type
        if not self.figures:
            raise ParseError(
                f"this needs the history figure '{name.name}'; declare it under 'history:'",
                name.offset,
            )
        close = difflib.get_close_matches(name.name, list(self.figures), n=1)
        hint = (
            f"; did you mean '{close[0]}'?" if close else f" (figures: {', '.join(self.figures)})"
        )
        raise ParseError(f"unknown history figure '{name.name}'{hint}", name.offset)

    # --- conditions ---------------------------------------------------------

    def condition(
        self, condition: Condition, scope: tuple[str, ...], where: str
    ) -> Condition | None:
        """Check names and types; returns the condition with typed values."""
        if isinstance(condition, (AllOf, AnyOf)):
            items = [self.condition(item, scope, where) for item in condition.items]
            return None if None in items else replace(condition, items=tuple(items))
        if isinstance(condition, (NotOf, Dated)):
            item = self.condition(condition.item, scope, where)
            return None if item is None else replace(condition, item=item)
        kind = self.kinds.get(condition.name)
        if kind is None and (self._quiet(condition.name) or condition.name == ENGAGEMENT):
            return None  # broken where it is defined (engagement: its own section), and said
        if kind is None or kind == "parameter":
            message = self._unknown(condition.name, scope)
            if kind == "parameter":
                message = (
                    f"'{condition.name}' is a parameter; use it in a metric and test "
                    "the metric here"
                )
            self.problem(condition.loc, f"in {where}: {message}")
            return None
        if kind not in scope:
            self.problem(
                condition.loc,
                f"in {where}: cannot use {KIND_WORDS[kind]} "
                f"('{condition.name}') here, because "
                f"{_order_reason(kind, scope)}",
            )
            return None
        vtype = self.types.get(condition.name)
        if vtype is None:  # a metric with an error of its own, already reported
            return None
        if isinstance(condition, IsMissing):
            return condition
        checked = self._compare(condition, vtype, where)
        if checked is not None and kind == "field" and not self._in_range(checked, where):
            return None
        return checked

    def _in_range(self, c: Compare, where: str) -> bool:
        """A threshold outside the values a field may have (``enterprise_share
        >= 150%`` of a share from 0% to 100%) makes a test that never, or
        always, holds: a typo, reported as one."""
        field = self.fields[c.name]
        low, high = field.minimum, field.maximum
        for literal, value in zip(c.literals, c.values):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if (low is not None and value < low) or (high is not None and value > high):
                vtype = field.type
                bounds = (
                    f"from {format_value(vtype, low)} to {format_value(vtype, high)}"
                    if low is not None and high is not None
                    else f"at least {format_value(vtype, low)}"
                    if low is not None
                    else f"at most {format_value(vtype, high)}"
                )
                self.problem(
                    c.loc.at(literal.offset),
                    f"in {where}: '{literal.text}' is outside the values '{c.name}' can "
                    f"have ({bounds}), so '{c.text}' would never or always hold; "
                    f"check the number, or the field's min and max",
                )
                return False
        return True

    def _compare(self, c: Compare, vtype: ValueType, where: str) -> Compare | None:
        op, kind = c.op, vtype.kind
        bad_op = None
        if op in ORDERING_OPERATORS and not (vtype.is_numeric or kind == DATE):
            bad_op = f"'{op}' compares numbers, money, percentages, or dates"
        elif op == "contains" and kind != LIST:
            bad_op = "'contains' is for lists of text; use == or in"
        elif kind == LIST and op != "contains":
            bad_op = f"'{c.name}' is a list of text; use 'contains' (or 'is missing')"
        elif kind == BOOL and op not in ("==", "!="):
            bad_op = f"'{c.name}' is yes/no; use it alone, or '== yes' / '== no'"
        if bad_op:
            self.problem(c.loc, f"in {where}: {bad_op}")
            return None
        values = []
        for literal in c.literals:
            value = self._literal(literal, vtype, c, where)
            if value is _BAD:
                return None
            values.append(canonical(vtype.kind, value) if vtype.kind != "integer" else value)
        if op == "between" and values[0] > values[1]:
            self.problem(c.loc, f"in {where}: 'between' needs the smaller value first")
            return None
        return replace(c, values=tuple(values))

    def _literal(self, literal: Literal, vtype: ValueType, c: Compare, where: str):
        kind, lk = vtype.kind, literal.kind
        loc = c.loc.at(literal.offset)
        label = f"'{c.name}' is a {vtype.describe()}"
        accepted = _ACCEPTED_LITERALS.get(kind)
        if accepted is not None:
            if lk in accepted:
                finer = finer_than_kept(kind, literal.text)
                if finer:
                    self.problem(loc, f"in {where}: {finer}")
                    return _BAD
                return literal.value
            hint = _LITERAL_HINTS.get((kind, lk), _LITERAL_HINTS.get(kind, ""))
            text = literal.text
            if kind == PERCENT and lk == "number" and 0 < literal.value <= 1:
                text = f"{literal.value * 100:g}"  # a share written as a fraction: 0.6 is 60%
            self.problem(
                loc,
                f"in {where}: {label}, but '{literal.text}' is a "
                f"{_literal_word(lk)}{hint.format(text=text)}",
            )
            return _BAD
        if lk != "text":
            self.problem(
                loc,
                f"in {where}: {label}, but '{literal.text}' is a "
                f"{_literal_word(lk)}; put text in quotes",
            )
            return _BAD
        allowed = vtype.values
        if kind in (CHOICE, LIST) and allowed:
            for value in allowed:
                if value.casefold() == literal.value.casefold():
                    return value
            close = difflib.get_close_matches(literal.value, allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            self.problem(
                loc,
                f"in {where}: '{literal.value}' is not a value of '{c.name}' "
                f"(values: {', '.join(allowed)}){hint}",
            )
            return _BAD
        return literal.value

    # --- tables -----------------------------------------------------------------

    def _check_rows(self, table: Table, scope: tuple[str, ...], what: str) -> Table | None:
        rows = []
        for index, row in enumerate(table.rows):
            where = f"row {index + 1} ({row.value}) of {what}"
            when = self.condition(row.when, scope, where)
            if when is not None:
                rows.append(replace(row, when=when))
        if len(rows) != len(table.rows):
            return None
        for j, later in enumerate(rows):
            for i in range(j):
                if implies(later.when, rows[i].when):
                    self.problem(
                        later.loc,
                        f"row {j + 1} ({later.value}) of {what} can never "
                        f"match: whenever it holds, row {i + 1} "
                        f"({rows[i].value}) holds too and comes first; "
                        "move it up or narrow row "
                        f"{i + 1}",
                    )
                    break
        return replace(table, rows=tuple(rows))

    def _tables(self) -> list[Table]:
        by_name = {t.name: t for t in self.tables}
        deps = {
            t.name: sorted({n for row in t.rows for n, _ in names_read(row.when) if n in by_name})
            for t in self.tables
        }
        order, cycle = toposort(list(by_name), deps)
        if cycle:
            self.problem(
                by_name[cycle[0]].loc,
                "classifications depend on each other in a circle: " + " -> ".join(cycle),
            )
        result = []
        for name in order:
            checked = self._check_rows(by_name[name], TABLE_SCOPE, f"classification '{name}'")
            if checked is not None:
                result.append(checked)
        return result

    def _engagement_table(self) -> Table | None:
        if self.engagement is None:  # reported by the loader
            return None
        table = self._check_rows(self.engagement, ENGAGEMENT_SCOPE, "the engagement section")
        for value in self.engagement.values:
            if self.models and value not in self.models:
                close = difflib.get_close_matches(value, list(self.models), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                row = next((r for r in self.engagement.rows if r.value == value), None)
                loc = row.loc if row else self.engagement.loc
                self.problem(
                    loc,
                    f"engagement model '{value}' is not defined under 'models' "
                    f"(models: {', '.join(self.models)}){hint}",
                )
                table = None
        return table

    # --- programs -----------------------------------------------------------------

    def _programs(self) -> list[Program]:
        by_id = {p.id: p for p in self.programs}
        checked: dict[str, Program] = {}
        deps: dict[str, list[str]] = {}
        groups: dict[str, list[Program]] = {}
        for program in self.programs:
            ok = True
            when = program.when
            if when is not None:
                when = self.condition(when, PROGRAM_SCOPE, f"program '{program.id}'")
                ok = when is not None
            for required in program.requires:
                if required not in by_id:
                    close = difflib.get_close_matches(required, list(by_id), n=1)
                    hint = f"; did you mean '{close[0]}'?" if close else ""
                    self.problem(
                        program.loc,
                        f"program '{program.id}' requires unknown program '{required}'{hint}",
                    )
                    ok = False
            tested = [(n, loc) for n, loc in names_read(when) if n in by_id] if when else []
            needed = list(program.requires) + [n for n, _ in tested]
            same_group = {
                n for n in needed if program.group and n in by_id and n != program.id
                and by_id[n].group == program.group
            }  # fmt: skip
            for other in sorted(same_group):
                self._same_group(program, other, dict(tested).get(other))
                ok = False
            if ok:
                checked[program.id] = replace(program, when=when)
            deps[program.id] = [n for n in needed if n not in same_group]  # one error, no circle
            if program.group:
                groups.setdefault(program.group, []).append(program)
        for group, members in groups.items():
            members.sort(key=lambda p: -p.priority)
            for higher, lower in zip(members, members[1:]):
                if higher.priority == lower.priority:
                    self.problem(
                        lower.loc,
                        f"programs '{higher.id}' and '{lower.id}' in group "
                        f"'{group}' have the same priority "
                        f"({lower.priority}); give each a different one",
                    )
            for index, member in enumerate(members):
                deps[member.id] = deps[member.id] + [m.id for m in members[:index]]
        order, cycle = toposort([p.id for p in self.programs], deps)
        if cycle:
            self.problem(
                by_id[cycle[0]].loc,
                "programs depend on each other in a circle (through 'requires', "
                "conditions, or group priority): " + " -> ".join(cycle),
            )
            return []
        return [checked[pid] for pid in order if pid in checked]

    def _same_group(self, program: Program, other: str, tested_at: Loc | None) -> None:
        """A program of an exclusive group that needs another member of it
        (``tested_at``: where its condition names it, if it does)."""
        how = "requires" if other in program.requires else "tests"
        why = (
            f"a partner gets at most one program of a group, so '{program.id}' could never "
            "be enrolled"
            if how == "requires"
            else "within a group only the member a partner qualifies for with the highest "
            "priority is enrolled, and members are decided together"
        )
        self.problem(
            program.loc if how == "requires" else tested_at,
            f"program '{program.id}' {how} '{other}', another member of its exclusive group "
            f"'{program.group}': {why}. Remove '{other}' from "
            f"{'its requires' if how == 'requires' else 'its condition'}, or take one of the "
            "two out of the group",
        )


_UNKNOWN_NAME = re.compile(r"unknown name '([a-z][a-z0-9_]*)'")
_BAD = object()
# For each type with literal values: the kinds of literal it accepts, and hints.
_ACCEPTED_LITERALS = {
    BOOL: ("yes/no",),
    NUMBER: ("number",),
    "integer": ("number",),
    MONEY: ("number", "money"),
    PERCENT: ("percent",),
    DATE: ("date",),
}
_LITERAL_HINTS = {
    BOOL: "; compare it with yes or no",
    MONEY: "; write an amount like $1,500,000",
    DATE: "; write a date like 2027-01-01",
    (NUMBER, "percent"): " (write the number without a % sign)",
    ("integer", "percent"): " (write the number without a % sign)",
    (PERCENT, "number"): "; write it with a % sign, like {text}%",
}


class _BrokenName(Exception):
    """A name whose own definition is broken (and already reported)."""


def _literal_word(kind: str) -> str:
    return {
        "number": "plain number",
        "percent": "percentage",
        "money": "money amount",
        "date": "date",
        "text": "text",
        "yes/no": "yes/no value",
    }[kind]


def _order_reason(kind: str, scope: tuple[str, ...]) -> str:
    if scope == TABLE_SCOPE:
        return "classifications are decided before the engagement model and programs"
    return "the engagement model is decided before programs"


# --- reachability ------------------------------------------------------------


def implies(a: Condition, b: Condition) -> bool:
    """True only when ``a`` holding guarantees ``b`` holds (conservative)."""
    if isinstance(a, Dated) or isinstance(b, Dated):
        return a == b
    if isinstance(b, AllOf):
        return all(implies(a, item) for item in b.items)
    if isinstance(a, AnyOf):
        return all(implies(item, b) for item in a.items)
    if isinstance(b, AnyOf):
        return any(implies(a, item) for item in b.items)
    if isinstance(a, AllOf):
        return any(implies(item, b) for item in a.items)
    if isinstance(a, Compare) and isinstance(b, Compare) and a.name == b.name:
        return _subset(_value_set(a), _value_set(b))
    if isinstance(a, IsMissing) and isinstance(b, IsMissing):
        return a.name == b.name and a.negated == b.negated
    return False


def _value_set(c: Compare):
    """A Compare as the set of values satisfying it: an interval or a finite set."""
    v = c.values
    if c.op in ("==", "in"):
        return ("set", frozenset(v))
    if c.op == ">":
        return ("range", v[0], False, None, False)
    if c.op == ">=":
        return ("range", v[0], True, None, False)
    if c.op == "<":
        return ("range", None, False, v[0], False)
    if c.op == "<=":
        return ("range", None, False, v[0], True)
    if c.op == "between":
        return ("range", v[0], True, v[1], True)
    if c.op == "contains":
        return ("contains", v[0])
    return None


def _in_range(value, r) -> bool:
    _, lo, lo_inc, hi, hi_inc = r
    try:
        if lo is not None and (value < lo or (value == lo and not lo_inc)):
            return False
        if hi is not None and (value > hi or (value == hi and not hi_inc)):
            return False
    except TypeError:
        return False
    return True


def _subset(a, b) -> bool:
    if a is None or b is None:
        return False
    if a[0] == "contains" or b[0] == "contains":
        return a == b
    if a[0] == "set":
        return a[1] <= b[1] if b[0] == "set" else all(_in_range(v, b) for v in a[1])
    if b[0] == "set":
        return False
    _, alo, alo_inc, ahi, ahi_inc = a
    _, blo, blo_inc, bhi, bhi_inc = b
    lower_ok = blo is None or (
        alo is not None and (alo > blo or (alo == blo and (blo_inc or not alo_inc)))
    )
    upper_ok = bhi is None or (
        ahi is not None and (ahi < bhi or (ahi == bhi and (bhi_inc or not ahi_inc)))
    )
    return lower_ok and upper_ok


def unused_declarations(ruleset) -> list[Problem]:
    """Metrics and parameters that nothing reads: no condition, no metric,
    and no keeping rule. They exist only for the rules, so one nobody reads
    is a leftover or a misspelling; validate warns, at its declaration.
    Fields are not listed: a declared field checks its column even when no
    rule reads it (a bad value sets the row aside), and letters read fields."""
    read = {n.name for m in ruleset.metrics for n in names_in(m.expr)}
    tables = (*ruleset.classifications, ruleset.engagement)
    conditions = [row.when for t in tables for row in t.rows if row.when is not None]
    conditions += [p.when for p in ruleset.programs if p.when is not None]
    for condition in conditions:
        read.update(name for name, _ in names_read(condition))
    problems = [
        m.loc.problem(
            f"metric '{m.name}' is computed but nothing reads it (no condition or other "
            "metric): use it in a condition, or remove it"
        )
        for m in ruleset.metrics
        if m.name not in read
    ]
    problems += [
        p.loc.problem(
            f"parameter '{name}' is declared but no metric reads it: use it in a metric, "
            "or remove it"
        )
        for name, p in ruleset.parameters.items()
        if name not in read
    ]
    return problems
