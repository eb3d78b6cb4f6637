"""The reference rule set's own YAML tests (rules/tests/*.yaml) must pass."""
from __future__ import annotations

import pytest

from engine.decide import Evaluator
from engine.loader import load_rules
from engine.render import explanation_text
from engine.rule_tests import load_cases, run_case

from conftest import ROOT

RULES = load_rules(ROOT / "rules")
CASES = load_cases(RULES)


def test_reference_rules_have_cases():
    assert len(CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rule_case(case):
    result = run_case(RULES, Evaluator(RULES), case)
    if not result.passed:
        pytest.fail(f"{case.where}: {case.name}\n  " + "\n  ".join(result.failures) + "\n\n"
                    + explanation_text(RULES, result.decision, result.explanation), pytrace=False)


def test_a_wrong_expectation_fails_with_the_explanation(tmp_path):
    (tmp_path / "t.yaml").write_text(
        "cases:\n"
        "  - name: wrong on purpose\n"
        "    as_of: 2026-11-26\n"
        "    partner: {partner_name: X, country: FR, joined_on: 2020-01-01}\n"
        "    expect: {programs: [elite]}\n")
    case, = load_cases(RULES, tmp_path)
    result = run_case(RULES, Evaluator(RULES), case)
    assert result.failures == ("expected enrollment in elite, but not enrolled",)
    assert case.where.endswith("t.yaml:2")


def test_a_case_naming_an_unknown_program_is_a_located_error(tmp_path):
    from engine.errors import RuleSetError
    (tmp_path / "t.yaml").write_text(
        "cases:\n"
        "  - name: typo\n"
        "    as_of: 2026-11-26\n"
        "    partner: {partner_name: X, country: FR, joined_on: 2020-01-01}\n"
        "    expect: {programs: [elit]}\n")
    with pytest.raises(RuleSetError, match=r"t.yaml:5:.*unknown program 'elit'"):
        load_cases(RULES, tmp_path)
