"""Batch runs: nothing lost, bad rows set aside, deterministic, atomic, remembered."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import AS_OF, ROOT, example_run_options
from engine.data import performance
from engine.data.run_folders import current_run
from engine.data.run_history import RunHistory
from engine.errors import DataError, UsageError
from engine.evaluate.decide import Evaluator
from engine.ruleset.loader import load_rules
from engine.ruleset.quarters import Quarter
from engine.run import driver
from engine.run.driver import RunOptions, run_batch
from engine.run.letters_pass import LetterOptions, write_letters

EXAMPLES = ROOT / "examples"


def options(tmp_path: Path, name: str = "out", **kwargs) -> RunOptions:
    # These tests set rows aside on purpose; the reject guard has its own.
    return example_run_options(tmp_path, out_dir=tmp_path / name, **{"max_rejects": 1.0, **kwargs})


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def outputs(folder: Path) -> dict[str, bytes]:
    """Every output file of the current run in an output folder (letters
    too); summary.json without its 'run' section (timings, ids)."""
    folder = current_run(folder)
    files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    summary = json.loads(files.pop("summary.json"))
    summary.pop("run")
    files["summary.json"] = json.dumps(summary, sort_keys=True).encode()
    return files


def test_bundled_example(ruleset, example_partners, tmp_path):
    result = run_batch(ruleset, options(tmp_path))
    out = tmp_path / "out"
    assert sorted(p.name for p in result.out_dir.iterdir()) == sorted(driver.OUTPUT_FILES)
    assert result.out_dir.parent == out / "runs" and current_run(out) == result.out_dir
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".eligibility-output", ".lock", "current", "runs", *driver.OUTPUT_FILES]
    )
    assert all((out / name).is_symlink() for name in driver.OUTPUT_FILES)
    assert result.summary["partners"] == {"rows_read": 34, "decided": 32, "rejected": 2}
    rejects = read_csv(out / "rejects.csv")
    assert [(r["source_file"].split("/")[-1], r["row"], r["column"]) for r in rejects] == [
        ("performance.csv", "327", "quarter"),
        ("roster.csv", "34", "joined_on"),
        ("roster.csv", "35", "certified_technical"),
        ("performance.csv", "326", "partner_id"),
    ]
    decisions = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    expected = {d.partner_id: d for d in Evaluator(ruleset).decide(example_partners, AS_OF)}
    assert [d["partner_id"] for d in decisions] == [p.partner_id for p in example_partners]
    for record in decisions:
        decision = expected[record["partner_id"]]
        assert record["programs"] == list(decision.enrolled)
        assert record["classifications"] == decision.classifications
        assert record["engagement_model"] == decision.engagement
        assert record["decided_by"] == {
            name: "default" if index < 0 else f"row {index + 1}"
            for name, index in decision.rows.items()
        }
        assert record["rule_set_fingerprint"] == ruleset.fingerprint
        not_enrolled = {p.id for p in ruleset.programs} - set(decision.enrolled)
        assert set(record["not_enrolled"]) == not_enrolled
        assert all(record["not_enrolled"].values())  # every miss has a reason
    enrollments = read_csv(out / "enrollments.csv")
    assert len(enrollments) == sum(len(d.enrolled) for d in expected.values())
    assert result.summary["programs"]["deal_registration"] == 31


def test_output_does_not_depend_on_workers(ruleset, tmp_path):
    run_batch(ruleset, options(tmp_path, "one", workers=1, db=tmp_path / "a.sqlite", chunk_size=5))
    run_batch(ruleset, options(tmp_path, "two", workers=2, db=tmp_path / "b.sqlite", chunk_size=3))
    assert outputs(tmp_path / "one") == outputs(tmp_path / "two")


def test_rejects_are_in_roster_order_whatever_the_workers(ruleset, tmp_path):
    """Rows the main process sets aside (repeated or missing ids) and rows the
    workers reject are written in the roster's order, whatever the workers and
    chunks (they were written as read, ahead of the chunks in flight)."""
    rows = list(csv.reader((EXAMPLES / "roster.csv").read_text(encoding="utf-8").splitlines()))
    roster = [rows[0]]
    for block in range(4):
        roster += [[f"{r[0]}-{block}", *r[1:]] for r in rows[1:]]
        roster += [[f"P-1001-{block}", *rows[1][1:]], ["", "no id"]]
    write_csv(tmp_path / "roster.csv", roster)
    for name, workers, chunk_size in (("one", 1, 500), ("two", 2, 7), ("three", 3, 4)):
        run_batch(
            ruleset,
            options(
                tmp_path,
                name,
                workers=workers,
                chunk_size=chunk_size,
                roster=tmp_path / "roster.csv",
                db=tmp_path / f"{name}.db",
                performance=None,  # its ids are renamed: no history row would be theirs
                without_history=True,
            ),
        )
    assert outputs(tmp_path / "one") == outputs(tmp_path / "two") == outputs(tmp_path / "three")
    rejects = read_csv(tmp_path / "two" / "rejects.csv")
    rows_read = [int(r["row"]) for r in rejects if r["source_file"].endswith("roster.csv")]
    assert rows_read == sorted(rows_read) and len(rows_read) == 4 * 4
    assert {r["reason"][:9] for r in rejects if int(r["row"]) in rows_read} >= {
        "duplicate",
        "partner_i",
    }


def write_csv(path: Path, rows: list[list], bom: bool = False) -> Path:
    with path.open("w", newline="", encoding="utf-8-sig" if bom else "utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


HEADER = [
    "partner_id",
    "partner_name",
    "country",
    "joined_on",
    "certified_technical",
    "smb_share",
    "language",
    "focus_verticals",
]
# The other columns the rules read, empty in these tests' rosters (every
# column the rules read must be in a roster: see engine.data.readers.check_columns).
REST = [
    name
    for name in (EXAMPLES / "roster.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    if name not in HEADER
]
HEADER = HEADER + REST


def test_bad_rows_are_set_aside_and_the_rest_decided(ruleset, tmp_path):
    roster = write_csv(
        tmp_path / "roster.csv",
        [
            HEADER,
            ["A-1", 'Comma, Newline\nand "quotes" Ltd', "FR", "2020-01-01", "3", "70%", "fr", ""],
            ["A-2", "Bad Date", "FR", "31/12/2020", "3", "70%", "fr", ""],
            ["A-3", "Bad Number", "FR", "2020-01-01", "three", "70%", "fr", ""],
            ["A-4", "", "FR", "2020-01-01", "3", "70%", "fr", ""],
            ["A-5", "Bad Language", "FR", "2020-01-01", "3", "70%", "italiano", ""],
            ["A-1", "Duplicate", "FR", "2020-01-01", "3", "70%", "fr", ""],
            ["", "No Id", "FR", "2020-01-01", "3", "70%", "fr", ""],
            ["A-6", "Ambiguous Percent", "FR", "2020-01-01", "3", "1.234,5%", "fr", ""],
            ["A-7", "Unknown Vertical", "FR", "2020-01-01", "3", "70%", "fr", "space"],
            ["A-8", '=HYPERLINK("http://x")', "FR", "=1+1", "3", "70%", "en", "retail"],
            ["A-9", "Fine", "DE", "2021-05-05", "4", "20%", "de", "healthcare; retail"],
        ],
        bom=True,
    )
    performance = write_csv(
        tmp_path / "performance.csv",
        [
            ["partner_id", "quarter", "revenue", "target", "deals_closed"],
            ["A-1", "2026Q3", "$1,200.50", "1,000", "3"],
            ["A-1", "2026-Q3", "1300", "1000", "3"],
            ["A-9", "2026Q5", "10", "10", "1"],
            ["A-9", "2026Q2", "ten", "10", "1"],
            ["Z-1", "2026Q3", "10", "10", "1"],
            ["A-9", "Q1 2026", "10", "", "1"],
        ],
    )
    result = run_batch(ruleset, options(tmp_path, roster=roster, performance=performance))
    assert result.summary["partners"] == {"rows_read": 11, "decided": 2, "rejected": 9}
    rejects = {
        (r["row"], r["column"]): r
        for r in read_csv(tmp_path / "out" / "rejects.csv")
        if r["source_file"].endswith("roster.csv")
    }
    assert rejects[("3", "joined_on")]["reason"].startswith("'31/12/2020' is not a date")
    assert rejects[("4", "certified_technical")]["reason"] == "'three' is not a whole number"
    assert rejects[("5", "partner_name")]["reason"] == "a value is required"
    assert "not one of the allowed values" in rejects[("6", "language")]["reason"]
    assert rejects[("7", "partner_id")]["reason"] == "duplicate partner_id (first on row 2)"
    assert rejects[("8", "partner_id")]["reason"] == "partner_id is missing"
    assert "ambiguous" in rejects[("9", "smb_share")]["reason"]
    assert "not one of the allowed values" in rejects[("10", "focus_verticals")]["reason"]
    assert rejects[("11", "joined_on")]["value"] == "'=1+1"  # never a formula in a spreadsheet
    history = {
        (r["row"], r["column"]): r["reason"]
        for r in read_csv(tmp_path / "out" / "rejects.csv")
        if r["source_file"].endswith("performance.csv")
    }
    assert history == {
        ("3", "quarter"): "2026Q3 appears twice for this partner (first on row 2)",
        ("4", "quarter"): "'2026Q5' is not a quarter; write it like 2026Q3",
        ("5", "revenue"): "'ten' is not a money amount",
        ("7", "target"): "a value is required",
        ("6", "partner_id"): "no partner with this partner_id in the roster",
    }
    decided = [
        json.loads(line)["partner_id"]
        for line in (tmp_path / "out" / "decisions.jsonl").read_text().splitlines()
    ]
    assert decided == ["A-1", "A-9"]


def test_rows_after_a_blank_line_keep_their_spreadsheet_numbers(ruleset, tmp_path):
    """A blank line is no record, but a spreadsheet shows it as a row: the rows
    after it are numbered as the spreadsheet numbers them."""
    roster = tmp_path / "roster.csv"
    roster.write_text(
        "partner_id,partner_name,country,language,joined_on,"
        + ",".join(
            c
            for c in HEADER
            if c not in ("partner_id", "partner_name", "country", "language", "joined_on")
        )
        + "\n"
        "A-1,Fine,FR,fr,2020-01-01\n\n"
        "A-2,Bad Date,FR,fr,31/12/2020\n",
        encoding="utf-8",
    )
    run_batch(ruleset, options(tmp_path, roster=roster, performance=None, without_history=True))
    rejects = read_csv(tmp_path / "out" / "rejects.csv")
    assert [(r["row"], r["partner_id"], r["column"]) for r in rejects] == [
        ("4", "A-2", "joined_on")
    ]


def test_jsonl_and_xlsx_rosters_decide_like_csv(ruleset, tmp_path):
    import openpyxl

    rows = list(csv.reader((EXAMPLES / "roster.csv").read_text(encoding="utf-8").splitlines()))
    header, body = rows[0], rows[1:]
    jsonl = tmp_path / "roster.jsonl"
    jsonl.write_text("".join(json.dumps(dict(zip(header, r))) + "\n" for r in body))
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(header)
    percent_columns = {i for i, name in enumerate(header) if name.endswith("share")}
    for r in body:
        cells = []
        for i, value in enumerate(r):
            if i in percent_columns and value.endswith("%"):
                cells.append(float(value[:-1]) / 100)
            elif value.isdigit():
                cells.append(int(value))
            else:
                cells.append(value)
        sheet.append(cells)
        for i in percent_columns:
            sheet.cell(row=sheet.max_row, column=i + 1).number_format = "0.00%"
    xlsx = tmp_path / "roster.xlsx"
    book.save(xlsx)
    run_batch(ruleset, options(tmp_path, "csv", db=tmp_path / "1.sqlite"))
    run_batch(ruleset, options(tmp_path, "jsonl", roster=jsonl, db=tmp_path / "2.sqlite"))
    run_batch(ruleset, options(tmp_path, "xlsx", roster=xlsx, db=tmp_path / "3.sqlite"))

    def decisions(name):
        # Rows are numbered per format (a JSON Lines file has no header row).
        return [
            {k: v for k, v in json.loads(line).items() if k != "row"}
            for line in (tmp_path / name / "decisions.jsonl").read_text().splitlines()
        ]

    assert decisions("jsonl") == decisions("csv")
    assert decisions("xlsx") == decisions("csv")


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_separated_files_decide_like_csv(ruleset, tmp_path, delimiter):
    """What Excel saves as CSV in many European locales (semicolons) or as
    text (tabs), with a value holding the delimiter quoted, as Excel does."""
    for name in ("roster.csv", "performance.csv"):
        with (tmp_path / name).open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle, delimiter=delimiter).writerows(_example_rows(name))
    run_batch(ruleset, options(tmp_path, "comma"))
    run_batch(
        ruleset,
        options(
            tmp_path,
            "other",
            roster=tmp_path / "roster.csv",
            performance=tmp_path / "performance.csv",
            db=tmp_path / "o.db",
        ),
    )
    assert (tmp_path / "comma" / "decisions.jsonl").read_bytes() == (
        tmp_path / "other" / "decisions.jsonl"
    ).read_bytes()
    assert [r["reason"] for r in read_csv(tmp_path / "comma" / "rejects.csv")] == [
        r["reason"] for r in read_csv(tmp_path / "other" / "rejects.csv")
    ]


def test_a_column_the_rules_read_may_appear_only_once(ruleset, tmp_path):
    """Two 'country' columns: which value to decide on would be a guess, so
    the file is refused before anything runs. Columns the rules do not read
    may repeat (CRM exports carry such)."""
    rows = [
        HEADER + ["country", "notes", "notes"],
        ["P-1", "A", "FR", "2020-01-01", "3", "10%", "fr", ""]
        + [""] * len(REST)
        + ["DE", "x", "y"],
    ]
    write_csv(tmp_path / "roster.csv", rows)
    with pytest.raises(
        DataError,
        match=r"roster.csv: column 'country' appears 2 times "
        rf"\(columns 3, {len(HEADER) + 1}\); keep one",
    ):
        run_batch(
            ruleset,
            options(
                tmp_path, roster=tmp_path / "roster.csv", performance=None, without_history=True
            ),
        )
    write_csv(tmp_path / "roster.csv", [r[: len(HEADER)] + r[len(HEADER) + 1 :] for r in rows])
    result = run_batch(
        ruleset,
        options(tmp_path, roster=tmp_path / "roster.csv", performance=None, without_history=True),
    )
    assert result.summary["partners"]["decided"] == 1
    history = _example_rows("performance.csv")
    write_csv(
        tmp_path / "performance.csv", [history[0] + ["revenue"]] + [r + ["1"] for r in history[1:]]
    )
    with pytest.raises(DataError, match="column 'revenue' appears 2 times"):
        run_batch(ruleset, options(tmp_path, performance=tmp_path / "performance.csv"))


def test_unreadable_json_lines_are_set_aside_and_the_rest_decided(ruleset, tmp_path):
    rows = list(csv.reader((EXAMPLES / "roster.csv").read_text(encoding="utf-8").splitlines()))
    lines = [json.dumps(dict(zip(rows[0], r))) for r in rows[1:6]]
    lines[1:1] = ['{"partner_id": "P-9", "partner_name": ', '["P-8", "a list"]']
    roster = tmp_path / "roster.jsonl"
    roster.write_text("\n".join(lines) + "\n", encoding="utf-8")
    history_lines = (EXAMPLES / "performance.csv").read_text(encoding="utf-8").splitlines()
    names = history_lines[0].split(",")
    history = [json.dumps(dict(zip(names, line.split(",")))) for line in history_lines[1:40]]
    history.insert(3, "not json at all")
    performance = tmp_path / "performance.jsonl"
    performance.write_text("\n".join(history) + "\n", encoding="utf-8")
    result = run_batch(ruleset, options(tmp_path, roster=roster, performance=performance))
    assert result.summary["partners"] == {"rows_read": 7, "decided": 5, "rejected": 2}
    rejects = [
        (r["source_file"], r["row"], r["value"][:12], r["reason"])
        for r in read_csv(tmp_path / "out" / "rejects.csv")
    ]
    assert (
        str(performance),
        "4",
        "not json at ",
        "not valid JSON (Expecting value, at character 1)",
    ) in rejects
    assert (
        str(roster),
        "2",
        '{"partner_id',
        "not valid JSON (Expecting value, at the end of the line)",
    ) in rejects
    assert (
        str(roster),
        "3",
        '["P-8", "a l',
        "not a JSON object ({...}); each line must hold one partner's fields",
    ) in rejects
    assert result.summary["inputs"]["performance"]["rows_read"] == 40


def _collector_settings(index: int) -> tuple:
    import gc

    return index, gc.get_threshold(), gc.get_freeze_count() > 0


@pytest.mark.parametrize("workers", [1, 2])
def test_runs_collect_cycles_less_often_and_restore_the_setting(workers):
    """The cycle collector runs every 50,000 allocations during a run, in the
    workers too (where what was there at the start is frozen); afterwards the
    process has its own setting back."""
    import gc

    from engine.run.parallel import GC_THRESHOLD, ordered_map

    before = gc.get_threshold()
    results = list(ordered_map(_collector_settings, [(i,) for i in range(6)], workers))
    assert [index for index, _, _ in results] == list(range(6))  # in order
    assert all(threshold == GC_THRESHOLD for _, threshold, _ in results)
    if workers > 1:
        assert all(frozen for _, _, frozen in results)
    assert gc.get_threshold() == before


def _failing_warm_up() -> None:
    raise ValueError("no engine today")


def test_a_worker_whose_warm_up_fails_still_takes_tasks():
    """A pool restarts a worker whose initializer raises, forever: warm-up
    errors are left for the first task to meet and report."""
    from engine.run.parallel import ordered_map

    results = list(
        ordered_map(_collector_settings, [(i,) for i in range(4)], 2, warm_up=_failing_warm_up)
    )
    assert [index for index, _, _ in results] == [0, 1, 2, 3]


class _CountedPickles:
    """Counts how often it is pickled (in the process that pickles it)."""

    pickled = 0

    def __init__(self, tag: str):
        self.tag = tag

    def __reduce__(self):
        type(self).pickled += 1
        return (_CountedPickles, (self.tag,))


def _tagged(shared: _CountedPickles, index: int) -> str:
    return f"{shared.tag}{index}"


@pytest.mark.parametrize("workers", [1, 2])
def test_shared_arguments_go_to_each_worker_once(workers):
    from engine.run.parallel import ordered_map

    _CountedPickles.pickled = 0
    results = list(
        ordered_map(_tagged, [(i,) for i in range(8)], workers, shared=(_CountedPickles("r"),))
    )
    assert results == [f"r{i}" for i in range(8)]
    assert _CountedPickles.pickled <= (workers if workers > 1 else 0)  # not once a task


def _example_rows(name: str) -> list[list[str]]:
    return list(csv.reader((EXAMPLES / name).read_text(encoding="utf-8").splitlines()))


def test_history_merged_in_roster_order_equals_history_staged(ruleset, tmp_path, monkeypatch):
    """A performance file in roster order is read alongside the roster; any
    other order is staged in SQLite. Both give byte-identical outputs, with
    unknown partners first, between and last, rows without a partner_id,
    history for set-aside roster rows, and partners without history."""
    roster = _example_rows("roster.csv")
    roster.insert(3, [roster[2][0]] + roster[2][1:])  # a repeated partner_id
    roster.insert(5, [" "] + roster[5][1:])  # no partner_id
    perf = _example_rows("performance.csv")
    header = perf[0]
    body = sorted(
        (r for r in perf[1:] if r[0] not in ("P-1004", "P-1099")),  # P-1004: no history
        key=lambda r: r[0],
    )
    body.insert(0, ["Z-0", "2026Q1", "1", "1", "1"])  # unknown, before everyone
    body.insert(9, ["Z-5", "2026Q1", "1", "1", "1"])  # unknown, inside a partner's rows
    body.insert(20, ["", "2026Q1", "1", "1", "1"])  # no partner_id
    body.append(["A-0", "2026Q2", "1", "1", "1"])  # unknown, after everyone
    body[12] = body[12][:2] + ["1", "234.50"] + body[12][3:]  # revenue 1,234.50 unquoted
    roster[8] = roster[8][:1] + ["Contoso", " Inc"] + roster[8][2:]  # a name with a comma
    roster_file = write_csv(tmp_path / "roster.csv", roster)
    perf_file = write_csv(tmp_path / "performance.csv", [header] + body)
    merged = run_batch(
        ruleset,
        options(
            tmp_path, "merged", roster=roster_file, performance=perf_file, db=tmp_path / "m.sqlite"
        ),
    )
    assert merged.summary["run"]["history_join"] == "merged"
    original = performance.HistoryStore.load
    monkeypatch.setattr(
        performance.HistoryStore, "load", lambda self, path, roster=None: original(self, path)
    )
    staged = run_batch(
        ruleset,
        options(
            tmp_path, "staged", roster=roster_file, performance=perf_file, db=tmp_path / "s.sqlite"
        ),
    )
    assert staged.summary["run"]["history_join"] == "staged"
    assert outputs(tmp_path / "merged") == outputs(tmp_path / "staged")
    reasons = [
        (r["row"], r["partner_id"], r["reason"])
        for r in read_csv(tmp_path / "merged" / "rejects.csv")
        if r["source_file"].endswith("performance.csv")
    ]
    assert ("22", "", "partner_id is missing") in reasons
    unknown = [(row, pid) for row, pid, reason in reasons if reason.startswith("no partner")]
    assert [pid for _, pid in unknown] == ["Z-0", "Z-5", "A-0"]  # not the Contoso row's
    assert (
        "14",
        body[12][0],
        "6 values for 5 columns: an unquoted comma in '1,234.50'? A value holding a comma "
        "must be in double quotes",
    ) in reasons
    roster_rejects = [
        (r["row"], r["partner_id"], r["value"], r["reason"])
        for r in read_csv(tmp_path / "merged" / "rejects.csv")
        if r["source_file"].endswith("roster.csv")
    ]
    assert (
        "9",
        roster[8][0],
        "Contoso, Inc",
        "22 values for 21 columns: an unquoted comma in 'Contoso, Inc'? A value holding a "
        "comma must be in double quotes",
    ) in roster_rejects
    assert merged.summary["inputs"]["performance"]["rows_read"] == len(body)


def test_history_out_of_roster_order_is_staged_and_reported_once(ruleset, tmp_path):
    # The example's last history row (P-1005, a bad quarter) is out of roster order.
    perf = _example_rows("performance.csv")
    header, body = perf[0], [["", "2026Q1", "1", "1", "1"]] + perf[1:]
    runs = {}
    for name, rows in (("staged", body), ("merged", sorted(body, key=lambda r: r[0]))):
        perf_file = write_csv(tmp_path / f"{name}.csv", [header] + rows)
        runs[name] = run_batch(
            ruleset, options(tmp_path, name, performance=perf_file, db=tmp_path / f"{name}.sqlite")
        )
        assert runs[name].summary["run"]["history_join"] == name
        missing = [
            r["row"]
            for r in read_csv(tmp_path / name / "rejects.csv")
            if r["reason"] == "partner_id is missing"
        ]
        assert missing == ["2"]  # reported once, though the order was checked first
    assert (tmp_path / "staged" / "decisions.jsonl").read_bytes() == (
        tmp_path / "merged" / "decisions.jsonl"
    ).read_bytes()


def test_partner_id_runs_number_rows_like_the_reader(tmp_path):
    """Runs of one partner_id, numbered as the row reader numbers rows: a
    quoted value over two lines is one row, a blank line is no row but takes
    a number, a short row has no partner_id."""
    from engine.data.readers import partner_id_runs, read_columns

    path = tmp_path / "p.csv"
    path.write_text(
        'quarter,partner_id,revenue\n2026Q1,A,1\n"2026\nQ2",A,2\n\n'
        "2026Q1,B,3\n2026Q2\n2026Q3,,4\n2026Q4,B,5\n",
        encoding="utf-8",
    )
    assert list(partner_id_runs(path)) == [
        (2, "A", 2),
        (5, "B", 1),
        (6, None, 1),
        (7, "", 1),
        (8, "B", 1),
    ]
    rows = [(number, values[0]) for number, values in read_columns(path, ["partner_id"])]
    assert rows == [(2, "A"), (3, "A"), (5, "B"), (6, None), (7, ""), (8, "B")]


def test_a_performance_file_changed_while_merged_is_a_clear_error():
    positions = {"A": 0, "B": 1}
    rows = iter([(2, ("A", "2026Q1", "1")), (3, ("B", "2026Q1", "1")), (4, ("A", "2026Q2", "1"))])
    merge = performance._Merge(rows, positions, "perf.csv")
    with pytest.raises(DataError, match="perf.csv changed while it was read"):
        merge.rows_for(["A", "B"], lambda rows: None)
    rows = iter(
        [
            (2, ("A", "2026Q1", "1")),
            (3, ("Z", "2026Q1", "1")),
            (4, ("A", "2026Q2", "2")),
            (5, ("B", "2026Q1", "3")),
        ]
    )
    merge = performance._Merge(rows, positions, "perf.csv")
    aside = []
    assert merge.rows_for(["A", "B"], aside.extend) == {
        "A": [(2, "2026Q1", ("1",)), (4, "2026Q2", ("2",))],
        "B": [(5, "2026Q1", ("3",))],
    }
    assert aside == [("Z", 3)]
    with pytest.raises(DataError, match="roster changed"):
        performance._Merge(iter([]), positions, "perf.csv").rows_for(["B", "A"], lambda rows: None)


def test_changes_since_the_previous_run(tmp_path, rules_copy):
    rules = rules_copy()
    run_batch(load_rules(rules), options(tmp_path))
    programs = rules / "programs.yaml"
    programs.write_text(
        programs.read_text().replace(
            "        - certified_technical >= 2\n", "        - certified_technical >= 3\n"
        )
    )
    roster = write_csv(
        tmp_path / "roster.csv",
        [
            r
            for r in csv.reader((EXAMPLES / "roster.csv").read_text(encoding="utf-8").splitlines())
            if r[0] != "P-1032"
        ]
        + [["P-2000", "Newcomer Ltd", "FR", "fr", "", "", "2026-09-01"]],
    )
    # Same roster source: the changed file in place of the original one.
    shutil.copy(roster, tmp_path / "roster-in-place.csv")
    first = options(tmp_path, roster=tmp_path / "roster-in-place.csv")
    ruleset = load_rules(rules)
    run_batch(ruleset, first)
    run_batch(ruleset, first)  # nothing changed since
    assert read_csv(tmp_path / "out" / "changes.csv") == []
    (tmp_path / "roster-in-place.csv").write_text((EXAMPLES / "roster.csv").read_text())
    programs.write_text(
        programs.read_text().replace(
            "        - certified_technical >= 3\n", "        - certified_technical >= 2\n"
        )
    )
    result = run_batch(load_rules(rules), first)
    changes = {
        (c["partner_id"], c["change"], c["subject"]): c
        for c in read_csv(tmp_path / "out" / "changes.csv")
    }
    assert changes[("P-1018", "group_change", "tier")]["direction"] == "up"
    assert changes[("P-1018", "enrolled", "select")]["after"] == "select"
    assert ("P-1032", "new_partner", "") in changes
    assert ("P-2000", "removed_partner", "") in changes
    assert result.summary["changes"]["previous_run"] == 3


def test_a_partner_back_after_a_missing_export_is_returned_not_new(ruleset, tmp_path):
    """A partner left out of one run's roster and back in the next is compared
    with the last run that decided it: not new, and not welcomed again."""
    rows = list(csv.reader((EXAMPLES / "roster.csv").read_text(encoding="utf-8").splitlines()))
    newcomer = ["P-2000", *rows[3][1:]]  # P-1003's values under a new id
    roster = tmp_path / "roster.csv"
    run = options(tmp_path, roster=roster)
    write_csv(roster, rows)
    run_batch(ruleset, run)
    write_csv(roster, [r for r in rows if r[0] not in ("P-1001", "P-1002")])
    run_batch(ruleset, run)
    assert {(c["partner_id"], c["change"]) for c in read_csv(tmp_path / "out" / "changes.csv")} == {
        ("P-1001", "removed_partner"),
        ("P-1002", "removed_partner"),
    }
    write_csv(roster, rows + [newcomer])
    result = run_batch(ruleset, run)
    changes = [
        (c["partner_id"], c["change"], c["before"])
        for c in read_csv(tmp_path / "out" / "changes.csv")
    ]
    assert changes == [
        ("P-1001", "returned_partner", "1"),
        ("P-1002", "returned_partner", "1"),
        ("P-2000", "new_partner", ""),
    ]
    assert result.summary["changes"]["counts"]["returned_partner"] == 2
    assert result.summary["changes"]["previous_run"] == 2
    write_letters(ruleset, LetterOptions(tmp_path / "out", ROOT / "templates", ("text",)))
    kinds = {
        r["partner_id"]: r["kind"] for r in read_csv(tmp_path / "out" / "letters" / "index.csv")
    }
    assert kinds["P-2000"] == "welcome"
    assert kinds["P-1001"] != "welcome" and kinds["P-1002"] != "welcome"


@pytest.mark.parametrize(
    "content, reason", [("", "the file is empty"), (",".join(HEADER) + "\n", "no partner rows")]
)
def test_a_roster_without_partners_stops_the_run(ruleset, tmp_path, content, reason):
    """An export that came out empty would list every partner as removed (and
    the next run would compare with it): it is refused, and nothing changes."""
    run_batch(ruleset, options(tmp_path))
    before = outputs(tmp_path / "out")
    empty = tmp_path / "empty.csv"
    empty.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=reason):
        run_batch(ruleset, options(tmp_path, roster=empty))
    assert outputs(tmp_path / "out") == before
    history = RunHistory(tmp_path / "runs.sqlite")
    assert [r.id for r in history.runs()] == [1]
    history.close()


def test_a_run_that_decides_nobody_writes_only_its_rejects(ruleset, tmp_path):
    """Every row rejected (an export whose dates all came out day first, say):
    rejects.csv says why, and nothing else is written or recorded."""
    run_batch(ruleset, options(tmp_path))
    before = outputs(tmp_path / "out")
    roster = write_csv(
        tmp_path / "roster.csv",
        [HEADER, ["A-1", "A", "FR", "31/12/2020"], ["A-2", "B", "DE", "2020-13-01"]],
    )
    with pytest.raises(
        DataError, match="no partner could be decided, all 2 rows were rejected; see .*rejects.csv"
    ):
        run_batch(ruleset, options(tmp_path, roster=roster, performance=None, without_history=True))
    assert outputs(tmp_path / "out") == before  # the current run is as it was
    stopped = tmp_path / "out" / "stopped-run" / "rejects.csv"
    assert [r["partner_id"] for r in read_csv(stopped)] == ["A-1", "A-2"]
    history = RunHistory(tmp_path / "runs.sqlite")
    assert [r.id for r in history.runs()] == [1]
    history.close()


def test_history_lists_and_shows_runs(cli_run, tmp_path):
    db = str(tmp_path / "h.sqlite")
    for _ in range(2):
        result = cli_run(
            "run",
            "--as-of",
            "2026-11-26",
            "--out",
            str(tmp_path / "o"),
            "--db",
            db,
            "--workers",
            "1",
        )
        assert result.exit_code == 0, result.stderr
    assert "Changes since run 1: none." in result.output
    listing = cli_run("history", "--db", db)
    assert listing.exit_code == 0
    heading, *lines = listing.output.strip().splitlines()
    assert heading.split() == "run finished (UTC) as of rules roster read decided rejected".split()
    assert len(lines) == 2 and lines[1].split()[0] == "2" and "roster.csv" in lines[1]
    shown = cli_run("history", "2", "--db", db)
    assert "partners:    34 read, 32 decided, 2 rejected" in shown.output
    assert "programs: Elite Partner 2, Premier Partner 8," in shown.output  # names, not ids
    assert cli_run("history", "9", "--db", db).exit_code == 2


def test_history_keep_prunes_old_runs_of_each_roster(cli_run, tmp_path):
    db = str(tmp_path / "h.sqlite")
    other = tmp_path / "other.csv"
    shutil.copy(EXAMPLES / "roster.csv", other)
    for roster in (
        EXAMPLES / "roster.csv",
        EXAMPLES / "roster.csv",
        other,
        EXAMPLES / "roster.csv",
    ):
        result = cli_run(
            "run",
            "--as-of",
            "2026-11-26",
            "--roster",
            str(roster),
            "--performance",
            str(EXAMPLES / "performance.csv"),
            "--out",
            str(tmp_path / "o"),
            "--db",
            db,
            "--workers",
            "1",
            "-q",
            "--no-letters",
        )
        assert result.exit_code == 0, result.stderr
    assert cli_run("history", "2", "--keep", "1", "--db", db).exit_code == 2
    # The reference rules remember (grace, protection): their runs stay unless asked.
    refused = cli_run("history", "--keep", "1", "--db", db)
    assert refused.exit_code == 2 and "remember partners' past" in refused.stderr
    assert [r.id for r in RunHistory(tmp_path / "h.sqlite").runs()] == [1, 2, 3, 4]
    result = cli_run("history", "--keep", "1", "--forget-memory", "--db", db)
    assert result.exit_code == 0, result.stderr
    assert result.output.startswith(
        "Deleted 2 runs (1, 2), their folders and their 64 partner decisions;"
    )
    history = RunHistory(tmp_path / "h.sqlite")
    assert [r.id for r in history.runs()] == [3, 4]
    kept = sorted(p.name.split("-")[1] for p in (tmp_path / "o" / "runs").iterdir())
    assert kept == ["run3", "run4"]
    assert history.snapshots(1, ["P-1001"]) == {}
    history.close()
    result = cli_run("history", "--keep", "1", "--forget-memory", "--db", db)
    assert result.output.startswith("Nothing to delete")
    result = cli_run(
        "run",
        "--as-of",
        "2026-11-26",
        "--roster",
        str(EXAMPLES / "roster.csv"),
        "--performance",
        str(EXAMPLES / "performance.csv"),
        "--out",
        str(tmp_path / "o"),
        "--db",
        db,
        "--workers",
        "1",
        "--no-letters",
    )
    assert (
        "Run 5 as of 2026-11-26" in result.output and "Changes since run 4: none." in result.output
    )


def test_strict_fails_and_keeps_previous_outputs(cli_run, tmp_path):
    out, db = tmp_path / "o", str(tmp_path / "h.sqlite")
    first = cli_run("run", "--as-of", "2026-11-26", "--out", str(out), "--db", db, "-q")
    assert first.exit_code == 0 and first.output == ""
    before = outputs(out)
    result = cli_run("run", "--as-of", "2026-11-26", "--out", str(out), "--db", db, "--strict")
    assert result.exit_code == 1
    assert "--strict: 2 roster rows and 2 history rows rejected" in result.stderr
    assert str(out / "stopped-run" / "rejects.csv") in result.stderr
    assert outputs(out) == before
    assert len(read_csv(out / "stopped-run" / "rejects.csv")) == 4
    assert len(RunHistory(tmp_path / "h.sqlite").runs()) == 1


def test_interrupted_run_leaves_previous_outputs_and_history(ruleset, tmp_path, monkeypatch):
    run_batch(ruleset, options(tmp_path))
    before = outputs(tmp_path / "out")
    calls = []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    real = driver.decide_chunk
    monkeypatch.setattr(driver, "decide_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_batch(ruleset, options(tmp_path, chunk_size=4))
    assert outputs(tmp_path / "out") == before  # old outputs intact
    assert not list((tmp_path / "out").rglob("*.partial"))  # no partial files
    assert len(list((tmp_path / "out" / "runs").iterdir())) == 1
    assert len(RunHistory(tmp_path / "runs.sqlite").runs()) == 1


def test_killed_run_leaves_consistent_outputs_and_history(tmp_path):
    """SIGKILL in the middle of a large run: outputs complete or absent, history intact."""
    data = tmp_path / "data"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "generate.py"),
            "--partners",
            "6000",
            "--out",
            str(data),
        ],
        check=True,
        capture_output=True,
    )
    db, out = tmp_path / "runs.sqlite", tmp_path / "out"
    command = [
        sys.executable,
        "-c",
        "from cli import main; main()",
        "run",
        "--roster",
        str(data / "roster.csv"),
        "--performance",
        str(data / "performance.csv"),
        "--as-of",
        "2026-11-26",
        "--out",
        str(out),
        "--db",
        str(db),
        "--workers",
        "1",
        "--quiet",
    ]
    temp = tmp_path / "tmp"  # where the runs stage their history
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    subprocess.run(command, cwd=ROOT, check=True, env=env)
    complete = outputs(out)
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob("runs/.*.partial")):
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert outputs(out) == complete  # the previous complete outputs, untouched
    connection = sqlite3.connect(db)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    assert connection.execute("SELECT COUNT(DISTINCT run_id) FROM decisions").fetchone()[0] == 1
    connection.close()
    abandoned = list(temp.glob("eligibility-history-*"))
    assert [p.name.split("-")[2] for p in abandoned] == [str(process.pid)]
    subprocess.run(command, cwd=ROOT, check=True, env=env)  # the next run cleans up and succeeds
    assert not list(out.rglob("*.partial"))
    assert not list(temp.iterdir())  # the killed run's staging folder too


def test_ctrl_c_stops_a_run_with_a_message_and_keeps_nothing_half_written(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) in
    the middle of a run with workers: one line saying so, exit code 130, no
    tracebacks from the workers, no output and no run recorded. The run is
    started with Ctrl-C's default action: a shell that starts the tests in
    the background (`.ci/run &`) makes its children ignore SIGINT, and so
    would this run."""
    data = tmp_path / "data"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "generate.py"),
            "--partners",
            "6000",
            "--out",
            str(data),
        ],
        check=True,
        capture_output=True,
    )
    db, out = tmp_path / "runs.sqlite", tmp_path / "out"
    temp = tmp_path / "tmp"
    temp.mkdir()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from cli import main; main()",
            "run",
            "--roster",
            str(data / "roster.csv"),
            "--performance",
            str(data / "performance.csv"),
            "--as-of",
            "2026-11-26",
            "--out",
            str(out),
            "--db",
            str(db),
            "--workers",
            "2",
            "--quiet",
        ],
        cwd=ROOT,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob("runs/.*.partial")):
        time.sleep(0.05)
    time.sleep(0.5)  # deciding, in the workers
    assert process.poll() is None, "the run ended before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted: nothing half-written was kept" in stderr
    assert "Traceback" not in stderr
    assert not (out / "current").exists() and not list((out / "runs").iterdir())
    assert not list(temp.iterdir())  # the history staging folder too
    connection = sqlite3.connect(db)
    assert connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    connection.close()


