"""JSON Schemas (draft 2020-12) of the rule files, for editors.

Editors that speak the YAML language server (VS Code's YAML extension,
JetBrains IDEs) complete keys and underline mistakes as a manager types,
from a schema named at the top of the file::

    # yaml-language-server: $schema=../schemas/rules.schema.json

The schema is built here from the loader's own lists of keys and types
(:mod:`engine.ruleset.loader`, :mod:`engine.ruleset.value_types`,
:mod:`engine.ruleset.conditions`), so it cannot drift from what the loader
accepts; ``eligibility schema`` prints it, and ``schemas/`` in the project
holds the copies the shipped files point to (a test keeps them equal). It
judges the shape (sections, keys, types of values); what only the loader
can check (a condition's grammar, a name used but never declared) is left
to ``eligibility validate``.
"""

from __future__ import annotations

from typing import Any

from engine.ruleset.conditions import DATED_KEYS, GROUP_KEYS
from engine.ruleset.loader import (
    ENGAGEMENT_KEYS,
    FIELD_KEYS,
    METRIC_KEYS,
    MODEL_KEYS,
    NAME,
    PARAMETER_KEYS,
    PROGRAM_KEYS,
    RENEWAL_KEYS,
    ROW_KEYS,
    RULESET_KEYS,
    SECTIONS,
    TABLE_KEYS,
)
from engine.ruleset.model import RuleSet
from engine.ruleset.value_types import (
    BOOL,
    CHOICE,
    DATE,
    INTEGER,
    LIST,
    MONEY,
    NUMBER,
    PERCENT,
    TYPE_NAMES,
)

DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE = "https://partner-eligibility.example/schemas/"

# What each key holds, for the editor's hover text and completion.
_TEXT = {"type": "string"}
_SCALAR = {"type": ["string", "number", "boolean"]}
_SHARE = {
    "type": ["string", "number"],
    "description": "a share, like 10%",
}
_DATE = {
    "type": "string",
    "pattern": r"^\d{4}-\d{2}-\d{2}$",
    "description": "a date, YYYY-MM-DD",
}
_TEXTS = {"type": "array", "items": _TEXT}


