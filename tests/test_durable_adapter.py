"""Each durable_rules hazard we found, and how the adapter contains it.

Hazards that could crash or hang the interpreter if the fix regressed run
in a subprocess with a time limit, so a regression fails the test instead of
killing the suite.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
import textwrap
import threading

import pytest

from conftest import AS_OF, ROOT
from engine.errors import EngineError
from engine.evaluate import durable_adapter
from engine.evaluate.compiler import compile_rules, ruleset_definition
from engine.evaluate.decide import Evaluator, partner_values
from engine.evaluate.records import Partner


def run_isolated(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _walk(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def test_only_the_adapter_imports_durable():
    sources = list((ROOT / "engine").rglob("*.py")) + [ROOT / "cli.py"]
    importers = sorted(
        p.name
        for p in sources
        if "from durable" in p.read_text() or "import durable" in p.read_text()
    )
    assert importers == ["durable_adapter.py"]


def test_no_background_dispatch_threads(ruleset):
    before = threading.active_count()
    engines = [Evaluator(ruleset) for _ in range(3)]
    assert threading.active_count() == before
    assert len({e.engine.name for e in engines}) == 3  # ruleset names are unique per host


def test_more_than_1024_sessions(evaluator, example_partners):
    """~1,024 live session ids raise MemoryError; each batch's state is deleted."""
    small = Evaluator(evaluator.ruleset, batch_size=1)
    partner = example_partners[0]
    values = partner_values(evaluator.ruleset, partner, AS_OF)
    facts = [dict(small.fact(partner, values, AS_OF), pid=f"X{i}") for i in range(1100)]
    decisions = small.decide_facts(facts)
    assert len(decisions) == 1100
    assert len({(d.engagement, d.enrolled) for d in decisions}) == 1


def test_compiled_rules_never_use_or_nor_id(ruleset):
    """durable fires once per satisfied $or branch, and nests are capped at 31
    items; a rule on 'id' (durable's fact identity) re-fires forever."""
    keys = set(_walk(ruleset_definition(compile_rules(ruleset))))
    assert "$or" not in keys
    assert "id" not in keys and "sid" not in keys


def test_or_branches_would_fire_twice():
    """The hazard itself, shown on raw durable_rules in a subprocess."""
    result = run_isolated("""
        from durable import engine
        class Host(engine.Host):
            def _run(self): pass
        fired = []
        host = Host()
        host.set_rulesets({'t': {'r': {'all': [{'m': {'$or': [{'a': 1}, {'b': 1}]}}],
                                       'run': lambda c: fired.append(1)}}})
        host.assert_fact('t', {'sid': 's', 'a': 1, 'b': 1})
        print(len(fired))
    """)
    assert result.stdout.strip() == "2"


def test_more_than_64_list_rules_in_a_stage_fail_a_batch():
    """The hazard, on raw durable_rules: 65 rules whose list test holds for a
    fact, in one stage, fail the batch with error 303; 64 do not."""
    result = run_isolated("""
        import json
        import durable_rules_engine as core
        from durable import engine
        class Host(engine.Host):
            def _run(self): pass
        for count in (64, 65):
            rules = {f"r{i}": {"all": [{"m": {"$and": [
                         {"st": 0}, {"$iany": {"v_l": {"$i": "x"}}}, {"v_a": i}]}}],
                               "run": lambda c: None} for i in range(count)}
            rules["catch"] = {"all": [{"m": {"st": 0}}], "run": lambda c: None}
            host = Host()
            host.set_rulesets({f"t{count}": rules})
            handle = host.get_ruleset(f"t{count}")._handle
            try:
                core.assert_facts(handle, json.dumps(
                    [{"id": 1, "sid": "s", "st": 0, "v_l": ["x"], "v_a": 5}]))
                print(count, "ok")
            except Exception as error:
                print(count, str(error)[-3:])
    """)
    assert result.stdout.split() == ["64", "ok", "65", "303"]


