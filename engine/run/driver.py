"""Batch runs: a whole roster against a rule set, as of a date.

The roster is read as a stream and cut into chunks. Each chunk gets its
partners' staged history and their decisions in the previous run, and goes
to a worker process (see :mod:`engine.run.chunks`), which decides, explains,
lists the changes and, with ``RunOptions.letters``, writes each partner's
letter. Results come back in roster order whatever the number of workers,
so outputs are deterministic. Bad rows are set aside in ``rejects.csv`` with
their row number and reason, and the counts always reconcile: rows read =
partners decided + rows rejected.

A run's outputs are one unit (see :mod:`engine.data.run_folders`): the run
holds the locks of its output folder and run history from before it reads
the previous run; it writes everything (letters, and the report with
``RunOptions.report``) into a folder of its own, records itself in the run
history in one transaction, and then becomes the current run in one rename.
A run stopped at any moment leaves the previous complete run current, or
the new one complete.
"""

from __future__ import annotations

import array
import collections
import contextlib
import datetime as dt
import functools
import heapq
import json
import operator
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from engine.data.memory import EarlierEnrollments, MemorySource
from engine.data.outputs import AtomicFile, CsvOutput, write_json_atomically
from engine.data.performance import HistoryStore
from engine.data.readers import (
    PARQUET_BATCH,
    RowReader,
    SourceRow,
    check_columns,
    declare_encoding,
    file_fingerprint,
    unreadable_row,
)
from engine.data.rejects import COLUMNS as REJECT_COLUMNS, Reject
from engine.data.run_folders import STOPPED, OutputFolder, remove_run_folder
from engine.data.run_history import DEFAULT_DB, RunHistory, RunRecord, lock_history
from engine.errors import DataError, UsageError
from engine.evaluate.changes import (
    COLUMNS as CHANGE_COLUMNS,
    KINDS as CHANGE_KINDS,
    MOVES,
    Change,
)
from engine.evaluate.decide import compiled_rules
from engine.evaluate.records import MAX_ID_LENGTH, PARTNER_ID, partner_id_value, shorten
from engine.letters.files import (
    FORMATS as LETTER_FORMATS,
    HELD_LETTERS,
    LETTERS_FOLDER,
    LetterWork,
    NewLetters,
    check_formats,
)
from engine.letters.rendering import renderer_for
from engine.letters.settings import load_letter_settings
from engine.letters.template_check import check_templates
from engine.ruleset.model import ENGAGEMENT, RuleSet
from engine.ruleset.quarters import Quarter, figures_through
from engine.run.chunks import (
    ENROLLMENT_COLUMNS,
    ChunkResult,
    ChunkRows,
    ColumnRows,
    Earlier,
    decide_chunk,
    merge_bare_shares,
    warm_up,
)
from engine.run.cluster import ClusterSpec, cluster_map, connected
from engine.run.parallel import ordered_map, workers_inherit_memory

CHUNK_SIZE = 500  # rows a worker decides per task
# On a Dask cluster: each task costs the driver, the scheduler and the worker
# about 6 ms of CPU together, whatever its size (docs/benchmarks.md).
CLUSTER_CHUNK_SIZE = 2000


def chunk_rows(cluster: str | None) -> int:
    """Rows a task decides by default: in a process pool, or on a cluster."""
    return CHUNK_SIZE if cluster is None else CLUSTER_CHUNK_SIZE


OUTPUT_FILES = ("decisions.jsonl", "enrollments.csv", "rejects.csv", "changes.csv", "summary.json")
# kept_by and kept_until: how memory keeps the partner in a program it does
# not qualify for now (grace, protection, renewal), and until when; empty if it qualifies.


@dataclass(frozen=True)
class RunOptions:
    roster: Path
    performance: Path | None
    as_of: dt.date
    out_dir: Path
    workers: int = 1
    strict: bool = False
    db: Path = Path(DEFAULT_DB)
    chunk_size: int | None = None  # CHUNK_SIZE, or CLUSTER_CHUNK_SIZE with a cluster
    letters: RunLetters | None = None  # write every partner's letter as it is decided
    # Decide without a performance file although the rules declare history
    # figures: every history metric is then missing. Never a default.
    without_history: bool = False
    # The last quarter complete on the as-of date must have figures for at
    # least this share of the partners that reported in the four quarters
    # before it; else its figures are not in yet, and the run stops. 0: no check.
    min_quarter_share: float = 0.5
    # Writes the run's report into its folder before the run becomes current
    # (engine.report.html.build_report; the report package sits above this one).
    report: Callable[[Path], Path] | None = None
    # Write into an --out folder that holds files this program did not write.
    force: bool = False
    # The share of roster rows that may be rejected (else the run stops before
    # anything is recorded); None: the rule set's (ruleset: max_rejects:, 5%).
    max_rejects: float | None = None
    # The share of decided partners that may move (tier, classification,
    # engagement model) against the previous run; more holds the run: its
    # letters wait in held-letters/ for 'eligibility release'. None: the rule
    # set's (ruleset: max_moves:, 20%).
    max_moves: float | None = None
    # Read the roster and history (CSV) in this encoding, not the one found.
    encoding: str | None = None
    # The last quarter whose figures history metrics read, when the last one
    # complete on the as-of date is not in yet; None: that one. Dates
    # (tenure, dated rules) still count from as_of.
    through: Quarter | None = None
    # Earlier enrollments (CSV: partner_id, program, from, to) for rules
    # with memory, beside the run history (engine.data.memory).
    enrollments: Path | None = None
    # Decide on a Dask cluster (engine.run.cluster): a scheduler's address,
    # or local:N; None: the process pool of ``workers``.
    cluster: str | None = None


