"""Loading and checking the letters' settings (``templates/letters.yaml``)
and each language's terms (``templates/<language>/terms.yaml``).

Both are untrusted YAML, loaded safely like rule files; every problem names
the file, line, and column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import Problem, RuleSetError
from engine.ruleset.conditions import names_read, unknown_key_message
from engine.ruleset.model import RuleSet
from engine.ruleset.schema import DRAFT, SCHEMA_BASE, closed, keys_described
from engine.ruleset.yaml_source import YList, YMap, load_yaml

SETTINGS_FILE = "letters.yaml"
TERMS_FILE = "terms.yaml"
_TOP_KEYS = ("sender", "languages", "default_language", "tier_group", "warnings")
_SENDER_KEYS = ("name", "email", "signature")
_WARNING_KEYS = ("table", "at_risk", "probation")


def settings_schema() -> dict:
    """The JSON Schema of templates/letters.yaml; see :mod:`engine.ruleset.schema`."""
    text = {"type": "string"}
    values = {"type": "array", "items": text}
    language = {"type": "string", "pattern": _LANGUAGE.pattern}
    top = {
        "sender": closed(
            keys_described(
                _SENDER_KEYS,
                {"name": text, "email": {"type": "string", "format": "email"}, "signature": text},
            ),
            ("name", "email"),
        ),
        "languages": {"type": "array", "items": language},
        "default_language": language,
        "tier_group": text | {"description": "the exclusive group of programs that is the tier"},
        "warnings": closed(
            keys_described(
                _WARNING_KEYS,
                {
                    "table": text | {"description": "the classification that is the standing"},
                    "at_risk": values,
                    "probation": values,
                },
            ),
            ("table",),
        ),
    }
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_BASE + "letters.schema.json",
        "title": "Partner letter settings",
        "description": "templates/letters.yaml (docs/letters.md).",
        **closed(keys_described(_TOP_KEYS, top), ("sender",)),
    }


_LANGUAGE = re.compile(r"^[a-z]{2,3}$")
_FORMATTED = re.compile(r"^(?:\$[\d,]+(?:\.\d+)?|\d+(?:\.\d+)?%|[\d.,]+)$")  # $1,500 45% 90
EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


@dataclass(frozen=True)
class LetterSettings:
    """What letters need to know about the rule set (templates/letters.yaml)."""

    sender_name: str
    sender_email: str
    signature: str
    languages: tuple[str, ...]
    default_language: str
    tier_group: str | None
    standing_table: str | None
    at_risk: tuple[str, ...]
    probation: tuple[str, ...]
    # The rule ids a letter may show, each needing a word in every language
    # but the default one (see needed_terms).
    needed_terms: tuple[str, ...] = ()


def load_letter_settings(folder: str | Path, ruleset: RuleSet) -> LetterSettings:
    """The settings in ``folder/letters.yaml``, checked against the rule set."""
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        raise RuleSetError(
            [
                Problem(
                    str(path),
                    1,
                    1,
                    "no letter settings; every templates "
                    "folder needs a letters.yaml (see docs/letters.md)",
                )
            ],
            "the letter templates",
        )
    data, problems = load_yaml(path, folder=Path(folder))
    if data is not None and not isinstance(data, YMap):
        problems.append(Problem(str(path), 1, 1, "letters.yaml must be a mapping of settings"))
    if problems or data is None:
        raise RuleSetError(
            problems or [Problem(str(path), 1, 1, "letters.yaml is empty")], "the letter templates"
        )
    _unknown_keys(data, _TOP_KEYS, "letters.yaml", problems)
    sender = data.get("sender")
    if not isinstance(sender, YMap):
        problems.append(
            data.key_loc("sender").problem(
                "'sender' needs name, email, and signature"
                if "sender" in data
                else "missing 'sender' (name, email, and signature of the letters)"
            )
        )
        sender = YMap()
        sender.loc, sender.key_locs, sender.value_locs = data.loc, {}, {}
    else:
        _unknown_keys(sender, _SENDER_KEYS, "sender", problems)
    name = _text(sender, "name", problems, required=True)
    email = _text(sender, "email", problems, required=True)
    if email and not EMAIL.match(email):
        problems.append(
            sender.value_loc("email").problem(
                f"'{email}' is not an email address like partners@vendor.example"
            )
        )
    signature = _text(sender, "signature", problems) or name

    languages = data.get("languages", YList(["en"]))
    if not isinstance(languages, YList) or not all(
        isinstance(x, str) and _LANGUAGE.match(x) for x in languages
    ):
        problems.append(
            data.value_loc("languages").problem(
                "'languages' needs a list of language codes, for example [en, fr, de, es]"
            )
        )
        languages = ["en"]
    default = _text(data, "default_language", problems) or "en"
    if default not in languages:
        problems.append(
            data.value_loc("default_language").problem(
                f"default_language '{default}' is not one of the languages ({', '.join(languages)})"
            )
        )
    for language in languages:
        if not (Path(folder) / language).is_dir():
            problems.append(
                data.value_loc("languages").problem(
                    f"no folder {Path(folder) / language} for language '{language}'"
                )
            )

    groups = sorted({p.group for p in ruleset.programs if p.group})
    tier_group = _text(data, "tier_group", problems)
    if tier_group and tier_group not in groups:
        problems.append(
            data.value_loc("tier_group").problem(
                f"tier_group '{tier_group}' is not an exclusive group of the rules "
                f"({', '.join(groups) or 'there are none'})"
            )
        )
    table_name, at_risk, probation = _warnings(data, ruleset, problems)
    if problems:
        raise RuleSetError(problems, "the letter templates")
    return LetterSettings(
        name,
        email,
        signature,
        tuple(languages),
        default,
        tier_group,
        table_name,
        at_risk,
        probation,
        needed_terms(ruleset),
    )


def needed_terms(ruleset: RuleSet) -> tuple[str, ...]:
    """The rule ids a letter may show, which terms.yaml translates: the rule
    set's name (``rule_set``), program names (by id), classification values,
    engagement models and their descriptions, resource and benefit keys and
    their text values, the fields and metrics conditions test (requirements
    name them), yes and no, and the signature. Numbers, shares and money are
    formatted, not translated."""
    ids: dict[str, None] = dict.fromkeys(["rule_set", "yes", "no", "signature"])
    ids.update(dict.fromkeys(p.id for p in ruleset.programs))
    for table in ruleset.classifications:
        ids.update(dict.fromkeys([table.name, *table.values]))
    for model in ruleset.engagement_models.values():
        ids[model.id] = None
        if model.description:
            ids[f"{model.id}.description"] = None
        ids.update(_mapping_terms(model.resources))
    for program in ruleset.programs:
        ids.update(_mapping_terms(program.benefits))
    conditions = [row.when for t in ruleset.classifications for row in t.rows]
    conditions += [p.when for p in ruleset.programs if p.when is not None]
    for condition in conditions:
        ids.update(dict.fromkeys(name for name, _ in names_read(condition)))
    return tuple(ids)


def _mapping_terms(mapping) -> dict[str, None]:
    """Keys, and the values written as words (not numbers, shares or money)."""
    found = dict.fromkeys(mapping)
    for value in mapping.values():
        if isinstance(value, str) and not _FORMATTED.match(value):
            found[value] = None
    return found


def _warnings(data: YMap, ruleset: RuleSet, problems: list[Problem]):
    warnings = data.get("warnings")
    if warnings is None:
        return None, (), ()
    if not isinstance(warnings, YMap):
        problems.append(
            data.value_loc("warnings").problem("'warnings' needs table, at_risk, and probation")
        )
        return None, (), ()
    _unknown_keys(warnings, _WARNING_KEYS, "warnings", problems)
    table_name = _text(warnings, "table", problems, required=True)
    table = next((t for t in ruleset.classifications if t.name == table_name), None)
    if table_name and table is None:
        names = [t.name for t in ruleset.classifications]
        problems.append(
            warnings.value_loc("table").problem(
                f"'{table_name}' is not a classification of the rules ({', '.join(names)})"
            )
        )
    lists = []
    for key in ("at_risk", "probation"):
        values = warnings.get(key, YList())
        if not isinstance(values, YList) or not all(isinstance(v, str) for v in values):
            problems.append(warnings.value_loc(key).problem(f"'{key}' needs a list of values"))
            values = []
        for value in values:
            if table is not None and value not in table.values:
                problems.append(
                    warnings.value_loc(key).problem(
                        f"'{value}' is not a value of '{table.name}' ({', '.join(table.values)})"
                    )
                )
        lists.append(tuple(values))
    return table_name, lists[0], lists[1]


def load_terms(folder: str | Path, language: str) -> dict[str, str]:
    """A language's words for rule ids (``at_risk: à risque``); empty if none."""
    path = Path(folder) / language / TERMS_FILE
    if not path.is_file():
        return {}
    data, problems = load_yaml(path, folder=Path(folder))
    if data is not None and (
        not isinstance(data, YMap) or not all(isinstance(v, str) for v in data.values())
    ):
        problems.append(
            Problem(str(path), 1, 1, "terms.yaml must map ids to text, like 'at_risk: à risque'")
        )
    if problems:
        raise RuleSetError(problems, "the letter templates")
    return dict(data or {})


def _unknown_keys(
    data: YMap, allowed: tuple[str, ...], where: str, problems: list[Problem]
) -> None:
    for key in data:
        if key not in allowed:
            problems.append(data.key_loc(key).problem(unknown_key_message(key, allowed, where)))


def _text(data: YMap, key: str, problems: list[Problem], required: bool = False) -> Any:
    value = data.get(key)
    if value is None:
        if required:
            problems.append(data.loc.problem(f"missing '{key}'"))
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(data.value_loc(key).problem(f"'{key}' needs text"))
        return None
    return value.strip()