def test_run_command_prints_a_summary(cli_run, tmp_path):
    result = cli_run(
        "run",
        "--as-of",
        "2026-11-26",
        "--out",
        str(tmp_path / "o"),
        "--db",
        str(tmp_path / "h.sqlite"),
        "--workers",
        "2",
    )
    assert result.exit_code == 0, result.stderr
    assert result.output.startswith(
        "Run 1 as of 2026-11-26: 34 rows read, 32 partners decided, "
        "2 rejected (and 2 history rows)."
    )
    assert result.stderr == ""  # no progress bar when stderr is not a terminal


def test_missing_roster_is_a_usage_error(cli_run, tmp_path):
    result = cli_run(
        "run",
        "--roster",
        str(tmp_path / "none.csv"),
        "--out",
        str(tmp_path / "o"),
        "--db",
        str(tmp_path / "h.sqlite"),
    )
    assert result.exit_code == 2
    assert "file not found" in result.stderr


def test_progress_line_shows_partners_rate_and_time_left(capsys):
    from cli import _ProgressLine
    from engine.run.driver import Progress

    line = _ProgressLine()
    line.update(Progress(count=5_000, done=250, total=1_000, elapsed=2.0))
    line.close()
    err = capsys.readouterr().err
    assert "5,000 partners" in err and "2,500/s" in err
    assert "25.0%" in err and "about 0:06 left" in err
    letters = _ProgressLine()
    letters.update(Progress(count=300, done=400, total=1_000, elapsed=1.0, what="letters"))
    letters.close()
    err = capsys.readouterr().err
    assert "300 letters" in err and "300/s" in err and "40.0%" in err


