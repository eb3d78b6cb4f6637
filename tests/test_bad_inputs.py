"""Files as CRMs and Excel really write them: encodings, damaged rows, odd
numbers. One bad row is set aside with its row number and reason; the run
goes on, and rows read = decided + rejected."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from conftest import ROOT, example_run_options
from engine.data.readers import MAX_CELL, read_columns, read_rows, text_encoding
from engine.evaluate.records import CheckedHistory, FieldProblem, HistoryRows, checked_history
from engine.ruleset.quarters import Quarter
from engine.run.driver import run_batch

EXAMPLES = ROOT / "examples"


def roster_lines() -> list[str]:
    return (EXAMPLES / "roster.csv").read_text(encoding="utf-8").splitlines(keepends=True)


def edited_rules(tmp_path: Path, file: str, old: str, new: str) -> Path:
    """A copy of the reference rules with ``old`` replaced once by ``new`` in ``file``."""
    import shutil

    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    path = rules / file
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return rules


def run(ruleset, tmp_path: Path, roster: Path, performance: Path | None = None) -> dict:
    result = run_batch(
        ruleset,
        example_run_options(
            tmp_path, roster=roster, performance=performance or EXAMPLES / "performance.csv"
        ),
    )
    partners = result.summary["partners"]
    assert partners["rows_read"] == partners["decided"] + partners["rejected"]
    return result.summary


def rejects(tmp_path: Path) -> list[dict]:
    with (tmp_path / "out" / "rejects.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_windows_excel_csv_is_read_as_cp1252(ruleset, tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_bytes("".join(roster_lines()).encode("cp1252", "replace"))
    assert text_encoding(roster).name == "cp1252"
    names = {r.record["partner_id"]: r.record["partner_name"] for r in read_rows(roster)}
    assert names["P-1002"] == "Contoso Sécurité SA"
    summary = run(ruleset, tmp_path, roster)
    assert summary["inputs"]["roster"]["encoding"] == "cp1252"
    assert summary["partners"]["decided"] == 32


def test_excel_unicode_text_is_read_as_utf16(ruleset, tmp_path):
    roster = tmp_path / "roster.csv"
    rows = list(csv.reader(roster_lines()))
    text = "".join("\t".join(row) + "\r\n" for row in rows)  # tabs, as Excel writes it
    roster.write_bytes(text.encode("utf-16"))
    assert text_encoding(roster).name == "utf-16"
    summary = run(ruleset, tmp_path, roster)
    assert summary["partners"]["decided"] == 32
    assert summary["inputs"]["roster"]["encoding"] == "utf-16"


def test_bytes_that_are_not_utf8_reject_their_row_only(ruleset, tmp_path):
    lines = [line.encode("utf-8") for line in roster_lines()]
    lines[4] = lines[4].replace(b"Ltd", b"Lt\xe9d").replace(b"GmbH", b"Gmb\xe9H")
    lines[4] = lines[4] if b"\xe9" in lines[4] else lines[4].replace(b",", b"\xe9,", 1)
    roster = tmp_path / "roster.csv"
    roster.write_bytes(b"".join(lines))
    summary = run(ruleset, tmp_path, roster)
    assert summary["inputs"]["roster"]["encoding"] == "utf-8"
    found = [r for r in rejects(tmp_path) if r["source_file"].endswith("roster.csv")]
    bad = [r for r in found if "0xE9 is not utf-8 text" in r["reason"]]
    assert [r["row"] for r in bad] == ["5"], found
    assert summary["partners"]["decided"] == 31  # the 32 less the damaged one


def test_a_damaged_history_row_is_rejected_with_its_row(tmp_path):
    lines = (EXAMPLES / "performance.csv").read_bytes().splitlines(keepends=True)
    lines[9] = lines[9].replace(b",", b"\xff,", 1)
    history = tmp_path / "performance.csv"
    history.write_bytes(b"".join(lines) + "P-1001,2025Q1,1,1,é\n".encode())
    unreadable = []
    rows = list(read_columns(history, ["partner_id", "quarter"], unreadable.append))
    assert [r.row for r in unreadable] == [10]
    assert "0xFF is not utf-8 text" in unreadable[0].problem
    assert len(rows) == len(lines) - 2 + 1


def test_a_cell_larger_than_the_limit_rejects_its_row(ruleset, tmp_path):
    lines = roster_lines()
    lines[3] = lines[3].replace(",", ',"' + "x" * (MAX_CELL + 1) + '",', 1)
    roster = tmp_path / "roster.csv"
    roster.write_text("".join(lines), encoding="utf-8")
    summary = run(ruleset, tmp_path, roster)
    found = [r for r in rejects(tmp_path) if r["row"] == "4"]
    assert found and "longer than 16,777,216 characters" in found[0]["reason"], found
    assert summary["partners"]["decided"] == 31


@pytest.mark.parametrize(
    "value,reason",
    [
        ("1e400", "1e400 is too large a number"),
        ("-1e400", "-1e400 is too large a number"),
        ("Infinity", "Infinity is not a number"),
        ("NaN", "NaN is not a number"),
        ("1" * 400, "a 400-digit number is too large"),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ],
)
def test_json_lines_values_that_cannot_be_numbers_reject_their_line(
    ruleset, tmp_path, value, reason
):
    records = [json.loads(line) for line in _jsonl_roster().splitlines()]
    lines = [json.dumps(r) for r in records]
    lines[2] = lines[2].replace('"staff_sales": ', f'"staff_sales": {value}, "was": ', 1)
    roster = tmp_path / "roster.jsonl"
    roster.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = run(ruleset, tmp_path, roster)
    found = [r for r in rejects(tmp_path) if r["source_file"].endswith("roster.jsonl")]
    line = [r for r in found if r["row"] == "3"]
    assert line and reason in line[0]["reason"], found
    assert len(line[0]["value"]) < 200  # shown shortened
    assert (
        summary["partners"]["decided"]
        == len(records) - sum(1 for r in found if r["row"] != "3") - 1
    )


def test_json_lines_with_bytes_that_are_not_utf8_reject_their_line(ruleset, tmp_path):
    lines = _jsonl_roster().encode("utf-8").splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"', b'"\xc3(', 1)
    roster = tmp_path / "roster.jsonl"
    roster.write_bytes(b"".join(lines))
    run(ruleset, tmp_path, roster)
    found = [r for r in rejects(tmp_path) if r["row"] == "2"]
    assert found and "0xC3 is not UTF-8 text" in found[0]["reason"], found


def _jsonl_roster() -> str:
    rows = list(csv.DictReader(roster_lines()))
    out = []
    for row in rows:
        record = {k: v for k, v in row.items() if v not in ("", None)}
        for key in ("staff_sales", "staff_technical"):
            if key in record and record[key].isdigit():
                record[key] = int(record[key])
        out.append(json.dumps(record, ensure_ascii=False))
    return "\n".join(out) + "\n"


# --- columns ---------------------------------------------------------------------


def _with_header(tmp_path: Path, name: str, change) -> Path:
    lines = (EXAMPLES / name).read_text(encoding="utf-8").splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    target = tmp_path / name
    target.write_text(",".join(change(header)) + "\n" + "".join(lines[1:]), encoding="utf-8")
    return target


def _decisions(tmp_path: Path, out: str = "out") -> list[dict]:
    return [json.loads(x) for x in (tmp_path / out / "decisions.jsonl").read_text().splitlines()]


def test_a_roster_missing_a_column_the_rules_read_stops_before_deciding(ruleset, tmp_path):
    """Before: every partner got certified_technical's default 0, silently."""
    from engine.errors import DataError

    roster = _with_header(
        tmp_path,
        "roster.csv",
        lambda h: [("cert_technical" if c == "certified_technical" else c) for c in h],
    )
    with pytest.raises(
        DataError, match=r"roster lacks 1 column the rules read: certified_technical"
    ):
        run(ruleset, tmp_path, roster)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("runs/*"))


