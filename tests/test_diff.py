"""eligibility diff: who a rule change would move, and why."""

from __future__ import annotations

import csv
import shutil
import subprocess

import pytest

from conftest import ROOT


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A project folder with rules and examples, as a user has it."""
    for name in ("rules", "examples"):
        shutil.copytree(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def raise_select_threshold(rules):
    programs = rules / "programs.yaml"
    programs.write_text(
        programs.read_text().replace(
            "        - certified_technical >= 2\n", "        - certified_technical >= 3\n"
        )
    )


def run_diff(*args):
    from click.testing import CliRunner

    from cli import cli

    return CliRunner().invoke(cli, ["diff", *args], catch_exceptions=False)


def test_a_threshold_change_moves_one_partner(workspace):
    shutil.copytree(workspace / "rules", workspace / "proposed")
    raise_select_threshold(workspace / "proposed")
    result = run_diff(
        "--base", "rules", "--proposed", "proposed", "--as-of", "2026-11-26", "--csv", "moves.csv"
    )
    assert result.exit_code == 0, result.stderr
    assert "program select            10        9        0        1" in result.output
    assert (
        "P-1018  program select: select -> (none): certified_technical >= 3: has 2" in result.output
    )
    rows = list(csv.DictReader((workspace / "moves.csv").read_text().splitlines()))
    assert {(r["partner_id"], r["subject"], r["because"]) for r in rows} == {
        ("P-1018", "select", "certified_technical >= 3: has 2"),
        ("P-1018", "registered", "no longer select (certified_technical >= 3: has 2)"),
    }


def test_moves_are_explained_by_the_side_that_decided(workspace):
    """Entering a program is explained by what kept the partner out before
    (not by the base side's reason for leaving it out); a new program's
    and a removed program's moves have reasons too."""
    proposed = workspace / "proposed"
    shutil.copytree(workspace / "rules", proposed)
    programs = proposed / "programs.yaml"
    text = programs.read_text(encoding="utf-8")
    text = text.replace("revenue_growth >= 10%", "revenue_growth >= -2%")
    text = text.replace("\nprograms:\n", "\nprograms:\n  newcomer:\n    name: Newcomer\n"
                        "    when: certified_technical >= 20\n", 1)  # fmt: skip
    programs.write_text(text, encoding="utf-8")
    result = run_diff(
        "--base", "rules", "--proposed", str(proposed), "--as-of", "2026-11-26", "--csv", "m.csv"
    )
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader((workspace / "m.csv").read_text().splitlines()))
    because = {(r["partner_id"], r["subject"], r["proposed"]): r["because"] for r in rows}
    assert because, result.output
    entering = [
        b for (_, subject, _), b in because.items() if subject == "manufacturing_accelerator"
    ]
    assert len(entering) == 4
    assert all(b.startswith("missed before: revenue_growth >= 10%: has ") for b in entering)
    assert not any("ranks higher" in b for (_, _, after), b in because.items() if after)
    new = [b for (_, subject, _), b in because.items() if subject == "newcomer"]
    assert new and set(new) == {"a new program in the proposed rules; the partner meets it"}


def test_no_change_moves_nobody(workspace):
    result = run_diff("--base", "rules", "--proposed", "rules", "--as-of", "2026-11-26")
    assert result.exit_code == 0
    assert "No partner moves." in result.output


def test_uncommitted_edit_against_git_head(workspace):
    git = ["git", "-c", "user.email=test@example.com", "-c", "user.name=Test"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "rules"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "rules"], check=True)
    raise_select_threshold(workspace / "rules")
    result = run_diff("--as-of", "2026-11-26")  # git:HEAD:rules against rules/
    assert result.exit_code == 0, result.stderr
    assert result.output.startswith("Base:     git:HEAD:rules as of 2026-11-26")
    assert "P-1018  program select" in result.output


