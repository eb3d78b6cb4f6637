"""What a rules folder says: the rule language and the validated rule model.

:func:`load_rules` reads a folder into a :class:`RuleSet`, reporting every
problem with its file, line and column (:class:`~engine.errors.RuleSetError`).
Nothing here decides partners or reads partner data.
"""

from engine.ruleset.conditions import AllOf, AnyOf, Compare, Condition, Dated, IsMissing, NotOf
from engine.ruleset.loader import load_rules
from engine.ruleset.model import (
    ENGAGEMENT,
    EngagementModel,
    FieldDef,
    Metric,
    Parameter,
    Program,
    Row,
    RuleSet,
    Table,
)
from engine.ruleset.quarters import History, Quarter, parse_quarter, window
from engine.ruleset.value_types import ValueType, format_value, parse_value

__all__ = [
    "AllOf",
    "AnyOf",
    "Compare",
    "Condition",
    "Dated",
    "ENGAGEMENT",
    "EngagementModel",
    "FieldDef",
    "History",
    "IsMissing",
    "Metric",
    "NotOf",
    "Parameter",
    "Program",
    "Quarter",
    "Row",
    "RuleSet",
    "Table",
    "ValueType",
    "format_value",
    "load_rules",
    "parse_quarter",
    "parse_value",
    "window",
]
