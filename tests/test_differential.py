"""The independent check on durable_rules: its decisions must equal the
explainer's, which evaluates the same rules in plain Python.

Two property-based tests:
* generated partners (values clustered at the reference rules' thresholds,
  missing values, odd histories) decided by the reference rules;
* generated rule sets (nested all/any/not over every operator and type,
  missing values everywhere, exclusive groups and prerequisites) that stress
  the compiler's negation and normal-form logic.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import random

from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import AS_OF, ROOT
from engine.evaluate.decide import Evaluator, partner_values
from engine.evaluate.explain import explain
from engine.evaluate.records import Partner
from engine.ruleset.conditions import AllOf, AnyOf, Compare, Dated, IsMissing, NotOf
from engine.ruleset.loader import load_rules
from engine.ruleset.memory import Enrolled, Keeping, Memory, Period, Recalled
from engine.ruleset.model import EngagementModel, FieldDef, Program, Row, RuleSet, Table
from engine.ruleset.quarters import History, Quarter, last_complete_quarter
from engine.ruleset.value_types import ValueType
from engine.ruleset.yaml_source import Loc

RULES = load_rules(ROOT / "rules")
EVALUATOR = Evaluator(RULES)
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- generated partners for the reference rules ---------------------------

counts = st.one_of(
    st.sampled_from([0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 16, 19, 20, 21]), st.integers(0, 40)
)
shares = st.sampled_from(
    [0.0, 0.001, 0.00005, 0.005, 0.0999, 0.1, 0.5, 0.599999, 0.6, 0.61, 0.02, 0.019999, 1.0]
)
money = st.sampled_from(
    [0.0, 9_999.99, 25_000.0, 119_999.99, 120_000.0, 400_000.0, 600_000.0, 2_000_000.0, 1e9]
)
ratios = st.sampled_from([0.0, 0.3, 0.49, 0.5, 0.69, 0.7, 0.99, 1.0, 1.2])
optional = lambda s: st.one_of(st.none(), s)  # noqa: E731


@st.composite
def partners(draw, index=itertools.count()):  # noqa: B008 (one counter for all draws)
    values = {
        "partner_name": "Generated",
        "country": "FR",
        "language": draw(st.sampled_from(["en", "fr"])),
        "joined_on": draw(st.dates(dt.date(2018, 1, 1), dt.date(2026, 11, 26))),
        "certified_sales": draw(counts),
        "certified_technical": draw(counts),
        "certified_marketing": draw(counts),
        "smb_share": draw(shares),
        "mid_market_share": draw(shares),
        "enterprise_share": draw(shares),
        "share_of_vendor_revenue": draw(shares),
        "focus_verticals": tuple(
            draw(
                st.lists(
                    st.sampled_from(["manufacturing", "healthcare", "finance", "retail"]),
                    unique=True,
                    max_size=3,
                )
            )
        ),
        "business_plan_on_file": draw(st.booleans()),
        "invited_to_elite": draw(st.booleans()),
        "downgrade_hold": draw(st.booleans()),
    }
    quarters = {}
    last = Quarter(2026, 3)
    for back in range(draw(st.integers(0, 10))):
        if draw(st.integers(0, 9)) == 0:
            continue  # a quarter not reported
        target = draw(money)
        quarters[last.previous(back)] = {
            "revenue": round(target * draw(ratios), 2),
            "target": target,
            "deals_closed": draw(counts),
        }
    return Partner(f"G{next(index)}", values, History(quarters), draw(memories()))


# Earlier runs and enrollments around the as-of dates below: memory keeps
# partners in Premier (grace) and Elite (protection) in the reference rules.
RECALL_DATES = [
    dt.date(2025, 9, 30),
    dt.date(2025, 12, 31),
    dt.date(2026, 3, 31),
    dt.date(2026, 6, 30),
    dt.date(2026, 9, 30),
    dt.date(2026, 11, 26),
    dt.date(2026, 12, 31),
]
TIERS = ["elite", "premier", "advanced", "select", "registered"]


@st.composite
def memories(draw):
    runs = []
    for day in sorted(draw(st.sets(st.sampled_from(RECALL_DATES), max_size=4))):
        tier = draw(st.sampled_from(TIERS))
        held = {tier, *draw(st.sets(st.sampled_from(["deal_registration", "co_sell"])))}
        kept = {tier} if tier in ("elite", "premier") and draw(st.booleans()) else set()
        standing = draw(st.sampled_from(["good", "at_risk", "probation"]))
        runs.append(Recalled(day, frozenset(held), frozenset(kept), {"standing": standing}))
    enrollments = []
    for _ in range(draw(st.integers(0, 2))):
        start, end = sorted(draw(st.lists(st.sampled_from(RECALL_DATES), min_size=2, max_size=2)))
        enrollments.append(Enrolled(draw(st.sampled_from(["elite", "premier"])), start, end))
    return Memory(tuple(runs), tuple(enrollments))


@SETTINGS
@given(
    st.lists(partners(), min_size=1, max_size=40),
    st.sampled_from([AS_OF, dt.date(2027, 1, 1), dt.date(2026, 6, 30), dt.date(2027, 7, 1)]),
    st.sampled_from([0, 1, 2]),
)
def test_reference_rules_engine_equals_explanation(batch, as_of, back):
    """``back``: figures read through that many quarters before the last
    complete one (--through), dates still counted to the as-of day."""
    through = last_complete_quarter(as_of).previous(back) if back else None
    decided = EVALUATOR.decide(batch, as_of, through)
    explained = [explain(RULES, p, as_of, through).decision() for p in batch]
    assert decided == explained
    # Metrics: compiled closures (runs) against the interpreted trees (explain).
    assert [EVALUATOR.values(p, as_of, through) for p in batch] == [
        partner_values(RULES, p, as_of, through=through) for p in batch
    ]


# --- generated rule sets ---------------------------------------------------

LOC = Loc("generated.yaml", 1, 1)
FIELDS = {
    "a": ValueType("integer"),
    "m": ValueType("money"),
    "p": ValueType("percent"),
    "t": ValueType("one of", ("x", "y", "z")),
    "l": ValueType("list of text", ("x", "y", "z")),
    "b": ValueType("yes/no"),
    "d": ValueType("date"),
    "s": ValueType("text"),
}
NUMBERS = [-1.0, 0.0, 1.0, 2.0, 2.5, 3.0, 1e-05, 1e7]
DATES = [dt.date(2026, 1, 1), dt.date(2026, 6, 30), dt.date(2027, 1, 1)]


def _samples(name):
    kind = FIELDS[name].kind
    if kind in ("integer",):
        return st.sampled_from([0, 1, 2, 3, -1])
    if kind in ("money", "percent"):
        return st.sampled_from(NUMBERS)
    if kind == "date":
        return st.sampled_from(DATES)
    if kind == "yes/no":
        return st.booleans()
    if kind == "list of text":
        return st.lists(st.sampled_from(["x", "y", "z"]), unique=True, max_size=3).map(tuple)
    return st.sampled_from(["x", "y", "z"])


@st.composite
def leaves(draw):
    name = draw(st.sampled_from(sorted(FIELDS)))
    kind = FIELDS[name].kind
    if draw(st.integers(0, 7)) == 0:
        return IsMissing(name, draw(st.booleans()), f"{name} is missing", LOC)
    if kind == "list of text":
        return Compare(
            name, "contains", (draw(st.sampled_from(["x", "y"])),), f"{name} contains", LOC
        )
    if kind == "yes/no":
        op = draw(st.sampled_from(["==", "!="]))
        return Compare(name, op, (draw(st.booleans()),), f"{name} {op}", LOC)
    ordered = kind in ("integer", "money", "percent", "date")
    ops = ["==", "!=", "in", "not in"] + (["<", "<=", ">", ">=", "between"] if ordered else [])
    op = draw(st.sampled_from(ops))
    sample = _samples(name)
    if op in ("in", "not in"):
        values = tuple(draw(st.lists(sample, min_size=1, max_size=3)))
    elif op == "between":
        values = tuple(sorted([draw(sample), draw(sample)]))
    else:
        values = (draw(sample),)
    return Compare(name, op, values, f"{name} {op} {values}", LOC)


conditions = st.recursive(
    leaves(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda items: AllOf(tuple(items), LOC)),
        st.lists(inner, min_size=1, max_size=3).map(lambda items: AnyOf(tuple(items), LOC)),
        inner.map(lambda item: NotOf(item, LOC)),
        st.tuples(inner, st.sampled_from([None] + DATES), st.sampled_from([None] + DATES))
        .filter(lambda t: (t[1] or t[2]) and not (t[1] and t[2] and t[2] < t[1]))
        .map(lambda t: Dated(t[0], t[1], t[2], LOC)),
    ),
    max_leaves=6,
)


KEEPINGS = (
    Keeping(grace=Period(1, "quarter")),
    Keeping(protection=Period(2, "quarter")),
    Keeping(renewal=Period(1, "year"), renewal_window=Period(30, "day")),
    Keeping(grace=Period(90, "day"), protection=Period(1, "year")),
)


def make_ruleset(rows, program_conditions, group_size: int = 2, memory: bool = False) -> RuleSet:
    """A rule set over FIELDS: a classification of ``rows``, an engagement
    model, and a program per condition. The first ``group_size`` programs
    form the exclusive group 'tier'; the three after them start on a date,
    end on a date, and require the first program. With ``memory``, programs
    with conditions keep partners, each in one of the ways of KEEPINGS."""
    fields = {n: FieldDef(n, t, False, None, n, "", LOC) for n, t in FIELDS.items()}
    table = Table(
        "kind",
        "kind",
        "",
        tuple(Row(f"v{i}", c, "", LOC) for i, c in enumerate(rows)),
        "other",
        "",
        LOC,
    )
    engagement = Table(
        "engagement",
        "engagement",
        "",
        (Row("near", Compare("kind", "in", ("v0", "v1"), "kind in", LOC), "", LOC),),
        "far",
        "",
        LOC,
    )
    models = {m: EngagementModel(m, m, "", {}, LOC) for m in ("near", "far")}
    programs = []
    for i, condition in enumerate(program_conditions):
        programs.append(
            Program(
                f"p{i}",
                f"P{i}",
                "",
                condition,
                "tier" if i < group_size else None,
                1000 - i,
                DATES[1] if i == group_size else None,
                DATES[1] if i == group_size + 1 else None,
                ("p0",) if i == group_size + 2 else (),
                {},
                LOC,
                KEEPINGS[i % len(KEEPINGS)] if memory and condition is not None else None,
            )
        )
    return RuleSet(
        "generated",
        "",
        "USD",
        "generated",
        "0",
        fields,
        {},
        {},
        (),
        (table,),
        engagement,
        models,
        tuple(programs),
    )


@st.composite
def generated_partners(draw, index=itertools.count()):  # noqa: B008 (one counter for all draws)
    values = {}
    for name in FIELDS:
        if draw(st.integers(0, 3)):  # a quarter of values are missing
            values[name] = draw(_samples(name))
    return Partner(f"R{next(index)}", values)


@SETTINGS
@given(
    st.lists(conditions, min_size=1, max_size=4),
    st.lists(st.one_of(st.none(), conditions), min_size=5, max_size=5),
    st.lists(generated_partners(), min_size=1, max_size=25),
    st.sampled_from(DATES),
)
def test_generated_rules_engine_equals_explanation(rows, program_conditions, batch, as_of):
    ruleset = make_ruleset(rows, program_conditions)
    decided = Evaluator(ruleset).decide(batch, as_of)
    explained = [explain(ruleset, p, as_of).decision() for p in batch]
    assert decided == explained


@st.composite
def program_memories(draw, programs: int = 5):
    """Earlier runs and enrollments of the generated programs p0, p1, ..."""
    ids = [f"p{i}" for i in range(programs)]
    days = [dt.date(2025, 6, 30), dt.date(2025, 12, 31), *DATES, dt.date(2026, 9, 30)]
    runs = []
    for day in sorted(draw(st.sets(st.sampled_from(days), max_size=4))):
        held = draw(st.sets(st.sampled_from(ids), max_size=3))
        kept = draw(st.sets(st.sampled_from(sorted(held)), max_size=2)) if held else set()
        kind = draw(st.sampled_from(["v0", "v1", "other"]))
        runs.append(Recalled(day, frozenset(held), frozenset(kept), {"kind": kind}))
    enrollments = []
    for _ in range(draw(st.integers(0, 2))):
        start, end = sorted(draw(st.lists(st.sampled_from(days), min_size=2, max_size=2)))
        enrollments.append(Enrolled(draw(st.sampled_from(ids)), start, end))
    return Memory(tuple(runs), tuple(enrollments))


def _memory_of(rng: random.Random, programs: int) -> Memory:
    """A partner's memory of the generated programs, drawn from ``rng``: a
    test whose examples are big already (the groups below) draws it so."""
    ids = [f"p{i}" for i in range(programs)]
    days = [dt.date(2025, 6, 30), dt.date(2025, 12, 31), *DATES, dt.date(2026, 9, 30)]
    runs = []
    for day in sorted(rng.sample(days, rng.randint(0, 4))):
        held = set(rng.sample(ids, min(len(ids), rng.randint(0, 3))))
        kept = {p for p in held if rng.random() < 0.5}
        runs.append(Recalled(day, frozenset(held), frozenset(kept), {"kind": "v0"}))
    return Memory(tuple(runs))


@SETTINGS
@given(
    st.lists(conditions, min_size=1, max_size=3),
    st.lists(st.one_of(st.none(), conditions), min_size=5, max_size=5),
    st.lists(st.tuples(generated_partners(), program_memories()), min_size=1, max_size=25),
    st.sampled_from(DATES),
)
def test_generated_rules_with_memory_engine_equals_explanation(
    rows, program_conditions, batch, as_of
):
    """Programs that keep partners (grace, protection, renewal) in groups,
    with prerequisites and dates: durable_rules decides what memory keeps as
    the explainer does."""
    ruleset = make_ruleset(rows, program_conditions, memory=True)
    partners = [dataclasses.replace(p, memory=m) for p, m in batch]
    decided = Evaluator(ruleset).decide(partners, as_of)
    explained = [explain(ruleset, p, as_of).decision() for p in partners]
    assert decided == explained


@st.composite
def deep_conditions(draw):
    """A condition wrapped in up to 80 levels of all/any, some levels with a
    second item: the shapes whose normal forms grow with depth."""
    condition = draw(conditions)
    for _level in range(draw(st.integers(1, 80))):
        kind = draw(st.sampled_from([AllOf, AnyOf]))
        if draw(st.booleans()):
            other = draw(leaves())
            condition = kind((other, condition) if draw(st.booleans()) else (condition, other), LOC)
        else:
            condition = kind((condition,), LOC)
    return condition


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.lists(st.one_of(conditions, deep_conditions()), min_size=1, max_size=3),
    st.integers(2, 40).flatmap(
        lambda size: st.tuples(
            st.just(size),
            st.lists(
                st.one_of(st.none(), conditions, deep_conditions()),
                min_size=size + 3,
                max_size=size + 3,
            ),
        )
    ),
    st.lists(generated_partners(), min_size=1, max_size=25),
    st.sampled_from(DATES),
)
def test_big_groups_and_deep_nesting_engine_equals_explanation(rows, group, batch, as_of):
    """Exclusive groups bigger than one stage decides (GROUP_BLOCK members)
    and conditions nested deep enough to need helper stages."""
    group_size, program_conditions = group
    for memory in (False, True):  # and with programs that keep partners
        ruleset = make_ruleset(rows, program_conditions, group_size, memory=memory)
        partners = batch
        if memory:
            rng = random.Random(len(batch) * 1000 + group_size)
            partners = [
                dataclasses.replace(p, memory=_memory_of(rng, len(program_conditions)))
                for p in batch
            ]
        decided = Evaluator(ruleset).decide(partners, as_of)
        explained = [explain(ruleset, p, as_of).decision() for p in partners]
        assert decided == explained