def test_headers_as_crms_write_them_are_matched(ruleset, tmp_path):
    """ "Joined On", "Certified_Technical", "PARTNER-ID": case, spaces,
    underscores and hyphens do not count."""
    run(ruleset, tmp_path / "a", EXAMPLES / "roster.csv")
    names = {
        "joined_on": "Joined On",
        "certified_technical": "Certified_Technical",
        "partner_id": "PARTNER-ID",
    }
    roster = _with_header(tmp_path, "roster.csv", lambda h: [names.get(c, c) for c in h])
    run(ruleset, tmp_path / "b", roster)
    assert _decisions(tmp_path / "a") == _decisions(tmp_path / "b")


def test_a_field_may_declare_its_column_and_aliases_and_may_be_absent(tmp_path):
    import shutil

    from engine.ruleset.loader import load_rules

    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    fields = rules / "fields.yaml"
    text = fields.read_text(encoding="utf-8")
    text = text.replace(
        "certified_technical: {type: integer, default: 0, label: certified technical staff}",
        "certified_technical: {type: integer, default: 0, label: certified technical staff,\n"
        "    column: Certified Engineers, aliases: [Tech certs]}",
    )
    text = text.replace(
        "  downgrade_hold:\n    type: yes/no\n",
        "  downgrade_hold:\n    type: yes/no\n    may_be_absent: true\n",
    )
    text = text.replace(
        "revenue: {type: money, required: true, label: revenue}",
        "revenue: {type: money, required: true, label: revenue, aliases: [Revenue (USD)]}",
    )
    fields.write_text(text, encoding="utf-8")
    ruleset = load_rules(rules)
    assert ruleset.fields["certified_technical"].columns == ("Certified Engineers", "Tech certs")
    run(ruleset, tmp_path / "a", EXAMPLES / "roster.csv")
    renamed = {"certified_technical": "CERTIFIED ENGINEERS"}
    history = _with_header(
        tmp_path, "performance.csv", lambda h: ["Revenue (USD)" if c == "revenue" else c for c in h]
    )
    # downgrade_hold may be absent: its column gone, every partner gets its default (no)
    rows = list(csv.reader(roster_lines()))
    drop = rows[0].index("downgrade_hold")
    roster = tmp_path / "roster.csv"
    with roster.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(renamed.get(c, c) for i, c in enumerate(rows[0]) if i != drop)
        writer.writerows([c for i, c in enumerate(row) if i != drop] for row in rows[1:])
    run(ruleset, tmp_path / "b", roster, history)
    held = {r["partner_id"] for r in csv.DictReader(roster_lines()) if r["downgrade_hold"] == "yes"}
    before, after = _decisions(tmp_path / "a"), _decisions(tmp_path / "b")
    assert len(before) == len(after) and held
    assert [d for d in before if d["partner_id"] not in held] == [
        d for d in after if d["partner_id"] not in held
    ]


