"""Every failure mode of a rule file gives a message naming file, line, and fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from conftest import DATA
from engine.errors import RuleSetError
from engine.ruleset.loader import load_rules

BASE = DATA / "base_rules"
BROKEN = DATA / "broken_rules"
CASES = yaml.safe_load((BROKEN / "cases.yaml").read_text())


def assemble(case: str, target: Path) -> Path:
    target.mkdir()
    for source in (BASE, BROKEN / case):
        for path in source.iterdir():
            shutil.copy(path, target / path.name)
    return target


def test_every_case_folder_has_an_expectation():
    folders = {p.name for p in BROKEN.iterdir() if p.is_dir()}
    assert folders == set(CASES)


def test_base_rules_are_valid():
    load_rules(BASE)


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_rule_file(case, tmp_path):
    expected = CASES[case]
    with pytest.raises(RuleSetError) as caught:
        load_rules(assemble(case, tmp_path / "rules"))
    problems = caught.value.problems
    matching = [
        p
        for p in problems
        if Path(p.file).name == expected["file"]
        and p.line == expected["line"]
        and expected["message"] in p.message
    ]
    assert matching, f"expected {expected} among:\n" + "\n".join(map(str, problems))
    assert all(p.column >= 1 for p in problems)
    # The message shown to the user is "file:line:column: message".
    assert f"{expected['file']}:{expected['line']}:" in str(caught.value)


def test_all_problems_are_reported_at_once(tmp_path):
    rules = assemble("unknown_name", tmp_path / "rules")
    (rules / "metrics.yaml").write_text((BROKEN / "unknown_function" / "metrics.yaml").read_text())
    (rules / "extra.yaml").write_text((BROKEN / "unknown_section" / "extra.yaml").read_text())
    with pytest.raises(RuleSetError) as caught:
        load_rules(rules)
    messages = "\n".join(str(p) for p in caught.value.problems)
    assert "certified_tech" in messages and "atainment" in messages and "programmes" in messages


def test_condition_error_column_points_into_the_condition(tmp_path):
    with pytest.raises(RuleSetError) as caught:
        load_rules(assemble("unknown_operator", tmp_path / "rules"))
    problem = caught.value.problems[0]
    line = (
        (BROKEN / "unknown_operator" / "programs.yaml").read_text().splitlines()[problem.line - 1]
    )
    assert line[problem.column - 1 :].startswith("=>")


def test_yes_and_no_are_text_not_booleans(tmp_path):
    from engine.ruleset.yaml_source import load_yaml_text

    data, problems = load_yaml_text("country: NO\nanswer: no\nflag: true\n", "x.yaml")
    assert data == {"country": "NO", "answer": "no", "flag": True} and not problems


def test_unsafe_yaml_tags_are_refused(tmp_path):
    rules = assemble("unknown_section", tmp_path / "rules")
    (rules / "extra.yaml").write_text("fields: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(RuleSetError) as caught:
        load_rules(rules)
    assert "extra.yaml:1:" in str(caught.value)


def test_oversized_file_is_refused(tmp_path):
    rules = assemble("unknown_section", tmp_path / "rules")
    (rules / "extra.yaml").write_text("# padding\n" * 300_000)
    with pytest.raises(RuleSetError) as caught:
        load_rules(rules)
    assert "rule files are limited to" in str(caught.value)