@dataclass(frozen=True)
class RunLetters:
    """The letters a run writes into ``letters/`` (see :mod:`engine.letters.files`)."""

    templates: Path
    formats: tuple[str, ...] = tuple(LETTER_FORMATS)


@dataclass(frozen=True)
class Progress:
    """How far a long step has got: ``count`` items handled so far (roster
    rows decided or rejected, or letters written), and ``done`` of ``total``
    units of work (bytes of the roster, or letters) for the time left."""

    count: int
    done: int
    total: int
    elapsed: float
    what: str = "partners"


@dataclass
class RunResult:
    run_id: int | None
    summary: dict
    out_dir: Path  # the run's folder (DIR/runs/<name>; DIR/stopped-run when it stopped)
    rejected_rows: int = 0
    history_rejects: int = 0
    changes: int = 0
    failed_strict: bool = False
    letters: dict | None = None  # the letters' summary, when the run wrote them
    held: dict | None = None  # why the run's letters are held (see RunOptions.max_moves)


@dataclass
class RunTally:
    rows_read: int = 0
    decided: int = 0
    rejected_rows: int = 0
    history_rejects: int = 0
    reject_lines: int = 0
    recently_reporting: int = 0  # see ChunkResult.reporting
    latest_reported: int = 0
    classifications: dict = field(default_factory=dict)
    engagement: collections.Counter = field(default_factory=collections.Counter)
    programs: collections.Counter = field(default_factory=collections.Counter)
    changes: collections.Counter = field(default_factory=collections.Counter)
    defaults: collections.Counter = field(default_factory=collections.Counter)
    moved: int = 0  # partners with a change in MOVES
    kept: collections.Counter = field(default_factory=collections.Counter)  # (program, how)
    enrollment_rows: int = 0
    enrollment_rejects: int = 0
    # Rejects by (file, column), and the first of each: what a refusal of a
    # whole file names as its main reason.
    reject_columns: collections.Counter = field(default_factory=collections.Counter)
    first_rejects: dict = field(default_factory=dict)
    bare_shares: dict = field(default_factory=dict)  # see engine.run.chunks.BareShares


class _Outputs:
    """The output files of one run, committed together at the end."""

    def __init__(self, folder: Path):
        self.decisions = AtomicFile(folder / "decisions.jsonl")
        self.enrollments = CsvOutput(folder / "enrollments.csv", ENROLLMENT_COLUMNS)
        self.rejects = CsvOutput(folder / "rejects.csv", REJECT_COLUMNS)
        self.changes = CsvOutput(folder / "changes.csv", CHANGE_COLUMNS)
        self.all = (self.decisions, self.enrollments, self.rejects, self.changes)

    def commit(self, only: tuple = ()) -> None:
        for output in self.all:
            if not only or output in only:
                output.commit()
            else:
                output.discard()

    def discard(self) -> None:
        for output in self.all:
            output.discard()


def run_batch(
    ruleset: RuleSet, options: RunOptions, progress: Callable[[Progress], None] | None = None
) -> RunResult:
    """Decide every partner of a roster; see the module docstring."""
    reader = RowReader(options.roster, ruleset.fields)  # a missing roster is said first
    figures_through(options.as_of, options.through)  # --through a quarter not ended
    if options.encoding is not None:
        for path in (options.roster, options.performance):
            if path is not None and path.is_file():
                declare_encoding(path, options.encoding)
    check_columns(options.roster, ruleset.fields, "roster")
    if options.letters is not None:
        check_formats(options.letters.formats)
    if options.performance is None and ruleset.figures and not options.without_history:
        raise UsageError(
            f"no performance history given, but the rules read quarterly figures "
            f"({', '.join(ruleset.figures)}): give the history file (--performance FILE), "
            "or decide without history on purpose (--no-performance: every metric of "
            "history is then missing). Nothing was decided"
        )
    if options.letters is not None:  # bad templates stop the run before anything is decided
        check_templates(
            ruleset, options.letters.templates, options.roster, options.performance, options.as_of
        )
    enrollments = EarlierEnrollments(options.enrollments, ruleset) if options.enrollments else None
    out = OutputFolder(options.out_dir)
    out.refuse_foreign(options.force)  # before its lock file is made there
    with out.lock(), lock_history(options.db):
        out.claim(options.force)
        runs = RunHistory(options.db)
        try:
            out.recover(runs.records_folder)
            return _run_locked(ruleset, options, reader, out, runs, progress, enrollments)
        finally:
            runs.close()


