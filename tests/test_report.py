"""The HTML run report: self-contained, escaped, and usable in a real browser."""

from __future__ import annotations

import datetime as dt
import io
import re
import shutil

import openpyxl
import pytest

from conftest import ROOT, example_run_options
from engine.report.html import build_report, change_sentence, reason_sentence
from engine.run.driver import run_batch
from engine.run.letters_pass import LetterOptions, write_letters


@pytest.fixture(scope="module")
def report(tmp_path_factory, ruleset):
    folder = tmp_path_factory.mktemp("run")
    run_batch(
        ruleset,
        example_run_options(folder),
    )
    write_letters(ruleset, LetterOptions(folder / "out", ROOT / "templates", ("text",)))
    return build_report(folder / "out")


def test_report_is_self_contained(report):
    html = report.read_text(encoding="utf-8")
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)
    assert "<link" not in html and "@import" not in html
    assert html.count('<tr class="partner"') == 32
    assert "Run 1 as of 2026-11-26" in html and "<svg" in html


def test_roster_text_is_escaped(tmp_path, report):
    folder = report.parent
    target = tmp_path / "out"
    shutil.copytree(folder, target)
    lines = (target / "decisions.jsonl").read_text().splitlines()
    lines[0] = lines[0].replace('"P-1001"', '"<script>alert(1)</script>{{ 7*7 }}"', 1)
    (target / "decisions.jsonl").write_text("\n".join(lines) + "\n")
    html = build_report(target).read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;{{ 7*7 }}" in html
    assert "\\u003cscript\\u003e" in html  # the embedded JSON is escaped too


def test_report_of_a_folder_without_a_run_is_a_usage_error(cli_run, tmp_path):
    result = cli_run("report", str(tmp_path))
    assert result.exit_code == 2
    assert "no summary.json" in result.stderr