def test_stages_keep_list_rules_within_durables_limit():
    """A table whose normal form has 68 list rules in one stage (found by the
    differential test) is split into helper stages, and decided correctly."""
    from test_differential import LOC, make_ruleset

    from engine.evaluate.compiler import LIST_OPS, LIST_RULE_BUDGET
    from engine.evaluate.explain import explain
    from engine.ruleset.conditions import AllOf, AnyOf, Compare, Dated, IsMissing, NotOf

    day = dt.date(2026, 1, 1)
    contains = Compare("l", "contains", ("x",), "l contains x", LOC)
    rows = [
        NotOf(NotOf(NotOf(contains, LOC), LOC), LOC),
        Compare("a", "==", (0,), "a == 0", LOC),
        NotOf(Dated(IsMissing("a", False, "a is missing", LOC), None, day, LOC), LOC),
        NotOf(
            AllOf(
                (
                    Compare("p", "in", (-1.0, 0.0), "p in", LOC),
                    AnyOf(
                        (
                            Compare("b", "==", (False,), "b == no", LOC),
                            Compare("d", "==", (day,), "d ==", LOC),
                        ),
                        LOC,
                    ),
                    IsMissing("m", False, "m is missing", LOC),
                ),
                LOC,
            ),
            LOC,
        ),
    ]
    ruleset = make_ruleset(rows, [None] * 5)
    for stage in compile_rules(ruleset).stages:
        list_rules = [
            name
            for name, condition, _ in stage.rules
            if any(f"${op[:4]}" in key for op in LIST_OPS for key in _walk(condition))
        ]
        assert len(list_rules) <= LIST_RULE_BUDGET
    partners = [Partner("R2", {}), Partner("R3", {"l": ("x",)})]
    decided = Evaluator(ruleset).decide(partners, day)
    assert decided == [explain(ruleset, p, day).decision() for p in partners]


def test_fact_ids_whose_hashes_collide_are_refused_as_duplicates():
    """The hazard: durable identifies facts by a 32-bit hash of their id."""
    from engine.evaluate.durable_adapter import fnv1a_32

    assert fnv1a_32("k32728") == fnv1a_32("k261234")  # found by a birthday search
    result = run_isolated("""
        import json
        import durable_rules_engine as core
        from durable import engine
        class Host(engine.Host):
            def _run(self): pass
        host = Host()
        host.set_rulesets({'t': {'r': {'all': [{'m': {'x': 1}}], 'run': lambda c: None}}})
        handle = host.get_ruleset('t')._handle
        facts = [{'sid': 's', 'id': 'k32728', 'x': 1, 'p': 1},
                 {'sid': 's', 'id': 'k261234', 'x': 1, 'p': 2}]
        print(core.assert_facts(handle, json.dumps(facts))[0])
    """)
    assert result.stdout.strip() == "2"  # ERR_EVENT_OBSERVED for two different facts


def test_session_ids_never_share_a_hash():
    from engine.evaluate.durable_adapter import fnv1a_32, session_ids

    made = session_ids(200_000)[:200_000]
    assert len({fnv1a_32(i) for i in made}) == len(made)
    # Exactly the hex counter without the candidates whose hash came earlier.
    seen, expected, candidate = set(), [], 0
    while len(expected) < len(made):
        text = format(candidate, "x")
        if fnv1a_32(text) not in seen:
            seen.add(fnv1a_32(text))
            expected.append(text)
        candidate += 1
    assert made == expected and candidate > len(made)  # some were skipped