@pytest.mark.parametrize(
    "declaration,message",
    [
        ("{type: integer, column: 3}", "'column' of field 'x' must be the header"),
        ("{type: integer, aliases: Tech}", "'aliases' of field 'x' must be a list of headers"),
        ("{type: integer, may_be_absent: maybe}", "'may_be_absent' must be true or false"),
        ("{type: integer, required: true, may_be_absent: true}", "its column cannot be absent"),
    ],
)
def test_column_declarations_are_checked(tmp_path, declaration, message):
    from engine.errors import RuleSetError
    from engine.ruleset.loader import load_rules

    rules = edited_rules(tmp_path, "fields.yaml", "fields:\n", f"fields:\n  x: {declaration}\n")
    with pytest.raises(RuleSetError, match=message):
        load_rules(rules)


# --- guards ----------------------------------------------------------------------


def test_a_run_with_too_many_rejects_stops_before_recording(ruleset, tmp_path):
    """The example has 2 bad rows of 34 (5.9%): the reference rules allow
    10% (ruleset: max_rejects), --max-rejects 5 does not."""
    from engine.data.run_folders import current_run
    from engine.errors import DataError

    run(ruleset, tmp_path, EXAMPLES / "roster.csv")
    before = current_run(tmp_path / "out")
    with pytest.raises(
        DataError, match=r"2 of its 34 rows were rejected \(5\.9%\), more than the 5%"
    ):
        run_batch(
            ruleset,
            example_run_options(tmp_path, max_rejects=0.05),
        )
    assert current_run(tmp_path / "out") == before
    assert len(rejects(tmp_path)) == 4  # the current run's, unchanged
    stopped = tmp_path / "out" / "stopped-run" / "rejects.csv"
    stopped_rows = list(csv.DictReader(stopped.read_text(encoding="utf-8").splitlines()))
    assert [r["row"] for r in stopped_rows][:2] == ["327", "34"]


