"""Every sentence a letter builds from a rule, in every shipped language.

One case per operator (and per plural form and missing value), stated in
English, French, German and Spanish by the reference templates'
phrases.yaml; tests/data/phrases.yaml holds what each must read, checked by
a reader of each language. Set UPDATE_GOLDEN=1 to rewrite it after a
deliberate change, and read the difference.
"""

from __future__ import annotations

import os

import pytest
import yaml

from conftest import DATA, ROOT
from engine.errors import RuleSetError
from engine.letters.phrases import load_phrases
from engine.letters.rendering import LetterRenderer, percent_decimals
from engine.letters.settings import load_letter_settings
from engine.ruleset.loader import load_rules

RULES = load_rules(ROOT / "rules")
TEMPLATES = ROOT / "templates"
GOLDEN = DATA / "phrases.yaml"
LANGUAGES = ("en", "fr", "de", "es")


def _case(name, kind, op, choices, actual, short=None):
    return {
        "name": name,
        "label": RULES.label_of(name),
        "type": kind,
        "op": op,
        "choices": tuple(choices),
        "threshold": choices[0] if choices else None,
        "actual": actual,
        "short": short,
    }


REVIEW, FOCUS, TEXTS = "review_for_replacement", "focus_verticals", "list of text"
CASES = {
    "at least, short by several": _case("certified_technical", "integer", ">=", [10], 8, 2),
    "at least, short by one": _case("certified_technical", "integer", ">=", [10], 9, 1),
    "at least, money": _case("revenue_4q", "money", ">=", [600000.0], 215873.94, 384126.06),
    "at least, no value on record": _case("revenue_4q", "money", ">=", [600000.0], None),
    "more than, a share just under": _case("revenue_growth", "percent", ">", [0.1], 0.0999, 0.0001),
    "at most, over by several": _case("quarters_missed", "integer", "<=", [1], 3, 2),
    "less than, over by one": _case("quarters_missed", "integer", "<", [2], 3, 1),
    "between": _case("enterprise_share", "percent", "between", [0.2, 0.6], 0.349768),
    "equals": _case("standing", "one of", "==", ["good"], "at_risk"),
    "not equals": _case("standing", "one of", "!=", [REVIEW], REVIEW),
    "one of": _case("standing", "one of", "in", ["good", "at_risk"], "probation"),
    "none of": _case("standing", "one of", "not in", ["probation", REVIEW], "probation"),
    "contains": _case(FOCUS, TEXTS, "contains", ["healthcare"], ("manufacturing", "finance")),
    "contains, an empty list": _case(FOCUS, TEXTS, "contains", ["healthcare"], ()),
    "yes needed": _case("business_plan_on_file", "yes/no", "==", [True], False),
    "no needed": _case("downgrade_hold", "yes/no", "==", [False], True),
}  # fmt: skip


@pytest.fixture(scope="module")
def renderer():
    return LetterRenderer(TEMPLATES, load_letter_settings(TEMPLATES, RULES), RULES.currency)


def test_every_operator_reads_right_in_every_language(renderer):
    written = {
        case: {lang: renderer.requirement_text(r, lang) for lang in LANGUAGES}
        for case, r in CASES.items()
    }
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(
            yaml.safe_dump(written, allow_unicode=True, sort_keys=False, width=200),
            encoding="utf-8",
        )
    golden = yaml.safe_load(GOLDEN.read_text(encoding="utf-8"))
    for case in CASES:
        for lang in LANGUAGES:
            assert written[case][lang] == golden[case][lang], (case, lang)
    for sentences in written.values():  # what garbled letters showed
        for text in sentences.values():
            assert "  " not in text and not text.endswith((" ", ",")), text


@pytest.mark.parametrize(
    ("value", "near", "decimals"),
    [
        (0.349768, None, 1),  # 35%, not 34.9768%
        (0.326661, 0.5, 1),  # 32.7%
        (0.1225, 0.1225, 2),  # the threshold has two decimals
        (0.5996, 0.6, 2),  # 60.0% would read as meeting 60%
        (0.599999, 0.6, 4),  # as close as four decimals show
        (0.6, 0.6, 1),
    ],
)
def test_percentages_are_rounded_for_reading(value, near, decimals):
    assert percent_decimals(value, near) == decimals


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('at_least: "{name.__class__}"', "cannot use {name.__class__}"),
        ('at_least: "{actual!r}"', "cannot use {actual}"),
        ('at_least: "{threshold:>99999}"', "cannot use {threshold}"),
        ('at_least: "{name"', "phrase 'at_least': expected '}' before end of string"),
        ("short: {few: x, one: y}", "missing phrase 'short'"),
        ("surely: x", "unknown phrase 'surely'"),
    ],
)
def test_a_bad_phrase_is_located_and_refused(tmp_path, text, message):
    """Phrases are untrusted like templates: only their own slots, no
    attributes, conversions or format specifications."""
    folder = tmp_path / "templates"
    (folder / "en").mkdir(parents=True)
    base = (TEMPLATES / "en" / "phrases.yaml").read_text(encoding="utf-8")
    key = text.split(":")[0]
    lines = [line for line in base.splitlines() if not line.startswith(f"{key}:")]
    (folder / "en" / "phrases.yaml").write_text("\n".join([*lines, text]) + "\n", "utf-8")
    with pytest.raises(RuleSetError) as caught:
        load_phrases(folder, "en")
    assert message in str(caught.value) and "phrases.yaml:" in str(caught.value)
