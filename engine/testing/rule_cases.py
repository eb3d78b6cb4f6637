"""Rule tests a channel manager can write, kept with the rules in ``tests/``.

A case gives a partner (its fields), its history, an as-of date, and what
to expect::

    cases:
      - name: New partners are protected for their first year
        as_of: 2026-11-26
        partner: {partner_id: T-1, partner_name: Test, country: FR, joined_on: 2026-06-01}
        history:
          - {quarters: 2025Q4-2026Q3, revenue: 50000, target: 100000}
        expect:
          classifications: {standing: good}
          engagement: digital
          programs: [new_partner_onboarding]
          not_programs: [performance_recovery]

``quarters: A-B`` repeats a history row for every quarter from A to B.
``through: 2026Q2`` reads the history up to that quarter, as
``eligibility run --through`` does (default: the last quarter complete on
``as_of``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import DataError, Problem, RuleSetError, UsageError
from engine.evaluate.decide import Decision, Evaluator
from engine.evaluate.explain import Explanation, explain
from engine.evaluate.records import Partner, partner_from_record
from engine.ruleset.conditions import unknown_key_message
from engine.ruleset.memory import Enrolled, Memory
from engine.ruleset.model import RuleSet
from engine.ruleset.quarters import Quarter, figures_through, parse_quarter
from engine.ruleset.schema import DRAFT, SCHEMA_BASE, closed, keys_described
from engine.ruleset.yaml_source import Loc, YList, YMap, load_yaml

CASE_KEYS = ("name", "as_of", "through", "partner", "history", "earlier", "expect")
EXPECT_KEYS = ("classifications", "engagement", "programs", "not_programs", "kept")
EARLIER_KEYS = ("program", "from", "to")


def case_file_schema() -> dict:
    """The JSON Schema of a rule-test file (rules/tests/*.yaml); see
    :mod:`engine.ruleset.schema`."""
    names = {"type": "array", "items": {"type": "string"}}
    expect = closed(
        keys_described(
            EXPECT_KEYS,
            {
                "classifications": {"type": "object", "additionalProperties": {"type": "string"}},
                "engagement": {"type": "string"},
                "programs": names,
                "not_programs": names,
                "kept": {
                    "type": "object",
                    "additionalProperties": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
                    "description": "programs memory keeps the partner in, and until when",
                },
            },
        )
    )
    case = closed(
        keys_described(
            CASE_KEYS,
            {
                "name": {"type": "string"},
                "as_of": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
                "through": {"type": "string", "pattern": r"^\d{4}Q[1-4]$"},
                "partner": {"type": "object", "description": "the partner's fields"},
                "history": {
                    "type": "array",
                    "items": {"type": "object"},
                    "description": "quarters (or a range, 2025Q4-2026Q3) and their figures",
                },
                "earlier": {
                    "type": "array",
                    "items": closed(
                        keys_described(
                            EARLIER_KEYS,
                            {
                                "program": {"type": "string"},
                                "from": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
                                "to": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
                            },
                        ),
                        EARLIER_KEYS,
                    ),
                    "description": "earlier enrollments: the first and last day it held a program",
                },
                "expect": expect,
            },
        ),
        ("name", "as_of", "partner", "expect"),
    )
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_BASE + "rule-tests.schema.json",
        "title": "Partner eligibility rule tests",
        "description": "Rule tests (docs/rule-authoring.md, 'Rule tests').",
        **closed({"cases": {"type": "array", "items": case}}, ("cases",)),
    }


@dataclass(frozen=True)
class RuleCase:
    name: str
    loc: Loc
    as_of: dt.date
    partner: Partner
    expect: dict = field(default_factory=dict)
    through: Quarter | None = None

    @property
    def where(self) -> str:
        return f"{self.loc.file}:{self.loc.line}"


@dataclass(frozen=True)
class CaseResult:
    case: RuleCase
    decision: Decision
    explanation: Explanation
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


def load_cases(ruleset: RuleSet, folder: str | Path | None = None) -> list[RuleCase]:
    """Every case in ``<rules>/tests/*.yaml``; raises RuleSetError listing problems."""
    folder = Path(folder) if folder else Path(ruleset.folder) / "tests"
    if not folder.is_dir():
        return []
    problems: list[Problem] = []
    cases: list[RuleCase] = []
    for path in sorted(folder.glob("*.yaml")):
        cases += _cases_in(ruleset, path, problems)
    if problems:
        raise RuleSetError(problems)
    return cases


def load_case_file(ruleset: RuleSet, path: str | Path) -> list[RuleCase]:
    """The cases of one rule-test file; raises RuleSetError listing problems."""
    problems: list[Problem] = []
    cases = _cases_in(ruleset, Path(path), problems)
    if problems:
        raise RuleSetError(problems)
    return cases


def _cases_in(ruleset: RuleSet, path: Path, problems: list[Problem]) -> list[RuleCase]:
    data, found = load_yaml(path, str(path))
    problems += found
    if data is None:
        return []
    if not isinstance(data, YMap) or not isinstance(data.get("cases"), YList):
        problems.append(Problem(str(path), 1, 1, "a rule test file needs 'cases:', a list"))
        return []
    cases = []
    for index, raw in enumerate(data["cases"]):
        case = _case(ruleset, raw, data["cases"].item_loc(index), problems)
        if case is not None:
            cases.append(case)
    return cases


def _case(ruleset: RuleSet, raw: Any, loc: Loc, problems: list[Problem]) -> RuleCase | None:
    if not isinstance(raw, YMap):
        problems.append(loc.problem("each case must be a mapping with name, partner, expect"))
        return None
    before = len(problems)
    for key in raw:
        if key not in CASE_KEYS:
            problems.append(raw.key_loc(key).problem(unknown_key_message(key, CASE_KEYS, "a case")))
    name = str(raw.get("name") or f"case at line {loc.line}")
    as_of = raw.get("as_of")
    if not isinstance(as_of, dt.date):
        problems.append(
            raw.value_loc("as_of").problem(f"case '{name}' needs 'as_of', a date like 2026-11-26")
        )
    through = None
    if raw.get("through") is not None:
        try:
            through = parse_quarter(raw["through"])
            if isinstance(as_of, dt.date):
                figures_through(as_of, through)
        except (ValueError, UsageError) as error:
            problems.append(raw.value_loc("through").problem(f"case '{name}': {error}"))
    record = raw.get("partner")
    if not isinstance(record, YMap):
        problems.append(
            raw.value_loc("partner").problem(
                f"case '{name}' needs 'partner', a mapping of field values"
            )
        )
        return None
    expect = raw.get("expect")
    if not isinstance(expect, YMap):
        problems.append(raw.value_loc("expect").problem(f"case '{name}' needs 'expect'"))
        return None
    _check_expect(ruleset, name, expect, problems)
    try:
        history = _history_rows(raw.get("history") or [])
        partner = partner_from_record(ruleset, {"partner_id": "case", **record}, history)
    except (DataError, ValueError) as error:
        problems.append(raw.value_loc("partner").problem(f"case '{name}': {error}"))
        return None
    if raw.get("earlier") is not None:
        earlier = _earlier(ruleset, name, raw["earlier"], raw.value_loc("earlier"), problems)
        partner = dataclasses.replace(partner, memory=Memory((), earlier))
    if len(problems) > before:
        return None
    return RuleCase(name, loc, as_of, partner, dict(expect), through)


def _earlier(
    ruleset: RuleSet, name: str, rows: Any, loc: Loc, problems: list[Problem]
) -> tuple[Enrolled, ...]:
    """A case's earlier enrollments, as an enrollments file gives them."""
    if not isinstance(rows, YList):
        problems.append(loc.problem(f"case '{name}': 'earlier' is a list of program, from, to"))
        return ()
    found = []
    ids = [p.id for p in ruleset.programs]
    for index, row in enumerate(rows):
        where = rows.item_loc(index)
        if not isinstance(row, YMap) or set(row) != set(EARLIER_KEYS):
            problems.append(
                where.problem(
                    f"case '{name}': each earlier enrollment has program, from and to, "
                    "like {program: premier, from: 2025-01-01, to: 2026-09-30}"
                )
            )
            continue
        start, end = row["from"], row["to"]
        if row["program"] not in ids:
            close = difflib.get_close_matches(str(row["program"]), ids, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(
                row.value_loc("program").problem(
                    f"case '{name}': unknown program '{row['program']}'{hint}"
                )
            )
        elif not isinstance(start, dt.date) or not isinstance(end, dt.date) or end < start:
            problems.append(
                where.problem(
                    f"case '{name}': 'from' and 'to' must be dates like 2026-09-30, "
                    "'to' not before 'from'"
                )
            )
        else:
            found.append(Enrolled(row["program"], start, end))
    return tuple(found)


def _history_rows(rows: Any) -> list[dict]:
    result = []
    for row in rows:
        if not isinstance(row, dict):
            raise ValueError("each history row must be a mapping")
        if "quarters" in row:
            first, _, last = str(row["quarters"]).partition("-")
            quarter, end = parse_quarter(first), parse_quarter(last or first)
            while quarter <= end:
                result.append(
                    {**{k: v for k, v in row.items() if k != "quarters"}, "quarter": str(quarter)}
                )
                quarter = quarter.previous(-1)
        else:
            result.append(dict(row))
    return result


def _check_expect(ruleset: RuleSet, name: str, expect: YMap, problems: list[Problem]) -> None:
    for key in expect:
        if key not in EXPECT_KEYS:
            problems.append(
                expect.key_loc(key).problem(unknown_key_message(key, EXPECT_KEYS, "expect"))
            )
    tables = {t.name: t for t in ruleset.classifications}
    for table, value in (expect.get("classifications") or {}).items():
        if table not in tables or value not in tables[table].values:
            problems.append(
                expect.value_loc("classifications").problem(
                    f"case '{name}': {table} is not a classification with value {value}"
                )
            )
    if "engagement" in expect and expect["engagement"] not in ruleset.engagement_models:
        problems.append(
            expect.value_loc("engagement").problem(
                f"case '{name}': unknown engagement model '{expect['engagement']}'"
            )
        )
    ids = {p.id for p in ruleset.programs}
    kept = expect.get("kept")
    if kept is not None and (
        not isinstance(kept, dict)
        or not all(p in ids and isinstance(d, dt.date) for p, d in kept.items())
    ):
        problems.append(
            expect.value_loc("kept").problem(
                f"case '{name}': 'kept' maps programs to the date memory keeps the "
                "partner until, like {premier: 2027-02-26}"
            )
        )
    for key in ("programs", "not_programs"):
        for program in expect.get(key) or []:
            if program not in ids:
                problems.append(
                    expect.value_loc(key).problem(f"case '{name}': unknown program '{program}'")
                )


def failure_report(ruleset: RuleSet, result: CaseResult) -> str:
    """What a failing case prints: where it is, what differed, and why."""
    from engine.report.terminal import explanation_text

    case = result.case
    lines = [f"{case.where}: {case.name}"] + [f"  {f}" for f in result.failures]
    return (
        "\n".join(lines) + "\n\n" + explanation_text(ruleset, result.decision, result.explanation)
    )


def run_case(ruleset: RuleSet, evaluator: Evaluator, case: RuleCase) -> CaseResult:
    decision = evaluator.decide([case.partner], case.as_of, case.through)[0]
    explanation = explain(ruleset, case.partner, case.as_of, case.through)
    failures = []
    for table, expected in (case.expect.get("classifications") or {}).items():
        actual = decision.classifications[table]
        if actual != expected:
            failures.append(f"{table}: expected {expected}, got {actual}")
    if "engagement" in case.expect and decision.engagement != case.expect["engagement"]:
        failures.append(
            f"engagement model: expected {case.expect['engagement']}, got {decision.engagement}"
        )
    for program in case.expect.get("programs") or []:
        if program not in decision.enrolled:
            failures.append(f"expected enrollment in {program}, but not enrolled")
    for program in case.expect.get("not_programs") or []:
        if program in decision.enrolled:
            failures.append(f"expected no enrollment in {program}, but enrolled")
    for program, until in (case.expect.get("kept") or {}).items():
        keep = decision.kept.get(program)
        if keep is None:
            failures.append(f"expected memory to keep the partner in {program}, but it does not")
        elif keep.until != until:
            failures.append(f"expected {program} kept until {until}, but {keep.describe()}")
    return CaseResult(case, decision, explanation, tuple(failures))