def test_max_rejects_in_the_rule_set_is_checked(tmp_path):
    from engine.errors import RuleSetError
    from engine.ruleset.loader import load_rules

    rules = edited_rules(tmp_path, "ruleset.yaml", "max_rejects: 10%", "max_rejects: lots")
    with pytest.raises(RuleSetError, match="max_rejects must be a percentage from 0% to 100%"):
        load_rules(rules)
    assert load_rules(ROOT / "rules").max_rejects == pytest.approx(0.10)


# --- ranges and identities ------------------------------------------------------


def _roster_with(tmp_path: Path, changes: dict[str, dict[str, str]]) -> Path:
    """The example roster with some partners' cells changed."""
    rows = list(csv.DictReader(roster_lines()))
    for row in rows:
        row.update(changes.get(row["partner_id"], {}))
    roster = tmp_path / "roster.csv"
    with roster.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return roster


@pytest.mark.parametrize(
    "column,value,reason",
    [
        ("staff_sales", "-3", "'-3' is below 0, the least sales staff can be"),
        ("certified_technical", "(3)", "'(3)' is below 0, the least certified technical staff"),
        ("smb_share", "150%", "'150%' is above 100%, the most share of revenue from SMB"),
        ("partner_name", "Nul\x00Byte Ltd", "holds a control character (U+0000)"),
    ],
)
def test_values_outside_their_range_are_rejected(ruleset, tmp_path, column, value, reason):
    roster = _roster_with(tmp_path, {"P-1003": {column: value}})
    run(ruleset, tmp_path, roster)
    found = [r for r in rejects(tmp_path) if r["partner_id"] == "P-1003"]
    assert found and found[0]["column"] == column and reason in found[0]["reason"], found


@pytest.mark.parametrize(
    "partner_id,reason",
    [
        ("P-1001\u200b", "invisible or control character (U+200B)"),
        ("P-10\x0701", "invisible or control character (U+0007)"),
    ],
)
def test_partner_ids_with_hidden_characters_are_rejected(ruleset, tmp_path, partner_id, reason):
    roster = _roster_with(tmp_path, {"P-1003": {"partner_id": partner_id}})
    run(ruleset, tmp_path, roster)
    found = [r for r in rejects(tmp_path) if r["row"] == "4"]
    assert found and reason in found[0]["reason"], found


def test_ids_in_two_unicode_forms_are_one_partner(ruleset, tmp_path):
    """ "Café-1" typed with é, and with e and a combining accent (NFD): one id."""
    import unicodedata

    composed = "Caf\u00e9-1"
    decomposed = unicodedata.normalize("NFD", composed)
    roster = _roster_with(
        tmp_path, {"P-1003": {"partner_id": composed}, "P-1004": {"partner_id": decomposed}}
    )
    run(ruleset, tmp_path, roster)
    found = [r for r in rejects(tmp_path) if r["row"] == "5"]
    assert found and "duplicate partner_id (first on row 4)" in found[0]["reason"], found


def test_a_json_partner_id_that_is_a_list_is_rejected(ruleset, tmp_path):
    lines = _jsonl_roster().splitlines()
    lines[2] = lines[2].replace('"partner_id": "P-1003"', '"partner_id": ["P-1003", "x"]')
    roster = tmp_path / "roster.jsonl"
    roster.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run(ruleset, tmp_path, roster)
    found = [r for r in rejects(tmp_path) if r["row"] == "3"]
    assert found and "partner_id must be one value" in found[0]["reason"], found


@pytest.mark.parametrize(
    "declaration,message",
    [
        ("{type: integer, min: lots}", "'min' of field 'x' must be a whole number"),
        ("{type: integer, min: 5, max: 2}", "'max' of field 'x' is below its 'min'"),
        ("{type: text, max: 3}", "'max' applies to numbers, money, percentages and dates"),
        ("{type: integer, default: -1}", "the default of field 'x' is outside its range"),
        ("{type: percent, default: 120%}", "the default of field 'x' is outside its range"),
    ],
)
def test_range_declarations_are_checked(tmp_path, declaration, message):
    from engine.errors import RuleSetError
    from engine.ruleset.loader import load_rules

    rules = edited_rules(tmp_path, "fields.yaml", "fields:\n", f"fields:\n  x: {declaration}\n")
    with pytest.raises(RuleSetError, match=message):
        load_rules(rules)


