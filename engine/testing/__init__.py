"""Rule tests a channel manager writes in YAML beside the rules, and the
pytest plugin that collects them."""

from engine.testing.rule_cases import CaseResult, RuleCase, failure_report, load_cases, run_case

__all__ = ["CaseResult", "RuleCase", "failure_report", "load_cases", "run_case"]
