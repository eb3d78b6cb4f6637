"""The letter sandbox: no filter, test or operator turns data into markup,
and no template runs without bound in time or memory (engine.letters.sandbox)."""

from __future__ import annotations

import shutil
import time

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from conftest import AS_OF, ROOT
from engine.errors import RuleSetError
from engine.evaluate.decide import Evaluator, decision_record, partner_values
from engine.letters import sandbox
from engine.letters.facts import letter_facts
from engine.letters.rendering import LetterRenderer
from engine.letters.settings import load_letter_settings
from engine.letters.template_check import check_templates

TEMPLATES = ROOT / "templates"
HOSTILE = "[Click here](https://evil.example/login) <b>bold</b> & *em* `code`"
ESCAPED = "[Click here](https://evil.example/login) &lt;b&gt;bold&lt;/b&gt; &amp; *em* `code`"
N = "partner.partner_name"

# How each of Jinja's filters is used on data in a letter (the name, or a list
# or dict holding it); filters not applying to text get numbers made from it.
FILTER_USES = {
    "abs": f"({N}|length)|abs",
    "attr": f"({N}|attr('strip'))()",
    "batch": f"([{N}]|batch(2, {N})|list)[0]|join(' ')",
    "capitalize": f"{N}|capitalize",
    "center": f"{N}|center(90)",
    "count": f"{N}|count",
    "d": f"partner.nothing|d({N})",
    "default": f"partner.nothing|default({N})",
    "dictsort": f"({{'a': {N}}}|dictsort)[0][1]",
    "e": f"{N}|e",
    "escape": f"{N}|escape",
    "filesizeformat": f"({N}|length)|filesizeformat",
    "first": f"[{N}]|first",
    "float": f"({N}|length)|float",
    "forceescape": f"{N}|forceescape",
    "format": f"'%s!'|format({N})",
    "groupby": f"([{{'k': {N}}}]|groupby('k'))[0][0]",
    "indent": f"('x\\n' ~ {N})|indent(2)",
    "int": f"({N}|length)|int",
    "items": f"({{'a': {N}}}|items|list)[0][1]",
    "join": f"[{N}, {N}]|join(' / ')",
    "last": f"[{N}]|last",
    "length": f"{N}|length",
    "list": f"{N}|list|join('')",
    "lower": f"{N}|lower",
    "map": f"[{N}]|map('upper')|join('')",
    "max": f"[{N}]|max",
    "min": f"[{N}]|min",
    "pprint": f"{N}|pprint",
    "reject": f"[{N}]|reject('none')|join('')",
    "rejectattr": f"[{{'a': {N}}}]|rejectattr('a', 'none')|map(attribute='a')|join('')",
    "replace": f"{N}|replace('bold', 'bald')",
    "reverse": f"{N}|reverse|join('')",
    "round": f"({N}|length)|round",
    "safe": f"{N}|safe",
    "select": f"[{N}]|select|join('')",
    "selectattr": f"[{{'a': {N}}}]|selectattr('a')|map(attribute='a')|join('')",
    "slice": f"([{N}]|slice(1)|list)[0]|join('')",
    "sort": f"[{N}]|sort|join('')",
    "string": f"{N}|string",
    "striptags": f"{N}|striptags",
    "sum": f"[{N}|length]|sum",
    "title": f"{N}|title",
    "tojson": f"{N}|tojson",
    "trim": f"{N}|trim",
    "truncate": f"{N}|truncate(200)",
    "unique": f"[{N}]|unique|join('')",
    "upper": f"{N}|upper",
    "urlencode": f"{N}|urlencode",
    "wordcount": f"{N}|wordcount",
    "wordwrap": f"{N}|wordwrap(30)",
}
# What a template's own markup can do with data: join it, format it, replace with it.
MARKUP_USES = {
    "concat": "{% set m %}**Hi** {% endset %}{{ m ~ " + N + " }}",
    "plus": "{% set m %}**Hi** {% endset %}{{ m + " + N + " }}",
    "percent": "{% set m %}**Hi** %s{% endset %}{{ m % " + N + " }}",
    "format filter": "{% set m %}**Hi** %s{% endset %}{{ m|format(" + N + ") }}",
    "format method": "{% set m %}**Hi** {}{% endset %}{{ m.format(" + N + ") }}",
    "replace filter": "{% set m %}**Hi** X{% endset %}{{ m|replace('X', " + N + ") }}",
    "replace method": "{% set m %}**Hi** X{% endset %}{{ m.replace('X', " + N + ") }}",
    "join method": "{% set m %} **and** {% endset %}{{ m.join([" + N + ", 'a']) }}",
}