def _run_locked(
    ruleset: RuleSet,
    options: RunOptions,
    reader: RowReader,
    out: OutputFolder,
    runs: RunHistory,
    progress: Callable[[Progress], None] | None,
    enrollments: EarlierEnrollments | None = None,
) -> RunResult:
    """The run, holding the locks: see the module docstring."""
    clock = time.perf_counter()
    started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    roster_source = str(options.roster.resolve())
    fingerprints = {"roster": file_fingerprint(options.roster)}
    if enrollments is not None:
        fingerprints["enrollments"] = file_fingerprint(enrollments.path)
    memory = (
        MemorySource(ruleset, options.as_of, runs, enrollments) if ruleset.uses_memory else None
    )
    # Read under the locks: no other run can record itself in between.
    previous = runs.previous_run(ruleset.name, roster_source)
    runs.begin()
    run_id = runs.next_run_id()
    staging, final = out.stage(run_id)
    history = HistoryStore(ruleset.figures)
    outputs = _Outputs(staging)
    tally = RunTally()
    timings: dict[str, float] = {}
    letters: _RunLetters | None = None
    stack = contextlib.ExitStack()  # a Dask client, with --cluster
    try:
        if options.letters is not None:
            letters = _RunLetters(ruleset, options, staging, previous.id if previous else None)
        seen = SeenIds()
        # Rows set aside while a chunk was read, written with that chunk's
        # results: the same place in rejects.csv whatever the number of workers.
        aside: collections.deque[list[Reject]] = collections.deque()

        def report() -> None:
            if progress:
                progress(
                    Progress(
                        tally.rows_read, reader.bytes_read, reader.size, time.perf_counter() - clock
                    )
                )

        def tasks() -> Iterator[tuple]:
            # History is read here, once the workers have started: they build
            # their engines (warm_up) meanwhile.
            if options.performance is not None:
                fingerprints["performance"] = file_fingerprint(options.performance)
                for reject in history.load(options.performance, options.roster):
                    _write_reject(reject, outputs, tally)
                    tally.history_rejects += 1
            if enrollments is not None:
                tally.enrollment_rows = enrollments.rows_read
                for reject in enrollments.rejects:
                    _write_reject(reject, outputs, tally)
                    tally.enrollment_rejects += 1
            seen.index_by(history.roster_positions)
            timings["history_seconds"] = round(time.perf_counter() - clock, 3)
            names = letters.names if letters is not None else None
            size = options.chunk_size or chunk_rows(options.cluster)
            chunks = roster_chunks(reader, history, seen, tally, size, names)
            for chunk, set_aside in chunks:
                aside.append(set_aside)
                recalled = memory.for_partners(chunk.partner_ids) if memory else None
                earlier = _earlier(runs, previous, chunk)
                yield chunk, options.as_of, earlier, options.through, recalled, True

        if options.workers > 1 and workers_inherit_memory():
            compiled_rules(ruleset)  # once, here: forked workers inherit it
        shared = (ruleset, letters.work if letters is not None else None)
        if options.cluster is not None:  # engine.run.cluster: Dask's workers decide
            spec = ClusterSpec.parse(options.cluster)
            client = stack.enter_context(connected(spec))
            results = cluster_map(client, spec, decide_chunk, tasks(), shared)
        else:
            results = ordered_map(
                decide_chunk,
                tasks(),
                options.workers,
                warm_up=functools.partial(warm_up, ruleset),
                shared=shared,
            )
        # Closed as soon as the loop ends, however it ends: a run stopped
        # (Ctrl-C) waits here for the workers' chunks in flight, so that none
        # writes a letter into the staging folder after it is removed.
        with contextlib.closing(results):
            for result in results:
                _record_chunk(result, aside.popleft(), run_id, runs, outputs, tally)
                if letters is not None:
                    letters.add(result.letters)
                report()
        # Never a run over nobody (below too): it would list every partner as
        # removed, and the next run would compare with it.
        if tally.rows_read == 0:
            raise DataError(
                f"{options.roster}: "
                + ("the file is empty" if reader.size == 0 else "the file has no partner rows")
                + "; nothing was decided or recorded. Check the export and run again"
            )
        if previous is not None:
            for partner_id in runs.removed(previous.id, run_id):
                _write_change(Change(partner_id, "removed_partner", "", "", "", ""), outputs, tally)
        for reject in history.late_rejects(seen):  # not a copy (30 MB at 1M ids)
            _write_reject(reject, outputs, tally)
            tally.history_rejects += 1
        if tally.decided == 0:
            rows = f"all {tally.rows_read} rows were" if tally.rows_read > 1 else "its only row was"
            raise DataError(
                f"{options.roster}: no partner could be decided, {rows} rejected; see "
                f"{_keep_rejects(outputs, out)} (nothing else was written or recorded)"
            )
        if options.performance is not None and tally.history_rejects >= history.rows_read > 0:
            raise DataError(
                f"{options.performance}: all {history.rows_read:,} rows of the history file "
                f"were rejected{_main_reason(tally, history.source)}; see "
                f"{_keep_rejects(outputs, out)}. Is it the right file? "
                "Deciding without any figures would turn every revenue-based decision. "
                "Nothing was recorded"
            )
        _check_rejects(ruleset, options, tally, outputs, out)
        _check_latest_quarter(options, tally)
        _check_share_scale(options, tally)
        timings["total_seconds"] = round(time.perf_counter() - clock, 3)
        if tally.rows_read != tally.decided + tally.rejected_rows:  # pragma: no cover
            raise AssertionError("the counts do not reconcile; this is a bug")
        summary = _summary(
            ruleset, options, fingerprints, history, tally, previous, run_id, started_at, timings
        )
        result = RunResult(
            run_id,
            summary,
            final,
            tally.rejected_rows,
            tally.history_rejects,
            sum(tally.changes.values()),
        )
        if options.strict and (tally.rejected_rows or tally.history_rejects):
            result.out_dir = _keep_rejects(outputs, out).parent
            result.failed_strict = True
            result.run_id = None
            raise _Stopped(result)
        result.held = _held(ruleset, options, tally, previous)
        if result.held is not None:
            summary["held"] = result.held
        if letters is not None:
            summary["letters"] = result.letters = letters.summary()
        outputs.commit()
        if letters is not None:
            letters.commit()
            if result.held is not None:  # kept aside until released
                os.replace(staging / LETTERS_FOLDER, staging / HELD_LETTERS)
        write_json_atomically(staging / "summary.json", summary)
        if options.report is not None:
            options.report(staging)
        out.publish(staging, final)
        finished_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        runs.finish(
            RunRecord(
                run_id,
                started_at,
                finished_at,
                options.as_of.isoformat(),
                ruleset.name,
                ruleset.fingerprint,
                roster_source,
                fingerprints["roster"],
                str(options.performance.resolve()) if options.performance else None,
                fingerprints.get("performance"),
                tally.rows_read,
                tally.decided,
                tally.rejected_rows,
                str(final.resolve()),
                summary,
            )
        )
        out.switch(final)
        out.prune()
        return result
    except _Stopped as stopped:
        _discard(outputs, runs, letters, staging)
        return stopped.result
    except BaseException:
        _discard(outputs, runs, letters, staging)
        raise
    finally:
        stack.close()
        history.close()


