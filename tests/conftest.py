"""Shared fixtures: the reference rules, the example data, and a CLI runner."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
AS_OF = dt.date(2026, 11, 26)
EXAMPLES = ROOT / "examples"


def example_run_options(tmp_path: Path, **overrides):
    """RunOptions for a run of the example roster and history as of AS_OF, in
    one process, writing to tmp_path/out and tmp_path/runs.sqlite; any
    option can be overridden."""
    from engine.run.driver import RunOptions

    values = dict(
        roster=EXAMPLES / "roster.csv",
        performance=EXAMPLES / "performance.csv",
        as_of=AS_OF,
        out_dir=tmp_path / "out",
        workers=1,
        db=tmp_path / "runs.sqlite",
    )
    values.update(overrides)
    return RunOptions(**values)


@pytest.fixture(scope="session")
def ruleset():
    from engine.ruleset.loader import load_rules

    return load_rules(ROOT / "rules")


@pytest.fixture(scope="session")
def evaluator(ruleset):
    from engine.evaluate.decide import Evaluator

    return Evaluator(ruleset)


@pytest.fixture(scope="session")
def example_partners(ruleset):
    """The example partners whose rows are valid (the example has a few bad rows)."""
    partners = load_example_partners(ruleset)
    assert len(partners) == 32
    return partners


def load_example_partners(ruleset) -> list:
    """The valid example partners as ``ruleset`` reads them, with their history."""
    from engine.data.readers import read_rows
    from engine.errors import DataError
    from engine.evaluate.records import partner_from_record

    history: dict[str, list] = {}
    for row in read_rows(ROOT / "examples" / "performance.csv"):
        if row.record["quarter"] != "2026Q5":
            history.setdefault(row.record["partner_id"], []).append(row.record)
    partners = []
    for row in read_rows(ROOT / "examples" / "roster.csv"):
        try:
            partners.append(
                partner_from_record(ruleset, row.record, history.get(row.record["partner_id"], []))
            )
        except DataError:
            pass
    return partners


@pytest.fixture
def cli_run(monkeypatch):
    """Run the CLI from the project folder; returns click's Result (stderr separate)."""
    from cli import cli

    monkeypatch.chdir(ROOT)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return run


@pytest.fixture
def rules_copy(tmp_path):
    """A writable copy of a rules folder (the reference rules by default)."""

    def make(source: Path = ROOT / "rules") -> Path:
        target = tmp_path / "rules"
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("tests"))
        return target

    return make