def test_a_busy_run_history_is_a_clear_error(ruleset, tmp_path, monkeypatch):
    from engine.data import run_history
    from engine.errors import DataError

    RunHistory(tmp_path / "runs.sqlite").close()
    monkeypatch.setattr(run_history, "LOCK_TIMEOUT_SECONDS", 0.1)
    other = sqlite3.connect(tmp_path / "runs.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another run is writing
    try:
        with pytest.raises(DataError, match="the run history is busy"):
            run_batch(ruleset, options(tmp_path))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert not list((tmp_path / "out").rglob("*.partial"))


def _reference_failed_leaves(ruleset, condition, values, as_of, negate=False):
    """The failing leaves, interpreted plainly: the reference for the closures
    that batch runs build (requirements.unmet, worded by requirements.brief)."""
    from engine.evaluate.requirements import compare_holds
    from engine.ruleset.conditions import AllOf, AnyOf, Dated, IsMissing, NotOf, describe
    from engine.ruleset.value_types import format_value

    if isinstance(condition, NotOf):
        return _reference_failed_leaves(ruleset, condition.item, values, as_of, not negate)
    if isinstance(condition, Dated):
        if not condition.in_force(as_of):
            return [f"must not hold: {describe(condition)}"] if negate else []
        inner = _reference_failed_leaves(ruleset, condition.item, values, as_of, negate)
        return [f"{describe(condition).split(':')[0]}: {line}" for line in inner]
    if isinstance(condition, (AllOf, AnyOf)):
        parts = [
            _reference_failed_leaves(ruleset, item, values, as_of, negate)
            for item in condition.items
        ]
        if isinstance(condition, AllOf) != negate:
            return [line for part in parts for line in part]
        if any(not part for part in parts):
            return []
        return ["none of: " + "; ".join(line for part in parts for line in part)]
    value = values.get(condition.name)
    holds = (
        (value is None) != condition.negated
        if isinstance(condition, IsMissing)
        else compare_holds(condition, value)
    )
    if holds != negate:
        return []
    if negate:
        return [f"must not hold: {condition.text}"]
    return [f"{condition.text}: has {format_value(ruleset.type_of(condition.name), value)}"]


def test_reasons_for_missed_programs_match_a_plain_interpreter(ruleset, example_partners):
    import datetime as dt

    from engine.evaluate.requirements import brief, unmet
    from engine.ruleset.conditions import AllOf, AnyOf, Dated, NotOf, parse_condition_text
    from engine.ruleset.yaml_source import Loc

    loc = Loc("test", 1, 1)
    leaf = [
        parse_condition_text(text, loc)
        for text in (
            "certified_technical >= 10",
            "standing == good",
            "revenue_4q >= $600,000",
            "focus_verticals contains healthcare",
            "country in [US, DE]",
        )
    ]
    conditions = [p.when for p in ruleset.programs if p.when is not None] + [
        NotOf(AnyOf((leaf[0], leaf[1]), loc), loc),
        NotOf(AllOf((leaf[2], NotOf(leaf[3], loc)), loc), loc),
        AnyOf((Dated(leaf[0], dt.date(2027, 1, 1), None, loc), leaf[4]), loc),
        NotOf(Dated(AllOf((leaf[1], leaf[4]), loc), None, dt.date(2026, 12, 31), loc), loc),
    ]
    evaluator = Evaluator(ruleset)
    compiled = [unmet(ruleset, c) for c in conditions]  # they remember failed values
    compared = 0
    for as_of in (AS_OF, dt.date(2027, 2, 1)):
        for partner in example_partners:
            values = evaluator.values(partner, as_of)
            for condition, failed in zip(conditions, compiled):
                expected = _reference_failed_leaves(ruleset, condition, values, as_of)
                assert brief(failed(values, as_of)) == expected
                compared += bool(expected)
    assert compared > 100  # most partners miss something
    unhashable = {"focus_verticals": ["retail"]}  # a list, not the parser's tuple
    expected = ["focus_verticals contains healthcare: has [retail]"]
    assert _reference_failed_leaves(ruleset, leaf[3], unhashable, AS_OF) == expected
    assert brief(unmet(ruleset, leaf[3])(unhashable, AS_OF)) == expected


def test_a_run_without_its_history_stops_before_deciding(ruleset, tmp_path, cli_run):
    """Rules that read quarterly figures, run without a history file: every
    revenue-based tier would be lost silently. The run stops unless told
    that it is on purpose."""
    with pytest.raises(UsageError, match=r"no performance history given.*--no-performance"):
        run_batch(ruleset, options(tmp_path, performance=None))
    assert not (tmp_path / "out" / "decisions.jsonl").exists()
    assert not RunHistory(tmp_path / "runs.sqlite").runs()
    run = ("run", "--roster", str(EXAMPLES / "roster.csv"), "--as-of", "2026-11-26")
    where = ("--out", str(tmp_path / "o"), "--db", str(tmp_path / "h.sqlite"), "-q")
    result = cli_run(*run, *where)
    assert result.exit_code == 2 and "--no-performance" in result.stderr
    result = cli_run(*run, "--no-performance", *where, "--no-letters")
    assert result.exit_code == 0, result.stderr
    text = (tmp_path / "o" / "decisions.jsonl").read_text(encoding="utf-8")
    decided = [json.loads(line) for line in text.splitlines()]
    assert len(decided) == 32
    assert all(d["metrics"]["revenue_4q"] is None for d in decided)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        # A figure's column misspelt: the closest header is named ("Revenue"
        # is revenue, as case, spaces and hyphens do not count).
        (
            "partner_id,quarter,Revenue,targets,deals",
            r"lacks 2 columns the rules read: target \(the file has 'targets'\), deals_closed",
        ),
        # The roster given as the history file.
        (None, r"lacks 4 columns the rules read: quarter, revenue, target, deals_closed"),
    ],
)
def test_a_history_file_without_a_figure_column_stops_before_deciding(
    ruleset, tmp_path, header, message
):
    """Without the column, every row would be rejected (a required figure)
    or decided on the figure's default (deals_closed: 0)."""
    if header is None:
        performance = EXAMPLES / "roster.csv"
    else:
        lines = (EXAMPLES / "performance.csv").read_text(encoding="utf-8").splitlines(True)
        performance = tmp_path / "performance.csv"
        performance.write_text(header + "\n" + "".join(lines[1:]), encoding="utf-8")
    with pytest.raises(DataError, match=message):
        run_batch(ruleset, options(tmp_path, performance=performance))
    assert not (tmp_path / "out" / "decisions.jsonl").exists()
    assert not RunHistory(tmp_path / "runs.sqlite").runs()