class _Stopped(Exception):
    """A run that stops without becoming current, with its result (--strict)."""

    def __init__(self, result: RunResult):
        self.result = result


def _discard(outputs: _Outputs, runs: RunHistory, letters, staging: Path) -> None:
    outputs.discard()
    runs.abort()
    if letters is not None:
        letters.discard()
    shutil.rmtree(staging, ignore_errors=True)


def _keep_rejects(outputs: _Outputs, out: OutputFolder) -> Path:
    """The rejects of a run that stops on them, kept in ``DIR/stopped-run/``
    (the current run stays as it was); returns the file."""
    outputs.commit(only=(outputs.rejects,))
    target = out.path / STOPPED / "rejects.csv"
    target.parent.mkdir(exist_ok=True)
    os.replace(outputs.rejects.path, target)
    return target


def prune_runs(db: Path, keep: int, forget_memory: bool = False) -> tuple[list[int], int]:
    """Delete all but the newest ``keep`` runs of each rule set over each
    roster from the run history, and their folders (never a current run's);
    returns the run ids deleted and how many partner decisions went with them.

    Runs of rules with memory are what their next runs read (grace,
    protection, renewal, held(...)): deleting them would change those
    decisions silently, so they are only deleted with ``forget_memory``."""
    with lock_history(db):
        runs = RunHistory(db)
        try:
            recorded = runs.runs()
            folders = {r.id: r.output_folder for r in recorded}
            if not forget_memory:
                doomed = set(runs.prunable(keep))
                remembering = sorted(
                    {
                        r.ruleset_name
                        for r in recorded
                        if r.id in doomed and r.summary.get("rule_set", {}).get("remembers")
                    }
                )
                if remembering:
                    raise UsageError(
                        f"the rules {', '.join(map(repr, remembering))} remember partners' "
                        "past (grace, protection, renewal, held): their next runs read the "
                        "runs --keep would delete, and would decide differently. Nothing "
                        "was deleted; add --forget-memory to delete them anyway"
                    )
            deleted, decisions = runs.prune(keep)
        finally:
            runs.close()
    for run_id in deleted:
        remove_run_folder(Path(folders[run_id]))
    return deleted, decisions