def test_a_field_named_id_does_not_hang(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        textwrap.dedent("""
        fields:
          id: {type: integer, default: 0}
        classifications:
          big:
            rows:
              - {value: 'yes', when: id > 1}
            default: 'no'
        engagement:
          rows: [{value: digital, when: big == 'yes'}]
          default: digital
          models: {digital: {name: Digital}}
    """)
    )
    result = run_isolated(
        f"""
        import datetime as dt
        from engine.ruleset.loader import load_rules
        from engine.evaluate.decide import Evaluator
        from engine.evaluate.records import Partner
        rs = load_rules({str(rules)!r})
        d = Evaluator(rs).decide([Partner('A', {{'id': 5}})], dt.date(2026, 1, 1))[0]
        print(d.classifications['big'])
    """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "yes"


def test_exponent_notation_numbers_are_decided(ruleset, example_partners):
    """Python writes 5e-05 for small floats; durable_rules' parser crashed on it."""
    partner = example_partners[0]
    tiny = dict(partner.values, share_of_vendor_revenue=0.00005, certified_technical=0)
    result = run_isolated(f"""
        import datetime as dt, pickle, sys
        from engine.ruleset.loader import load_rules
        from engine.evaluate.decide import Evaluator
        from engine.evaluate.explain import explain
        from engine.evaluate.records import Partner
        from engine.ruleset.quarters import History
        rs = load_rules('rules')
        values = pickle.loads({__import__("pickle").dumps(tiny)!r})
        p = Partner('TINY', values, History({{}}))
        d = Evaluator(rs).decide([p], dt.date(2026, 11, 26))[0]
        assert d == explain(rs, p, dt.date(2026, 11, 26)).decision()
        print(d.classifications['size'])
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "small"


def test_host_actions_store_exceptions_in_state():
    """The hazard itself: an exception in a host-run action lands in the state."""
    result = run_isolated("""
        from durable import engine
        class Host(engine.Host):
            def _run(self): pass
        def boom(c):
            raise ValueError('boom')
        host = Host()
        host.set_rulesets({'t': {'r': {'all': [{'m': {'x': 1}}], 'run': boom}}})
        host.assert_fact('t', {'sid': 's', 'x': 1})
        print('exception' in host.get_state('t', 's'))
    """)
    assert result.stdout.strip() == "True"


def test_errors_while_deciding_are_raised_and_the_engine_recovers(ruleset, example_partners):
    evaluator = Evaluator(ruleset)
    plans = evaluator.engine._plans
    evaluator.engine._plans = {}  # every rule lookup in the loop now fails
    with pytest.raises(EngineError, match="failed while deciding a batch: KeyError"):
        evaluator.decide(example_partners[:3], AS_OF)
    evaluator.engine._plans = plans
    assert len(evaluator.decide(example_partners[:3], AS_OF)) == 3  # a fresh host took over


def test_ctrl_c_while_deciding_stays_an_interrupt(ruleset, example_partners, monkeypatch):
    """Ctrl-C (or SIGTERM, raised as KeyboardInterrupt) inside a durable_rules
    batch is the user stopping the run, not "durable_rules failed": it goes
    through as it is, and the engine still recovers for the next batch."""
    evaluator = Evaluator(ruleset)
    real = durable_adapter._core.start_action_for_state

    def interrupted(handle, state_handle):
        raise KeyboardInterrupt

    monkeypatch.setattr(durable_adapter._core, "start_action_for_state", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluator.decide(example_partners[:3], AS_OF)
    monkeypatch.setattr(durable_adapter._core, "start_action_for_state", real)
    assert len(evaluator.decide(example_partners[:3], AS_OF)) == 3


def test_rules_firing_over_and_over_are_an_error(ruleset, example_partners, monkeypatch):
    """A level's facts can make only so many actions; a rule that durable_rules
    keeps firing (as jruizgit/rules#288 would make one) is an error, not a
    hang, and the engine recovers."""
    evaluator = Evaluator(ruleset)
    real = durable_adapter._core.start_action_for_state
    first = {"calls": 0}

    def again(handle, state_handle):
        first["calls"] += 1
        if first["calls"] > 100_000:  # no budget: fail rather than hang
            raise AssertionError("the adapter kept taking actions")
        return first["message"]

    def start(handle, state_handle):
        started = real(handle, state_handle)
        first["message"] = started[1]
        return started

    monkeypatch.setattr(durable_adapter._core, "start_action_for_state", start)
    monkeypatch.setattr(durable_adapter._core, "complete_and_start_action", again)
    with pytest.raises(EngineError, match="fired rules over and over"):
        evaluator.decide(example_partners[:3], AS_OF)
    monkeypatch.undo()
    assert len(evaluator.decide(example_partners[:3], AS_OF)) == 3


def test_a_fact_no_rule_matches_is_an_error_not_a_loss(ruleset, example_partners):
    """assert_facts raises for the whole batch when one fact matches no rule."""
    compiled = compile_rules(ruleset)
    first = compiled.stages[0]
    gapped = dataclasses.replace(first, rules=first.rules[:-1])  # drop the default row
    engine = durable_adapter.DurableEngine(
        dataclasses.replace(compiled, stages=(gapped,) + compiled.stages[1:])
    )
    evaluator = Evaluator(ruleset)
    facts = [evaluator.fact(p, partner_values(ruleset, p, AS_OF), AS_OF) for p in example_partners]
    with pytest.raises(EngineError):
        engine.decide(facts)


def test_duplicate_partner_ids_in_a_batch_are_refused(evaluator, example_partners):
    with pytest.raises(EngineError, match="unique"):
        evaluator.decide([example_partners[0], example_partners[0]], AS_OF)


def test_error_messages_do_not_quote_partner_data(ruleset, example_partners):
    evaluator = Evaluator(ruleset)
    evaluator.engine._plans = {}
    with pytest.raises(EngineError) as caught:
        evaluator.decide(example_partners[:1], AS_OF)
    assert "Northwind" not in str(caught.value) and "@" not in str(caught.value)


def test_leaf_programs_have_only_an_enrolled_rule_on_the_final_stage(ruleset, example_partners):
    """Leaf programs sit on the final stage with an 'enrolled' rule only."""
    compiled = compile_rules(ruleset)
    final = compiled.stages[-1]
    leaf_ids = {outcome.decision for _, _, outcome in final.rules if outcome is not None}
    assert "healthcare_specialization" in leaf_ids and "premier" not in leaf_ids
    assert all(outcome.value is True for _, _, outcome in final.rules if outcome is not None)


@pytest.mark.parametrize("batch_size", [1, 7, 500])
def test_decisions_do_not_depend_on_batching_or_order(ruleset, example_partners, batch_size):
    reference = {d.partner_id: d for d in Evaluator(ruleset).decide(example_partners, AS_OF)}
    shuffled = list(reversed(example_partners))
    decided = Evaluator(ruleset, batch_size=batch_size).decide(shuffled, AS_OF)
    assert {d.partner_id: d for d in decided} == reference


def test_empty_list_does_not_contain_anything(tmp_path):
    """$iall does not match an empty list; 'not contains' must still hold for []."""
    from engine.evaluate.explain import explain
    from engine.ruleset.loader import load_rules

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        textwrap.dedent("""
        fields:
          tags: {type: list of text}
        classifications:
          kind:
            rows:
              - value: untagged
                when: {not: tags contains x}
            default: tagged
        engagement:
          rows: [{value: digital, when: kind == tagged}]
          default: digital
          models: {digital: {name: Digital}}
    """)
    )
    rs = load_rules(rules)
    partners = [
        Partner("A", {"tags": ()}),
        Partner("B", {"tags": ("x",)}),
        Partner("C", {"tags": ("y", "z")}),
        Partner("D", {}),
    ]
    decided = Evaluator(rs).decide(partners, dt.date(2026, 1, 1))
    assert [d.classifications["kind"] for d in decided] == [
        "untagged",
        "tagged",
        "untagged",
        "untagged",
    ]
    assert decided == [explain(rs, p, dt.date(2026, 1, 1)).decision() for p in partners]


def test_every_rule_requires_its_level(ruleset):
    """durable re-asserts the session state as a fact after every action
    (jruizgit/rules#288); a rule the state could match (only 'missing' tests)
    would re-fire forever. Every compiled rule first requires st == level."""
    for stage in compile_rules(ruleset).stages:
        for _, condition, _ in stage.rules:
            first = condition["$and"][0] if "$and" in condition else condition
            assert first == {"st": stage.level}


def test_a_level_never_tests_what_its_own_or_a_later_level_decides(ruleset):
    """Stages share a fact (a level) only when none tests what another records;
    the final stage comes last, on its own. Under the reference rules 11
    stages make 4 levels."""
    compiled = compile_rules(ruleset)
    levels = compiled.levels
    assert len(levels) == 4 and levels[-1] == (compiled.stages[-1],)
    for level, stages in enumerate(levels):
        tested = {name for stage in stages for name in stage.reads}
        for later in levels[level:]:
            recorded = {
                name
                for stage in later
                for _, _, outcome in stage.rules
                if outcome is not None
                for name in [f"v_{outcome.decision}", f"r_{outcome.decision}"]
                + [f"v_{program}" for program, _ in outcome.also]
            }
            assert not tested & recorded


def test_each_level_fact_holds_only_what_the_level_tests(evaluator, example_partners, monkeypatch):
    """durable_rules parses every attribute of every fact: a partner gets one
    fact per level, cut to the attributes that level's rules test, and the
    decisions still come out whole."""
    compiled = evaluator.compiled
    tested = []
    for stages in compiled.levels:
        keys = {
            key for stage in stages for _, condition, _ in stage.rules for key in _walk(condition)
        }
        tested.append({k for k in keys if not k.startswith("$")} - {"st"})
    sent = []
    real = durable_adapter._core.assert_facts
    monkeypatch.setattr(
        durable_adapter._core,
        "assert_facts",
        lambda handle, text: sent.append(text) or real(handle, text),
    )
    decisions = evaluator.decide(example_partners, AS_OF)
    facts = [fact for text in sent for fact in durable_adapter.orjson.loads(text)]
    assert len(facts) == len(example_partners) * len(compiled.levels)
    for fact in facts:
        extra = set(fact) - {"sid", "id", "pid", "st"} - tested[fact["st"]]
        assert not extra, f"level {fact['st']} was sent {sorted(extra)}"
    assert max(len(f) for f in facts) < len(compiled.inputs)
    assert {d.partner_id for d in decisions} == {p.partner_id for p in example_partners}
    assert all(
        d.engagement and len(d.classifications) == len(evaluator.ruleset.classifications)
        for d in decisions
    )


def test_action_messages_are_read_without_parsing_the_fact(
    evaluator, example_partners, monkeypatch
):
    """durable_rules writes a fact's attributes in the order given, so the rule
    and the fact id (first) are read from the message's head; a message shaped
    otherwise is parsed in full and gives the same answer."""
    fallbacks = []
    real_loads = durable_adapter.orjson.loads
    monkeypatch.setattr(
        durable_adapter.orjson, "loads", lambda text: fallbacks.append(text) or real_loads(text)
    )
    assert len(evaluator.decide(example_partners, AS_OF)) == len(example_partners)
    assert fallbacks == []
    partner_of = {"7": "P-1"}
    head = '{"s0__size__row1__1":{"m":{"id":"7","sid":"b1","pid":"P-1","st":0}}}'
    other = '{"s0__size__row1__1":{"m":{"sid":"b1","pid":"P-1","id":"7","st":0}}}'
    assert durable_adapter._action(head, partner_of) == ("s0__size__row1__1", "P-1")
    assert durable_adapter._action(other, partner_of) == ("s0__size__row1__1", "P-1")
    assert fallbacks == [other]