def test_a_run_before_the_quarters_figures_are_in_stops(ruleset, tmp_path, cli_run):
    """As of 2027-01-15, 2026Q4 has ended but the example history stops at
    2026Q3: counted as not reported, it would turn partners at risk into good
    ones. The run stops, naming the quarter, the share and the ways out, and
    leaves nothing behind; deciding --through 2026Q3 works."""
    message = (
        r"2026Q4 ended before 2027-01-15, but only 0 of the 31 partners that reported in the "
        r"four quarters before have figures for it \(0%; at least 50% expected\)\. Load "
        r"2026Q4's figures, or decide on the quarters that are complete with --through "
        r"2026Q3; --min-quarter-share 0 decides anyway"
    )
    with pytest.raises(DataError, match=message):
        run_batch(ruleset, options(tmp_path, as_of=dt.date(2027, 1, 15)))
    assert not (tmp_path / "out" / "decisions.jsonl").exists()
    assert not RunHistory(tmp_path / "runs.sqlite").runs()
    where = ("--out", str(tmp_path / "o"), "--db", str(tmp_path / "h.sqlite"), "-q")
    result = cli_run("run", "--as-of", "2027-01-15", *where, "--no-letters")
    assert result.exit_code == 1 and "2026Q4 ended before 2027-01-15" in result.stderr
    result = cli_run("run", "--as-of", "2027-01-15", "--min-quarter-share", "0", *where)
    assert result.exit_code == 0, result.stderr