def roster_chunks(
    reader: RowReader,
    history: HistoryStore,
    seen: MutableMapping[str, int],
    tally: RunTally,
    size: int,
    names: Callable[[str], str] | None = None,
) -> Iterator[tuple[ChunkRows | ColumnRows, list[Reject]]]:
    """Roster rows in chunks, with their history, each with the rows set aside
    since the previous chunk (see :func:`screened_rows`; the last chunk may
    hold no rows, only those). ``seen`` collects the ids read; ``names``
    gives each partner its letter files' name, in roster order. A Parquet
    roster's chunks stay columns (:class:`~engine.run.chunks.ColumnRows`):
    this process reads only the partner ids, and the workers make the
    records."""
    if reader.kind == "parquet":
        yield from _column_chunks(reader, history, seen, tally, size, names)
        return
    chunk: list[tuple] = []
    aside: list[Reject] = []
    for row, outcome in screened_rows(reader, seen):
        tally.rows_read += 1
        if outcome.__class__ is Reject:
            aside.append(outcome)
            tally.rejected_rows += 1
            continue
        chunk.append((outcome, row))
        if len(chunk) == size:
            yield _with_history(chunk, history, names), aside
            chunk, aside = [], []
    if chunk or aside:
        yield _with_history(chunk, history, names), aside


def _column_chunks(
    reader: RowReader,
    history: HistoryStore,
    seen: MutableMapping[str, int],
    tally: RunTally,
    size: int,
    names: Callable[[str], str] | None,
) -> Iterator[tuple[ColumnRows, list[Reject]]]:
    """:func:`roster_chunks` of a Parquet roster: chunks of ``size`` rows as read
    (rows set aside included), each with its columns, not records."""
    for batch in reader.parquet_batches(max(size, PARQUET_BATCH)):
        # Ids that read as themselves need no other check than the duplicate
        # one (screen_partner_id would find them as they are).
        plain = batch.plain_text(PARTNER_ID, MAX_ID_LENGTH)
        ids = batch.column(PARTNER_ID)
        for start in range(0, len(ids), size):
            aside: list[Reject] = []
            picked: list[int] = []
            partner_ids: list[str] = []
            first = batch.first_row + start
            span = zip(ids[start : start + size], plain[start : start + size])
            for index, (raw, as_written) in enumerate(span):
                if as_written and raw not in seen:
                    seen[raw] = first + index
                    picked.append(index)
                    partner_ids.append(raw)
                    continue
                if (raw is None or raw == "") and batch.is_empty(start + index):
                    continue  # no row, as a blank line of a CSV file
                outcome = screen_partner_id(batch.file, first + index, raw, seen)
                if outcome.__class__ is Reject:
                    aside.append(outcome)
                    continue
                picked.append(index)
                partner_ids.append(outcome)
            tally.rows_read += len(picked) + len(aside)
            tally.rejected_rows += len(aside)
            if not (picked or aside):
                continue
            yield (
                ColumnRows(
                    batch.slice(start, size),
                    picked,
                    partner_ids,
                    history.rows_for(partner_ids),
                    history.source,
                    [names(pid) for pid in partner_ids] if names is not None else None,
                ),
                aside,
            )


def screened_rows(
    rows: Iterable[SourceRow], seen: MutableMapping[str, int]
) -> Iterator[tuple[SourceRow, str | Reject]]:
    """Each roster row with the partner_id it is decided under, or the reject
    that sets it aside first: an unreadable row, no usable partner_id, or one
    seen before (``seen``: partner id -> its first row, filled here). The
    letters pass names letter files by the same rule as runs do."""
    for row in rows:
        if row.problem:
            reject = unreadable_row(row)
            if reject.partner_id:  # in the roster, if unusable: its history is no orphan
                seen.setdefault(reject.partner_id, row.row)
            yield row, reject
            continue
        yield row, screen_partner_id(row.file, row.row, row.record.get(PARTNER_ID), seen)


class SeenIds(MutableMapping):
    """The partner ids a run has read, each with the roster row it was first
    on (for "duplicate partner_id (first on row 12)" and for history rows of
    partners not in the roster). When the history is merged in roster order
    the roster's ids are already known with their places
    (``HistoryStore.roster_positions``): their rows are then kept in an array
    by place, 8 bytes a partner instead of a dict entry and a second copy of
    each id (about 125 MB at a million partners); other ids in a dict."""

    def __init__(self) -> None:
        self._places: Mapping[str, int] = {}
        self._rows = array.array("q")  # by place; 0: not seen yet (rows count from 1)
        self._others: dict[str, int] = {}

    def index_by(self, places: Mapping[str, int] | None) -> None:
        """Keep the rows of these ids by their places (before any is added)."""
        if places is not None and not (self._others or self._places):
            self._places = places
            self._rows = array.array("q", bytes(8 * len(places)))

    def __contains__(self, partner_id: object) -> bool:
        place = self._places.get(partner_id)  # type: ignore[call-overload]
        return partner_id in self._others if place is None else self._rows[place] != 0

    def __getitem__(self, partner_id: str) -> int:
        place = self._places.get(partner_id)
        if place is not None and self._rows[place]:
            return self._rows[place]
        return self._others[partner_id]

    def __setitem__(self, partner_id: str, row: int) -> None:
        place = self._places.get(partner_id)
        if place is None:
            self._others[partner_id] = row
        else:
            self._rows[place] = row

    def __delitem__(self, partner_id: str) -> None:
        place = self._places.get(partner_id)
        if place is not None and self._rows[place]:
            self._rows[place] = 0
        else:
            del self._others[partner_id]

    def __iter__(self) -> Iterator[str]:
        rows = self._rows
        yield from (pid for pid, place in self._places.items() if rows[place])
        yield from self._others

    def __len__(self) -> int:
        return len(self._rows) - self._rows.count(0) + len(self._others)


