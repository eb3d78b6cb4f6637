"""The unit of work of a batch run: decide one chunk of roster rows.

:func:`decide_chunk` is a pure function of (rule set, chunk, as-of date, the
chunk's partners' decisions in the previous run): it reads nothing else and
writes nothing but, when the run writes letters, each partner's letter files.
It checks each row and its history, computes the metrics, lets durable_rules
decide, explains every missed program, lists what changed since the previous
run, and writes the letter from the values it has just computed, so nothing
is parsed twice and values stay typed until they are written. It runs in a
worker process here, or unchanged on a distributed engine later. Each process
keeps one compiled engine per rule set, because building one costs far more
than deciding a chunk.
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from engine.data.outputs import csv_text, safe_cell
from engine.data.readers import ColumnBatch
from engine.data.rejects import Reject
from engine.data.run_history import decision_row
from engine.errors import EngineError
from engine.evaluate.changes import Change, Snapshot, compare
from engine.evaluate.decide import Decision, Evaluator, decision_record
from engine.evaluate.explain import program_failures
from engine.evaluate.records import (
    CheckedHistory,
    FieldProblem,
    HistoryRows,
    Partner,
    field_values,
)
from engine.letters.files import LetterWork, write_letter
from engine.letters.rendering import renderer_for
from engine.ruleset.memory import EMPTY as EMPTY_MEMORY, Memory
from engine.ruleset.model import RuleSet, per_rule_set
from engine.ruleset.quarters import Quarter, figures_through, window
from engine.ruleset.value_types import PERCENT, bare_share


# Chunks travel between processes as columns (lists of rows' values) and
# results as named tuples: a chunk pickles in a fraction of the time that a
# named tuple per row took, and dataclasses and dicts took more (a run sends
# every row both ways).
class ChunkRows(Sequence):
    """A chunk of roster records, in roster order: each row's file, number,
    partner id (read from the record and checked by the main process),
    record and letter files' name (when the run writes letters), and the
    partners' history rows as written (``history``, from ``history_file``)."""

    def __init__(
        self,
        files: list[str],
        rows: list[int],
        partner_ids: list[str],
        records: list[Mapping[str, Any]],
        history: HistoryRows,
        history_file: str = "",
        letter_stems: list[str] | None = None,
    ):
        self.files = files
        self.rows = rows
        self.partner_ids = partner_ids
        self.records = records
        self.history = history
        self.history_file = history_file
        self.letter_stems = letter_stems

    def __len__(self) -> int:
        return len(self.partner_ids)

    def __getitem__(self, index):  # a Sequence's; runs iterate
        return list(self.entries())[index]

    def __iter__(self) -> Iterator[ChunkEntry]:
        return self.entries()

    def entries(self) -> Iterator[ChunkEntry]:
        """Each row's (file, row number, partner id, record, letter stem)."""
        stems = self.letter_stems or [""] * len(self.partner_ids)
        return map(ChunkEntry, self.files, self.rows, self.partner_ids, self.records, stems)


class ChunkEntry(NamedTuple):
    """One row of a chunk (its history: the chunk's ``history`` at the same place)."""

    source_file: str
    row: int
    partner_id: str
    record: Mapping[str, Any]
    letter_stem: str = ""


class ColumnRows(ChunkRows):
    """A chunk of a Parquet roster as columns (engine.data.readers.
    ColumnBatch): the batch's rows to decide (``indices``; a row's number is
    the batch's first plus its index), each with its checked partner id,
    letter files' name and history. It travels as Arrow buffers, and its
    records are made in the worker that decides it, not in the main process."""

    def __init__(
        self,
        batch: ColumnBatch,
        indices: list[int],
        partner_ids: list[str],
        history: HistoryRows,
        history_file: str = "",
        letter_stems: list[str] | None = None,
    ):
        super().__init__([], [], partner_ids, [], history, history_file, letter_stems)
        self.batch = batch
        self.indices = indices

    def entries(self) -> Iterator[ChunkEntry]:
        names, file, first = self.batch.names, self.batch.file, self.batch.first_row
        values = list(self.batch.rows())
        stems = self.letter_stems or [""] * len(self.indices)
        for index, partner_id, stem in zip(self.indices, self.partner_ids, stems):
            yield ChunkEntry(file, first + index, partner_id, dict(zip(names, values[index])), stem)


