"""The one walker of conditions: explain, run reasons and letters say the same."""

from __future__ import annotations

import datetime as dt

import pytest

from conftest import AS_OF
from engine.evaluate.explain import explain, program_failures
from engine.evaluate.requirements import brief, detailed, unmet
from engine.letters.facts import leaves
from engine.ruleset.conditions import AllOf, AnyOf, Dated, NotOf, parse_condition_text
from engine.ruleset.yaml_source import Loc

LOC = Loc("test", 1, 1)


def condition(text):
    return parse_condition_text(text, LOC)


@pytest.fixture
def values(ruleset):
    return {"certified_technical": 8, "standing": "good", "country": "US", "revenue_4q": 700_000}


def test_run_reasons_and_explain_reasons_word_the_same_requirements(
    ruleset, evaluator, example_partners
):
    """Each missed program's reasons in a run and in `explain` are the same
    requirements, in the same order: only the wording of each differs
    ("has 8" against "needs at least 10, has 8 (2 short)")."""
    compared = 0
    for partner in example_partners:
        explanation = explain(ruleset, partner, AS_OF)
        decision = explanation.decision()
        values = evaluator.values(partner, AS_OF)
        missed = program_failures(ruleset, values, decision, AS_OF)
        known = {**values, **decision.classifications, "engagement": decision.engagement}
        known.update({p.id: p.id in decision.enrolled for p in ruleset.programs})
        for program in explanation.programs:
            if program.enrolled or program.lost_to or program.check is None:
                continue
            items = unmet(ruleset, ruleset.program(program.id).when)(known, AS_OF)
            run = [r for r in missed[program.id] if not r.startswith(("requires ", "not in "))]
            shown = [r for r in program.reasons if not r.startswith(("requires ", "not in "))]
            assert run == brief(items)
            assert shown == detailed(ruleset, items)
            compared += len(items)
    assert compared > 50


def test_a_negated_any_names_the_comparison_that_holds(ruleset, values):
    refused = NotOf(
        AnyOf((condition("certified_technical >= 10"), condition("standing == good")), LOC), LOC
    )
    items = unmet(ruleset, refused)(values, AS_OF)
    assert brief(items) == ["must not hold: standing == good"]
    assert detailed(ruleset, items) == ["must not hold: standing == good"]


def test_an_any_is_none_of_its_ways_with_each_ways_reasons(ruleset, values):
    either = AnyOf(
        (
            condition("certified_technical >= 10"),
            AllOf((condition("country in [DE, FR]"), condition("revenue_4q >= $1,000,000")), LOC),
        ),
        LOC,
    )
    items = unmet(ruleset, either)(values, AS_OF)
    assert brief(items) == [
        "none of: certified_technical >= 10: has 8; country in [DE, FR]: has US; "
        "revenue_4q >= $1,000,000: has $700,000"
    ]
    assert detailed(ruleset, items) == [
        "none of these holds: certified_technical >= 10: needs at least 10, has 8 (2 short); "
        "country in [DE, FR]: needs one of DE, FR; has US; "
        "revenue_4q >= $1,000,000: needs at least $1,000,000, has $700,000 ($300,000 short)"
    ]
    # A letter gives the nearest way in: one comparison short rather than two.
    assert [r["name"] for r in leaves(ruleset, either, values, AS_OF, holding=False)] == [
        "certified_technical"
    ]


def test_a_letter_asks_nothing_of_an_any_that_holds(ruleset, values):
    """An `any` that holds needs nothing more: only the failing `all` part is
    listed (the letters' own walker listed the failing way of the `any` too)."""
    both = AllOf(
        (
            AnyOf((condition("standing == good"), condition("certified_technical >= 10")), LOC),
            condition("revenue_4q >= $1,000,000"),
        ),
        LOC,
    )
    asked = leaves(ruleset, both, values, AS_OF, holding=False)
    assert [(r["name"], r["short"]) for r in asked] == [("revenue_4q", 300_000)]


def test_why_a_condition_holds_leaves_out_negated_parts(ruleset, values):
    rule = AllOf(
        (
            condition("standing == good"),
            NotOf(condition("country == DE"), LOC),
            AnyOf(
                (condition("certified_technical >= 5"), condition("certified_technical >= 20")), LOC
            ),
        ),
        LOC,
    )
    met = leaves(ruleset, rule, values, AS_OF, holding=True)
    assert [(r["name"], r["op"], r["actual"]) for r in met] == [
        ("standing", "==", "good"),
        ("certified_technical", ">=", 8),
    ]
    assert leaves(ruleset, NotOf(rule, LOC), values, AS_OF, holding=True) == []


def test_dated_parts_carry_their_window_and_hold_when_not_in_force(ruleset, values):
    later = Dated(condition("certified_technical >= 12"), dt.date(2027, 1, 1), None, LOC)
    assert unmet(ruleset, later)(values, AS_OF) == []
    assert brief(unmet(ruleset, later)(values, dt.date(2027, 2, 1))) == [
        "from 2027-01-01: certified_technical >= 12: has 8"
    ]
    assert brief(unmet(ruleset, NotOf(later, LOC))(values, AS_OF)) == [
        "must not hold: from 2027-01-01: certified_technical >= 12"
    ]