def screen_partner_id(
    file: str, row: int, raw: Any, seen: MutableMapping[str, int]
) -> str | Reject:
    """The partner_id a roster row (``raw``: its value as read) is decided
    under, or the reject that sets the row aside: no usable partner_id, or
    one seen before (see :func:`screened_rows`)."""
    try:
        partner_id = partner_id_value(raw)
    except DataError as error:
        return Reject(file, row, "", PARTNER_ID, shorten(raw), str(error))
    if partner_id in seen:
        return Reject(
            file,
            row,
            partner_id,
            PARTNER_ID,
            partner_id,
            f"duplicate partner_id (first on row {seen[partner_id]})",
        )
    seen[partner_id] = row
    return partner_id


def _with_history(
    chunk: list[tuple], history: HistoryStore, names: Callable[[str], str] | None
) -> ChunkRows:
    ids = [pid for pid, _ in chunk]
    return ChunkRows(
        [row.file for _, row in chunk],
        [row.row for _, row in chunk],
        ids,
        [row.record for _, row in chunk],
        history.rows_for(ids),
        history.source,
        [names(pid) for pid in ids] if names is not None else None,
    )


def _earlier(
    runs: RunHistory, previous: RunRecord | None, chunk: ChunkRows | ColumnRows
) -> Earlier | None:
    """The chunk's partners in earlier runs (see :class:`~engine.run.chunks.Earlier`)."""
    if previous is None:
        return None
    partner_ids = chunk.partner_ids
    before = runs.snapshots(previous.id, partner_ids)
    missing = [pid for pid in partner_ids if pid not in before]
    returned = (
        runs.last_decided(previous.ruleset_name, previous.roster_source, missing, previous.id)
        if missing
        else {}
    )
    return Earlier(before, returned)


def _check_rejects(
    ruleset: RuleSet, options: RunOptions, tally: RunTally, outputs: _Outputs, out: OutputFolder
) -> None:
    """Stop before anything is recorded when more of the roster's rows were
    rejected than the rules (or --max-rejects) allow: an export that damaged
    (the wrong file, a broken column) should be looked at before partners
    are written to."""
    limit = ruleset.max_rejects if options.max_rejects is None else options.max_rejects
    rejected, read = tally.rejected_rows, tally.rows_read
    if not read or rejected <= limit * read:
        return
    raise DataError(
        f"{options.roster}: {rejected:,} of its {read:,} rows were rejected "
        f"({rejected / read:.1%}), more than the {limit:.0%} allowed (--max-rejects, or "
        f"max_rejects in the rule set); see {_keep_rejects(outputs, out)}. Fix the export "
        "and run again, or allow more with --max-rejects PERCENT. Nothing was recorded"
    )


def _held(
    ruleset: RuleSet, options: RunOptions, tally: RunTally, previous: RunRecord | None
) -> dict | None:
    """Why this run's letters must wait for a manager: more partners moved
    (tier, classification, engagement model) since the previous run than the
    rules allow. A rule change or a broken export moving a third of the
    partners should be looked at before they are told. None: not held."""
    limit = ruleset.max_moves if options.max_moves is None else options.max_moves
    if previous is None or not tally.decided or tally.moved <= limit * tally.decided:
        return None
    return {
        "reason": (
            f"{tally.moved:,} of {tally.decided:,} partners ({tally.moved / tally.decided:.1%}) "
            f"changed tier, classification or engagement model since run {previous.id}, "
            f"more than the {limit:.0%} allowed (--max-moves, or max_moves in the rule set)"
        ),
        "moved": tally.moved,
        "limit": limit,
        "released_at": None,
    }


def still_held(summary: dict) -> dict | None:
    """A run summary's ``held`` section while the run is held (see
    :func:`_held`); None once released, or for a run never held."""
    held = summary.get("held")
    return held if held and not held.get("released_at") else None


