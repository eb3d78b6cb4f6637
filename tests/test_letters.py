"""Partner letters: golden files, email structure, injection, paths, fallback, atomicity."""

from __future__ import annotations

import collections
import csv
import datetime as dt
import email
import email.policy
import io
import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import AS_OF, DATA, ROOT, example_run_options, load_example_partners
from engine.data.run_folders import current_run
from engine.errors import DataError, RuleSetError
from engine.evaluate.changes import Change
from engine.letters.facts import letter_facts
from engine.letters.files import safe_stem
from engine.letters.settings import load_letter_settings
from engine.letters.template_check import check_templates
from engine.run.driver import RunOptions, run_batch
from engine.run.letters_pass import LetterOptions, write_letters

EXAMPLES = ROOT / "examples"
TEMPLATES = ROOT / "templates"
GOLDEN = DATA / "letters"
# Partners in each language, in good standing, at risk, and on probation.
GOLDEN_PARTNERS = (
    "P-1001",
    "P-1006",
    "P-1007",  # en
    "P-1002",
    "P-1008",  # fr
    "P-1003",
    "P-1014",
    "P-1023",  # de
    "P-1004",
    "P-1011",
    "P-1032",
)  # es
# After a second run: a new partner (welcome, en) and a tier moved down (es).
GOLDEN_CHANGES = ("P-1030", "P-1018")


def run_and_write(
    tmp_path: Path,
    roster: Path = EXAMPLES / "roster.csv",
    templates: Path = TEMPLATES,
    rules=None,
    **letter_options,
) -> dict:
    from engine.ruleset.loader import load_rules

    ruleset = rules or load_rules(ROOT / "rules")
    out = tmp_path / "out"
    run_batch(
        ruleset,
        example_run_options(tmp_path, roster=roster),
    )
    return write_letters(ruleset, LetterOptions(out, templates, **letter_options))