def test_an_announced_change_between_two_dates(workspace):
    """The reference rules raise Premier's bar and open Zero Trust on 2027-01-01."""
    result = run_diff("--base", "rules", "--as-of", "2026-12-31", "--proposed-as-of", "2027-01-01")
    assert result.exit_code == 0
    assert "program premier                           8        6        0        2" in result.output
    assert (
        "P-1003  program premier: premier -> (none): from 2027-01-01: "
        "certified_technical >= 12: has 11" in result.output
    )
    assert "program zero_trust_specialization         0        5        5        0" in result.output


@pytest.mark.parametrize(
    "spec, message",
    [
        ("git:HEAD", "write a git rule set as git:REVISION:PATH"),
        ("git:no-such-revision:rules", "git could not read it"),
    ],
)
def test_bad_git_rule_sets_are_one_line_errors(workspace, spec, message):
    result = run_diff("--base", spec)
    assert result.exit_code == 1  # as every input that cannot be used
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_html_page_of_the_comparison(workspace):
    result = run_diff(
        "--base",
        "rules",
        "--as-of",
        "2026-12-31",
        "--proposed-as-of",
        "2027-01-01",
        "--html",
        "moves.html",
    )
    assert result.exit_code == 0
    html = (workspace / "moves.html").read_text(encoding="utf-8")
    assert html.count('<tr class="move">') == 9
    assert "from 2027-01-01: certified_technical &gt;= 12: has 11" in html  # escaped
    assert "http" not in html


def test_html_page_of_a_large_comparison_lists_the_first_moves(workspace, monkeypatch):
    from engine.report import html as report

    monkeypatch.setattr(report, "MAX_REPORT_PARTNERS", 4)
    result = run_diff(
        "--base",
        "rules",
        "--as-of",
        "2026-12-31",
        "--proposed-as-of",
        "2027-01-01",
        "--html",
        "moves.html",
    )
    assert result.exit_code == 0
    html = (workspace / "moves.html").read_text(encoding="utf-8")
    assert html.count('<tr class="move">') == 4
    assert (
        "The first 4 of 9 moves; <code>eligibility diff --csv FILE</code> writes them all." in html
    )


def test_workers_do_not_change_the_comparison(workspace):
    shutil.copytree(workspace / "rules", workspace / "proposed")
    raise_select_threshold(workspace / "proposed")
    outputs = []
    for workers in ("1", "2"):
        result = run_diff(
            "--base",
            "rules",
            "--proposed",
            "proposed",
            "--as-of",
            "2026-11-26",
            "--csv",
            f"moves-{workers}.csv",
            "--workers",
            workers,
        )
        assert result.exit_code == 0, result.stderr
        outputs.append((result.output, (workspace / f"moves-{workers}.csv").read_bytes()))
    assert outputs[0][0].replace("moves-1.csv", "moves-2.csv") == outputs[1][0]
    assert outputs[0][1] == outputs[1][1]


def test_figures_declared_in_another_order_move_nobody(workspace):
    """History is staged once for both sides: each side must find its figures
    by name. With `revenue` and `target` swapped in the proposed `history:`
    section (nothing else changed), matching by position decided 30 partners
    on swapped figures."""
    shutil.copytree(workspace / "rules", workspace / "proposed")
    fields = workspace / "proposed" / "fields.yaml"
    text = fields.read_text()
    revenue = "  revenue: {type: money, required: true, label: revenue}\n"
    target = "  target: {type: money, required: true, label: revenue target}\n"
    assert revenue + target in text
    fields.write_text(text.replace(revenue + target, target + revenue))
    result = run_diff(
        "--base", "rules", "--proposed", "proposed", "--as-of", "2026-11-26", "--csv", "moves.csv"
    )
    assert result.exit_code == 0, result.stderr
    with open("moves.csv", newline="", encoding="utf-8") as handle:
        assert list(csv.reader(handle)) == [
            ["partner_id", "kind", "subject", "base", "proposed", "because"]
        ]