def test_through_reads_the_figures_up_to_a_quarter_and_dates_up_to_the_as_of_day(
    ruleset, tmp_path, cli_run
):
    """--through 2026Q3 as of 2027-01-15: every history metric is what it is as
    of 2026-09-30 (the end of 2026Q3), while tenure counts to 2027-01-15."""
    late = run_batch(
        ruleset, options(tmp_path, "late", as_of=dt.date(2027, 1, 15), through=Quarter(2026, 3))
    )
    assert late.summary["figures_through"] == "2026Q3"
    early = run_batch(ruleset, options(tmp_path, "early", as_of=dt.date(2026, 9, 30)))
    assert early.summary["figures_through"] == "2026Q3"
    history_metrics = [
        "attainment_4q", "quarters_missed", "revenue_4q", "deals_4q", "revenue_growth"
    ]  # fmt: skip
    read = {}
    for name in ("late", "early"):
        lines = (tmp_path / name / "decisions.jsonl").read_text(encoding="utf-8").splitlines()
        read[name] = {r["partner_id"]: r["metrics"] for r in map(json.loads, lines)}
    assert read["late"].keys() == read["early"].keys()
    for partner_id, metrics in read["late"].items():
        before = read["early"][partner_id]
        assert {m: metrics[m] for m in history_metrics} == {m: before[m] for m in history_metrics}
        assert metrics["tenure_quarters"] - before["tenure_quarters"] in (1, 2)  # 3.5 months
    where = ("--out", str(tmp_path / "o"), "--db", str(tmp_path / "h.sqlite"), "--no-letters")
    result = cli_run("run", "--as-of", "2027-01-15", "--through", "2026-Q3", *where)
    assert result.exit_code == 0, result.stderr
    assert "Run 1 as of 2027-01-15, figures through 2026Q3:" in result.output
    result = cli_run("run", "--as-of", "2027-01-15", "--through", "2027Q1", *where)
    assert result.exit_code == 2
    assert "2027Q1 has not ended on 2027-01-15, so its figures cannot" in result.stderr
    result = cli_run("run", "--through", "Q5", *where)
    assert result.exit_code == 2 and "'Q5' is not a quarter; write it like 2026Q3" in result.stderr
    explained = cli_run("explain", "P-1001", "--as-of", "2027-01-15", "--through", "2026Q3")
    assert "as of 2027-01-15, figures through 2026Q3" in explained.output
    result = cli_run("diff", "--base", "rules", "--as-of", "2027-01-15", "--through", "2026Q3")
    assert result.exit_code == 0, result.stderr