def test_a_field_may_widen_its_range(tmp_path):
    from engine.ruleset.loader import load_rules

    rules = edited_rules(
        tmp_path,
        "fields.yaml",
        "fields:\n",
        "fields:\n  growth: {type: percent, min: -100%, max: 1000%}\n",
    )
    growth = load_rules(rules).fields["growth"]
    assert (growth.minimum, growth.maximum) == (-1.0, 10.0)


def test_the_summary_lists_every_default_applied(ruleset, tmp_path):
    """Counted from the roster itself: decided partners whose cell was empty."""
    summary = run(ruleset, tmp_path, EXAMPLES / "roster.csv")
    decided = {d["partner_id"] for d in _decisions(tmp_path)}
    expected = {}
    for row in csv.DictReader(roster_lines()):
        if row["partner_id"] not in decided:
            continue
        for name, definition in ruleset.fields.items():
            if not definition.required and not (row.get(name) or "").strip():
                expected[name] = expected.get(name, 0) + 1
    assert summary["defaults_applied"] == expected
    assert expected  # the example leaves some cells empty


@pytest.mark.parametrize(
    "kind,raw,reason",
    [
        ("integer", "$1,200", "'$1,200' is a money amount, not a whole number; write the whole"),
        ("integer", "1.234,5", "write it like 1234 or 1,234"),
        ("percent", "2,6%", "write it like 2.6%"),
        ("money", "1.234,50", "write it like 1234.50 or 1,234.50"),
    ],
)
def test_reasons_speak_of_the_column_type(kind, raw, reason):
    from engine.ruleset.value_types import ValueType, parse_value

    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_value(ValueType(kind), raw)


