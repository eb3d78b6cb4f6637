"""Decisions with memory: grace, status protection and renewal, the memory
functions, earlier enrollments from a CSV file, and the run history they
are read from (engine.ruleset.memory, engine.data.memory)."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import sqlite3
import textwrap
from pathlib import Path

import pytest

from conftest import AS_OF, EXAMPLES, ROOT, load_example_partners
from engine.data.memory import EarlierEnrollments, MemorySource
from engine.data.run_history import RunHistory
from engine.errors import DataError, RuleSetError
from engine.evaluate.decide import Evaluator
from engine.evaluate.explain import explain
from engine.report.html import build_report
from engine.ruleset.loader import load_rules
from engine.ruleset.memory import (
    GRACE,
    PROTECTION,
    RENEWAL,
    Enrolled,
    Keep,
    Keeping,
    Memory,
    Period,
    Recalled,
    add_months,
    keep_offer,
)
from engine.run.driver import RunLetters, RunOptions, run_batch
from engine.run.impact import compare

D = dt.date


# --- periods and the rules of keeping ----------------------------------------


def test_periods_read_as_written_and_add_like_a_spreadsheet():
    assert Period.parse("1 quarter") == Period(1, "quarter")
    assert Period.parse("90 Days") == Period(90, "day")
    assert str(Period.parse("2 years")) == "2 years"
    for bad in ("one quarter", "0 months", "1 fortnight", "", "-1 month", True):
        with pytest.raises(ValueError, match="write a whole number and a unit"):
            Period.parse(bad)
    assert Period(1, "quarter").after(D(2026, 9, 30)) == D(2026, 12, 31)  # month end stays one
    assert add_months(D(2026, 1, 31), 1) == D(2026, 2, 28)  # clamped
    assert add_months(D(2026, 1, 15), 1) == D(2026, 2, 15)
    assert add_months(D(2024, 2, 29), 12) == D(2025, 2, 28)
    assert Period(2, "week").after(D(2026, 1, 1)) == D(2026, 1, 15)


def run(day, programs, kept=(), **classifications):
    return Recalled(day, frozenset(programs), frozenset(kept), classifications)


def test_grace_counts_from_the_first_review_that_found_it_not_qualifying():
    grace = Keeping(grace=Period(1, "quarter"))
    qualified = Memory((run(D(2026, 9, 30), {"gold"}),))
    # The first review that finds it not qualifying: kept until a quarter later.
    assert keep_offer(grace, "gold", qualified, D(2026, 12, 31)) == Keep(
        D(2027, 3, 31), GRACE, D(2026, 12, 31)
    )
    # The next review, on that date: grace is over.
    in_grace = Memory(qualified.runs + (run(D(2026, 12, 31), {"gold"}, {"gold"}),))
    assert keep_offer(grace, "gold", in_grace, D(2027, 3, 31)) is None
    assert keep_offer(grace, "gold", in_grace, D(2027, 3, 30)).until == D(2027, 3, 31)
    # Never qualified: nothing to keep.
    assert keep_offer(grace, "gold", Memory((run(D(2026, 9, 30), {"base"}),)), AS_OF) is None
    # An imported enrollment counts as qualifying to its last day, and as
    # stopping the day after: one that ended long ago keeps nothing now.
    imported = Memory((), (Enrolled("gold", D(2025, 1, 1), D(2026, 9, 30)),))
    assert keep_offer(grace, "gold", imported, D(2026, 11, 26)) == Keep(
        D(2027, 1, 1), GRACE, D(2026, 10, 1)
    )
    long_ago = Memory((), (Enrolled("gold", D(2019, 1, 1), D(2020, 6, 30)),))
    assert keep_offer(grace, "gold", long_ago, D(2026, 11, 26)) is None


def test_protection_holds_a_tier_from_the_start_of_the_current_stretch():
    protection = Keeping(protection=Period(4, "quarter"))
    reached = Memory(
        (
            run(D(2025, 12, 31), {"gold"}),
            run(D(2026, 3, 31), {"base"}),  # a break: the stretch starts after it
            run(D(2026, 6, 30), {"gold"}),
            run(D(2026, 9, 30), {"gold"}, {"gold"}),
        )
    )
    offer = keep_offer(protection, "gold", reached, D(2026, 12, 31))
    assert offer == Keep(D(2027, 6, 30), PROTECTION, D(2026, 6, 30))
    assert keep_offer(protection, "gold", reached, D(2027, 6, 30)) is None
    # The newest review did not hold it: no stretch to protect.
    lost = Memory(reached.runs + (run(D(2026, 12, 31), {"base"}),))
    assert keep_offer(protection, "gold", lost, D(2027, 3, 31)) is None


def test_renewal_keeps_to_the_anniversary_after_the_last_qualifying_date_and_its_window():
    renewal = Keeping(renewal=Period(1, "year"), renewal_window=Period(30, "day"))
    enrolled = Memory((run(D(2026, 3, 15), {"club"}), run(D(2026, 6, 30), {"club"})))
    # Between anniversaries the enrollment stands; the window runs 30 days past it.
    offer = keep_offer(renewal, "club", enrolled, D(2026, 12, 31))
    assert offer == Keep(D(2027, 4, 14), RENEWAL, D(2027, 3, 15))
    assert keep_offer(renewal, "club", enrolled, D(2027, 4, 13)) is not None
    assert keep_offer(renewal, "club", enrolled, D(2027, 4, 14)) is None
    # Qualifying again inside the window renews it for another year.
    renewed = Memory(enrolled.runs + (run(D(2027, 3, 31), {"club"}),))
    assert keep_offer(renewal, "club", renewed, D(2027, 6, 30)).until == D(2028, 4, 14)


def test_memory_answers_the_memory_functions():
    memory = Memory(
        (
            run(D(2026, 3, 31), {"gold"}, size="large"),
            run(D(2026, 6, 30), {"base"}, size="small"),
            run(D(2026, 9, 30), {"gold"}, size="small"),
        ),
        (Enrolled("gold", D(2024, 1, 1), D(2024, 12, 31)),),
    )
    assert memory.runs_held("gold") == 1
    assert memory.runs_held(("size", "small")) == 2
    assert memory.first_held("gold") == D(2024, 1, 1)
    assert memory.last_held("gold") == D(2026, 9, 30)
    assert memory.held_since(("size", "large"), D(2026, 3, 31))
    assert not memory.held_since(("size", "large"), D(2026, 4, 1))
    # Only what was known before a date counts; an enrollment is cut short.
    earlier = memory.before(D(2024, 6, 1))
    assert earlier.runs == () and earlier.last_held("gold") == D(2024, 5, 31)


# --- a small rule set with memory, decided run after run ------------------

RULES = {
    "ruleset.yaml": """
        ruleset:
          name: Memory test program
          currency: USD
        """,
    "fields.yaml": """
        fields:
          partner_name: {type: text, required: true}
          score: {type: integer, default: 0, label: score}
        """,
    "classifications.yaml": """
        classifications:
          band:
            rows:
              - value: high
                when: score >= 10
            default: low
        """,
    "metrics.yaml": """
        metrics:
          gold_runs:
            value: runs_held(gold)
            label: reviews in a row as Gold
          gold_lately:
            value: held(gold, 4)
            label: Gold in the last year
          high_band_lately:
            value: held(band, high, 2)
          months_since_gold:
            value: months_since_last(gold)
        """,
    "programs.yaml": """
        programs:
          gold:
            name: Gold
            group: tier
            priority: 20
            when: score >= 10
            grace: 1 quarter
          silver:
            name: Silver
            group: tier
            priority: 10
            when: score >= 5
            protection: 2 quarters
          base:
            name: Base
            group: tier
            priority: 0
          club:
            name: Club
            when: score >= 3
            renewal: {every: 1 year, window: 1 quarter}
          alumni:
            name: Gold alumni
            when:
              all:
                - gold_lately
                - not: gold
          veteran:
            name: Veteran
            when: gold_runs >= 2
        """,
}


def write_rules(folder: Path, **changes: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in {**RULES, **changes}.items():
        (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def write_roster(path: Path, scores: dict[str, int]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["partner_id", "partner_name", "score"])
        writer.writerows([pid, f"Partner {pid}", score] for pid, score in scores.items())
    return path


def decide_run(tmp_path: Path, rules, day: dt.date, scores: dict[str, int], **options) -> dict:
    roster = write_roster(tmp_path / "roster.csv", scores)  # one roster: changes compare
    result = run_batch(
        rules,
        RunOptions(
            roster=roster,
            performance=None,
            as_of=day,
            out_dir=tmp_path / "out",
            db=tmp_path / "runs.sqlite",
            **options,
        ),
    )
    out = tmp_path / "out"
    decisions = {
        line["partner_id"]: line
        for line in map(json.loads, (out / "decisions.jsonl").read_text().splitlines())
    }
    with (out / "changes.csv").open(encoding="utf-8") as handle:
        changes = list(csv.DictReader(handle))
    with (out / "enrollments.csv").open(encoding="utf-8") as handle:
        enrollments = list(csv.DictReader(handle))
    return {"result": result, "decisions": decisions, "changes": changes, "rows": enrollments}


def test_runs_remember_what_partners_held(tmp_path):
    rules = load_rules(write_rules(tmp_path / "rules"))
    assert rules.uses_memory
    first = decide_run(tmp_path, rules, D(2026, 9, 30), {"A": 12, "B": 6, "C": 3})
    assert {p: d["programs"] for p, d in first["decisions"].items()} == {
        "A": ["gold", "club"],
        "B": ["silver", "club"],
        "C": ["base", "club"],
    }
    assert all(not d["kept"] for d in first["decisions"].values())

    second = decide_run(tmp_path, rules, D(2026, 12, 31), {"A": 6, "B": 0, "C": 0})
    decided = second["decisions"]
    assert decided["A"]["programs"] == ["gold", "club"]  # Gold in grace, so no alumni
    assert decided["A"]["kept"]["gold"] == {
        "until": "2027-03-31",
        "by": "grace",
        "since": "2026-12-31",
    }
    assert decided["B"]["kept"]["silver"] == {
        "until": "2027-03-31",
        "by": "protection",
        "since": "2026-09-30",
    }
    assert decided["C"]["kept"]["club"]["until"] == "2027-12-31"  # anniversary + 1 quarter
    assert decided["A"]["metrics"]["gold_lately"] is True
    assert decided["A"]["metrics"]["high_band_lately"] is True  # a classification recalled
    assert decided["B"]["metrics"]["high_band_lately"] is False
    assert decided["A"]["metrics"]["months_since_gold"] == 3
    kept_rows = {(r["partner_id"], r["program"]): r for r in second["rows"] if r["kept_by"]}
    assert kept_rows[("A", "gold")]["kept_until"] == "2027-03-31"
    assert kept_rows[("B", "silver")]["kept_by"] == "protection"
    kept_changes = [c for c in second["changes"] if c["change"] == "kept"]
    assert {(c["partner_id"], c["subject"], c["before"], c["after"]) for c in kept_changes} == {
        ("A", "gold", "grace", "2027-03-31"),
        ("B", "silver", "protection", "2027-03-31"),
        ("B", "club", "renewal", "2027-12-31"),
        ("C", "club", "renewal", "2027-12-31"),
    }
    assert second["result"].summary["kept"] == {
        "gold": {"grace": 1},
        "silver": {"protection": 1},
        "club": {"renewal": 2},
    }

    # The same date again ignores itself: the same decisions, kept until the same day.
    again = decide_run(tmp_path, rules, D(2026, 12, 31), {"A": 6, "B": 0, "C": 0})
    assert again["decisions"] == decided

    third = decide_run(tmp_path, rules, D(2027, 3, 31), {"A": 6, "B": 0, "C": 0})
    decided = third["decisions"]
    assert decided["A"]["programs"][0] == "silver" and not decided["A"]["kept"].get("gold")
    assert "alumni" in decided["A"]["programs"]  # held Gold within the year, not now
    assert "veteran" in decided["A"]["programs"]  # Gold in the last two reviews
    assert decided["B"]["programs"][0] == "base"  # protection over
    assert decided["C"]["kept"]["club"]["by"] == "renewal"  # still before the window ends
    dropped = {(c["partner_id"], c["change"], c["subject"]) for c in third["changes"]}
    assert ("A", "group_change", "tier") in dropped and ("B", "group_change", "tier") in dropped


def test_explain_and_diff_read_the_same_memory(tmp_path, cli_run):
    rules_dir = write_rules(tmp_path / "rules")
    rules = load_rules(rules_dir)
    decide_run(tmp_path, rules, D(2026, 9, 30), {"A": 12})
    roster = write_roster(tmp_path / "now.csv", {"A": 6})
    shown = cli_run(
        "explain", "A", "--rules", str(rules_dir), "--roster", str(roster),
        "--db", str(tmp_path / "runs.sqlite"), "--as-of", "2026-12-31",
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "memory keeps it: in grace until 2027-03-31" in shown.output
    # Without the history, the same partner is not kept.
    bare = cli_run(
        "explain", "A", "--rules", str(rules_dir), "--roster", str(roster),
        "--db", str(tmp_path / "none.sqlite"), "--as-of", "2026-12-31", "--json",
    )  # fmt: skip
    assert json.loads(bare.stdout)["decision"]["programs"][0] == "silver"
    assert "the project's earlier enrollments" in bare.stderr  # they are for other rules
    assert not (tmp_path / "none.sqlite").exists()  # explain never makes a history

    no_grace = load_rules(
        write_rules(
            tmp_path / "proposed",
            **{"programs.yaml": RULES["programs.yaml"].replace("grace: 1 quarter", "")},
        )
    )
    history = RunHistory(tmp_path / "runs.sqlite")
    try:
        memory = MemorySource(rules, D(2026, 12, 31), history)
        impact = compare(
            rules, no_grace, roster, None, D(2026, 12, 31), D(2026, 12, 31), "a", "b",
            memory=memory,
        )  # fmt: skip
    finally:
        history.close()
    moves = {(m.partner_id, m.subject, m.base, m.proposed): m.because for m in impact.moves}
    assert moves[("A", "gold", "gold", "")][0] == (
        "no longer kept by memory (in grace until 2027-03-31 (stopped qualifying on "
        "2026-12-31) under the base rules)"
    )
    assert ("A", "silver", "", "silver") in moves


def test_engine_and_explainer_agree_on_kept_programs(ruleset):
    """Memory in the reference rules: Premier's grace, Elite's protection."""
    evaluator = Evaluator(ruleset)
    partners = []
    for partner in load_example_partners(ruleset):
        memory = Memory(
            (run(D(2026, 6, 30), {"elite"}), run(D(2026, 9, 30), {"premier"})),
            (Enrolled("premier", D(2025, 1, 1), D(2026, 9, 30)),),
        )
        partners.append(dataclasses.replace(partner, memory=memory))
    decided = evaluator.decide(partners, AS_OF)
    assert decided == [explain(ruleset, p, AS_OF).decision() for p in partners]
    kept = [d for d in decided if d.kept]
    assert kept and all(d.kept["premier"].how == GRACE for d in kept)
    assert all("premier" in d.enrolled for d in kept)


# --- the rule language -------------------------------------------------------


@pytest.mark.parametrize(
    ("program", "message"),
    [
        ("grace: one quarter", "the grace of program 'gold': 'one quarter' is not a period"),
        ("renewal: {each: 1 year}", "unknown key 'each'"),
        ("protection: [2 quarters]", "is not a period"),
    ],
)
def test_bad_keeping_is_reported_at_its_line(tmp_path, program, message):
    text = RULES["programs.yaml"].replace("grace: 1 quarter", program)
    with pytest.raises(RuleSetError) as raised:
        load_rules(write_rules(tmp_path / "rules", **{"programs.yaml": text}))
    problem = next(p for p in raised.value.problems if message in p.message)
    assert problem.file.endswith("programs.yaml") and problem.line == 8


def test_keeping_without_conditions_is_refused(tmp_path):
    text = RULES["programs.yaml"].replace(
        "priority: 0\n", "priority: 0\n            grace: 1 quarter\n"
    )
    with pytest.raises(RuleSetError, match="has no conditions, so every partner always"):
        load_rules(write_rules(tmp_path / "rules", **{"programs.yaml": text}))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("held(glod, 4)", "unknown name 'glod'; did you mean 'gold'?"),
        ("held(band, huge, 4)", "'huge' is not a value of 'band' (values: high, low)"),
        ("held(score, 4)", "memory functions recall a program or a classification, and 'score'"),
        ("held(gold)", "held takes the program 'gold' and a number of quarters"),
        ("held(gold, 50)", "the number of quarters must be a whole number from 1 to 40"),
        ("runs_held(band)", "runs_held takes the classification 'band' and one of its values"),
    ],
)
def test_bad_memory_functions_are_reported(tmp_path, value, message):
    text = RULES["metrics.yaml"].replace("runs_held(gold)", value)
    with pytest.raises(RuleSetError) as raised:
        load_rules(write_rules(tmp_path / "rules", **{"metrics.yaml": text}))
    assert any(message in p.message for p in raised.value.problems), raised.value.problems


# --- earlier enrollments from a file, and the history's schema ------------


def test_earlier_enrollments_set_bad_rows_aside(tmp_path, ruleset):
    path = tmp_path / "earlier.csv"
    path.write_text(
        "partner_id,program,from,to\n"
        "P-1006,premier,2025-01-01,2026-09-30\n"
        "P-1007,premeir,2025-01-01,2026-09-30\n"
        "P-1008,select,2026-13-01,2026-09-30\n"
        "P-1009,select,2026-09-30,2026-01-01\n"
        ",select,2026-01-01,2026-09-30\n"
        "P-1010,select,2026-01-01,\n",
        encoding="utf-8",
    )
    earlier = EarlierEnrollments(path, ruleset)
    assert earlier.by_partner == {"P-1006": (Enrolled("premier", D(2025, 1, 1), D(2026, 9, 30)),)}
    reasons = {(r.row, r.column): r.reason for r in earlier.rejects}
    assert "did you mean 'premier'?" in reasons[3, "program"]
    assert (4, "from") in reasons and "before it starts" in reasons[5, "to"]
    assert reasons[6, "partner_id"] == "partner_id is missing"
    assert "'to' is empty" in reasons[7, "to"]


def test_an_unusable_enrollments_file_stops_the_run(tmp_path, ruleset):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("partner_id,program,start,end\nP-1,premier,2025-01-01,2026-01-01\n")
    with pytest.raises(DataError, match="earlier-enrollments file lacks 2 columns"):
        run_batch(
            ruleset,
            RunOptions(
                EXAMPLES / "roster.csv",
                EXAMPLES / "performance.csv",
                AS_OF,
                tmp_path / "out",
                enrollments=wrong,
                db=tmp_path / "h.sqlite",
            ),
        )
    junk = tmp_path / "junk.csv"
    junk.write_text("partner_id,program,from,to\nP-1,gold,x,y\nP-2,silver,x,y\n")
    with pytest.raises(DataError, match="all 2 rows of the earlier-enrollments file"):
        EarlierEnrollments(junk, ruleset)
    assert not (tmp_path / "out").exists() and not (tmp_path / "h.sqlite").exists()


def test_the_quickstart_shows_a_partner_in_grace(tmp_path):
    """The example data's earlier enrollments: P-1006 in grace, P-1012 protected."""
    result = run_batch(
        load_rules(ROOT / "rules"),
        RunOptions(
            EXAMPLES / "roster.csv",
            EXAMPLES / "performance.csv",
            AS_OF,
            tmp_path / "out",
            db=tmp_path / "h.sqlite",
            enrollments=EXAMPLES / "enrollments.csv",
            letters=RunLetters(ROOT / "templates", ("text",)),
            report=build_report,
        ),
    )
    report = (tmp_path / "out" / "current" / "report.html").read_text(encoding="utf-8")
    assert "kept in Premier Partner by grace" in report
    assert "Premier Partner (until 2027-01-01)" in report
    assert result.summary["kept"] == {"elite": {"protection": 1}, "premier": {"grace": 1}}
    assert result.summary["inputs"]["enrollments"]["rows_read"] == 4
    letter = (tmp_path / "out" / "letters" / "P-1006.txt").read_text(encoding="utf-8")
    assert "a grace period keeps it for you until **January 1, 2027**" in letter
    assert "Partner tier: **Premier Partner**, held until January 1, 2027" in letter