def _browser():
    """A headless Chromium driven by selenium, or None with the reason."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "selenium is not installed"
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return None, "Debian's chromium and chromium-driver are not installed"
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options), ""


def test_report_in_a_real_browser(report):
    driver, reason = _browser()
    if driver is None:
        pytest.skip(f"no browser for the report test: {reason} (.ci/run installs them)")
    from selenium.webdriver.common.by import By

    try:
        driver.get(report.as_uri())
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        rows = driver.find_elements(By.CSS_SELECTOR, "tr.partner")
        assert len(rows) == 32
        search = driver.find_element(By.ID, "filter")
        search.send_keys("strategic account management")  # the names managers read
        assert len([r for r in rows if r.is_displayed()]) == 6
        assert "Strategic account management" in rows[0].text and "Elite Partner" in rows[0].text
        search.clear()
        search.send_keys("strategic_account")  # ids still find them
        visible = [r for r in rows if r.is_displayed()]
        assert len(visible) == 6
        assert driver.find_element(By.ID, "shown").text == "6 of 32 partners shown"
        visible[0].click()
        detail = driver.find_element(By.ID, "detail")
        assert detail.is_displayed()
        assert "Partner P-1001: Northwind Integration Ltd" in detail.text
        assert "engagement model: Strategic account management (strategic_account, row 1)" in (
            detail.text
        )
        assert "partner size: strategic (row 1)" in detail.text  # labels, values in words
        assert "Why the other programs were missed" in detail.text
        assert "Letter (status, en): Your partner status on 26 November 2026" in detail.text
        # The letter as the partner reads it: rendered, in a frame that runs nothing.
        frame = detail.find_element(By.CSS_SELECTOR, "iframe.letter")
        assert frame.get_attribute("sandbox") == ""
        driver.switch_to.frame(frame)
        heading = driver.find_element(By.TAG_NAME, "h1").text
        assert heading.startswith("Your partner status") and "#" not in heading
        assert "What to do next" in driver.find_element(By.TAG_NAME, "body").text
        driver.switch_to.default_content()
        # The partners shown, exported as the page shows them.
        csv_text = driver.execute_script("return window.partnerTableCsv();")
        lines = csv_text.lstrip("\ufeff").splitlines()
        assert lines[0].startswith("Partner,Name,segment focus,partner size,")
        assert len(lines) == 7 and lines[1].startswith("P-1001,Northwind Integration Ltd,")
        assert "Strategic account management" in lines[1] and "Elite Partner" in lines[1]
        xlsx = driver.execute_script("return Array.from(window.partnerTableXlsx());")
        workbook = openpyxl.load_workbook(io.BytesIO(bytes(xlsx)))
        sheet = workbook.active
        assert sheet.max_row == 7 and sheet["A2"].value == "P-1001"
        assert sheet["B2"].value == "Northwind Integration Ltd"
        header = driver.find_element(By.CSS_SELECTOR, "th[data-key='partner_id']")
        header.click()
        header.click()  # descending
        ids = [
            r.find_element(By.TAG_NAME, "td").text
            for r in driver.find_elements(By.CSS_SELECTOR, "tr.partner")
            if r.is_displayed()
        ]
        assert len(ids) == 6 and ids == sorted(ids, reverse=True)
    finally:
        driver.quit()


def test_report_with_a_what_if_section(tmp_path, report):
    moves = tmp_path / "moves.csv"
    moves.write_text(
        "partner_id,kind,subject,base,proposed,because\n"
        "P-1018,program,select,select,,certified_technical >= 3: has 2\n"
    )
    html = build_report(report.parent, tmp_path / "r.html", moves).read_text(encoding="utf-8")
    assert 'id="what-if"' in html and "certified_technical &gt;= 3: has 2" in html
    assert 'id="what-if"' not in report.read_text(encoding="utf-8")


def test_a_large_run_gives_a_report_a_browser_can_open(tmp_path, report, monkeypatch):
    """The report lists at most so many partners (those with changes first,
    in roster order), changes and rejects, and says where the rest are; it
    never holds a run's whole decisions in memory or on the page."""
    from engine.report import html as report_module

    target = tmp_path / "out"
    shutil.copytree(report.parent, target)
    (target / "changes.csv").write_text(
        "partner_id,change,subject,before,after,direction\n"
        "P-1030,enrolled,select,,select,\nP-1007,dropped,select,select,,\n"
        "P-1030,group_change,tier,registered,select,up\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(report_module, "MAX_REPORT_PARTNERS", 4)
    monkeypatch.setattr(report_module, "MAX_REPORT_ROWS", 2)
    html = build_report(target).read_text(encoding="utf-8")
    shown = re.findall(r'<tr class="partner" data-index="\d+"[^>]*>\s*<td>([^<]+)</td>', html)
    assert shown == ["P-1001", "P-1002", "P-1007", "P-1030"]
    assert "4 of 32 partners, in roster order: those with changes" in html
    assert "The first 2 of 3 changes; changes.csv lists them all." in html
    assert "4 reject lines in rejects.csv, by file and column" in html
    assert "<b>3</b>changes since run" in html
    assert "<b>2</b>roster rows rejected" in html and "<b>2</b>history rows rejected" in html


def test_rejects_are_grouped_by_file_and_column(report, tmp_path):
    """2,000 rejects of one kind are one line of the report, with a count
    and the first examples, not 2,000 lines."""
    target = tmp_path / "out"
    shutil.copytree(report.parent, target)
    lines = ["source_file,row,partner_id,column,value,reason"]
    lines += [
        f"roster.csv,{n},P-{n},certified_technical,x,'x' is not a whole number"
        for n in range(2, 2002)
    ]
    lines.append("roster.csv,5000,,partner_id,,no partner_id")
    (target / "rejects.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    html = build_report(target).read_text(encoding="utf-8")
    assert "2,001 reject lines in rejects.csv" in html
    assert "<td>certified_technical</td><td>2,000</td>" in html
    assert "<td>partner_id</td><td>1</td>" in html
    assert html.count("is not a whole number") == 3  # the first three examples
    assert html.index("certified_technical</td>") < html.index("<td>partner_id</td><td>1</td>")


def test_the_report_speaks_in_labels_names_and_sentences(report):
    html = report.read_text(encoding="utf-8")
    assert "<h3>Segment focus</h3>" in html and "<h3>Partner size</h3>" in html
    assert ">review for replacement</text>" in html  # a value in words, not an id
    assert "<td>Northwind Integration Ltd</td>" in html  # partner names in the table
    assert "Classification: segment_focus" not in html


def test_changes_and_reasons_in_words():
    names = {"select": "Select Partner", "registered": "Registered Partner", "gold": "Gold"}
    labels = {"standing": "standing", "certified_technical": "certified technical staff"}

    def said(change, subject, before, after, direction=""):
        row = {"change": change, "subject": subject, "before": before, "after": after}
        return change_sentence({**row, "direction": direction}, names, labels)

    assert said("group_change", "tier", "select", "registered", "down") == (
        "Tier: Select Partner to Registered Partner (down)"
    )
    assert said("classification", "standing", "good", "at_risk", "down") == (
        "Standing: good to at risk (down)"
    )
    assert said("kept", "gold", "grace", "2027-03-31") == (
        "Kept in Gold by its grace until 2027-03-31, not qualifying now"
    )
    assert said("returned_partner", "", "3", "") == "Back in the roster (last decided by run 3)"
    assert reason_sentence("certified_technical >= 10: has 8", names, labels) == (
        "certified technical staff: at least 10 needed, has 8"
    )
    assert reason_sentence("select ranks higher in group tier", names, labels) == (
        "Select Partner ranks higher in the tier group"
    )
    assert reason_sentence("something else entirely", names, labels) == "something else entirely"


def test_a_trend_over_the_runs_kept_in_the_output_folder(tmp_path, ruleset):
    for day in (dt.date(2026, 5, 20), dt.date(2026, 8, 20), dt.date(2026, 11, 26)):
        run_batch(ruleset, example_run_options(tmp_path, as_of=day))
    html = build_report(tmp_path / "out").read_text(encoding="utf-8")
    assert "in the last 3 runs of these rules kept in this output folder" in html
    trend = html[html.index('aria-label="Tier over the runs"') :]
    assert trend.count("<polyline") >= 5  # one line per tier
    assert ">2026-05-20</text>" in trend and ">2026-11-26</text>" in trend