class PartnerResult(NamedTuple):
    partner_id: str
    row: int
    decision: Decision
    line: str  # the partner's line of decisions.jsonl, made here to spread the work


class Earlier(NamedTuple):
    """The chunk's partners in earlier runs, for the changes since the previous one:
    their decisions in it, and for those it lacks, the last earlier run that
    decided them (a partner back in the roster is not new)."""

    before: Mapping[str, Snapshot]
    returned: Mapping[str, tuple[int, Snapshot]]


ENROLLMENT_COLUMNS = ("partner_id", "program", "program_name", "group", "kept_by", "kept_until")


@dataclass
class Recorded:
    """A chunk's part of a run's outputs, made by the worker that decided it,
    for the main process to write as it is, in roster order: its lines of
    decisions.jsonl and enrollments.csv, its rows of the run history
    (engine.data.run_history.decision_row), and its counts for the summary.
    The main process then does no work per partner for them."""

    decisions: str = ""
    enrollments: str = ""
    history: list[tuple] = field(default_factory=list)
    # The lines and rows until :meth:`finish` makes them text.
    _lines: list[str] = field(default_factory=list, repr=False)
    _rows: list[tuple] = field(default_factory=list, repr=False)
    decided: int = 0
    classifications: dict[str, collections.Counter] = field(default_factory=dict)
    engagement: collections.Counter = field(default_factory=collections.Counter)
    programs: collections.Counter = field(default_factory=collections.Counter)
    kept: collections.Counter = field(default_factory=collections.Counter)  # (program, how)

    def add(self, ruleset: RuleSet, decision: Decision, line: str) -> None:
        """One decided partner, and its line of decisions.jsonl."""
        self.decided += 1
        self._lines.append(line)
        rows = self._rows
        self.history.append(decision_row(decision.partner_id, snapshot(decision)))
        if decision.enrolled:
            cells = per_rule_set("enrollment_cells", ruleset, _program_cells)
            safe_id = safe_cell(decision.partner_id)
            kept = decision.kept
            for program_id in decision.enrolled:
                keep = kept.get(program_id)
                how, until = (keep.how, keep.until.isoformat()) if keep else ("", "")
                rows.append((safe_id, *cells[program_id], how, until))
                self.programs[program_id] += 1
                if keep:
                    self.kept[program_id, keep.how] += 1
        classifications = self.classifications
        for table, value in decision.classifications.items():
            counts = classifications.get(table)
            if counts is None:
                counts = classifications[table] = collections.Counter()
            counts[value] += 1
        self.engagement[decision.engagement] += 1

    def finish(self) -> Recorded:
        """The lines and rows as the text the main process writes."""
        self.decisions = "".join(line + "\n" for line in self._lines)
        self.enrollments = csv_text(self._rows)
        self._lines, self._rows = [], []
        return self


def _program_cells(ruleset: RuleSet) -> dict[str, tuple[str, str, str]]:
    """Each program's cells of enrollments.csv (id, name, group), made safe."""
    return {
        p.id: (safe_cell(p.id), safe_cell(p.name), safe_cell(p.group or ""))
        for p in ruleset.programs
    }