def release_run(db: Path, run_id: int) -> dict:
    """Release a held run (see :func:`_held`): its letters go to its letters/
    folder, and its summary (in its folder and in the run history) says when.
    Returns the run's summary."""
    with lock_history(db):
        runs = RunHistory(db)
        try:
            record = runs.run(run_id)
            folder = Path(record.output_folder)
            path = folder / "summary.json"
            if not path.is_file():
                raise UsageError(f"run {run_id}: its folder {folder} is gone")
            summary = json.loads(path.read_text(encoding="utf-8"))
            held = still_held(summary)
            if held is None:
                raise UsageError(f"run {run_id} is not held; its letters are in {folder}")
            out = OutputFolder.of_run(folder)
            with out.lock():
                if (folder / HELD_LETTERS).is_dir():
                    os.replace(folder / HELD_LETTERS, folder / LETTERS_FOLDER)
                held["released_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
                write_json_atomically(path, summary)
                runs.update_summary(run_id, summary)
                if out.current() == folder.resolve():
                    out.link_outputs()
        finally:
            runs.close()
    return summary


def _check_latest_quarter(options: RunOptions, tally: RunTally) -> None:
    """Stop before anything is recorded when the last complete quarter's
    figures are not in yet: counted as "not reported", they would turn
    partners at risk into good ones and growth into decline, silently."""
    recent, complete = tally.recently_reporting, tally.latest_reported
    if options.performance is None or not recent or complete >= options.min_quarter_share * recent:
        return
    latest = figures_through(options.as_of, options.through)
    raise DataError(
        f"{options.performance}: {latest} ended before {options.as_of}, but only {complete:,} "
        f"of the {recent:,} partners that reported in the four quarters before have figures "
        f"for it ({complete / recent:.0%}; at least {options.min_quarter_share:.0%} "
        f"expected). Load {latest}'s figures, or decide on the quarters that are complete "
        f"with --through {latest.previous()}; --min-quarter-share 0 decides anyway. "
        "Nothing was written or recorded"
    )


def _check_share_scale(options: RunOptions, tally: RunTally) -> None:
    """Stop before anything is recorded when a percentage column is written
    without % signs and every value is between -1 and 1: fractions (0.6 for
    60%) or points (0.6%)? Read wrongly, every share is a hundred times off,
    and every decision on it wrong (see engine.run.chunks.BareShares)."""
    for name, (count, over, row, value) in sorted(tally.bare_shares.items()):
        if count and not over:
            raise DataError(
                f"{options.roster}: {name} is a percentage, and its {count:,} values "
                f"written without a % sign are all between -1 and 1 (such as {value} on row "
                f"{row}): is {value} {_times_100(value)}% or {value}%? Say which in the field's "
                f"declaration in the rules, scale: fraction (0.6 is 60%) or scale: points "
                "(0.6 is 0.6%), or export the values with their % sign. "
                "Nothing was written or recorded"
            )


def _times_100(value: Any) -> str:
    """0.7 as 70, for the question about a share's scale."""
    try:
        return f"{Decimal(str(value).strip().replace(',', '')).scaleb(2).normalize():f}"
    except InvalidOperation:
        return "100 times"


def _record_chunk(
    result: ChunkResult,
    aside: list[Reject],
    run_id: int,
    runs: RunHistory,
    outputs: _Outputs,
    tally: RunTally,
) -> None:
    """Write a chunk's results, and its rejects with the rows set aside before
    it was sent (``aside``), in roster order."""
    in_order = heapq.merge(
        ((r.row, r) for r in aside),
        zip(result.reject_rows, result.rejects),
        key=operator.itemgetter(0),
    )
    for _, reject in in_order:
        _write_reject(reject, outputs, tally)
    tally.rejected_rows += result.rejected_rows
    tally.history_rejects += result.history_rejects
    tally.recently_reporting += result.reporting[0]
    tally.latest_reported += result.reporting[1]
    tally.defaults.update(result.defaults)
    merge_bare_shares(tally.bare_shares, result.bare_shares)
    tally.moved += len({c.partner_id for c in result.changes if c.change in MOVES})
    recorded = result.recorded  # the chunk's outputs, made by its worker
    runs.add_decision_rows(run_id, recorded.history)
    outputs.decisions.write_text(recorded.decisions)
    outputs.enrollments.write_text(recorded.enrollments)
    tally.decided += recorded.decided
    for table, counts in recorded.classifications.items():
        tally.classifications.setdefault(table, collections.Counter()).update(counts)
    tally.engagement.update(recorded.engagement)
    tally.programs.update(recorded.programs)
    tally.kept.update(recorded.kept)
    for change in result.changes:
        _write_change(change, outputs, tally)


class _RunLetters(NewLetters):
    """The letters a run writes as it decides: the new folder filled by the
    workers, with what they need (``work``) and each partner's file name,
    given in roster order (``names``)."""

    def __init__(
        self, ruleset: RuleSet, options: RunOptions, folder: Path, previous_run: int | None
    ):
        spec = options.letters
        super().__init__(folder, spec.formats, shown_as=options.out_dir)
        settings = load_letter_settings(spec.templates, ruleset)
        self.work = LetterWork(
            str(spec.templates),
            settings,
            self.formats,
            str(self.folder),
            options.as_of,
            previous_run,
        )
        # Compiled here once, not in every worker (forked workers inherit it).
        renderer_for(self.work.templates, settings, ruleset.currency)


def _write_reject(reject: Reject, outputs: _Outputs, tally: RunTally) -> None:
    outputs.rejects.write(reject.as_row())
    tally.reject_lines += 1
    where = (reject.source_file, reject.column)
    tally.reject_columns[where] += 1
    tally.first_rejects.setdefault(where, reject)


def _main_reason(tally: RunTally, source: str) -> str:
    """The column most of a file's rejects name, with its first reject:
    " (326 for their quarter, such as row 2: '2024-03-31' is not a quarter...)"."""
    counts = [(n, column) for (file, column), n in tally.reject_columns.items() if file == source]
    if not counts:
        return ""
    count, column = max(counts)
    first = tally.first_rejects[source, column]
    where = f"row {first.row}: " if first.row else ""
    return f" ({count:,} for their {column}, such as {where}{first.reason})"


def _write_change(change: Change, outputs: _Outputs, tally: RunTally) -> None:
    outputs.changes.write(change.as_row())
    tally.changes[change.change] += 1


def _summary(
    ruleset: RuleSet,
    options: RunOptions,
    fingerprints: dict,
    history: HistoryStore,
    tally: RunTally,
    previous: RunRecord | None,
    run_id: int,
    started_at: str,
    timings: dict,
) -> dict:
    """Everything but the 'run' section is the same for the same inputs."""

    def described(path: Path, key: str, rows_read: int, rows_rejected: int) -> dict:
        return {
            "file": str(path),
            "fingerprint": fingerprints[key],
            "rows_read": rows_read,
            "rows_rejected": rows_rejected,
            "encoding": RowReader(path).encoding.name,
        }

    inputs = {"roster": described(options.roster, "roster", tally.rows_read, tally.rejected_rows)}
    if options.performance is not None:
        inputs["performance"] = described(
            options.performance, "performance", history.rows_read, tally.history_rejects
        )
    if options.enrollments is not None:
        inputs["enrollments"] = described(
            options.enrollments, "enrollments", tally.enrollment_rows, tally.enrollment_rejects
        )
    through = {"figures_through": str(figures_through(options.as_of, options.through))}
    return {
        "as_of": options.as_of.isoformat(),
        **(through if ruleset.figures else {}),
        # "remembers": its decisions read earlier runs (grace, protection,
        # held(...)), so pruning its runs would change them (prune_runs).
        "rule_set": {
            "name": ruleset.name,
            "fingerprint": ruleset.fingerprint,
            "remembers": ruleset.uses_memory,
        },
        "inputs": inputs,
        "partners": {
            "rows_read": tally.rows_read,
            "decided": tally.decided,
            "rejected": tally.rejected_rows,
        },
        # Partners decided on a field's default (its cell was empty), by field.
        "defaults_applied": {
            name: tally.defaults[name] for name in ruleset.fields if tally.defaults.get(name)
        },
        "classifications": {
            t.name: {v: tally.classifications.get(t.name, {}).get(v, 0) for v in t.values}
            for t in ruleset.classifications
        },
        # Empty for a rule set without an engagement section (its one implicit model).
        "engagement_models": {m: tally.engagement.get(m, 0) for m in ruleset.engagement_models}
        if ruleset.engagement_declared
        else {},
        "programs": {p.id: tally.programs.get(p.id, 0) for p in ruleset.programs},
        # Of those, the partners memory kept in a program (grace, protection,
        # renewal: engine.ruleset.memory), by program and how.
        "kept": {
            p.id: {how: n for (pid, how), n in sorted(tally.kept.items()) if pid == p.id}
            for p in ruleset.keeping_programs
        },
        # What people read for the ids above (history, the report).
        "names": {
            **{m.id: m.name for m in ruleset.engagement_models.values()},
            **{p.id: p.name for p in ruleset.programs},
        },
        # What people read for each classification (its label), and each
        # exclusive group's members, highest priority first (the report's trends).
        # and of each field and metric the report's reasons name.
        "labels": {
            **{n: f.label for n, f in ruleset.fields.items() if f.label},
            **{m.name: m.label for m in ruleset.metrics if m.label},
            **{t.name: t.label for t in ruleset.classifications},
            **({ENGAGEMENT: ruleset.engagement.label} if ruleset.engagement_declared else {}),
        },
        "ranked": [t.name for t in ruleset.classifications if t.order],
        "groups": {
            group: [p.id for p in ruleset.group_members(group)]
            for group in dict.fromkeys(p.group for p in ruleset.programs if p.group)
        },
        "changes": {
            "previous_run": previous.id if previous else None,
            "counts": {k: tally.changes.get(k, 0) for k in CHANGE_KINDS},
        },
        "run": {
            "id": run_id,
            "started_at": started_at,
            "workers": options.workers,
            "history_join": None
            if options.performance is None
            else "merged"
            if history.merged is not None
            else "staged",
            "timings": timings,
            "partners_per_second": round(tally.rows_read / max(timings["total_seconds"], 1e-9)),
        },
    }


def default_workers() -> int:
    return max(
        1,
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
    )
