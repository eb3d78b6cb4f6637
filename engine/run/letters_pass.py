"""The letters pass: every partner's letter for a finished run, ``DIR/letters/``.

``eligibility run`` writes its letters as it decides (in the decide
workers, from the values they computed); this pass replays them from a
run's output folder, for other formats, other templates or ``--only-changed``:
its decisions.jsonl and changes.csv (both in roster order), joined with the
roster the run read (checked by fingerprint, so a letter never mixes a run's
decisions with edited data). The metrics come from decisions.jsonl, as the
run computed them: letters do not read the performance history again.
Chunks of partners are rendered in worker processes, which write the letter
files into a new folder (see :mod:`engine.letters.files`); an interrupted
pass leaves the previous letters.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from engine.data.outputs import read_cell, write_json_atomically
from engine.data.readers import RowReader, file_fingerprint
from engine.data.run_folders import SUMMARY, OutputFolder, current_run
from engine.errors import DataError, UsageError
from engine.evaluate.changes import Change
from engine.evaluate.decide import recorded_values
from engine.evaluate.records import field_values
from engine.letters.files import (
    FORMATS,
    LetterNames,
    LetterWork,
    NewLetters,
    check_formats,
    write_letter,
)
from engine.letters.rendering import renderer_for
from engine.letters.settings import load_letter_settings
from engine.letters.template_check import check_templates
from engine.ruleset.model import RuleSet
from engine.run.driver import Progress, screened_rows, still_held
from engine.run.parallel import ordered_map, workers_inherit_memory

CHUNK_SIZE = 250  # letters a worker renders per task


@dataclass(frozen=True)
class LetterOptions:
    out_dir: Path
    templates: Path
    formats: tuple[str, ...] = tuple(FORMATS)
    only_changed: bool = False
    workers: int = 1
    roster: Path | None = None  # default: the run's own roster
    check: bool = True  # render every template for sample partners first


class LetterJob(NamedTuple):
    """One partner to write to: its decisions (with its metrics), changes, and
    roster data (a named tuple: jobs travel to the workers, and tuples pickle
    fast)."""

    decision: Mapping[str, Any]
    changes: tuple[Change, ...]
    record: Mapping[str, Any]
    stem: str  # the letter files' path in the folder, without extension (see LetterNames)


def write_letters(
    ruleset: RuleSet, options: LetterOptions, progress: Callable[[Progress], None] | None = None
) -> dict:
    """Write the letters of the run in ``options.out_dir`` (an output folder's
    current run, or a run's own folder) into its folder; returns their summary,
    which is also added to the run's summary.json under ``letters``.
    ``progress`` is told after each chunk how many letters are written."""
    check_formats(options.formats)
    folder = current_run(options.out_dir)
    outputs = OutputFolder.of_run(folder)
    with outputs.lock():
        summary = _write_letters(ruleset, options, folder, progress)
    if outputs.current() == folder.resolve():
        outputs.link_outputs()  # DIR/letters, when the run had none
    return summary


def _write_letters(
    ruleset: RuleSet,
    options: LetterOptions,
    folder: Path,
    progress: Callable[[Progress], None] | None,
) -> dict:
    summary_path = folder / SUMMARY
    run = json.loads(summary_path.read_text(encoding="utf-8"))
    held = still_held(run)
    if held is not None:
        raise UsageError(
            f"run {run['run']['id']} is held: {held['reason']}. Look at its changes "
            f"(changes.csv, the report), then 'eligibility release {run['run']['id']}' "
            "to let its letters out"
        )
    if run["rule_set"]["fingerprint"] != ruleset.fingerprint:
        raise DataError(
            f"the rules have changed since the run in {options.out_dir} (its rules "
            f"have fingerprint {run['rule_set']['fingerprint']}, these "
            f"{ruleset.fingerprint}); run again, or give the run's rules"
        )
    roster = options.roster or Path(run["inputs"]["roster"]["file"])
    _same_input(roster, run["inputs"]["roster"]["fingerprint"])
    as_of = dt.date.fromisoformat(run["as_of"])
    if options.check:  # sample partners' history, where the run's file still is
        performance = run["inputs"].get("performance", {}).get("file")
        check_templates(ruleset, options.templates, roster, performance, as_of)
    settings = load_letter_settings(options.templates, ruleset)
    previous_run = run["changes"]["previous_run"]

    letters = NewLetters(folder, options.formats, shown_as=options.out_dir)
    try:
        selected = _Selection(_jobs(ruleset, folder, roster, letters.names), options.only_changed)
        shared = (
            ruleset,
            LetterWork(
                str(options.templates),
                settings,
                letters.formats,
                str(letters.folder),
                as_of,
                previous_run,
            ),
        )
        if options.workers > 1 and workers_inherit_memory():
            # Compiled here once (or already, by the check), not in every worker.
            renderer_for(str(options.templates), settings, ruleset.currency)
        tasks = ((chunk,) for chunk in _chunks(iter(selected)))
        clock = time.perf_counter()
        for rows in ordered_map(render_chunk, tasks, options.workers, shared=shared):
            letters.add(rows)
            if progress:
                progress(
                    Progress(
                        letters.tally.written,
                        letters.tally.written + selected.skipped,
                        run["partners"]["decided"],
                        time.perf_counter() - clock,
                        "letters",
                    )
                )
        letters.commit()
    except BaseException:
        letters.discard()
        raise
    summary = letters.summary(options.only_changed, selected.skipped)
    run["letters"] = summary
    write_json_atomically(summary_path, run)
    return summary


def _same_input(path: Path, fingerprint: str) -> None:
    if not path.is_file():
        raise UsageError(f"{path}: the run's roster is not there any more; give it with --roster")
    found = file_fingerprint(path)
    if found != fingerprint:
        raise DataError(
            f"{path} has changed since the run (fingerprint {found}, the run "
            f"read {fingerprint}); run again so that letters match the data"
        )


def _jobs(ruleset: RuleSet, folder: Path, roster: Path, names: LetterNames) -> Iterator[LetterJob]:
    """A run's decided partners (``folder``: its own folder) in roster order,
    joined with their changes and roster rows, each with its letter's path
    (``names``)."""
    metric_names = {metric.name for metric in ruleset.metrics}
    decisions_path = folder / "decisions.jsonl"
    changes_path = folder / "changes.csv"
    # Every row a run decides or rejects by its fields is named, in roster
    # order, as the run names them (screened_rows), so that letters written
    # here and by the run get the same file names.
    rows = screened_rows(RowReader(roster, ruleset.fields), {})
    with (
        decisions_path.open("rb") as decisions,
        changes_path.open(newline="", encoding="utf-8") as changes_file,
    ):
        changes = _changes_by_partner(csv.reader(changes_file))
        pending = next(changes, None)
        for number, line in enumerate(decisions, 1):
            decision = orjson.loads(line)
            decision.pop("not_enrolled", None)  # long, and no letter uses it: not sent to workers
            if not metric_names <= decision.get("metrics", {}).keys():
                raise DataError(
                    f"{decisions_path}:{number}: no metrics for partner "
                    f"{decision['partner_id']} (written before runs recorded "
                    "them); run again"
                )
            partner_changes: tuple = ()
            if pending is not None and pending[0] == decision["partner_id"]:
                partner_changes = pending[1]
                pending = next(changes, None)
            for row, outcome in rows:  # outcome: the row's partner id, or its Reject
                stem = names(outcome) if outcome.__class__ is str else None
                if row.row == decision["row"]:
                    break
            else:
                stem = None  # the roster ended first
            if stem is None or outcome != decision["partner_id"]:
                raise DataError(
                    f"{roster}: no row {decision['row']} for partner "
                    f"{decision['partner_id']}; the roster does not match the run"
                )
            yield LetterJob(decision, partner_changes, row.record, stem)
        # What is left can only be partners removed since the previous run.
        while pending is not None:
            if any(c.change != "removed_partner" for c in pending[1]):
                raise DataError(
                    f"{changes_path} does not match {decisions_path} (changes for "
                    f"partner {pending[0]} out of order); run again"
                )
            pending = next(changes, None)


def _changes_by_partner(reader) -> Iterator[tuple[str, tuple[Change, ...]]]:
    """changes.csv grouped by partner, in file order (the roster's order)."""
    next(reader, None)  # header
    current: str | None = None
    group: list[Change] = []
    for row in reader:
        change = Change(read_cell(row[0]), *row[1:])
        if change.partner_id != current and group:
            yield current, tuple(group)
            group = []
        current = change.partner_id
        group.append(change)
    if group:
        yield current, tuple(group)


class _Selection:
    """The jobs to write: all, or with --only-changed those with changes; counts
    the ones left out."""

    def __init__(self, jobs: Iterator[LetterJob], only_changed: bool):
        self._jobs = jobs
        self.only_changed = only_changed
        self.skipped = 0

    def __iter__(self) -> Iterator[LetterJob]:
        for job in self._jobs:
            if self.only_changed and not job.changes:
                self.skipped += 1
                continue
            yield job


def _chunks(jobs: Iterator[LetterJob]) -> Iterator[list[LetterJob]]:
    chunk: list[LetterJob] = []
    for job in jobs:
        chunk.append(job)
        if len(chunk) >= CHUNK_SIZE:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def render_chunk(ruleset: RuleSet, work: LetterWork, jobs: Sequence[LetterJob]) -> list[tuple]:
    """Render and write the letters of one chunk; returns their index rows.

    A pure function of its arguments but for the files it writes into
    ``work.folder``, each named after its own partner.
    """
    renderer = renderer_for(work.templates, work.settings, ruleset.currency)
    rows = []
    for job in jobs:
        fields, _ = field_values(ruleset, job.record)
        values = recorded_values(ruleset, fields, job.decision["metrics"])
        rows.append(
            write_letter(ruleset, renderer, work, values, job.decision, job.changes, job.stem)
        )
    return rows
