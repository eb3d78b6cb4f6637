"""A run's outputs are one unit: run folders, locks, killed runs, hostile arguments."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import AS_OF, ROOT, example_run_options
from engine.data.locks import held
from engine.data.run_folders import OutputFolder, current_run
from engine.data.run_history import RunHistory, lock_history
from engine.errors import BusyError, UsageError
from engine.run import driver
from engine.run.driver import RunOptions, run_batch

EXAMPLES = ROOT / "examples"


def options(tmp_path: Path, **kwargs) -> RunOptions:
    return example_run_options(tmp_path, **kwargs)


def test_a_second_run_on_the_same_output_folder_stops_at_once(ruleset, tmp_path):
    run_batch(ruleset, options(tmp_path))
    before = current_run(tmp_path / "out")
    with OutputFolder(tmp_path / "out").lock():  # a run is writing there
        clock = time.perf_counter()
        with pytest.raises(
            BusyError,
            match=r"another run \(pid \d+, started at \d\d:\d\d\) is using the output folder",
        ):
            run_batch(ruleset, options(tmp_path, db=tmp_path / "other.sqlite"))
        assert time.perf_counter() - clock < 5
    assert current_run(tmp_path / "out") == before
    assert (
        not (tmp_path / "other.sqlite").exists() or not RunHistory(tmp_path / "other.sqlite").runs()
    )


def test_a_second_run_on_the_same_history_stops_before_reading_the_previous_run(ruleset, tmp_path):
    """Else it would compare with the run before the one being recorded."""
    run_batch(ruleset, options(tmp_path))
    with lock_history(tmp_path / "runs.sqlite"):
        with pytest.raises(BusyError, match="is using the run history .*runs.sqlite; wait"):
            run_batch(ruleset, options(tmp_path, out_dir=tmp_path / "elsewhere"))
    history = RunHistory(tmp_path / "runs.sqlite")
    assert [r.id for r in history.runs()] == [1]
    history.close()


def test_a_lock_goes_with_the_process_that_held_it(tmp_path):
    lock = tmp_path / "x.lock"
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[2]);"
        "from pathlib import Path; from engine.data.locks import held\n"
        "with held(Path(sys.argv[1]), 'x', 'y'):\n print('held', flush=True); time.sleep(60)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(lock), str(ROOT)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    with pytest.raises(BusyError, match=f"pid {process.pid}"):
        with held(lock, "x", "y"):
            pass
    process.kill()  # killed outright: no stale lock to delete by hand
    process.wait()
    process.stdout.close()
    with held(lock, "x", "y"):
        pass


def _slow_run(data: Path, out: Path, db: Path, workers: int = 1) -> subprocess.Popen:
    """'eligibility run' over a generated roster, in a process of its own."""
    return subprocess.Popen(
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
            str(workers),
            "-q",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def big_roster(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("data")
    subprocess.run(
        [sys.executable, str(ROOT / "bench/generate.py"), "--partners", "4000", "--out", str(data)],
        check=True,
        capture_output=True,
    )
    return data


@pytest.mark.parametrize("shared", ["out", "db"])
def test_two_runs_at_once_never_mix(cli_run, tmp_path, big_roster, shared):
    """Two real runs started together on one output folder, or one history:
    the second stops at once with one line; the first finishes and is whole."""
    out, db = tmp_path / "out", tmp_path / "runs.sqlite"
    first = _slow_run(big_roster, out, db)
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob("runs/.*.partial")):
        time.sleep(0.02)
    second_out = out if shared == "out" else tmp_path / "out2"
    second_db = db if shared == "db" else tmp_path / "runs2.sqlite"
    second = _slow_run(big_roster, second_out, second_db)
    _, error = second.communicate(timeout=120)
    assert second.returncode == 1, error
    assert error.startswith("error: another run (pid ") and error.count("\n") == 1, error
    assert "Traceback" not in error
    _, error = first.communicate(timeout=300)
    assert first.returncode == 0, error
    run = current_run(out)
    summary = json.loads((run / "summary.json").read_text())
    lines = (run / "decisions.jsonl").read_text().count("\n")
    assert lines == summary["partners"]["decided"] and summary["run"]["id"] == 1


def test_killed_after_recording_the_next_run_makes_that_run_current(ruleset, tmp_path, monkeypatch):
    """Killed between recording a run and switching to it: the history has
    run 2 and out still shows run 1. The next run (holding the locks) makes
    run 2 current first, and compares with it."""
    run_batch(ruleset, options(tmp_path))
    first = current_run(tmp_path / "out")

    def killed(self, folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(OutputFolder, "switch", killed)
    with pytest.raises(KeyboardInterrupt):
        run_batch(ruleset, options(tmp_path))
    monkeypatch.undo()
    assert current_run(tmp_path / "out") == first
    second = [p for p in (tmp_path / "out" / "runs").iterdir() if p != first]
    assert [p.name.split("-")[1] for p in second] == ["run2"]
    result = run_batch(ruleset, options(tmp_path))
    assert result.summary["changes"]["previous_run"] == 2
    assert result.run_id == 3 and current_run(tmp_path / "out") == result.out_dir


def test_a_run_folder_never_recorded_is_removed_by_the_next_run(ruleset, tmp_path, monkeypatch):
    run_batch(ruleset, options(tmp_path))

    def killed(self, record):
        raise KeyboardInterrupt

    monkeypatch.setattr(RunHistory, "finish", killed)
    with pytest.raises(KeyboardInterrupt):
        run_batch(ruleset, options(tmp_path))
    monkeypatch.undo()
    assert len(list((tmp_path / "out" / "runs").iterdir())) == 2  # complete, not recorded
    result = run_batch(ruleset, options(tmp_path))
    assert result.run_id == 2 and result.summary["changes"]["previous_run"] == 1
    names = sorted(p.name.split("-")[1] for p in (tmp_path / "out" / "runs").iterdir())
    assert names == ["run1", "run2"]


def test_an_output_folder_keeps_its_last_three_runs(ruleset, tmp_path):
    results = [run_batch(ruleset, options(tmp_path)) for _ in range(5)]
    kept = sorted((tmp_path / "out" / "runs").iterdir())
    assert kept == [r.out_dir for r in results[2:]]


def test_out_pointed_at_a_folder_of_other_files_is_refused(ruleset, tmp_path):
    folder = tmp_path / "documents"
    (folder / "letters").mkdir(parents=True)
    (folder / "letters" / "to-my-bank.txt").write_text("keep me")
    (folder / "report.html").write_text("<p>my report</p>")
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(
        UsageError,
        match=r"did not write \(letters, notes.txt, report.html\).*--force",
    ):
        run_batch(ruleset, options(tmp_path, out_dir=folder))
    assert sorted(p.name for p in folder.iterdir()) == ["letters", "notes.txt", "report.html"]
    result = run_batch(ruleset, options(tmp_path, out_dir=folder, force=True))
    assert (folder / "notes.txt").read_text() == "mine"
    earlier = folder / "runs" / "00000000T000000-earlier"
    assert (earlier / "letters" / "to-my-bank.txt").read_text() == "keep me"
    assert (earlier / "report.html").read_text() == "<p>my report</p>"
    assert current_run(folder) == result.out_dir
    for _ in range(4):  # never pruned
        run_batch(ruleset, options(tmp_path, out_dir=folder))
    assert (earlier / "letters" / "to-my-bank.txt").is_file()


def test_outputs_of_the_layout_before_run_folders_become_a_run_folder(ruleset, tmp_path):
    run_batch(ruleset, options(tmp_path))
    old = tmp_path / "old"
    old.mkdir()
    for name in driver.OUTPUT_FILES:  # as runs wrote them before run folders
        shutil.copy(tmp_path / "out" / name, old / name)
    (old / ".decisions.jsonl.123.partial").write_text("left by a killed run")
    (old / ".letters.123.stale").mkdir()
    result = run_batch(ruleset, options(tmp_path, out_dir=old))
    assert current_run(old) == result.out_dir
    earlier = old / "runs" / "00000000T000000-earlier"
    assert sorted(p.name for p in earlier.iterdir()) == sorted(driver.OUTPUT_FILES)
    assert not list(old.glob(".*.partial")) and not list(old.glob(".letters.*"))


def test_history_keep_removes_the_folders_of_the_runs_it_deletes(cli_run, tmp_path):
    db = str(tmp_path / "h.sqlite")
    for out in ("a", "a", "b"):
        args = ["run", "--as-of", "2026-11-26", "--out", str(tmp_path / out), "--db", db]
        assert cli_run(*args, "-q", "--no-letters", "--workers", "1").exit_code == 0
    first = RunHistory(tmp_path / "h.sqlite").run(1).output_folder
    assert Path(first).is_dir()
    shown = cli_run("history", "1", "--db", db).output
    assert "letters:     none written ('eligibility letters --run 1' writes them)" in shown
    result = cli_run("history", "--keep", "1", "--forget-memory", "--db", db)
    assert result.exit_code == 0, result.stderr
    assert not Path(first).exists()  # run 1's folder went with it
    assert "(deleted since)" not in cli_run("history", "2", "--db", db).output
    assert current_run(tmp_path / "a").name.endswith("run2")  # run 2 was current: kept


@pytest.mark.parametrize(
    "spec,says",
    [
        ("git:HEAD:--output={file}", "is not a git path"),
        ("git:--output={file}:rules", "is not a git revision"),
        ("git:--list:rules", "is not a git revision"),
        ("git:HEAD:../rules", "must be inside the repository"),
        ("git:HEAD:/etc", "must be inside the repository"),
        ("git:HEAD", "write a git rule set as git:REVISION:PATH"),
        ("git:no-such-revision:rules", "git could not read it"),
        ("git:HEAD:no/such/folder", "git could not read it"),
    ],
)
def test_hostile_git_revisions_fail_with_one_line(cli_run, tmp_path, spec, says):
    target = tmp_path / "victim.txt"
    target.write_text("precious")
    result = cli_run("diff", "--base", spec.format(file=target), "--proposed", "rules")
    assert result.exit_code == 1, result.output
    assert says in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert target.read_text() == "precious"


def test_rule_files_linking_outside_their_folder_are_refused(tmp_path):
    from engine.errors import RuleSetError
    from engine.ruleset.loader import load_rules

    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    secret = tmp_path / "secret.yaml"
    secret.write_text("api_key: hunter2\n")
    (rules / "zz.yaml").symlink_to(secret)
    with pytest.raises(RuleSetError) as raised:
        load_rules(rules)
    assert f"{rules / 'zz.yaml'}:1:1: this is a link to {secret}" in str(raised.value)
    assert "hunter2" not in str(raised.value) and "api_key" not in str(raised.value)


@pytest.mark.parametrize(
    "name", ["en/status.md.j2", "letter.html.j2", "letters.yaml", "en/terms.yaml"]
)
def test_templates_linking_outside_their_folder_are_refused(ruleset, tmp_path, name):
    from engine.errors import RuleSetError
    from engine.letters.template_check import check_templates

    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0\n")
    (templates / name).unlink()
    (templates / name).symlink_to(secret)
    with pytest.raises(RuleSetError) as raised:
        check_templates(ruleset, templates, EXAMPLES / "roster.csv", None, AS_OF)
    assert f"this is a link to {secret}, outside the folder" in str(raised.value)
    assert "root:x" not in str(raised.value)


def test_workers_die_quietly_with_a_killed_main_process(tmp_path, big_roster):
    out, db = tmp_path / "out", tmp_path / "runs.sqlite"
    process = _slow_run(big_roster, out, db, workers=2)
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob("runs/.*.partial")):
        time.sleep(0.02)
    time.sleep(0.5)
    children = subprocess.run(
        ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
    ).stdout.split()
    process.kill()  # SIGKILL to the main process only
    _, error = process.communicate(timeout=30)
    time.sleep(1)
    assert children, "the run had no workers"
    for pid in children:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )
    assert "Traceback" not in error and "BrokenPipe" not in error
    connection = sqlite3.connect(db)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    connection.close()
    assert os.path.exists(out)


def test_runs_killed_in_every_phase_leave_a_complete_current_run(tmp_path):
    """The short version of bench/kill_test.py: one kill at a random moment,
    one as the report is written, one as the run is recorded and switched to;
    each time the current run and the history are whole, and the next run
    lists the right changes."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench/kill_test.py"), "--partners", "1500", "--kills", "3"]
        + ["--work", str(tmp_path), "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 of 3 clean" in result.stdout, result.stdout


def test_a_run_moving_too_many_partners_is_held_until_released(cli_run, tmp_path):
    """A quarter later (or a rule change) many partners move: with
    --max-moves 1 the run is recorded and its outputs written, but its
    letters wait in held-letters/ until a manager releases it."""
    out, db = tmp_path / "out", str(tmp_path / "h.sqlite")
    base = ["run", "--out", str(out), "--db", db, "--workers", "1"]
    assert cli_run(*base, "--as-of", "2026-08-20", "-q").exit_code == 0
    result = cli_run(*base, "--as-of", "2026-11-26", "--max-moves", "1")
    assert result.exit_code == 0, result.stderr
    assert "HELD: " in result.output and "eligibility release 2" in result.output
    run = current_run(out)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["held"]["moved"] > 0 and summary["held"]["released_at"] is None
    assert (run / "held-letters" / "index.csv").is_file() and not (run / "letters").exists()
    assert not (out / "letters").exists()  # nothing to send from
    refused = cli_run("letters", str(out))
    assert refused.exit_code == 2 and "run 2 is held" in refused.stderr
    assert "HELD" in cli_run("history", "--db", db).output
    assert (
        "'eligibility release 2' lets its letters out" in cli_run("history", "2", "--db", db).output
    )
    released = cli_run("release", "2", "--db", db)
    assert released.exit_code == 0, released.stderr
    assert (out / "letters" / "index.csv").is_file() and not (run / "held-letters").exists()
    assert "released 20" in cli_run("history", "2", "--db", db).output
    assert cli_run("release", "2", "--db", db).exit_code == 2  # not held any more


def test_a_rerun_moving_nobody_is_not_held(ruleset, tmp_path):
    run_batch(ruleset, options(tmp_path))
    result = run_batch(ruleset, options(tmp_path, max_moves=0.0))
    assert result.held is None and "held" not in result.summary


def test_the_report_of_a_held_run_says_so(cli_run, tmp_path):
    out, db = tmp_path / "out", str(tmp_path / "h.sqlite")
    base = ["run", "--out", str(out), "--db", db, "--workers", "1", "-q"]
    assert cli_run(*base, "--as-of", "2026-08-20").exit_code == 0
    assert cli_run(*base, "--as-of", "2026-11-26", "--max-moves", "1", "--report").exit_code == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<strong>Held:</strong>" in page and "eligibility release 2" in page


def test_ids_seen_are_kept_by_roster_place_as_a_dict_would_keep_them():
    """SeenIds (the run's record of ids read) behaves as the dict it replaces,
    for ids with a place in the roster (kept in an array) and without."""
    from engine.run.driver import SeenIds

    seen, plain = SeenIds(), {}
    seen.index_by({"P-1": 0, "P-2": 1, "P-3": 2})
    for pid, row in (("P-2", 2), ("X-9", 3), ("P-1", 5)):
        assert pid not in seen
        seen[pid] = plain[pid] = row
    assert seen.setdefault("P-2", 99) == plain.setdefault("P-2", 99) == 2
    assert seen.setdefault("Y-1", 7) == plain.setdefault("Y-1", 7) == 7
    assert "P-3" not in seen and "P-2" in seen and "X-9" in seen
    assert dict(seen) == plain and len(seen) == len(plain) == 4
    with pytest.raises(KeyError):
        seen["P-3"]
    seen.index_by({"Z": 0})  # too late: ids are already kept
    assert dict(seen) == plain