def test_a_history_of_the_first_version_is_upgraded(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema', '1');
        CREATE TABLE runs (id INTEGER PRIMARY KEY, started_at TEXT NOT NULL,
            finished_at TEXT NOT NULL, as_of TEXT NOT NULL, ruleset_name TEXT NOT NULL,
            rules_fingerprint TEXT NOT NULL, roster_source TEXT NOT NULL,
            roster_fingerprint TEXT NOT NULL, performance_source TEXT,
            performance_fingerprint TEXT, rows_read INTEGER NOT NULL, decided INTEGER NOT NULL,
            rejected INTEGER NOT NULL, output_folder TEXT NOT NULL, summary TEXT NOT NULL);
        CREATE TABLE decisions (run_id INTEGER NOT NULL, partner_id TEXT NOT NULL,
            classifications TEXT NOT NULL, engagement TEXT NOT NULL, programs TEXT NOT NULL,
            PRIMARY KEY (run_id, partner_id)) WITHOUT ROWID;
        INSERT INTO runs VALUES (1, 't', 't', '2026-09-30', 'R', 'f', 'roster', 'f', NULL,
            NULL, 1, 1, 0, 'out', '{}');
        INSERT INTO decisions VALUES (1, 'A', '{}', 'standard', '["gold"]');
        """
    )
    db.commit()
    db.close()
    history = RunHistory(path)
    try:
        assert history.recalled("R", "2026-12-31", ["A"]) == {
            "A": [Recalled(D(2026, 9, 30), frozenset({"gold"}), frozenset(), {})]
        }
    finally:
        history.close()
    schema = sqlite3.connect(path).execute("SELECT value FROM meta").fetchone()[0]
    assert schema == "2"


@pytest.mark.parametrize(
    ("language", "said"),
    [
        (
            "fr",
            "Vous ne remplissez plus toutes les conditions du programme **Partenaire Premier**, "
            "mais une période de grâce vous permet de le conserver jusqu'au **1er janvier 2027**.",
        ),
        (
            "de",
            "Sie erfüllen nicht mehr alle Voraussetzungen für **Premier-Partner**, aber dank "
            "einer Kulanzfrist behalten Sie diesen Status bis zum **1. Januar 2027**.",
        ),
        (
            "es",
            "Ya no cumple todos los requisitos de **Partner Premier**, pero gracias a un periodo "
            "de gracia lo conserva hasta el **1 de enero de 2027**.",
        ),
    ],
)
def test_letters_say_until_when_in_every_language(tmp_path, language, said):
    roster = tmp_path / "roster.csv"
    lines = (EXAMPLES / "roster.csv").read_text(encoding="utf-8").splitlines()
    roster.write_text(
        "\n".join(
            line.replace(",US,en,", f",US,{language},", 1) if line.startswith("P-1006,") else line
            for line in lines
        )
        + "\n",
        encoding="utf-8",
    )
    run_batch(
        load_rules(ROOT / "rules"),
        RunOptions(
            roster,
            EXAMPLES / "performance.csv",
            AS_OF,
            tmp_path / "out",
            db=tmp_path / "h.sqlite",
            enrollments=EXAMPLES / "enrollments.csv",
            letters=RunLetters(ROOT / "templates", ("text",)),
        ),
    )
    letter = (tmp_path / "out" / "letters" / "P-1006.txt").read_text(encoding="utf-8")
    assert said in letter
    assert "Premier Partner" not in letter  # the program's name in the partner's language
