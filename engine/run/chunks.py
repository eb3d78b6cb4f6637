"""The unit of work of a batch run: decide one chunk of roster rows.

:func:`decide_chunk` is a pure function of (rule set, chunk, as-of date):
it reads nothing else and writes nothing, so it can run in a worker
process here, or unchanged on a distributed engine later. Each process
keeps one compiled engine per rule set, because building one costs far
more than deciding a chunk.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from engine.data.rejects import Reject
from engine.errors import EngineError
from engine.evaluate.decide import Decision, Evaluator, decision_line
from engine.evaluate.explain import program_failures
from engine.evaluate.records import (
    FieldProblem,
    Partner,
    checked_history,
    field_values,
    read_partner_id,
)
from engine.ruleset.model import RuleSet, per_rule_set


# Chunks and results travel between processes as named tuples, and history
# figures as tuples: a chunk pickles in about half the time that dataclasses
# and dicts took (a run sends every row both ways).
class ChunkRow(NamedTuple):
    """One roster row and the history rows staged for its partner, as written:
    (row number, quarter, (the value of each figure named in
    ``history_columns``)). Figures are matched by those names, never by
    position: a what-if stages history once for two rule sets."""

    source_file: str
    row: int
    record: Mapping[str, Any]
    history: Sequence[tuple[int, Any, Sequence[Any]]] = ()
    history_file: str = ""
    history_columns: tuple[str, ...] = ()


class PartnerResult(NamedTuple):
    partner_id: str
    row: int
    decision: Decision
    line: str  # the partner's line of decisions.jsonl, made here to spread the work


@dataclass(frozen=True)
class ChunkResult:
    results: list[PartnerResult] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    rejected_rows: int = 0
    history_rejects: int = 0
    reject_rows: list[int] = field(default_factory=list)  # each reject's partner's roster row


def warm_up(ruleset: RuleSet) -> None:
    """Build the engine before the first chunk arrives (a worker does this as
    it starts, while the main process reads the history)."""
    per_rule_set("evaluator", ruleset, Evaluator)


def decide_chunk(ruleset: RuleSet, rows: Sequence[ChunkRow], as_of: dt.date) -> ChunkResult:
    evaluator = per_rule_set("evaluator", ruleset, Evaluator)
    partners: list[tuple[ChunkRow, Partner]] = []
    rejects: list[Reject] = []
    reject_rows: list[int] = []
    rejected_rows = history_rejects = 0
    for row in rows:
        partner_id = read_partner_id(row.record)  # checked by the reader already
        values, problems = field_values(ruleset, row.record)
        before = len(rejects)
        history_problems: list[FieldProblem] = []
        history = checked_history(ruleset, row.history, row.history_columns, history_problems)
        rejects.extend(Reject.of(row.history_file, 0, partner_id, p) for p in history_problems)
        history_rejects += len(history_problems)
        if problems:
            rejected_rows += 1
            rejects.extend(Reject.of(row.source_file, row.row, partner_id, p) for p in problems)
        else:
            partners.append((row, Partner(partner_id, values, history)))
        reject_rows.extend([row.row] * (len(rejects) - before))
    all_values = [evaluator.values(partner, as_of) for _, partner in partners]
    decisions = evaluator.decide_facts(
        evaluator.fact(partner, values, as_of) for (_, partner), values in zip(partners, all_values)
    )
    results = []
    for (row, partner), values, decision in zip(partners, all_values, decisions):
        missed = program_failures(ruleset, values, decision, as_of)
        unexplained = [pid for pid, reasons in missed.items() if not reasons]
        if unexplained:
            raise EngineError(
                f"durable_rules did not enroll partner {partner.partner_id} in "
                f"{unexplained[0]}, but every condition holds; please report this"
            )
        results.append(
            PartnerResult(
                partner.partner_id,
                row.row,
                decision,
                decision_line(ruleset, row.row, decision, missed, values),
            )
        )
    return ChunkResult(results, rejects, rejected_rows, history_rejects, reject_rows)