@dataclass(frozen=True)
class ChunkResult:
    # Each decided partner's decision, for a what-if; a run's worker sends
    # ``recorded`` instead.
    results: list[PartnerResult] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    rejected_rows: int = 0
    history_rejects: int = 0
    reject_rows: list[int] = field(default_factory=list)  # each reject's partner's roster row
    changes: list[Change] = field(default_factory=list)  # since the previous run, in order
    letters: list[tuple] = field(default_factory=list)  # index rows of the letters written
    # Of the decided partners with figures in the four quarters before the
    # last complete one: how many, and how many have figures for that quarter.
    reporting: tuple[int, int] = (0, 0)
    # How many decided partners had each field's default applied (an empty cell).
    defaults: dict[str, int] = field(default_factory=dict)
    recorded: Recorded | None = None
    # Of each percentage field whose rules do not say how a value without a
    # % sign reads: (such values other than 0, those of them over 1 or
    # under -1, the first one's row and value): see BareShares.
    bare_shares: dict[str, tuple] = field(default_factory=dict)


def warm_up(ruleset: RuleSet) -> None:
    """Build the engine before the first chunk arrives (a worker does this as
    it starts, while the main process reads the history)."""
    per_rule_set("evaluator", ruleset, Evaluator)


def decide_chunk(
    ruleset: RuleSet,
    letters: LetterWork | None,
    rows: ChunkRows,
    as_of: dt.date,
    earlier: Earlier | None = None,
    through: Quarter | None = None,
    memory: Mapping[str, Memory] | None = None,
    record_outputs: bool = False,
) -> ChunkResult:
    """Decide a chunk (see the module docstring). Without ``earlier`` (a first
    run, or a what-if) no changes are listed; with ``letters``, each decided
    partner's letter is written (file names: ``ChunkRows.letter_stems``).
    With ``record_outputs`` (a run), the result holds the chunk's outputs as they are
    written (:class:`Recorded`) instead of each partner's decision.
    History metrics read figures up to ``through`` (default: the last quarter
    complete on ``as_of``). ``memory``: what the chunk's partners held in
    earlier runs, for rules with memory (engine.ruleset.memory)."""
    through = figures_through(as_of, through)
    evaluator = per_rule_set("evaluator", ruleset, Evaluator)
    partners: list[tuple[ChunkEntry, Partner]] = []
    rejects: list[Reject] = []
    reject_rows: list[int] = []
    rejected_rows = history_rejects = 0
    defaults: collections.Counter = collections.Counter()
    staged, history_file = CheckedHistory(ruleset, rows.history), rows.history_file
    shares = BareShares(ruleset)
    for index, row in enumerate(rows.entries()):
        partner_id = row.partner_id
        shares.add(row.row, row.record)
        defaulted: list[str] = []
        values, problems = field_values(ruleset, row.record, defaulted)
        before = len(rejects)
        history_problems: list[FieldProblem] = []
        history = staged.history(index, history_problems)
        rejects.extend(Reject.of(history_file, 0, partner_id, p) for p in history_problems)
        history_rejects += len(history_problems)
        if problems:
            rejected_rows += 1
            rejects.extend(Reject.of(row.source_file, row.row, partner_id, p) for p in problems)
        else:
            recalled = memory.get(partner_id, EMPTY_MEMORY) if memory else EMPTY_MEMORY
            partners.append((row, Partner(partner_id, values, history, recalled)))
            defaults.update(defaulted)
        reject_rows.extend([row.row] * (len(rejects) - before))
    reporting = _reporting([partner for _, partner in partners], through)
    all_values = [evaluator.values(partner, as_of, through) for _, partner in partners]
    decisions = evaluator.decide_facts(
        evaluator.fact(partner, values, as_of) for (_, partner), values in zip(partners, all_values)
    )
    renderer = None
    if letters is not None:
        renderer = renderer_for(letters.templates, letters.settings, ruleset.currency)
    results, changes, index = [], [], []
    recorded = Recorded() if record_outputs else None
    for (row, partner), values, decision in zip(partners, all_values, decisions):
        missed = program_failures(ruleset, values, decision, as_of)
        unexplained = [pid for pid, reasons in missed.items() if not reasons]
        if unexplained:
            raise EngineError(
                f"durable_rules did not enroll partner {partner.partner_id} in "
                f"{unexplained[0]}, but every condition holds; please report this"
            )
        record = decision_record(ruleset, row.row, decision, missed, values)
        line = orjson.dumps(record).decode()
        if recorded is not None:
            recorded.add(ruleset, decision, line)
        else:
            results.append(PartnerResult(partner.partner_id, row.row, decision, line))
        partner_changes = () if earlier is None else _changes(ruleset, decision, earlier)
        changes.extend(partner_changes)
        if renderer is not None:
            index.append(
                write_letter(
                    ruleset, renderer, letters, values, record, partner_changes, row.letter_stem
                )
            )
    return ChunkResult(
        results,
        rejects,
        rejected_rows,
        history_rejects,
        reject_rows,
        changes,
        index,
        reporting,
        dict(defaults),
        recorded.finish() if recorded is not None else None,
        shares.found,
    )