def test_a_history_file_whose_rows_are_all_rejected_stops_the_run(ruleset, tmp_path):
    """Another roster's history (no partner in common): every row rejected,
    and every revenue-based decision would be lost."""
    from engine.errors import DataError

    lines = (EXAMPLES / "performance.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    history = tmp_path / "performance.csv"
    history.write_text(lines[0] + "".join("Z" + line[1:] for line in lines[1:]), encoding="utf-8")
    with pytest.raises(
        DataError,
        match=r"all 326 rows of the history file were rejected \(326 for their partner_id, "
        r"such as row 2: no partner with this partner_id in the roster\)",
    ):
        run(ruleset, tmp_path, EXAMPLES / "roster.csv", history)
    assert not list((tmp_path / "out").glob("runs/*"))


def test_a_history_whose_quarters_are_dates_stops_naming_its_quarters(ruleset, tmp_path):
    """The right file with the quarters exported as dates: the stop says
    what is wrong with the rows, not only "is it the right file?"."""
    from engine.errors import DataError

    ends = {"Q1": "-03-31", "Q2": "-06-30", "Q3": "-09-30", "Q4": "-12-31"}
    lines = (EXAMPLES / "performance.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    history = tmp_path / "performance.csv"
    history.write_text(
        lines[0]
        + "".join(
            re.sub(r",(\d{4})(Q[1-4]),", lambda m: f",{m[1]}{ends[m[2]]},", line)
            for line in lines[1:]
        ),
        encoding="utf-8",
    )
    with pytest.raises(
        DataError,
        match=r"were rejected \(325 for their quarter, such as row 2: '2024-03-31' is not a "
        r"quarter; write it like 2026Q3\); see ",
    ):
        run(ruleset, tmp_path, EXAMPLES / "roster.csv", history)


def test_random_rows_and_bytes_never_stop_a_run(ruleset, tmp_path_factory):
    """Random cells, random bytes and broken quoting in a roster: the run
    ends (or stops with one clear error), and rows read = decided + rejected."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    from engine.errors import EligibilityError

    header = roster_lines()[0].encode()
    good = [line.encode("utf-8") for line in roster_lines()[1:6]]
    junk = st.one_of(
        st.binary(max_size=60),
        st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.sampled_from([b'"', b'""', b",,,,", b"\x00", b"\xff\xfe", b"1e400", b"\r", b";"]),
    )
    rows = st.lists(st.one_of(st.sampled_from(good), junk.map(lambda b: b + b"\n")), max_size=12)

    @settings(
        max_examples=100,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(rows)
    def survives(body):
        folder = tmp_path_factory.mktemp("random")
        roster = folder / "roster.csv"
        roster.write_bytes(header + b"".join(body))
        try:
            result = run_batch(
                ruleset,
                example_run_options(
                    folder, roster=roster, performance=None, without_history=True, max_rejects=1.0
                ),
            )
        except EligibilityError as error:  # one clear error: an empty roster, nobody decided
            assert "\n" not in str(error) and "Traceback" not in str(error)
            return
        partners = result.summary["partners"]
        assert partners["rows_read"] == partners["decided"] + partners["rejected"]

    survives()


def test_semicolon_files_are_read_with_decimal_commas(ruleset, tmp_path):
    """What Excel writes as CSV in much of Europe: ';' between values, a
    decimal comma, a point between thousands. Decided as the original."""
    run(ruleset, tmp_path / "a", EXAMPLES / "roster.csv")

    def european(path: Path, target: Path) -> Path:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
        out = []
        for row in rows:
            cells = []
            for cell in row:
                if re.fullmatch(r"-?\d+\.\d+%?", cell):  # 2.6% -> 2,6 %; 957191.38 -> 957.191,38
                    whole, fraction = cell.rstrip("%").split(".")
                    grouped = f"{int(whole):,}".replace(",", ".")
                    cell = f"{grouped},{fraction}" + (" %" if cell.endswith("%") else "")
                cells.append(cell)
            out.append(cells)
        with target.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle, delimiter=";").writerows(out)
        return target

    roster = european(EXAMPLES / "roster.csv", tmp_path / "roster.csv")
    history = european(EXAMPLES / "performance.csv", tmp_path / "performance.csv")
    assert "2,6 %" in roster.read_text(encoding="utf-8")
    assert "957.191,38" in history.read_text(encoding="utf-8")
    run(ruleset, tmp_path / "b", roster, history)
    assert _decisions(tmp_path / "a") == _decisions(tmp_path / "b")


def test_a_thousands_point_without_a_decimal_comma_is_ambiguous_there(ruleset, tmp_path):
    rows = list(csv.reader(roster_lines()))
    column = rows[0].index("staff_sales")
    rows[3][column] = "1.234"
    roster = tmp_path / "roster.csv"
    with roster.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, delimiter=";").writerows(rows)
    run(ruleset, tmp_path, roster)
    found = [r for r in rejects(tmp_path) if r["row"] == "4"]
    assert found and "staff_sales: '1.234' is ambiguous" in found[0]["reason"], found


def test_encoding_can_be_forced(cli_run, tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_bytes("".join(roster_lines()).encode("cp1252", "replace"))
    args = ["run", "--roster", str(roster), "--performance", str(EXAMPLES / "performance.csv")]
    args += ["--as-of", "2026-11-26", "--workers", "1", "-q", "--db", str(tmp_path / "h.sqlite")]
    result = cli_run(*args, "--out", str(tmp_path / "a"), "--encoding", "latin-1")
    assert result.exit_code == 0, result.stderr
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["inputs"]["roster"]["encoding"] == "iso8859-1"
    # Forced to UTF-8, the accented rows are set aside (the guard allows 100%)
    forced = cli_run(
        *args, "--out", str(tmp_path / "b"), "--encoding", "utf-8", "--max-rejects", "100"
    )
    assert forced.exit_code == 0, forced.stderr
    with (tmp_path / "b" / "rejects.csv").open(encoding="utf-8") as handle:
        reasons = [r["reason"] for r in csv.DictReader(handle)]
    assert any("is not utf-8 text" in reason for reason in reasons)
    wrong = cli_run(*args, "--out", str(tmp_path / "c"), "--encoding", "klingon")
    assert wrong.exit_code == 2 and "unknown encoding 'klingon'" in wrong.stderr


# --- the corpus ------------------------------------------------------------------

CORPUS = ROOT / "tests" / "data" / "bad_inputs"


def _corpus() -> list[dict]:
    import yaml

    return yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", _corpus(), ids=lambda case: case["name"])
def test_corpus(ruleset, tmp_path, case):
    """Each bad input in tests/data/bad_inputs/ does what cases.yaml says: an
    error before the run (nothing recorded), a reject with its row, column and
    reason (the rest decided), or decided as written."""
    from engine.errors import EligibilityError

    roster = CORPUS / case["roster"]
    performance = CORPUS / case["performance"] if "performance" in case else None
    options = example_run_options(
        tmp_path,
        roster=roster,
        performance=performance,
        without_history=performance is None,
        max_rejects=1.0,  # a case is one bad row in two: the guard has its own test
    )
    if case["outcome"] == "error":
        with pytest.raises(EligibilityError) as raised:
            run_batch(ruleset, options)
        assert case["message"] in str(raised.value), str(raised.value)
        assert not list((tmp_path / "out").glob("runs/*"))
        return
    result = run_batch(ruleset, options)
    partners = result.summary["partners"]
    assert partners["rows_read"] == partners["decided"] + partners["rejected"]
    found = rejects(tmp_path)
    if case["outcome"] == "reject":
        source = (performance or roster).name
        matching = [
            r
            for r in found
            if r["source_file"].endswith(source)
            and r["row"] == str(case["row"])
            and r["column"] == case["column"]
        ]
        assert matching, found
        assert case["reason"] in matching[0]["reason"], matching
    else:
        assert case["partner"] in {d["partner_id"] for d in _decisions(tmp_path)}
        assert not [r for r in found if r["source_file"].endswith(roster.name)], found
        if "encoding" in case:
            assert result.summary["inputs"]["roster"]["encoding"] == case["encoding"]


def test_a_chunks_history_is_checked_row_by_row_whatever_its_neighbours(ruleset):
    """A chunk's history rows are checked a column at a time (the common
    case at C speed): a partner with an unusable row, a repeated quarter or a
    quarter that is none gets exactly the problems and the history it would
    get alone, and its neighbours theirs; figures are matched by name."""
    columns = ("revenue", "target", "deals_closed")
    partners = [
        [(2, "2026Q1", ("100", "200", "3")), (3, "2026Q2", ("150.5", "200", ""))],
        [
            (4, "2026Q1", ("abc", "200", "1")),
            (5, "2026Q1", ("10", "20", "1")),
            (6, "2026Q1", ("11", "20", "1")),
        ],
        [(7, "20X6", ("1", "2", "3")), (8, "2026Q3", ("1", "", "3")), (9, "Q3 2026", ("5", "6"))],
        [],
        [(10, ["2026Q1"], ("1", "2", "3")), (11, None, ("1", "2", "3"))],  # JSON Lines
    ]
    q1, q2, q3 = Quarter(2026, 1), Quarter(2026, 2), Quarter(2026, 3)
    expected = [
        (
            {
                q1: {"revenue": 100.0, "target": 200.0, "deals_closed": 3},
                q2: {"revenue": 150.5, "target": 200.0, "deals_closed": 0},
            },
            [],
        ),
        (
            {q1: {"revenue": 10.0, "target": 20.0, "deals_closed": 1}},
            [
                FieldProblem("revenue", "abc", "'abc' is not a money amount", 4),
                FieldProblem(
                    "quarter", "2026Q1", "2026Q1 appears twice for this partner (first on row 5)", 6
                ),
            ],
        ),
        (
            {q3: {"revenue": 5.0, "target": 6.0, "deals_closed": 0}},
            [
                FieldProblem("quarter", "20X6", "'20X6' is not a quarter; write it like 2026Q3", 7),
                FieldProblem("target", "", "a value is required", 8),
            ],
        ),
        ({}, []),
        (
            {},
            [
                FieldProblem(
                    "quarter",
                    "['2026Q1']",
                    "'['2026Q1']' is not a quarter; write it like 2026Q3",
                    10,
                ),
                FieldProblem("quarter", "", "'' is not a quarter; write it like 2026Q3", 11),
            ],
        ),
    ]
    reordered = (columns[2], columns[0], columns[1])
    for order in (columns, reordered):
        staged = HistoryRows.of(
            order,
            [
                [(n, q, tuple(dict(zip(columns, v)).get(c) for c in order)) for n, q, v in rows]
                for rows in partners
            ],
        )
        checked = CheckedHistory(ruleset, staged)
        for index, (quarters, problems) in enumerate(expected):
            found: list = []
            assert checked.history(index, found).quarters == quarters, (order, index)
            assert found == problems, (order, index)
            alone: list = []
            assert checked_history(ruleset, partners[index], columns, alone).quarters == quarters
            assert alone == problems


# --- percentages without a % sign ---------------------------------------------------

_SHARES = ("smb_share", "mid_market_share", "enterprise_share", "share_of_vendor_revenue")


def _shares_written(tmp_path: Path, scale: str) -> Path:
    """The example roster with its shares written without a % sign, as
    fractions (scale 0.01: 0.7 for 70%) or as points (scale 1: 70)."""
    from decimal import Decimal

    with (EXAMPLES / "roster.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for name in _SHARES:
            value = row[name]
            if value.endswith("%") and value[:-1].replace(".", "", 1).isdigit():
                row[name] = f"{(Decimal(value[:-1]) * Decimal(scale)).normalize():f}"
    roster = tmp_path / "roster.csv"
    with roster.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return roster


def _rules_with_scale(tmp_path: Path, scale: str):
    from engine.ruleset.loader import load_rules

    folder = tmp_path / "rules"
    folder.mkdir()
    for path in (ROOT / "rules").glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        for name in _SHARES[:3]:
            text = text.replace(
                f"{name}: {{type: percent,", f"{name}: {{type: percent, scale: {scale},"
            )
        text = text.replace(
            "  share_of_vendor_revenue:\n", f"  share_of_vendor_revenue:\n    scale: {scale}\n"
        )
        (folder / path.name).write_text(text, encoding="utf-8")
    return load_rules(folder)


def test_shares_exported_as_fractions_stop_the_run_instead_of_deciding_a_hundred_times_too_small(
    ruleset, tmp_path
):
    """0.7 read as 0.7% made every partner 'mixed' and 'small', no strategic
    account, no co-sell, without a word. The run now stops and asks."""
    from engine.errors import DataError

    roster = _shares_written(tmp_path, "0.01")
    with pytest.raises(
        DataError,
        match=r"roster.csv: enterprise_share is a percentage, and its \d+ values written without "
        r"a % sign are all between -1 and 1 \(such as 0.7 on row 2\): is 0.7 70% or 0.7%\? "
        r"Say which in the field's declaration in the rules, scale: fraction",
    ):
        run(ruleset, tmp_path, roster)
    assert not (tmp_path / "out" / "decisions.jsonl").exists()


def test_a_declared_scale_reads_shares_without_a_sign_as_it_says(ruleset, tmp_path):
    """scale: fraction reads 0.7 as 70%; scale: points reads 70 as 70% and
    lets values under 1 through; both decide as the export with % signs."""
    (tmp_path / "signs").mkdir()
    run(ruleset, tmp_path / "signs", EXAMPLES / "roster.csv")
    expected = (tmp_path / "signs" / "out" / "decisions.jsonl").read_bytes()
    for scale, factor in (("fraction", "0.01"), ("points", "1")):
        folder = tmp_path / scale
        folder.mkdir()
        rules = _rules_with_scale(folder, scale)
        assert rules.fields["enterprise_share"].scale == scale
        run(rules, folder, _shares_written(folder, factor))
        decided = (folder / "out" / "decisions.jsonl").read_bytes()
        fingerprints = (ruleset.fingerprint.encode(), rules.fingerprint.encode())
        assert decided.replace(fingerprints[1], fingerprints[0]) == expected, scale
    # Points written as points need no declaration: values over 1 say so.
    (tmp_path / "plain").mkdir()
    run(ruleset, tmp_path / "plain", _shares_written(tmp_path / "plain", "1"))


def test_scale_belongs_to_percentages_and_says_points_or_fraction(tmp_path):
    import shutil

    from engine.errors import RuleSetError
    from engine.ruleset.loader import load_rules

    for change, message in (
        ("staff_sales: {type: integer, scale: points,", "'scale' applies to percentages"),
        ("smb_share: {type: percent, scale: percent,", "must be points (60 is 60%) or fraction"),
    ):
        folder = tmp_path / str(len(message))
        shutil.copytree(ROOT / "rules", folder)
        fields = folder / "fields.yaml"
        before = change.split(" scale")[0].rstrip(",") + ","
        text = fields.read_text(encoding="utf-8")
        assert before in text
        fields.write_text(text.replace(before, change, 1), encoding="utf-8")
        with pytest.raises(RuleSetError, match=re.escape(message)):
            load_rules(folder)