@pytest.fixture(scope="module")
def partner_letter(ruleset, example_partners):
    """Render a letter whose layout starts with ``code``, for a partner named HOSTILE."""
    partner = next(p for p in example_partners if p.partner_id == "P-1006")
    decision = Evaluator(ruleset).decide([partner], AS_OF)[0]
    values = {**partner_values(ruleset, partner, AS_OF), "partner_name": HOSTILE}
    record = decision_record(ruleset, 5, decision, {}, values)
    settings = load_letter_settings(TEMPLATES, ruleset)
    facts = letter_facts(ruleset, settings, values, record, (), AS_OF, None)

    def render(tmp_path, code: str):
        templates = tmp_path / "templates"
        if not templates.exists():
            shutil.copytree(TEMPLATES, templates)
        base = templates / "en" / "base.md.j2"
        original = (TEMPLATES / "en" / "base.md.j2").read_text(encoding="utf-8")
        base.write_text(f"MARK[{code}]MARK\n" + original, encoding="utf-8")
        return LetterRenderer(templates, settings, ruleset.currency).render(facts)

    return render


def _html_body(letter) -> str:
    html = letter.html
    return html[html.index("MARK[") : html.index("]MARK")]


def test_every_jinja_filter_is_checked():
    """A filter Jinja adds in a later version must be looked at before letters get it."""
    builtin = set(ImmutableSandboxedEnvironment().filters)
    assert builtin - sandbox.REMOVED_FILTERS == set(FILTER_USES)


@pytest.mark.parametrize("name", sorted(FILTER_USES))
def test_no_filter_turns_data_into_markup(partner_letter, tmp_path, name):
    letter = partner_letter(tmp_path, "{{ " + FILTER_USES[name] + " }}")
    body = _html_body(letter)
    assert "<a " not in body and "<b>" not in body and "<em>" not in body, body
    assert "<code>" not in body and "&amp;lt;" not in body, body  # nor escaped twice
    if name in ("e", "escape", "forceescape", "safe", "string", "trim", "first", "d"):
        assert ESCAPED in body  # the name exactly, as text
        assert HOSTILE in letter.text


@pytest.mark.parametrize("name", sorted(MARKUP_USES))
def test_markup_joined_with_data_keeps_the_data_as_data(partner_letter, tmp_path, name):
    letter = partner_letter(tmp_path, MARKUP_USES[name])
    body = _html_body(letter)
    assert "<strong>" in body  # the template's own Markdown is markup
    assert "<a " not in body and "<b>" not in body and "<em>" not in body, body
    assert ESCAPED in body and HOSTILE in letter.text


@pytest.mark.parametrize("name", sorted(sandbox.REMOVED_FILTERS))
def test_filters_that_make_html_or_chance_are_gone(partner_letter, tmp_path, name):
    with pytest.raises(Exception, match=f"No filter named '{name}'"):
        partner_letter(tmp_path, "{{ " + N + "|" + name + " }}")


def test_lipsum_is_gone(partner_letter, tmp_path):
    with pytest.raises(Exception, match="'lipsum' is undefined"):
        partner_letter(tmp_path, "{{ lipsum(2) }}")


TEST_USES = {
    "!=": f"[{N}|length]|select('!=', 3)|list|length == 1",
    "<": f"[{N}|length]|select('<', 3)|list|length == 1",
    "<=": f"[{N}|length]|select('<=', 3)|list|length == 1",
    "==": f"[{N}|length]|select('==', 3)|list|length == 1",
    ">": f"[{N}|length]|select('>', 3)|list|length == 1",
    ">=": f"[{N}|length]|select('>=', 3)|list|length == 1",
    "boolean": f"{N} is boolean",
    "callable": f"{N} is callable",
    "defined": f"{N} is defined",
    "divisibleby": f"({N}|length) is divisibleby 3",
    "eq": f"{N} is eq 'x'",
    "equalto": f"{N} is equalto 'x'",
    "escaped": f"{N} is escaped",
    "even": f"({N}|length) is even",
    "false": f"{N} is false",
    "filter": "'upper' is filter",
    "float": f"{N} is float",
    "ge": f"({N}|length) is ge 3",
    "greaterthan": f"({N}|length) is greaterthan 3",
    "gt": f"({N}|length) is gt 3",
    "in": f"{N} is in [{N}]",
    "integer": f"{N} is integer",
    "iterable": f"{N} is iterable",
    "le": f"({N}|length) is le 3",
    "lessthan": f"({N}|length) is lessthan 3",
    "lower": f"{N} is lower",
    "lt": f"({N}|length) is lt 3",
    "mapping": f"{N} is mapping",
    "ne": f"{N} is ne 'x'",
    "none": f"{N} is none",
    "number": f"{N} is number",
    "odd": f"({N}|length) is odd",
    "sameas": f"{N} is sameas {N}",
    "sequence": f"{N} is sequence",
    "string": f"{N} is string",
    "test": "'string' is test",
    "true": f"{N} is true",
    "undefined": f"{N} is undefined",
    "upper": f"{N} is upper",
}


def test_every_jinja_test_is_checked():
    assert set(ImmutableSandboxedEnvironment().tests) == set(TEST_USES)