class BareShares:
    """Percentages written without a % sign in fields whose rules do not say
    how they read (``scale:``): 0.6 is 60% to a CRM that exports fractions
    and 0.6% to one that exports points. A column whose every such value is
    between -1 and 1 could be either, and a run stops rather than decide
    every share a hundred times too small (engine.run.driver); one value
    over 1 says points."""

    def __init__(self, ruleset: RuleSet):
        self.names = per_rule_set("undeclared_shares", ruleset, _undeclared_shares)
        self.found: dict[str, tuple] = {}

    def add(self, row: int, record: Mapping[str, Any]) -> None:
        for name in self.names:
            raw = record.get(name)
            value = bare_share(raw)
            if value:  # neither missing nor 0
                _count_share(self.found, name, 1, abs(value) > 1, row, raw)


def merge_bare_shares(into: dict[str, tuple], found: Mapping[str, tuple]) -> None:
    """Add a chunk's :attr:`ChunkResult.bare_shares` to the run's (roster order:
    the first value seen stays the example)."""
    for name, (count, over, row, value) in found.items():
        _count_share(into, name, count, over, row, value)


def _count_share(found: dict, name: str, count: int, over: int, row: int, value: Any) -> None:
    seen = found.get(name)
    if seen is None:
        found[name] = (count, int(over), row, value)
    else:
        found[name] = (seen[0] + count, seen[1] + over, seen[2], seen[3])


def _undeclared_shares(ruleset: RuleSet) -> tuple[str, ...]:
    return tuple(
        name for name, f in ruleset.fields.items() if f.type.kind == PERCENT and not f.scale
    )


def _reporting(partners: Sequence[Partner], latest: Quarter) -> tuple[int, int]:
    """(partners that reported in any of the four quarters before ``latest``,
    the last quarter the run reads, those of them with figures for it): how
    complete that quarter is (see RunOptions.min_quarter_share)."""
    before = window(latest, 4, skip=1)
    recent = complete = 0
    for partner in partners:
        quarters = partner.history.quarters
        if any(q in quarters for q in before):
            recent += 1
            complete += latest in quarters
    return recent, complete


def snapshot(decision: Decision) -> Snapshot:
    """A decision as the run history keeps it."""
    return Snapshot(
        dict(decision.classifications),
        decision.engagement,
        tuple(decision.enrolled),
        {pid: (keep.how, keep.until.isoformat()) for pid, keep in decision.kept.items()},
    )


def _changes(ruleset: RuleSet, decision: Decision, earlier: Earlier) -> list[Change]:
    partner_id = decision.partner_id
    before = earlier.before.get(partner_id)
    found = []
    if before is None and partner_id in earlier.returned:
        last_run, before = earlier.returned[partner_id]
        found.append(Change(partner_id, "returned_partner", "", str(last_run), "", ""))
    return found + compare(ruleset, partner_id, before, snapshot(decision))