def index(folder: Path) -> dict[str, dict]:
    with (folder / "letters" / "index.csv").open(newline="", encoding="utf-8") as handle:
        return {row["partner_id"]: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def letters_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("letters")
    summary = run_and_write(tmp)
    return tmp / "out", summary


@pytest.fixture(scope="module")
def second_run(tmp_path_factory):
    """A run without P-1030, then one with it and Select's bar raised to 3."""
    from engine.ruleset.loader import load_rules

    tmp = tmp_path_factory.mktemp("second")
    rules = tmp / "rules"
    shutil.copytree(ROOT / "rules", rules, ignore=shutil.ignore_patterns("tests"))
    roster = tmp / "roster.csv"
    roster.write_text(
        "".join(
            line
            for line in (EXAMPLES / "roster.csv")
            .read_text(encoding="utf-8")
            .splitlines(keepends=True)
            if not line.startswith("P-1030,")
        ),
        encoding="utf-8",
    )
    options = dict(
        performance=EXAMPLES / "performance.csv",
        as_of=AS_OF,
        out_dir=tmp / "out",
        workers=1,
        db=tmp / "runs.sqlite",
    )
    run_batch(load_rules(rules), RunOptions(roster=roster, **options))
    programs = rules / "programs.yaml"
    programs.write_text(
        programs.read_text(encoding="utf-8").replace(
            "- certified_technical >= 2\n", "- certified_technical >= 3\n"
        ),
        encoding="utf-8",
    )
    shutil.copy(EXAMPLES / "roster.csv", roster)  # the same roster file, now with P-1030
    run_batch(load_rules(rules), RunOptions(roster=roster, **options))
    write_letters(load_rules(rules), LetterOptions(tmp / "out", TEMPLATES, only_changed=True))
    return tmp / "out"


def check_golden(folder: Path, name: str) -> None:
    """Set UPDATE_GOLDEN=1 to rewrite the golden files after a deliberate change."""
    written = (folder / "letters" / name).read_bytes()
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(written)
    assert written == golden.read_bytes()


@pytest.mark.parametrize("partner_id", GOLDEN_PARTNERS)
@pytest.mark.parametrize("extension", [".txt", ".html", ".eml"])
def test_golden_letters(letters_run, partner_id, extension):
    check_golden(letters_run[0], f"{partner_id}{extension}")


@pytest.mark.parametrize("partner_id", GOLDEN_CHANGES)
@pytest.mark.parametrize("extension", [".txt", ".html", ".eml"])
def test_golden_letters_after_changes(second_run, partner_id, extension):
    check_golden(second_run, f"{partner_id}{extension}")


def test_a_second_run_writes_welcome_and_tier_change_letters(second_run):
    rows = index(second_run)
    assert {pid: row["kind"] for pid, row in rows.items()} == {
        "P-1030": "welcome",
        "P-1018": "tier_change",
    }
    welcome = (second_run / "letters" / "P-1030.txt").read_text(encoding="utf-8")
    assert welcome.startswith("# Welcome to the Nimbus Systems partner program 2026")


def test_every_partner_gets_one_letter_in_its_language(letters_run):
    out, summary = letters_run
    rows = index(out)
    assert len(rows) == summary["letters"] == 32
    assert summary["by_language"] == {"de": 6, "en": 16, "es": 5, "fr": 5}
    assert summary["fallbacks"] == {}
    assert all(r["language"] == r["template_language"] for r in rows.values())
    assert rows["P-1006"]["kind"] == "at_risk" and rows["P-1007"]["kind"] == "probation"
    assert sorted(p.name for p in (out / "letters").iterdir()) == sorted(
        ["index.csv"] + [f"{pid}{ext}" for pid in rows for ext in (".txt", ".html", ".eml")]
    )


def test_letters_say_what_is_missed_and_by_how_much(letters_run):
    out, _ = letters_run
    at_risk = (out / "letters" / "P-1006.txt").read_text(encoding="utf-8")
    assert "consecutive quarters below target: 2" in at_risk
    assert "certified technical staff: at least 10 needed, currently 8 (2 to go)" in at_risk
    spaces = str.maketrans({"\u00a0": " ", "\u202f": " "})  # Babel's no-break spaces
    german = (out / "letters" / "P-1003.txt").read_text(encoding="utf-8").translate(spaces)
    assert "mindestens 2.000.000 $ erforderlich" in german  # Babel, de_DE
    french = (out / "letters" / "P-1002.txt").read_text(encoding="utf-8").translate(spaces)
    assert "26 novembre 2026" in french and "2 000 000 $US" in french


def test_eml_is_a_multipart_message_python_can_parse(letters_run):
    out, _ = letters_run
    rows = index(out)
    for partner_id in ("P-1004", "P-1002"):
        raw = (out / "letters" / f"{partner_id}.eml").read_bytes()
        assert raw.isascii(), "headers and bodies are encoded for transport"
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert message.get_content_type() == "multipart/alternative"
        assert all(not part.defects for part in message.walk())
        assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
        assert message["Subject"] == rows[partner_id]["subject"]
        assert message["To"].addresses[0].addr_spec == rows[partner_id]["to"]
        assert message["From"].addresses[0].addr_spec == "partner-programs@nimbus.example"
        assert message["Message-ID"].startswith("<") and message["Date"]
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert text.replace("\r\n", "\n") == (out / "letters" / f"{partner_id}.txt").read_text(
            encoding="utf-8"
        )
        assert (
            html.replace("\r\n", "\n").strip()
            == (out / "letters" / f"{partner_id}.html").read_text(encoding="utf-8").strip()
        )
    spanish = email.message_from_bytes(
        (out / "letters" / "P-1004.eml").read_bytes(), policy=email.policy.default
    )
    assert "situación" in spanish["Subject"]  # non-ASCII subject survives encoding


def test_html_letters_are_self_contained(letters_run):
    out, _ = letters_run
    page = (out / "letters" / "P-1001.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "<h2>What to do next</h2>" in page


def hostile_roster(tmp_path: Path) -> Path:
    source = (EXAMPLES / "roster.csv").read_text(encoding="utf-8").splitlines()
    header, first = source[0], source[1].split(",")
    rows = [header, source[1]]  # P-1001 as it is: the history file stays the roster's
    for partner_id, name, mail in [
        ("X-1", "{{ 7*7 }} *Bold* Corp", "x1@example.com"),
        ("../../escape", "<script>alert(1)</script> & Co", "x2@example.com"),
        ("a/b\\c", "Slashes Ltd", "victim@example.com\nBcc: all@example.com"),
        ("X-4", "Quiet Ltd", ""),
    ]:
        row = list(first)
        row[0], row[1], row[5] = partner_id, name, mail
        rows.append(",".join(f'"{v}"' if any(c in v for c in ',"\n') else v for v in row))
    path = tmp_path / "hostile.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_roster_values_are_data_never_markup_or_template_code(tmp_path):
    run_and_write(tmp_path, roster=hostile_roster(tmp_path))
    folder = tmp_path / "out" / "letters"
    text = (folder / "X-1.txt").read_text(encoding="utf-8")
    assert "{{ 7*7 }} *Bold* Corp" in text and "49" not in text
    html = (folder / "X-1.html").read_text(encoding="utf-8")
    assert "{{ 7*7 }} *Bold* Corp" in html and "<em>Bold</em>" not in html
    stem = safe_stem("../../escape")
    script_text = (folder / f"{stem}.txt").read_text(encoding="utf-8")
    assert "<script>alert(1)</script> & Co" in script_text
    script_html = (folder / f"{stem}.html").read_text(encoding="utf-8")
    assert "<script>" not in script_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in script_html


def test_safe_cannot_turn_data_into_markup(tmp_path):
    templates = templates_copy(tmp_path)
    status = templates / "en" / "status.md.j2"
    status.write_text(
        status.read_text(encoding="utf-8").replace(
            "{% block message %}", "{% block message %}{{ partner.partner_name|safe }}\n"
        ),
        encoding="utf-8",
    )
    roster = hostile_roster(tmp_path)
    with roster.open("a", encoding="utf-8") as rows:  # placeholder characters in data too
        example = (EXAMPLES / "roster.csv").read_text(encoding="utf-8").splitlines()[1]
        rows.write("X-5," + "\ue0000\ue001 <b>Odd</b> \ue000," + example.split(",", 2)[2] + "\n")
    run_and_write(tmp_path, roster=roster, templates=templates)
    folder = tmp_path / "out" / "letters"
    for stem, name in (
        (safe_stem("../../escape"), "<script>alert(1)</script> & Co"),
        ("X-5", "\ue0000\ue001 <b>Odd</b> \ue000"),
    ):
        assert f"\n{name}\n" in (folder / f"{stem}.txt").read_text(encoding="utf-8")
        html = (folder / f"{stem}.html").read_text(encoding="utf-8")
        assert "<script>" not in html and "<b>" not in html
        assert html.count(name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")) >= 2


def test_partner_ids_cannot_escape_the_letters_folder(tmp_path):
    run_and_write(tmp_path, roster=hostile_roster(tmp_path))
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir() if p.is_file() and not p.is_symlink()} == {
        ".lock",
        ".eligibility-output",
    }
    run = current_run(out)
    files = [p for p in out.rglob("*") if p.is_file() and not p.is_symlink()]
    assert {p.relative_to(out).parts[0] for p in files} == {
        ".lock",
        ".eligibility-output",
        "runs",
    }
    written = {p.relative_to(run).parts[0] for p in run.rglob("*") if p.is_file()}
    assert written <= {
        "letters",
        "decisions.jsonl",
        "enrollments.csv",
        "rejects.csv",
        "changes.csv",
        "summary.json",
    }
    assert not (tmp_path / "escape.txt").exists()
    rows = index(out)
    assert rows["../../escape"]["files"].startswith("______escape~")
    assert rows["a/b\\c"]["files"].startswith("a_b_c~")


def test_header_injection_is_refused_and_a_missing_address_is_noted(tmp_path):
    run_and_write(tmp_path, roster=hostile_roster(tmp_path))
    rows = index(tmp_path / "out")
    raw = (tmp_path / "out" / "letters" / rows["a/b\\c"]["files"].split(";")[2]).read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["To"] is None and message["Bcc"] is None
    assert "no usable contact_email" in rows["a/b\\c"]["note"]
    assert "no contact_email" in rows["X-4"]["note"] and rows["X-4"]["to"] == ""


def test_an_address_with_a_domain_in_another_script_is_written_in_ascii(tmp_path):
    """zoe@exämple.de is usable: its domain goes in the header in IDNA form;
    a name part outside ASCII (which few mail servers take) is not used."""
    lines = (EXAMPLES / "roster.csv").read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace("partners@p-1001.example.com", "zoe@exämple.de")
    lines[2] = lines[2].replace("partners@p-1002.example.com", "zoë@example.com")
    roster = tmp_path / "roster.csv"
    roster.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_and_write(tmp_path, roster=roster, formats=("eml",))
    rows = index(tmp_path / "out")
    raw = (tmp_path / "out" / "letters" / rows["P-1001"]["files"]).read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["To"].addresses[0].addr_spec == "zoe@xn--exmple-cua.de"
    assert not message.defects
    assert rows["P-1001"]["note"] == "" and rows["P-1001"]["to"] == "zoe@exämple.de"
    assert rows["P-1002"]["note"] == "no usable contact_email; the message has no To"


@pytest.mark.parametrize(
    "partner_id,expected",
    [
        ("P-1001", "P-1001"),
        ("..", "__~"),
        ("a/b", "a_b~"),
        (".hidden", "_hidden~"),
        ("x" * 300, "x" * 40 + "~"),
        ("CON", "CON~"),
        ("lpt1", "lpt1~"),
        ("Com1.txt", "Com1_txt~"),
        ("nul.tar.gz", "nul_tar_gz~"),
        ("COM¹", "COM_~"),
        ("ends.", "ends_~"),
        ("a b", "a_b~"),
        ("", "partner~"),
    ],
)
def test_safe_stem(partner_id, expected):
    stem = safe_stem(partner_id)
    assert stem.startswith(expected) and "/" not in stem and not stem.startswith(".")
    assert stem == partner_id if expected == partner_id else len(stem) == len(expected) + 26
    assert stem.split(".")[0].upper() not in {"CON", "LPT1", "COM1", "NUL"}


def test_letter_names_never_collide():
    """The names seen colliding (a_b-c14cddc033, a/b), and any ids at all: all
    names differ even case-folded, so no two partners share a file anywhere."""
    from hypothesis import given, settings, strategies as st

    taken: set[str] = set()
    assert safe_stem("a/b", taken).casefold() != safe_stem("a_b-c14cddc033", taken).casefold()
    pieces = st.sampled_from(["a", "A", "b", "_", "-", ".", "/", "~", "con", "1", "é", " "])
    ids = st.lists(st.lists(pieces, max_size=6).map("".join), unique=True, max_size=40)

    @settings(max_examples=300, deadline=None)
    @given(ids)
    def distinct(partner_ids):
        taken: set[str] = set()
        stems = [safe_stem(pid, taken) for pid in partner_ids]
        assert len({stem.casefold() for stem in stems}) == len(partner_ids)
        for stem in stems:
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*|[A-Za-z0-9_-]+~[a-z2-7]{26}", stem)

    distinct()


def test_ids_that_differ_only_by_case_get_files_of_their_own(tmp_path):
    """AbC and abc are two partners (Salesforce ids are case-sensitive), but
    one file name on macOS and Windows: the second gets its id's hash."""
    lines = (EXAMPLES / "roster.csv").read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace("P-1001,", "AbC-1,", 1)
    lines[2] = lines[2].replace("P-1002,", "abc-1,", 1)
    roster = tmp_path / "roster.csv"
    roster.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_and_write(tmp_path, roster=roster, formats=("text",))
    rows = index(tmp_path / "out")
    assert rows["AbC-1"]["files"] == "AbC-1.txt"
    assert rows["abc-1"]["files"].startswith("abc-1~") and rows["abc-1"]["files"].endswith(".txt")
    assert len({r["files"].casefold() for r in rows.values()}) == len(rows)
    taken: set[str] = set()
    stems = [safe_stem(partner_id, taken) for partner_id in ("X", "x", "CON")]
    assert stems[0] == "X" and len({stem.casefold() for stem in stems}) == 3


def test_a_letter_file_never_replaces_another(tmp_path):
    from engine.letters.files import _write_new_file

    _write_new_file(str(tmp_path / "P-1.txt"), b"first")
    with pytest.raises(FileExistsError):
        _write_new_file(str(tmp_path / "P-1.txt"), b"second")
    assert (tmp_path / "P-1.txt").read_bytes() == b"first"


def templates_copy(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(TEMPLATES, target)
    return target


def test_missing_translation_falls_back_to_english_and_is_reported(tmp_path):
    templates = templates_copy(tmp_path)
    (templates / "fr" / "status.md.j2").unlink()
    summary = run_and_write(tmp_path, templates=templates)
    rows = index(tmp_path / "out")
    french_status = [r for r in rows.values() if r["language"] == "fr" and r["kind"] == "status"]
    assert summary["fallbacks"] == {"fr": len(french_status)} and len(french_status) >= 1
    assert all(r["template_language"] == "en" for r in french_status)
    assert rows["P-1002"]["template_language"] == "en"
    letter = (tmp_path / "out" / "letters" / "P-1002.txt").read_text(encoding="utf-8")
    assert "this one is in English" in letter


def test_a_template_error_names_file_and_line(tmp_path, cli_run):
    templates = templates_copy(tmp_path)
    status = templates / "de" / "status.md.j2"
    status.write_text(
        status.read_text(encoding="utf-8").replace(
            "{% block message %}", "{% block message %}\n{{ partner.no_such_field }}"
        ),
        encoding="utf-8",
    )
    welcome = templates / "es" / "welcome.md.j2"
    welcome.write_text(welcome.read_text(encoding="utf-8") + "{% if %}\n", encoding="utf-8")
    result = cli_run("validate", "--templates", str(templates))
    assert result.exit_code == 1
    assert f"{status}:4: 'dict object' has no attribute 'no_such_field'" in result.stderr
    assert f"{welcome}:6: Expected an expression" in result.stderr


def test_the_template_check_reads_the_templates_again(tmp_path, ruleset):
    """Letters reuse the check's compiled templates in the same process, but a
    check never trusts what an earlier one compiled: the files may have changed."""
    templates = templates_copy(tmp_path)
    as_of = dt.date(2026, 11, 26)
    check_templates(ruleset, templates, EXAMPLES / "roster.csv", None, as_of)
    status = templates / "en" / "status.md.j2"
    status.write_text(
        status.read_text(encoding="utf-8").replace(
            "{% block message %}", "{% block message %}\n{{ partner.no_such_field }}"
        ),
        encoding="utf-8",
    )
    with pytest.raises(RuleSetError, match="no_such_field"):
        check_templates(ruleset, templates, EXAMPLES / "roster.csv", None, as_of)


def test_raw_html_in_a_template_is_reported_where_it_is(tmp_path, cli_run):
    """HTML letters leave a template's raw HTML out while text letters show it,
    so the check refuses it, naming the line; '<' as text and data are fine."""
    templates = templates_copy(tmp_path)
    at_risk = templates / "fr" / "at_risk.md.j2"
    at_risk.write_text(
        at_risk.read_text(encoding="utf-8").replace(
            "{% block message %}\n", "{% block message %}\nSi 2 < 3, lisez <b>ceci</b>.\n"
        ),
        encoding="utf-8",
    )
    result = cli_run("validate", "--templates", str(templates))
    assert result.exit_code == 1
    assert f"{at_risk}:4: raw HTML is left out of HTML letters" in result.stderr
    assert result.stderr.count("raw HTML") == 1  # only the template that has some
    at_risk.write_text(
        at_risk.read_text(encoding="utf-8").replace("<b>ceci</b>", "**ceci**"), encoding="utf-8"
    )
    assert cli_run("validate", "--templates", str(templates)).exit_code == 0


def test_parts_of_a_template_jinja_would_drop_are_reported(tmp_path, cli_run):
    """In a template that extends the layout, Jinja2 silently drops text outside
    the blocks and blocks the layout does not have (a misspelt name)."""
    templates = templates_copy(tmp_path)
    status = templates / "de" / "status.md.j2"
    status.write_text(
        status.read_text(encoding="utf-8").replace(
            "{% block message %}", "Hallo!\n{% block mesage %}"
        ),
        encoding="utf-8",
    )
    result = cli_run("validate", "--templates", str(templates))
    assert result.exit_code == 1
    assert f"{status}:3: text outside any {{% block %}} is never shown" in result.stderr
    assert (
        f"{status}:4: block 'mesage' is not in de/base.md.j2, so it is never shown; its "
        "blocks are: subject, message, changes"
    ) in result.stderr
    # Blank lines, settings and macros outside blocks are fine.
    status.write_text(
        status.read_text(encoding="utf-8").replace(
            "Hallo!\n{% block mesage %}",
            "\n{% set x = 1 %}{% macro m() %}m{% endmacro %}\n{% block message %}",
        ),
        encoding="utf-8",
    )
    assert cli_run("validate", "--templates", str(templates)).exit_code == 0


def test_bad_letter_settings_are_located(tmp_path, ruleset):
    templates = templates_copy(tmp_path)
    settings = templates / "letters.yaml"
    settings.write_text(
        settings.read_text(encoding="utf-8")
        .replace("table: standing", "table: standin")
        .replace("tier_group:", "tier_gruop:"),
        encoding="utf-8",
    )
    with pytest.raises(RuleSetError) as error:
        load_letter_settings(templates, ruleset)
    message = str(error.value)
    assert "letters.yaml:12:1: unknown key 'tier_gruop'" in message
    assert "did you mean 'tier_group'?" in message
    assert "letters.yaml:15:10: 'standin' is not a classification" in message


def test_a_failing_letters_run_keeps_the_previous_letters(tmp_path, ruleset):
    run_and_write(tmp_path)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out" / "letters").iterdir()}
    templates = templates_copy(tmp_path)
    probation = templates / "en" / "probation.md.j2"
    probation.write_text(
        probation.read_text(encoding="utf-8").replace(
            "{% block message %}", "{% block message %}{{ partner.partner_name|int / 0 }}"
        ),
        encoding="utf-8",
    )
    with pytest.raises(DataError, match="probation.md.j2:3: division by zero"):
        write_letters(ruleset, LetterOptions(tmp_path / "out", templates, check=False))
    after = {p.name: p.read_bytes() for p in (tmp_path / "out" / "letters").iterdir()}
    assert after == before
    run = current_run(tmp_path / "out")
    assert not list(run.glob(".letters*"))
    # Killed between the two renames of the swap: the old letters come back.
    os.replace(run / "letters", run / ".letters.99999.old")
    with pytest.raises(DataError):
        write_letters(ruleset, LetterOptions(tmp_path / "out", templates, check=False))
    restored = {p.name: p.read_bytes() for p in (tmp_path / "out" / "letters").iterdir()}
    assert restored == before and not list(run.glob(".letters*"))


def test_letters_are_the_same_whatever_the_workers(tmp_path, ruleset):
    run_and_write(tmp_path)
    one = {p.name: p.read_bytes() for p in (tmp_path / "out" / "letters").iterdir()}
    write_letters(ruleset, LetterOptions(tmp_path / "out", TEMPLATES, workers=2))
    two = {p.name: p.read_bytes() for p in (tmp_path / "out" / "letters").iterdir()}
    assert one == two


def test_letters_refuse_a_roster_edited_since_the_run(tmp_path, ruleset):
    roster = tmp_path / "roster.csv"
    shutil.copy(EXAMPLES / "roster.csv", roster)
    run_and_write(tmp_path, roster=roster)
    roster.write_text(roster.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="has changed since the run"):
        write_letters(ruleset, LetterOptions(tmp_path / "out", TEMPLATES))


def test_decisions_record_the_metrics_letters_read_back(tmp_path, rules_copy):
    """decisions.jsonl holds every metric as the run computed it, and
    recorded_values reads them back into what partner_values computes
    (here with the expression trees interpreted, not the run's closures),
    including a date and a list metric."""
    import orjson

    from engine.data.readers import read_rows
    from engine.evaluate.decide import partner_values, recorded_values
    from engine.evaluate.records import field_values
    from engine.ruleset.loader import load_rules

    rules = rules_copy()
    with (rules / "metrics.yaml").open("a", encoding="utf-8") as metrics:
        metrics.write("  joined:\n    value: joined_on\n  verticals:\n    value: focus_verticals\n")
    ruleset = load_rules(rules)
    run_batch(
        ruleset,
        example_run_options(tmp_path, db=tmp_path / "h.sqlite"),
    )
    lines = [
        orjson.loads(line)
        for line in (tmp_path / "out" / "decisions.jsonl").read_bytes().splitlines()
    ]
    records = {row.row: row.record for row in read_rows(EXAMPLES / "roster.csv")}
    partners = {p.partner_id: p for p in load_example_partners(ruleset)}
    assert len(lines) == len(partners) == 32
    for line in lines:
        assert list(line["metrics"]) == [m.name for m in ruleset.metrics]
        fields, _ = field_values(ruleset, records[line["row"]])
        assert recorded_values(ruleset, fields, line["metrics"]) == partner_values(
            ruleset, partners[line["partner_id"]], AS_OF
        )
    first = lines[0]["metrics"]
    assert first["joined"] == records[2]["joined_on"] and isinstance(first["verticals"], list)


def test_letters_do_not_read_the_performance_history_again(tmp_path, ruleset):
    roster, performance = tmp_path / "roster.csv", tmp_path / "performance.csv"
    shutil.copy(EXAMPLES / "roster.csv", roster)
    shutil.copy(EXAMPLES / "performance.csv", performance)
    out = tmp_path / "out"
    run_batch(
        ruleset,
        example_run_options(
            tmp_path, roster=roster, performance=performance, db=tmp_path / "h.sqlite"
        ),
    )
    write_letters(ruleset, LetterOptions(out, TEMPLATES))
    before = {p.name: p.read_bytes() for p in (out / "letters").iterdir()}
    performance.unlink()
    write_letters(ruleset, LetterOptions(out, TEMPLATES))
    assert {p.name: p.read_bytes() for p in (out / "letters").iterdir()} == before


def test_letters_refuse_decisions_without_metrics(tmp_path, ruleset):
    import orjson

    run_and_write(tmp_path, formats=("text",))
    decisions = tmp_path / "out" / "decisions.jsonl"
    lines = decisions.read_bytes().splitlines(keepends=True)
    old = orjson.loads(lines[2])
    del old["metrics"]
    lines[2] = orjson.dumps(old) + b"\n"
    decisions.write_bytes(b"".join(lines))
    with pytest.raises(
        DataError,
        match=f"decisions.jsonl:3: no metrics for partner {old['partner_id']} .*run again",
    ):
        write_letters(ruleset, LetterOptions(tmp_path / "out", TEMPLATES, ("text",)))


def test_changes_choose_the_kind_and_only_changed_letters(tmp_path, rules_copy):
    from engine.ruleset.loader import load_rules

    rules = rules_copy()
    run_and_write(tmp_path, rules=load_rules(rules))
    programs = rules / "programs.yaml"
    programs.write_text(
        programs.read_text(encoding="utf-8").replace(
            "- certified_technical >= 2\n", "- certified_technical >= 3\n"
        ),
        encoding="utf-8",
    )
    summary = run_and_write(tmp_path, rules=load_rules(rules), only_changed=True)
    rows = index(tmp_path / "out")
    assert list(rows) == ["P-1018"] and summary["skipped_unchanged"] == 31
    assert rows["P-1018"]["kind"] == "tier_change"
    letter = (tmp_path / "out" / "letters" / "P-1018.txt").read_text(encoding="utf-8")
    assert "Su nivel de partner ha bajado de Partner Select a **Partner registrado**" in letter
    assert "personal técnico certificado: se requiere al menos 3, actualmente 2 (falta 1)" in letter


def test_letter_kinds_follow_decisions_and_changes(ruleset, example_partners):
    from engine.evaluate.decide import Evaluator, decision_record, partner_values

    settings = load_letter_settings(TEMPLATES, ruleset)
    partner = next(p for p in example_partners if p.partner_id == "P-1006")
    decision = Evaluator(ruleset).decide([partner], AS_OF)[0]
    values = partner_values(ruleset, partner, AS_OF)
    record = decision_record(ruleset, 5, decision, {}, values)
    facts = letter_facts(ruleset, settings, values, record, (), AS_OF, None)
    assert facts.kinds == ("at_risk", "status")
    changes = (
        Change("P-1006", "new_partner", "", "", "", ""),
        Change("P-1006", "dropped", "co_sell", "co_sell", "", ""),
        Change("P-1006", "enrolled", "deal_registration", "", "deal_registration", ""),
    )
    facts = letter_facts(ruleset, settings, values, record, changes, AS_OF, 1)
    assert facts.kinds == ("welcome", "at_risk", "removed", "enrolled", "status")
    dropped = facts.context["dropped"][0]
    assert dropped["id"] == "co_sell" and dropped["reasons"][0]["name"] == "engagement"
    assert facts.context["next_tier"]["id"] == "premier"


def test_validate_renders_every_template(ruleset):
    checked = check_templates(
        ruleset, TEMPLATES, EXAMPLES / "roster.csv", EXAMPLES / "performance.csv", AS_OF
    )
    assert checked.templates == 28 and checked.languages == ("en", "fr", "de", "es")
    assert checked.missing == ()


@pytest.mark.parametrize(
    "name",
    [
        "Zoë Müller-Lüdenscheidt von und zu Großherzogtum Partner Team GmbH",
        "Ana Núñez",
        "A very long ascii partner contact name that goes on and on and on Team",
    ],
)
def test_long_and_non_ascii_recipients_are_encoded_and_folded(name):
    from engine.letters.emails import _address

    address = "someone.long.address@partner-example-company.example.com"
    header = "To: " + _address(name, address)
    assert all(len(line) <= 78 for line in header.split("\r\n")) and header.isascii()
    parsed = email.message_from_bytes((header + "\r\n\r\n").encode(), policy=email.policy.default)[
        "To"
    ].addresses[0]
    assert parsed.addr_spec == address
    assert " ".join(parsed.display_name.split()) == name  # parsers differ on spaces only


def test_long_non_ascii_subjects_fold_between_words():
    from engine.letters.emails import _encoded_words

    subject = "Acción necesaria: su situación como partner está en riesgo " * 3
    header = "Subject: " + _encoded_words(subject.strip(), len("Subject: "))
    assert all(len(line) <= 78 for line in header.split("\r\n")) and header.isascii()
    parsed = email.message_from_bytes((header + "\r\n\r\n").encode(), policy=email.policy.default)[
        "Subject"
    ]
    assert parsed == subject.strip()


def test_the_sandbox_reads_keys_first_and_still_refuses_internals(ruleset):
    from jinja2.sandbox import SecurityError

    from engine.letters.rendering import LetterRenderer

    renderer = LetterRenderer(TEMPLATES, load_letter_settings(TEMPLATES, ruleset), "USD")
    keys = renderer.env.from_string("{{ p.items }} {{ p['get'] }} {{ p.name }}")
    assert keys.render(p={"items": 3, "get": "x", "name": "A"}) == "3 x A"
    for code in (
        "{{ p.__class__.__mro__ }}",
        "{{ p.items.__self__ }}",
        "{{ ''.__class__.__base__ }}",
        "{{ p.update(q) }}",
    ):
        with pytest.raises(SecurityError):
            renderer.env.from_string(code).render(p={"a": 1}, q={"b": 2})


def test_the_sandbox_remembers_only_the_attributes_it_allowed(ruleset):
    from jinja2.sandbox import SecurityError

    from engine.letters.rendering import LetterRenderer

    renderer = LetterRenderer(TEMPLATES, load_letter_settings(TEMPLATES, ruleset), "USD")
    allowed = renderer.env.from_string(
        "{{ s.upper() }} {% for x in l %}{{ loop.last }}{% endfor %} {{ s.startswith('<') }}"
    )
    for _ in range(2):  # the second time from what the sandbox remembered
        assert allowed.render(s="<b>", l=[1]) == "&lt;B&gt; yes yes"  # booleans as letters say them
    for code in (
        "{{ s.__class__ }}",
        "{{ l.append(1) }}",
        "{{ '{0.__class__}'.format(s) }}",
        "{{ '{x.__class__}'.format_map({'x': s}) }}",
        "{{ loop.__class__ }}",
    ):
        for _ in range(2):
            with pytest.raises(SecurityError):
                renderer.env.from_string("{% for x in l %}" + code + "{% endfor %}").render(
                    s="a", l=[{}]
                )


def test_macros_and_methods_are_called_as_jinja_calls_them(ruleset):
    """Macros and built-in methods skip the sandbox's call checks (they cannot
    carry what it looks for): arguments, loop and block variables still work."""
    from jinja2.sandbox import SecurityError

    from engine.letters.rendering import LetterRenderer

    renderer = LetterRenderer(TEMPLATES, load_letter_settings(TEMPLATES, ruleset), "USD")
    template = renderer.env.from_string(
        "{% macro m(x, y='-') %}[{{ x }}{{ y }}{{ varargs|length }}]{% endmacro %}"
        "{% block b %}{% for x in l %}{{ m(x) }}{{ m(x, '+', 3) }}{{ s.endswith('c') }}"
        "{% endfor %}{% endblock %}"
    )
    assert template.render(l=[1, 2], s="abc") == "[1-0][1+1]yes[2-0][2+1]yes"
    with pytest.raises(TypeError, match="no keyword argument 'z'"):
        renderer.env.from_string("{% macro m(x) %}{% endmacro %}{{ m(1, z=2) }}").render()
    with pytest.raises(SecurityError):  # a refused method is still refused when called
        renderer.env.from_string("{% for x in l %}{{ l.append(x) }}{% endfor %}").render(l=[1])


def test_markup_in_a_template_cannot_add_scripts_or_links_to_html_letters():
    from engine.letters.rendering import markdown_to_html

    html = markdown_to_html(
        "Hi <script>alert(1)</script> *there*\n\n<div onclick=x>y</div>\n\n"
        "[click](javascript:alert(1)) https://example.com a@example.com\n"
    )
    assert "<em>there</em>" in html  # Markdown is converted
    assert "<script" not in html and "<div" not in html and "javascript:" not in html
    assert '<a href="https' not in html and "mailto:" not in html  # no autolinks


def test_letters_command_and_run_options(cli_run, tmp_path):
    out, db = tmp_path / "o", str(tmp_path / "h.sqlite")
    result = cli_run(
        "run", "--as-of", "2026-11-26", "--out", str(out), "--db", db, "--no-letters", "-q"
    )
    assert result.exit_code == 0 and not (out / "letters").exists()
    result = cli_run("letters", str(out), "--format", "eml", "--format", "text", "--workers", "1")
    assert result.exit_code == 0, result.stderr
    assert "Wrote 32 letters (64 files: eml, text)" in result.output
    assert "5 probation, 5 at risk, 22 status" in result.output
    assert {p.suffix for p in (out / "letters").iterdir()} == {".eml", ".txt", ".csv"}
    result = cli_run("letters", "--run", "1", "--db", db, "--only-changed")
    assert result.exit_code == 0
    assert "Left out 32 partners without changes (--only-changed)." in result.output
    assert [p.name for p in (out / "letters").iterdir()] == ["index.csv"]
    result = cli_run(
        "run",
        "--as-of",
        "2026-11-26",
        "--out",
        str(out),
        "--db",
        db,
        "--letter-format",
        "html",
        "-q",
    )
    assert result.exit_code == 0 and (out / "letters" / "P-1001.html").is_file()
    assert not (out / "letters" / "P-1001.txt").exists()


def test_letters_command_errors(cli_run, tmp_path, rules_copy):
    result = cli_run("letters", str(tmp_path))
    assert result.exit_code == 2 and "no summary.json" in result.stderr
    out, db = tmp_path / "o", str(tmp_path / "h.sqlite")
    assert (
        cli_run(
            "run", "--as-of", "2026-11-26", "--out", str(out), "--db", db, "--no-letters", "-q"
        ).exit_code
        == 0
    )
    result = cli_run("letters", "--run", "7", "--db", db)
    assert result.exit_code == 2 and "no run 7" in result.stderr
    rules = rules_copy()
    programs = rules / "programs.yaml"
    programs.write_text(
        programs.read_text(encoding="utf-8").replace(
            "- certified_technical >= 2\n", "- certified_technical >= 3\n"
        ),
        encoding="utf-8",
    )
    result = cli_run("letters", str(out), "--rules", str(rules))
    assert result.exit_code == 1 and "the rules have changed since the run" in result.stderr
    assert "Traceback" not in result.stderr


def test_changes_join_partners_whose_ids_look_like_formulas(tmp_path, rules_copy):
    """changes.csv guards cells against spreadsheet formulas ('=...' is written
    "'=..."); letters still find each partner's changes."""
    from engine.ruleset.loader import load_rules

    roster, performance = tmp_path / "roster.csv", tmp_path / "performance.csv"
    for source, target in (
        (EXAMPLES / "roster.csv", roster),
        (EXAMPLES / "performance.csv", performance),
    ):
        target.write_text(
            source.read_text(encoding="utf-8").replace("P-1018,", "=P-1018,"), encoding="utf-8"
        )
    rules = rules_copy()
    options = dict(
        roster=roster,
        performance=performance,
        as_of=AS_OF,
        out_dir=tmp_path / "out",
        workers=1,
        db=tmp_path / "runs.sqlite",
    )
    run_batch(load_rules(rules), RunOptions(**options))
    programs = rules / "programs.yaml"
    programs.write_text(
        programs.read_text(encoding="utf-8").replace(
            "- certified_technical >= 2\n", "- certified_technical >= 3\n"
        ),
        encoding="utf-8",
    )
    run_batch(load_rules(rules), RunOptions(**options))
    assert "'=P-1018" in (tmp_path / "out" / "changes.csv").read_text(encoding="utf-8")
    write_letters(load_rules(rules), LetterOptions(tmp_path / "out", TEMPLATES, only_changed=True))
    rows = index(tmp_path / "out")
    assert list(rows) == ["'=P-1018"]  # the index is guarded the same way
    assert next(iter(rows.values()))["kind"] == "tier_change"


def test_a_new_run_removes_the_letters_and_report_of_the_previous_one(cli_run, tmp_path):
    out, db = tmp_path / "o", str(tmp_path / "h.sqlite")
    assert (
        cli_run(
            "run",
            "--as-of",
            "2026-11-26",
            "--out",
            str(out),
            "--db",
            db,
            "--report",
            "--letter-format",
            "text",
            "-q",
        ).exit_code
        == 0
    )
    assert (out / "letters" / "P-1001.txt").is_file() and (out / "report.html").is_file()
    assert (
        cli_run(
            "run", "--as-of", "2026-11-27", "--out", str(out), "--db", db, "--no-letters", "-q"
        ).exit_code
        == 0
    )
    assert not (out / "letters").exists() and not (out / "report.html").exists()
    assert not list(out.glob(".letters*"))
    for as_of in ("2026-11-28", "2026-11-29"):  # letters replacing letters
        assert (
            cli_run(
                "run",
                "--as-of",
                as_of,
                "--out",
                str(out),
                "--db",
                db,
                "--letter-format",
                "text",
                "-q",
            ).exit_code
            == 0
        )
        assert (out / "letters" / "P-1001.txt").is_file() and not list(out.glob(".letters*"))


def test_folders_left_by_a_killed_letters_run_are_cleaned_up(tmp_path, ruleset):
    run_and_write(tmp_path)
    run = current_run(tmp_path / "out")
    for leftover in (".letters.99999.partial", ".letters.99998.stale"):
        (run / leftover).mkdir()
        (run / leftover / "P-1001.txt").write_text("half", encoding="utf-8")
    write_letters(ruleset, LetterOptions(tmp_path / "out", TEMPLATES, check=False))
    assert not list(run.glob(".letters*")) and (run / "letters" / "index.csv").is_file()


def test_letters_report_progress(tmp_path, ruleset):
    run_and_write(tmp_path)
    seen = []
    write_letters(
        ruleset, LetterOptions(tmp_path / "out", TEMPLATES, ("text",), check=False), seen.append
    )
    assert seen and seen[-1].count == 32 and seen[-1].done == seen[-1].total == 32
    assert seen[-1].what == "letters"


@pytest.mark.parametrize("currency", ["USD", "EUR", "JPY", "CHF"])
def test_money_by_shape_is_what_babel_writes(currency):
    """Formats writes amounts into the digit positions of a probe Babel
    formatted; for any locale, currency and amount it must say what Babel
    itself says (shapes it cannot trust stay with Babel)."""
    import random

    from babel import Locale

    from engine.letters.rendering import Formats
    from engine.ruleset.value_types import MONEY

    amounts = [
        0.0,
        0.01,
        0.05,
        0.5,
        1.0,
        9.99,
        10.0,
        100.1,
        999.99,
        1000.0,
        1234.5,
        99999.99,
        100000.0,
        1e11,
        123456789012.34,
        7,
        2_000_000,
    ]
    chance = random.Random(7)
    amounts += [
        round(chance.uniform(0, 10 ** chance.randint(0, 11)), chance.choice([0, 2]))
        for _ in range(300)
    ]
    amounts += [-a for a in amounts if a] + [1.005, 2.675, 0.1 + 0.2]  # not on the cent grid
    for name in (
        "en_US",
        "en_GB",
        "en_IN",
        "fr_FR",
        "fr_CA",
        "fr_CH",
        "de_DE",
        "de_CH",
        "es_ES",
        "es_MX",
        "nl_NL",
        "pt_BR",
        "sv_SE",
        "ja_JP",
        "ar_EG",
        "hi_IN",
    ):
        shapes, babel = Formats(Locale.parse(name), currency), Formats(Locale.parse(name), currency)
        for amount in amounts:
            assert shapes.value(MONEY, amount) == babel._babel_money(amount), (name, amount)
        assert any(shapes._money_shapes.values())  # the shapes were used, not only Babel


def test_placeholders_are_filled_and_stray_marks_kept():
    from engine.letters.rendering import _fill

    skeleton = "a \ue0000\ue001 b \ue000x\ue001 c \ue0009\ue001 d \ue000-1\ue001 \ue0001\ue001"
    assert (
        _fill(skeleton, ["<v0>", "v1"], escape=False)
        == "a <v0> b \ue000x\ue001 c \ue0009\ue001 d \ue000-1\ue001 v1"
    )
    assert _fill(skeleton, ["<v0>", "v1"], escape=True).startswith("a &lt;v0&gt; b \ue000x")
    braces = "{0} {{x}} } \ue0001\ue001{ \ue0000\ue001 {}"  # literal braces stay literal
    assert _fill(braces, ["<a>", "{b}"], escape=False) == "{0} {{x}} } {b}{ <a> {}"
    assert _fill(braces, ["<a>", "{b}"], escape=True) == "{0} {{x}} } {b}{ &lt;a&gt; {}"


def _letter_files(folder: Path) -> dict[str, bytes]:
    letters = folder / "letters"
    return {
        p.relative_to(letters).as_posix(): p.read_bytes()
        for p in sorted(letters.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(("workers", "block"), [(1, None), (2, None), (2, 7)])
def test_letters_written_by_the_run_equal_the_letters_pass(tmp_path, monkeypatch, workers, block):
    """`eligibility run` writes each letter in the decide workers from the
    values it has just computed; `eligibility letters` replays them from
    decisions.jsonl. Both give the same files, byte for byte: after changes
    since a previous run, and with file names that depend on earlier rows (an
    id differing only by case from a row rejected for its fields). With
    blocks of 7 letters, the letters are in subfolders of at most 7 partners
    each, in roster order, and the index names them there."""
    from engine.letters import files
    from engine.ruleset.loader import load_rules
    from engine.run.driver import RunLetters

    if block is not None:
        monkeypatch.setattr(files, "BLOCK", block)

    ruleset = load_rules(ROOT / "rules")
    lines = (EXAMPLES / "roster.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    first = tmp_path / "first.csv"
    first.write_text("".join(line for line in lines if not line.startswith("P-1030,")))
    roster = tmp_path / "roster.csv"
    bad = next(line for line in lines if line.startswith("P-1034,"))  # rejected: 'twelve'
    twin = next(line for line in lines if line.startswith("P-1001,"))
    roster.write_text(
        "".join(lines) + bad.replace("P-1034", "case-a", 1) + twin.replace("P-1001", "CASE-A", 1),
        encoding="utf-8",
    )
    common = dict(
        performance=EXAMPLES / "performance.csv",
        as_of=AS_OF,
        workers=workers,
        db=tmp_path / "runs.sqlite",
        chunk_size=5,
    )
    run_batch(ruleset, RunOptions(roster=first, out_dir=tmp_path / "one", **common))
    out = tmp_path / "out"
    shutil.copy(roster, first)  # the same roster file, now with P-1030 and the twins
    result = run_batch(
        ruleset, RunOptions(roster=first, out_dir=out, letters=RunLetters(TEMPLATES), **common)
    )
    written = _letter_files(out)
    assert result.letters["letters"] == result.summary["partners"]["decided"]
    # hashed: 'case-a' came first
    assert any(name.rpartition("/")[2].startswith("CASE-A~") for name in written)
    index = (out / "letters" / "index.csv").read_text(encoding="utf-8")
    assert "welcome" in index
    rows = list(csv.DictReader(io.StringIO(index)))
    listed = {name for row in rows for name in row["files"].split(";")}
    assert listed == written.keys() - {"index.csv"}
    if block is None:  # one block: no subfolders
        assert all("/" not in name for name in written)
    else:
        blocks = collections.Counter(name.partition("/")[0] for name in listed)
        assert len(blocks) >= math.ceil(len(rows) / block)
        assert max(blocks.values()) <= 3 * block
        in_order = [row["files"].partition("/")[0] for row in rows]  # the index: roster order
        assert in_order == sorted(in_order) and in_order[0] == "0001"
    replayed = write_letters(ruleset, LetterOptions(out, TEMPLATES, workers=workers))
    assert replayed == result.letters
    assert _letter_files(out) == written


def test_counts_in_messages_are_singular_or_plural():
    """'Wrote 1 letters' was printed for one letter."""
    from engine.report.terminal import letters_text

    summary = {
        "letters": 1,
        "files": 3,
        "formats": ["text", "html", "eml"],
        "folder": "out/letters",
        "by_kind": {"tier_change": 1},
        "only_changed": True,
        "skipped_unchanged": 1,
        "fallbacks": {},
        "without_address": 0,
    }
    text = letters_text(summary)
    assert text.startswith("Wrote 1 letter (3 files: text, html, eml) to out/letters/")
    assert "Left out 1 partner without changes (--only-changed)." in text
    assert letters_text({**summary, "letters": 2, "skipped_unchanged": 0}).startswith(
        "Wrote 2 letters"
    )


def test_letters_for_a_rule_set_without_tiers_or_standing_warnings(tmp_path, rules_copy):
    """Another vendor's shape: programs but no exclusive tier group, and no
    standing that calls for warnings. Every partner gets a letter, and none
    speaks of a tier or leaves an empty "What to do next"."""
    from engine.ruleset.loader import load_rules

    rules = rules_copy()
    programs = rules / "programs.yaml"
    text = re.sub(r"\n    group: tier\n    priority: \d+", "", programs.read_text("utf-8"))
    programs.write_text(text, encoding="utf-8")
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    settings = templates / "letters.yaml"
    text = settings.read_text(encoding="utf-8").replace("tier_group: tier\n", "")
    settings.write_text(re.sub(r"warnings:\n(  .*\n)+", "", text), encoding="utf-8")
    summary = run_and_write(tmp_path, templates=templates, rules=load_rules(rules))
    assert summary["letters"] == 32
    for path in (tmp_path / "out" / "letters").glob("*.txt"):
        letter = path.read_text(encoding="utf-8")
        for word in ("tier", "niveau", "Stufe", "nivel"):
            assert word not in letter, (path.name, word)
        assert not re.search(r"## (What to do next|Prochaines étapes|Próximos pasos)\n\n\n", letter)
        assert "## Die nächsten Schritte\n\n\n" not in letter


def test_next_steps_list_only_what_a_partner_can_act_on(letters_run):
    """A Premier partner was told "Einladung zur Elite-Stufe: erforderlich",
    and a partner under review that its standing must not be under review,
    as steps to take. Fields marked actionable: false (an invitation, a
    manager's hold) and classification values are not listed; what the
    partner can change still is."""
    folder = letters_run[0] / "letters"
    french = (folder / "P-1002.txt").read_text(encoding="utf-8")
    assert "Pour atteindre le niveau **Partenaire Elite**" in french
    assert "personnel technique certifié : au moins 20 requis" in french
    assert "invitation" not in french
    for path in folder.glob("*.txt"):
        steps = path.read_text(encoding="utf-8").split("\n## ")[-1]
        for said in ("invitation", "Einladung", "invitación", "standing:", "situation :",
                     "Status:", "situación:"):  # fmt: skip
            assert said not in steps, (path.name, said)


def test_a_language_missing_a_word_for_the_rules_falls_back_whole(tmp_path, cli_run):
    """A letter never mixes languages: without a German word for one rule id,
    German partners get the whole letter in the default language, the index
    says so, and validate warns (fails with --strict)."""
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    terms = templates / "de" / "terms.yaml"
    lines = terms.read_text(encoding="utf-8").splitlines(True)
    terms.write_text("".join(x for x in lines if not x.startswith("deals_4q:")), "utf-8")
    summary = run_and_write(tmp_path, templates=templates)
    rows = index(tmp_path / "out")
    german = [r for r in rows.values() if r["language"] == "de"]
    assert german and all(r["template_language"] == "en" for r in german)
    assert summary["fallbacks"] == {"de": len(german)}
    letter = (tmp_path / "out" / "letters" / f"{german[0]['partner_id']}.txt").read_text("utf-8")
    assert "this one is in English" in letter and "Sie" not in letter
    result = cli_run("validate", "--templates", str(templates))
    assert result.exit_code == 0
    assert "no word for 1 rule id (deals_4q); letters in 'de' are written in 'en'" in (
        result.stderr
    )
    assert cli_run("validate", "--templates", str(templates), "--strict").exit_code == 1


def _other_vendor_templates(tmp_path: Path) -> Path:
    """The shipped templates with letters.yaml set for tests/data/other_vendor:
    its sender, no tier group, no standing warnings."""
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    settings = templates / "letters.yaml"
    text = settings.read_text(encoding="utf-8").replace("tier_group: tier\n", "")
    text = re.sub(r"warnings:\n(  .*\n)+", "", text).replace("Nimbus", "Contoso")
    settings.write_text(text.replace("nimbus.example", "contoso.example"), encoding="utf-8")
    return templates


def test_letters_for_another_vendors_rule_set_without_history_or_tiers(tmp_path, cli_run):
    """Another vendor's rules (tests/data/other_vendor: a referral program in
    euros, no quarterly history, no tiers, no standing) with the shipped
    templates and only letters.yaml edited. Every partner gets a whole
    letter: no rule id shows, headings stand apart, partners in another
    language get all of it in English, and the next steps name the programs
    a partner can join and what it takes."""
    vendor = DATA / "other_vendor"
    templates = _other_vendor_templates(tmp_path)
    valid = cli_run("validate", str(vendor / "rules"), "--templates", str(templates))
    assert valid.exit_code == 0, valid.stderr
    assert "1 metric, 1 classification, 2 engagement models, 2 programs" in valid.output
    out = tmp_path / "out"
    result = cli_run(
        "run", "--rules", str(vendor / "rules"), "--roster", str(vendor / "roster.csv"),
        "--templates", str(templates), "--as-of", "2026-11-26", "--out", str(out),
        "--db", str(tmp_path / "h.sqlite"), "--workers", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "Wrote 5 letters" in result.output
    rows = index(out)
    assert {r["partner_id"]: r["template_language"] for r in rows.values()} == dict.fromkeys(
        ["C-001", "C-002", "C-003", "C-004", "C-005"], "en"
    )
    letters = {p: (out / "letters" / f"{p}.txt").read_text(encoding="utf-8") for p in rows}
    for partner_id, letter in letters.items():
        assert ".description" not in letter and "_" not in letter, partner_id
        assert not re.search(r"\b(tier|standing)\b", letter), partner_id
        assert not re.search(r"[^\n]\n#", letter), partner_id  # a heading right after text
        assert "## What to do next\n\n\n" not in letter
        message = email.message_from_bytes(
            (out / "letters" / f"{partner_id}.eml").read_bytes(), policy=email.policy.default
        )
        assert not message.defects and message["From"].addresses[0].domain == "contoso.example"
    assert "in English" in letters["C-002"] and "in English" not in letters["C-004"]
    assert (
        "To join **Referral bonus**:\n\n- referral points: at least 30 needed, currently 0 "
        "(30 to go)" in letters["C-004"]
    )
    assert (
        "To join **Co-marketing**:\n\n- certified staff: at least 2 needed, currently 1"
        in (letters["C-003"])
    )
    assert "To join" not in letters["C-001"]  # in both programs
    assert "- **Referral bonus**: referral bonus share: 5%" in letters["C-001"]


def test_a_rule_set_without_an_engagement_section(tmp_path, cli_run):
    """The engagement section is optional: without one, every partner gets
    the one implicit model, and nothing a manager or partner reads speaks of
    an engagement model (validate, run, explain, the report, the letters)."""
    rules = tmp_path / "rules"
    shutil.copytree(DATA / "other_vendor" / "rules", rules)
    (rules / "engagement.yaml").unlink()
    templates = _other_vendor_templates(tmp_path)
    valid = cli_run("validate", str(rules), "--templates", str(templates))
    assert valid.exit_code == 0, valid.stderr
    assert "1 classification, 2 programs" in valid.output and "engagement" not in valid.output
    out = tmp_path / "out"
    roster = DATA / "other_vendor" / "roster.csv"
    common = ["--rules", str(rules), "--roster", str(roster), "--as-of", "2026-11-26"]
    common += ["--templates", str(templates)]
    result = cli_run(
        "run", *common, "--out", str(out), "--db", str(tmp_path / "h.sqlite"),
        "--workers", "1", "--report",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "ngagement" not in result.output
    lines = (out / "decisions.jsonl").read_text(encoding="utf-8").splitlines()
    decisions = [json.loads(line) for line in lines]
    assert {d["engagement_model"] for d in decisions} == {"standard"}
    for path in (out / "letters").glob("*.txt"):
        letter = path.read_text(encoding="utf-8")
        assert "How we work with you" not in letter and "how we work with you" not in letter
        assert "Here is where" in letter
    intro = "in the Contoso referral program 2027 on November 26, 2026: your programs."
    assert intro in (out / "letters" / "C-001.txt").read_text(encoding="utf-8")
    explained = cli_run("explain", "C-001", *common[:-2])
    assert explained.exit_code == 0, explained.stderr
    assert "Engagement model" not in explained.output and "Programs" in explained.output
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "Engagement model" not in report and "engagement model" not in report