@pytest.mark.parametrize("name", sorted(TEST_USES))
def test_tests_only_say_yes_or_no(partner_letter, tmp_path, name):
    letter = partner_letter(tmp_path, "{{ " + TEST_USES[name] + " }}")
    # yes/no as letters write booleans (True/False: worked out when compiled)
    said = letter.text[: letter.text.index("]MARK")]
    assert said in ("MARK[yes", "MARK[no", "MARK[True", "MARK[False"), letter.text[:80]


# --- bounds --------------------------------------------------------------------------

HUNGRY = {
    "repeat": "{{ 'a' * 10**10 }}",
    "repeat list": "{{ ([1] * 10**10)|length }}",
    "power": "{{ 7 ** 999999999 }}",
    "center filter": "{{ 'a'|center(10**10) }}",
    "center method": "{{ 'a'.center(10**10) }}",
    "ljust method": "{{ 'a'.ljust(10**10) }}",
    "zfill method": "{{ '1'.zfill(10**10) }}",
    "indent": "{{ 'a\\nb'|indent(10**10) }}",
    "format filter": "{{ '%999999999999s'|format(1) }}",
    "format star": "{{ '%*s'|format(10**10, 1) }}",
    "percent": "{{ '%999999999999s' % 1 }}",
    "format method": "{{ '{:>999999999999}'.format(1) }}",
    "batch fill": "{{ ([1]|batch(10**10, 0)|list)|length }}",
    "slice fill": "{{ ([1]|slice(10**10, 0)|list)|length }}",
    "replace chain": "{% set ns = namespace(s='aaaaaaaaaa') %}"
    "{% for i in range(12) %}{% set ns.s = ns.s|replace('a', 'aaaaaaaaaa') %}{% endfor %}"
    "{{ ns.s|length }}",
    "doubling": "{% set ns = namespace(s='ab') %}"
    "{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "doubling plus": "{% set ns = namespace(s='ab') %}"
    "{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
    "join": "{{ range(10)|join('x' * 999999) }}",
    "many outputs": "{% for i in range(99999) %}{% for j in range(99) %}{{ i }}"
    "{% endfor %}{% endfor %}",
    "long letter": "{% for i in range(99999) %}{% for j in range(99) %}xxxxxxxxxxxxxxxx"
    "{% endfor %}{% endfor %}",
    "endless loop": "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}"
    "{% endfor %}",
}


@pytest.mark.parametrize("name", sorted(HUNGRY))
def test_templates_cannot_take_unbounded_memory_or_time(ruleset, tmp_path, monkeypatch, name):
    """Each fails the template check with its file and line, before a run,
    quickly (the time limit made short here), and never with MemoryError."""
    monkeypatch.setattr(sandbox, "TIME_LIMIT", 1.0)
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    status = templates / "en" / "status.md.j2"
    lines = status.read_text(encoding="utf-8").splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if "{% block message %}" in line)
    lines.insert(at + 1, HUNGRY[name] + "\n")
    status.write_text("".join(lines), encoding="utf-8")
    clock = time.perf_counter()
    with pytest.raises(RuleSetError) as raised:
        check_templates(ruleset, templates, ROOT / "examples/roster.csv", None, AS_OF)
    assert time.perf_counter() - clock < 30
    message = str(raised.value)
    assert f"status.md.j2:{at + 2}:" in message, message
    assert "MemoryError" not in message
    assert any(
        words in message
        for words in ("larger than", "longer than", "seconds to render", "values in it")
    ), message


def test_checked_filters_take_iterators_whole(ruleset):
    """join (batch, slice) counts its items before joining: an iterator is
    made a list first, and joined whole, not emptied by the count."""
    renderer = LetterRenderer(TEMPLATES, load_letter_settings(TEMPLATES, ruleset), "USD")
    page = renderer.html_env.from_string("{{ range(3)|map('string')|join(',') }}")
    assert page.render() == "0,1,2"
    batches = renderer.html_env.from_string("{{ range(5)|batch(2)|map('join', '')|join(' ') }}")
    assert batches.render() == "01 23 4"


def test_str_join_takes_iterators_whole(ruleset):
    renderer = LetterRenderer(TEMPLATES, load_letter_settings(TEMPLATES, ruleset), "USD")
    page = renderer.env.from_string("{{ '-'.join(range(3)|map('string')) }}")
    assert page.render() == "0-1-2"


def test_the_time_limit_rings_again_when_its_first_error_is_dropped():
    """Python drops an error raised in a garbage collector's callback or a
    __del__ (it only reports it): the alarm then rings again until the block
    stops, and is off once it has."""
    import signal

    dropped = 0
    clock = time.perf_counter()
    with pytest.raises(sandbox.TemplateLimitError):
        with sandbox.time_limit(0.2):
            while True:
                try:
                    while True:
                        pass
                except sandbox.TemplateLimitError:
                    if dropped:
                        raise
                    dropped += 1  # as a gc callback's error would be
    assert dropped == 1 and time.perf_counter() - clock < 5
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    with sandbox.time_limit(0.2):
        pass  # a block that ends in time: nothing rings after it
    time.sleep(0.5)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
