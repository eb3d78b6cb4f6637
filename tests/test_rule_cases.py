"""Rule tests kept with the rules: the pytest plugin and `eligibility test`.

The reference rules' own cases (rules/tests/*.yaml) are collected by the
plugin when pytest runs (testpaths includes rules/).
"""

from __future__ import annotations

import dataclasses
import shutil
import textwrap

import pytest

from conftest import ROOT
from engine.errors import RuleSetError
from engine.evaluate.decide import Evaluator
from engine.ruleset.loader import load_rules
from engine.testing.rule_cases import load_cases, run_case

pytest_plugins = ["pytester"]
RULES = load_rules(ROOT / "rules")

FAILING_CASE = textwrap.dedent("""
    cases:
      - name: passes
        as_of: 2026-11-26
        partner: {partner_name: X, country: FR, joined_on: 2020-01-01}
        expect: {programs: [registered]}
      - name: wrong on purpose
        as_of: 2026-11-26
        partner: {partner_name: X, country: FR, joined_on: 2020-01-01}
        expect: {programs: [elite]}
""")


def test_reference_rules_have_cases():
    assert len(load_cases(RULES)) >= 10


def test_a_wrong_expectation_fails_with_the_explanation(tmp_path):
    (tmp_path / "t.yaml").write_text(FAILING_CASE)
    case = load_cases(RULES, tmp_path)[1]
    result = run_case(RULES, Evaluator(RULES), case)
    assert result.failures == ("expected enrollment in elite, but not enrolled",)
    assert case.where.endswith("t.yaml:7")


def test_a_case_naming_an_unknown_program_is_a_located_error(tmp_path):
    (tmp_path / "t.yaml").write_text(FAILING_CASE.replace("[elite]", "[elit]"))
    with pytest.raises(RuleSetError, match=r"t.yaml:10:.*unknown program 'elit'"):
        load_cases(RULES, tmp_path)


def test_a_case_through_a_quarter_not_ended_is_a_located_error(tmp_path):
    text = FAILING_CASE.replace("as_of: 2026-11-26", "as_of: 2026-11-26\n    through: 2026Q4")
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(RuleSetError, match=r"t.yaml:5:14: case .passes.: 2026Q4 has not ended"):
        load_cases(RULES, tmp_path)


def test_a_case_through_an_earlier_quarter_reads_the_figures_up_to_it():
    case = next(c for c in load_cases(RULES) if c.through is not None)
    assert run_case(RULES, Evaluator(RULES), case).failures == ()
    unbounded = dataclasses.replace(case, through=None)  # 2026Q4 counted as not reported
    failures = run_case(RULES, Evaluator(RULES), unbounded).failures
    assert "standing: expected probation, got good" in failures


@pytest.fixture
def rules_with_cases(tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    (rules / "tests" / "mine.yaml").write_text(FAILING_CASE)
    return rules


def test_pytest_collects_rule_cases_and_reports_failures(pytester, rules_with_cases):
    result = pytester.runpytest(
        str(rules_with_cases / "tests" / "mine.yaml"), "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*mine.yaml:7: wrong on purpose",
            "*expected enrollment in elite, but not enrolled",
            "*Partner case*",
        ]
    )


def test_pytest_reports_broken_rules_at_collection(pytester, rules_with_cases):
    programs = rules_with_cases / "programs.yaml"
    programs.write_text(
        programs.read_text().replace("certified_technical >= 10", "certified_tech >= 10")
    )
    result = pytester.runpytest(
        str(rules_with_cases / "tests" / "mine.yaml"), "-p", "no:cacheprovider"
    )
    result.stdout.fnmatch_lines(["*programs.yaml:31:11: in program 'premier': unknown name*"])
    assert result.ret != 0


def test_eligibility_test_command(cli_run, rules_with_cases):
    result = cli_run("test", str(rules_with_cases))
    assert result.exit_code == 1
    assert "FAIL  " in result.output and "mine.yaml:7: wrong on purpose" in result.output
    assert result.output.strip().endswith("16 passed, 1 failed")
    assert cli_run("test", "rules").exit_code == 0