def closed(properties: dict[str, Any], required: tuple[str, ...] = (), **more: Any) -> dict:
    """An object with exactly these keys (an unknown key is an error)."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    schema.update(more)
    return schema


def named(values: dict[str, Any]) -> dict:
    """A mapping from names (lowercase, digits, underscores) to ``values``."""
    return {
        "type": "object",
        "propertyNames": {"pattern": NAME.pattern},
        "additionalProperties": values,
    }


# A period of memory (engine.ruleset.memory.Period): "1 quarter", "90 days".
_PERIOD = {
    "type": "string",
    "pattern": r"^\s*[0-9]{1,3}\s*([Dd]ay|[Ww]eek|[Mm]onth|[Qq]uarter|[Yy]ear)s?\s*$",
    "description": "a whole number and a unit: days, weeks, months, quarters, years",
}


def keys_described(keys: tuple[str, ...], known: dict[str, Any]) -> dict[str, Any]:
    """The schema of each key the loader accepts: every key must be described
    here (a key added to the loader and not here fails the schema test)."""
    missing = [key for key in keys if key not in known]
    if missing:
        raise KeyError(f"no schema for the keys {missing}")
    return {key: known[key] for key in keys}


def _condition() -> dict:
    """A condition: an expression, or all/any/not of conditions, or a dated one."""
    ref = {"$ref": "#/$defs/condition"}
    group = keys_described(
        GROUP_KEYS,
        {
            "all": {"type": "array", "items": ref},
            "any": {"type": "array", "items": ref},
            "not": ref,
        },
    )
    dated = keys_described(DATED_KEYS, {"from": _DATE, "until": _DATE, "when": ref})
    return {
        "description": "a condition, like certified_technical >= 10, or all/any/not of "
        "conditions, or one that holds from/until a date",
        "anyOf": [
            {"type": ["string", "boolean"]},
            *(closed({key: value}, (key,)) for key, value in group.items()),
            closed(dated, ("when",)),
        ],
    }


def rule_file_schema() -> dict:
    """The schema of one rule file (any of its sections)."""
    condition = {"$ref": "#/$defs/condition"}
    field = closed(
        keys_described(
            FIELD_KEYS,
            {
                "type": {"enum": list(TYPE_NAMES), "description": "the field's type"},
                "required": {"type": "boolean"},
                "default": _SCALAR | {"description": "the value of an empty cell"},
                "label": _TEXT,
                "description": _TEXT,
                "values": _TEXTS | {"description": "the values a 'one of' field takes"},
                "column": _TEXT | {"description": "the roster's column, if named otherwise"},
                "aliases": _TEXTS,
                "may_be_absent": {"type": "boolean"},
                "min": {"type": ["number", "string"]},
                "max": {"type": ["number", "string"]},
                "actionable": {"type": "boolean"},
                "scale": {
                    "enum": ["points", "fraction"],
                    "description": "a percentage without a % sign: points (60 is 60%) "
                    "or fraction (0.6 is 60%)",
                },
            },
        ),
        ("type",),
    )
    fields = named({"anyOf": [{"enum": list(TYPE_NAMES)}, field]})
    row = closed(
        keys_described(ROW_KEYS, {"value": _TEXT, "when": condition, "note": _TEXT}), ("value",)
    )
    table_keys = {
        "label": _TEXT,
        "description": _TEXT,
        "rows": {"type": "array", "items": row},
        "default": _TEXT,
        "default_note": _TEXT,
        "order": _TEXTS | {"description": "the values from lowest to highest"},
    }
    table = closed(keys_described(TABLE_KEYS, table_keys), ("default",))
    model = closed(
        keys_described(
            MODEL_KEYS,
            {"name": _TEXT, "description": _TEXT, "resources": {"type": "object"}},
        ),
        ("name",),
    )
    engagement = closed(
        keys_described(ENGAGEMENT_KEYS, {**table_keys, "models": named(model)}),
        ("default", "models"),
    )
    program = closed(
        keys_described(
            PROGRAM_KEYS,
            {
                "name": _TEXT,
                "description": _TEXT,
                "when": condition,
                "group": {"type": "string", "pattern": NAME.pattern},
                "priority": {"type": "integer", "description": "higher wins within the group"},
                "starts": _DATE,
                "ends": _DATE,
                "requires": {"anyOf": [_TEXT, _TEXTS]},
                "benefits": {"type": "object"},
                "grace": {
                    **_PERIOD,
                    "description": "keeps the partner this long after it stops qualifying",
                },
                "protection": {
                    **_PERIOD,
                    "description": "once reached, the program is held this long",
                },
                "renewal": {
                    "description": "the enrollment renews on each anniversary",
                    "anyOf": [
                        _PERIOD,
                        closed(
                            keys_described(RENEWAL_KEYS, {"every": _PERIOD, "window": _PERIOD}),
                            ("every",),
                        ),
                    ],
                },
            },
        ),
        ("name",),
    )
    sections = {
        "ruleset": closed(
            keys_described(
                RULESET_KEYS,
                {
                    "name": _TEXT,
                    "description": _TEXT,
                    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                    "max_rejects": _SHARE,
                    "max_moves": _SHARE,
                },
            )
        ),
        "fields": fields,
        "history": fields,
        "parameters": named(
            {
                "anyOf": [
                    _SCALAR,
                    _TEXTS,
                    closed(
                        keys_described(PARAMETER_KEYS, {"value": {}, "description": _TEXT}),
                        ("value",),
                    ),
                ]
            }
        ),
        "metrics": named(
            {
                "anyOf": [
                    {"type": ["string", "number"]},
                    closed(
                        keys_described(
                            METRIC_KEYS,
                            {
                                "value": {"type": ["string", "number"]},
                                "label": _TEXT,
                                "description": _TEXT,
                            },
                        ),
                        ("value",),
                    ),
                ]
            }
        ),
        "classifications": named(table),
        "engagement": engagement,
        "programs": named(program),
    }
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_BASE + "rules.schema.json",
        "title": "Partner eligibility rule file",
        "description": "One file of a rule set (docs/rule-authoring.md).",
        **closed(keys_described(SECTIONS, sections)),
        "$defs": {"condition": _condition()},
    }


# A value as a partner file (explain --file) may give it: as in a roster
# cell (text), or as JSON writes it.
_CELL = {
    BOOL: {"type": ["boolean", "string"]},
    INTEGER: {"type": ["integer", "string"]},
    NUMBER: {"type": ["number", "string"]},
    MONEY: {"type": ["number", "string"]},
    PERCENT: {"type": ["number", "string"]},
    DATE: _DATE,
    LIST: {"type": ["array", "string"], "items": _TEXT},
}


def partner_file_schema(ruleset: RuleSet) -> dict:
    """The JSON Schema of a partner file for ``eligibility explain --file``
    under one rule set: its fields (by their rule names) and its history
    figures, each with its label; any other key is an error, as the reader
    says (engine.data.readers.partner_from_json_file)."""

    def value(field) -> dict:
        kind = field.type.kind
        found = dict(_CELL.get(kind, _TEXT))
        if kind == CHOICE and field.type.values:  # matched as the roster's are (any case)
            found = {"type": "string", "examples": list(field.type.values)}
        return {**found, "description": field.label or field.name}

    quarter = closed(
        {
            "quarter": {"type": "string", "description": "a quarter, like 2026Q3"},
            **{name: value(f) for name, f in ruleset.figures.items()},
        },
        ("quarter",),
    )
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_BASE + "partner.schema.json",
        "title": f"A partner for eligibility explain --file ({ruleset.name})",
        "description": "docs/rule-authoring.md, 'Explaining a partner'.",
        **closed(
            {
                "partner_id": {"type": ["string", "number"], "description": "the partner's id"},
                **{name: value(f) for name, f in ruleset.fields.items()},
                "history": {"type": "array", "items": quarter},
            },
            ("partner_id",),
        ),
    }