def test_a_quarter_most_partners_reported_is_decided(ruleset, tmp_path):
    """Figures in for 60% of the partners that reported before: the quarter
    counts, and a partner without them has it as not reported."""
    lines = (EXAMPLES / "performance.csv").read_text(encoding="utf-8").splitlines(True)
    reporting = sorted({line.split(",")[0] for line in lines[1:] if ",2026Q3," in line})
    late = reporting[: len(reporting) * 6 // 10]
    extra = [f"{pid},2026Q4,1000,1000,1\n" for pid in late]
    performance = tmp_path / "performance.csv"
    performance.write_text("".join(lines) + "".join(extra), encoding="utf-8")
    result = run_batch(
        ruleset, options(tmp_path, performance=performance, as_of=dt.date(2027, 1, 15))
    )
    assert result.summary["partners"]["decided"] == 32
    with pytest.raises(DataError, match="at least 70% expected"):
        run_batch(
            ruleset,
            options(
                tmp_path,
                "strict",
                performance=performance,
                as_of=dt.date(2027, 1, 15),
                min_quarter_share=0.7,
            ),
        )


def test_an_xlsx_history_without_a_figure_column_stops_before_deciding(ruleset, tmp_path):
    import openpyxl

    book = openpyxl.Workbook()
    for row in _example_rows("performance.csv"):
        book.active.append([cell for index, cell in enumerate(row) if index != 3])  # no target
    book.save(tmp_path / "performance.xlsx")
    with pytest.raises(DataError, match=r"lacks 1 column the rules read: target;"):
        run_batch(ruleset, options(tmp_path, performance=tmp_path / "performance.xlsx"))
    assert not RunHistory(tmp_path / "runs.sqlite").runs()


def test_enrollments_and_counts_agree_with_the_decisions_whatever_the_chunks(ruleset, tmp_path):
    """The workers write each chunk's part of decisions.jsonl, enrollments.csv,
    the run history and the summary's counts; the main process only puts
    them together: with chunks of 1, 7 and 500 rows, every part agrees
    with decisions.jsonl, and a partner id like a formula is made safe."""
    source = (EXAMPLES / "roster.csv").read_text(encoding="utf-8")
    roster = tmp_path / "roster.csv"
    roster.write_text(source.replace("\nP-1001,", "\n=P-1001,", 1), encoding="utf-8")
    programs = {p.id: p for p in ruleset.programs}
    found = []
    for size in (1, 7, 500):
        out = tmp_path / f"out{size}"
        run_batch(ruleset, options(tmp_path, f"out{size}", roster=roster, chunk_size=size))
        lines = (out / "decisions.jsonl").read_text(encoding="utf-8").splitlines()
        decisions = [json.loads(line) for line in lines]
        expected = [
            {
                "partner_id": ("'" + d["partner_id"])
                if d["partner_id"][0] == "="
                else d["partner_id"],
                "program": pid,
                "program_name": programs[pid].name,
                "group": programs[pid].group or "",
                "kept_by": d["kept"].get(pid, {}).get("how", ""),
                "kept_until": d["kept"].get(pid, {}).get("until", ""),
            }
            for d in decisions
            for pid in d["programs"]
        ]
        assert read_csv(out / "enrollments.csv") == expected
        assert any(row["partner_id"] == "'=P-1001" for row in expected)
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        assert summary["partners"]["decided"] == len(decisions)
        assert summary["programs"] == {
            pid: sum(pid in d["programs"] for d in decisions) for pid in programs
        }
        for table, counts in summary["classifications"].items():
            assert counts == dict(Counter(d["classifications"][table] for d in decisions))
        assert summary["engagement_models"] == dict(
            Counter(d["engagement_model"] for d in decisions)
        )
        with contextlib.closing(sqlite3.connect(tmp_path / "runs.sqlite")) as db:
            stored = db.execute(
                "SELECT partner_id, programs FROM decisions WHERE run_id = "
                "(SELECT MAX(id) FROM runs) ORDER BY partner_id"
            ).fetchall()
        assert stored == sorted(
            (d["partner_id"], json.dumps(d["programs"], separators=(",", ":"))) for d in decisions
        )
        found.append([(out / name).read_bytes() for name in ("decisions.jsonl", "enrollments.csv")])
    assert found[0] == found[1] == found[2]
