"""The JSON Schemas editors use for rule files, rule tests and letters.yaml.

They are built from the loader's own lists of keys and types: these tests
check that every shipped file validates against its schema (read as the
YAML language server reads it, YAML 1.2), that the copies in schemas/ are
what `eligibility schema` prints, that every shipped file names its schema,
and that files the schema can judge as broken are rejected.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from conftest import DATA, ROOT
from engine.letters.settings import settings_schema
from engine.ruleset.schema import rule_file_schema
from engine.testing.rule_cases import case_file_schema

SCHEMAS = {
    "rules": rule_file_schema,
    "rule-tests": case_file_schema,
    "letters": settings_schema,
}


class Yaml12(yaml.SafeLoader):
    """Plain scalars as YAML 1.2's core schema reads them (as editors do):
    `yes` and `2026-11-26` are text, only true/false are booleans."""


Yaml12.yaml_implicit_resolvers = {}
for tag, pattern, first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^[-+]?[0-9]+$", "-+0123456789"),
    ("float", r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$", "-+0123456789."),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
):
    Yaml12.add_implicit_resolver(f"tag:yaml.org,2002:{tag}", re.compile(pattern), list(first))


def _load(path):
    return yaml.load(path.read_text(encoding="utf-8"), Loader=Yaml12)  # noqa: S506 - safe subclass


def _validator(name: str):
    schema = SCHEMAS[name]()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _shipped() -> list[tuple[str, object]]:
    return [
        *(("rules", p) for p in sorted((ROOT / "rules").glob("*.yaml"))),
        *(("rule-tests", p) for p in sorted((ROOT / "rules" / "tests").glob("*.yaml"))),
        ("letters", ROOT / "templates" / "letters.yaml"),
    ]


@pytest.mark.parametrize(("name", "path"), _shipped(), ids=lambda v: getattr(v, "name", v))
def test_every_shipped_file_validates_and_names_its_schema(name, path):
    errors = list(_validator(name).iter_errors(_load(path)))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=") and first.endswith(
        f"schemas/{name}.schema.json"
    )
    target = (path.parent / first.split("$schema=", 1)[1]).resolve()
    assert target == (ROOT / "schemas" / f"{name}.schema.json").resolve()


@pytest.mark.parametrize("name", SCHEMAS)
def test_the_schemas_folder_holds_what_eligibility_schema_prints(name, cli_run):
    printed = cli_run("schema", name)
    assert printed.exit_code == 0, printed.stderr
    assert json.loads(printed.output) == SCHEMAS[name]()
    shipped = (ROOT / "schemas" / f"{name}.schema.json").read_text(encoding="utf-8")
    assert shipped == printed.output, "run: eligibility schema --write schemas/"


def test_the_other_rule_sets_in_the_tests_validate_too():
    validator = _validator("rules")
    for folder in (DATA / "base_rules", DATA / "other_vendor" / "rules"):
        for path in sorted(folder.glob("*.yaml")):
            assert not list(validator.iter_errors(_load(path))), path


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("programs:\n  gold:\n    name: Gold\n    benifits: {discount: 5%}\n", "benifits"),
        ("programs:\n  gold:\n    when: x >= 1\n", "name"),
        ("programs:\n  gold: {name: Gold, priority: high}\n", "high"),
        ("programs:\n  Gold: {name: Gold}\n", "Gold"),
        ("fields:\n  staff: {type: integr}\n", "integr"),
        ("fields:\n  staff: {type: integer, requried: true}\n", "requried"),
        ("ruleset: {name: X, currency: usd}\n", "usd"),
        ("programs:\n  gold: {name: Gold, starts: 1 March 2026}\n", "1 March 2026"),
        ("classifications:\n  size:\n    rows: [{value: big, when: x > 1}]\n", "default"),
        ("engagement:\n  default: a\n", "models"),
        ("programs:\n  gold: {name: Gold, when: {al: [x > 1]}}\n", "al"),
        ("prgrams:\n  gold: {name: Gold}\n", "prgrams"),
    ],
)
def test_mistakes_the_schema_can_judge_are_rejected(text, where):
    errors = list(_validator("rules").iter_errors(yaml.load(text, Loader=Yaml12)))  # noqa: S506
    assert errors, text
    assert any(where in e.message or where in str(list(e.absolute_path)) for e in errors), [
        e.message for e in errors
    ]


def test_mistakes_in_rule_tests_and_letters_yaml_are_rejected():
    tests = _validator("rule-tests")
    assert list(tests.iter_errors({"cases": [{"name": "x", "as_of": "2026-11-26"}]}))
    case = {"name": "x", "as_of": "2026-11-26", "partner": {}, "expect": {"tier": "a"}}
    assert list(tests.iter_errors({"cases": [case]}))
    letters = _validator("letters")
    assert list(letters.iter_errors({"sender": {"name": "A"}}))  # no email
    assert list(letters.iter_errors({"sender": {"name": "A", "email": "a@b.c"}, "language": []}))


def test_a_partner_file_for_explain_has_a_schema_of_the_rule_sets_fields(cli_run, tmp_path):
    printed = cli_run("schema", "partner", "--rules", "rules")
    assert printed.exit_code == 0, printed.stderr
    schema = json.loads(printed.output)
    assert (ROOT / "schemas" / "partner.schema.json").read_text(encoding="utf-8") == (
        printed.output
    )
    validator = jsonschema.Draft202012Validator(schema)
    partner = {  # the example in docs/rule-authoring.md
        "partner_id": "J-1",
        "partner_name": "From JSON",
        "country": "FR",
        "joined_on": "2020-01-01",
        "certified_technical": 3,
        "history": [{"quarter": "2026Q3", "revenue": "$10,000", "target": 9000}],
    }
    assert list(validator.iter_errors(partner)) == []
    path = tmp_path / "partner.json"
    path.write_text(json.dumps(partner), encoding="utf-8")
    assert cli_run("explain", "--file", str(path), "--db", str(tmp_path / "h")).exit_code == 0
    for wrong in ({**partner, "certified_tech": 3}, {**partner, "joined_on": "1 March 2020"}):
        assert list(validator.iter_errors(wrong)), wrong  # what explain refuses too
        path.write_text(json.dumps(wrong), encoding="utf-8")
        assert cli_run("explain", "--file", str(path), "--db", str(tmp_path / "h")).exit_code == 1
