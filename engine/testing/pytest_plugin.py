"""A pytest plugin that collects rule tests kept with the rules.

Installed with this package (entry point ``pytest11``). Any ``*.yaml`` file in
a ``tests/`` folder next to rule files (a folder holding ``*.yaml`` with a
``fields:`` or ``programs:`` section) becomes a pytest file, and each of its
cases becomes a test. A failure names the file, the line, and the case,
shows expected against actual, and prints the partner's full explanation.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import RuleSetError
from engine.evaluate.decide import Evaluator
from engine.ruleset.loader import load_rules
from engine.testing.rule_cases import RuleCase, failure_report, load_case_file, run_case


def _is_rules_folder(folder: Path) -> bool:
    for path in folder.glob("*.yaml"):
        head = path.read_text(encoding="utf-8", errors="replace")[:20_000]
        if "\nfields:" in "\n" + head or "\nprograms:" in "\n" + head:
            return True
    return False


def pytest_collect_file(parent: pytest.Collector, file_path: Path):
    if (
        file_path.suffix == ".yaml"
        and file_path.parent.name == "tests"
        and _is_rules_folder(file_path.parent.parent)
    ):
        return RuleCaseFile.from_parent(parent, path=file_path)
    return None


class RuleSetInvalid(Exception):
    """The rules next to a rule-test file do not load."""


class RuleCaseFile(pytest.File):
    def collect(self):
        try:
            ruleset = load_rules(self.path.parent.parent)
            cases = load_case_file(ruleset, self.path)
        except RuleSetError as error:
            raise RuleSetInvalid(str(error)) from None
        evaluator = Evaluator(ruleset)
        for case in cases:
            yield RuleCaseItem.from_parent(
                self, name=case.name, case=case, ruleset=ruleset, evaluator=evaluator
            )

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, RuleSetInvalid):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class RuleCaseFailed(Exception):
    pass


class RuleCaseItem(pytest.Item):
    def __init__(self, *, case: RuleCase, ruleset, evaluator, **kwargs):
        super().__init__(**kwargs)
        self.case, self.ruleset, self.evaluator = case, ruleset, evaluator

    def runtest(self) -> None:
        result = run_case(self.ruleset, self.evaluator, self.case)
        if not result.passed:
            raise RuleCaseFailed(failure_report(self.ruleset, result))

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, RuleCaseFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, self.case.loc.line - 1, f"rule case: {self.case.name}"
