"""Deciding partners: records, the durable_rules engine, explanations.

:class:`Evaluator` compiles a rule set into durable_rules once and decides
partners (:class:`Partner`) into :class:`Decision` objects; :func:`explain`
re-derives every decision in plain Python, condition by condition, as the
independent check on the engine. Only :mod:`engine.evaluate.durable_adapter`
imports durable_rules.
"""

from engine.evaluate.changes import Change, Snapshot
from engine.evaluate.decide import (
    Decision,
    Evaluator,
    decision_record,
    partner_values,
    recorded_values,
)
from engine.evaluate.explain import Explanation, explain, program_failures
from engine.evaluate.records import (
    FieldProblem,
    Partner,
    build_history,
    checked_history,
    field_values,
    partner_from_record,
)

__all__ = [
    "Change",
    "Decision",
    "Evaluator",
    "Explanation",
    "FieldProblem",
    "Partner",
    "Snapshot",
    "build_history",
    "checked_history",
    "decision_record",
    "explain",
    "field_values",
    "partner_from_record",
    "partner_values",
    "program_failures",
    "recorded_values",
]
