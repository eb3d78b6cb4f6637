"""What a rule change would do: two rule sets (or two dates) over one roster.

Both sides decide the same partners. For every program, classification value,
and engagement model, the report counts who enters and who leaves. For every
partner that moves, it gives the condition that made the difference: the
reasons that hold on one side and not on the other.

A rule set is a folder, or ``git:REVISION:PATH`` for a folder as committed in
git (``git:HEAD:rules`` is the committed version of ``rules/``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import subprocess
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import orjson

from engine.data.memory import MemorySource
from engine.data.performance import HistoryStore
from engine.data.readers import RowReader, check_columns
from engine.errors import InputError
from engine.evaluate.decide import compiled_rules
from engine.ruleset.loader import load_rules
from engine.ruleset.memory import Memory
from engine.ruleset.model import ENGAGEMENT, RuleSet
from engine.ruleset.quarters import Quarter, figures_through
from engine.run.chunks import ChunkResult, decide_chunk
from engine.run.cluster import ClusterSpec, cluster_map, connected
from engine.run.driver import RunTally, chunk_rows, roster_chunks
from engine.run.parallel import ordered_map, workers_inherit_memory

GIT_PREFIX = "git:"
CSV_COLUMNS = ("partner_id", "kind", "subject", "base", "proposed", "because")


@dataclass(frozen=True)
class Move:
    partner_id: str
    kind: str  # program, classification, engagement_model
    subject: str  # program id, table name, or 'engagement'
    base: str  # the value on the base side ('' when not enrolled)
    proposed: str
    because: tuple[str, ...]

    def as_row(self) -> tuple:
        return (
            self.partner_id,
            self.kind,
            self.subject,
            self.base,
            self.proposed,
            "; ".join(self.because),
        )


@dataclass
class Impact:
    base_label: str
    proposed_label: str
    partners: int = 0
    rejected_rows: int = 0
    counts: dict = field(default_factory=dict)  # (kind, subject, value) -> [base, proposed]
    entered: Counter = field(default_factory=Counter)
    left: Counter = field(default_factory=Counter)
    moves: list[Move] = field(default_factory=list)


@contextmanager
def rules_folder(spec: str) -> Iterator[Path]:
    """A rules folder from a path or from ``git:REVISION:PATH``."""
    if not spec.startswith(GIT_PREFIX):
        yield Path(spec)
        return
    revision, _, path = spec[len(GIT_PREFIX) :].partition(":")
    _check_git_spec(spec, revision, path)
    try:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", revision, "--", path],
            capture_output=True,
            check=True,
        ).stdout
    except FileNotFoundError:
        raise InputError("git is not installed, so git: rule sets cannot be read") from None
    except subprocess.CalledProcessError as error:
        message = error.stderr.decode(errors="replace").strip().splitlines()
        raise InputError(
            f"'{spec}': git could not read it ({message[-1] if message else 'error'})"
        ) from None
    if not archive:
        raise InputError(f"'{spec}': git has no folder {path} at {revision}")
    with tempfile.TemporaryDirectory(prefix="eligibility-rules-") as folder:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        yield Path(folder) / path


def _check_git_spec(spec: str, revision: str, path: str) -> None:
    """A revision and a path that git can only read as such: neither may start
    with ``-`` (git would take it for an option, ``--output=FILE``)."""
    if not revision or not path:
        raise InputError(
            f"'{spec}': write a git rule set as git:REVISION:PATH, for example git:HEAD:rules"
        )
    for part, what in ((revision, "revision"), (path, "path")):
        if part.startswith("-") or any(c.isspace() or ord(c) < 32 for c in part):
            raise InputError(
                f"'{spec}': '{part}' is not a git {what} (it may not start with '-' "
                "or hold spaces); write git:REVISION:PATH, for example git:HEAD:rules"
            )
    if PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
        raise InputError(f"'{spec}': the path must be inside the repository, like rules")


def compare(
    base: RuleSet,
    proposed: RuleSet,
    roster: Path,
    performance: Path | None,
    base_as_of: dt.date,
    proposed_as_of: dt.date,
    base_label: str,
    proposed_label: str,
    workers: int = 1,
    through: Quarter | None = None,
    memory: MemorySource | None = None,
    cluster: str | None = None,
) -> Impact:
    """Decide every partner on both sides and collect who moves, and why.
    Chunks of partners are decided in ``workers`` processes, as runs do.
    ``through``: both sides read figures up to that quarter (see
    :func:`engine.ruleset.quarters.figures_through`). ``memory``: what
    partners held before, for rules with memory; both sides get the same
    (each only what was known before its as-of date). ``cluster``: decide
    on a Dask cluster instead (engine.run.cluster)."""
    for day in (base_as_of, proposed_as_of):
        figures_through(day, through)  # a quarter not ended stops before anything is read
    impact = Impact(base_label, proposed_label)
    history = HistoryStore({**base.figures, **proposed.figures})  # matched by name
    tally = RunTally()
    stack = contextlib.ExitStack()
    try:
        if performance is not None:
            list(history.load(performance, roster))  # bad rows are counted by the run, not here
        check_columns(roster, {**base.fields, **proposed.fields}, "roster")
        chunks = roster_chunks(
            RowReader(roster, base.fields), history, {}, tally, chunk_rows(cluster)
        )
        tasks = (
            (
                chunk,
                base_as_of,
                proposed_as_of,
                through,
                memory.for_partners(chunk.partner_ids) if memory else None,
            )
            for chunk, _ in chunks
        )
        if workers > 1 and workers_inherit_memory():
            (
                compiled_rules(base),
                compiled_rules(proposed),
            )  # once, here: forked workers inherit them
        if cluster is not None:  # engine.run.cluster: Dask's workers decide
            spec = ClusterSpec.parse(cluster)
            client = stack.enter_context(connected(spec))
            results = cluster_map(client, spec, decide_both, tasks, (base, proposed))
        else:
            results = ordered_map(decide_both, tasks, workers, shared=(base, proposed))
        with contextlib.closing(results):  # workers done before the pool goes
            for left, right in results:
                tally.rejected_rows += max(left.rejected_rows, right.rejected_rows)
                decided = {r.partner_id: r for r in right.results}
                for result in left.results:
                    if result.partner_id in decided:
                        _compare_partner(impact, base, proposed, result, decided[result.partner_id])
    finally:
        stack.close()
        history.close()
    impact.rejected_rows = tally.rejected_rows
    return impact


def decide_both(
    base: RuleSet,
    proposed: RuleSet,
    chunk: list,
    base_as_of: dt.date,
    proposed_as_of: dt.date,
    through: Quarter | None,
    memory: Mapping[str, Memory] | None = None,
) -> tuple[ChunkResult, ChunkResult]:
    """One chunk decided by both rule sets (in a worker process)."""
    return (
        decide_chunk(base, None, chunk, base_as_of, through=through, memory=memory),
        decide_chunk(proposed, None, chunk, proposed_as_of, through=through, memory=memory),
    )


def _compare_partner(impact: Impact, base: RuleSet, proposed: RuleSet, left, right) -> None:
    impact.partners += 1
    a, b = left.decision, right.decision
    missed_a = orjson.loads(left.line)["not_enrolled"]
    missed_b = orjson.loads(right.line)["not_enrolled"]
    tables = {t.name for t in base.classifications} | {t.name for t in proposed.classifications}
    for table in sorted(tables):
        _count(
            impact,
            "classification",
            table,
            a.classifications.get(table),
            b.classifications.get(table),
        )
        if a.classifications.get(table) != b.classifications.get(table):
            impact.moves.append(
                Move(
                    a.partner_id,
                    "classification",
                    table,
                    a.classifications.get(table, ""),
                    b.classifications.get(table, ""),
                    (_rows_moved(a, b, table),),
                )
            )
    _count(impact, "engagement_model", ENGAGEMENT, a.engagement, b.engagement)
    if a.engagement != b.engagement:
        impact.moves.append(
            Move(
                a.partner_id,
                "engagement_model",
                ENGAGEMENT,
                a.engagement,
                b.engagement,
                (_rows_moved(a, b, ENGAGEMENT),),
            )
        )
    programs = [p.id for p in base.programs] + [
        p.id for p in proposed.programs if p.id not in {q.id for q in base.programs}
    ]
    for program in programs:
        before, after = program in a.enrolled, program in b.enrolled
        _count(impact, "program", program, program if before else None, program if after else None)
        if before != after:
            because = _why_moved(program, before, base, proposed, a, b, missed_a, missed_b)
            impact.moves.append(
                Move(
                    a.partner_id,
                    "program",
                    program,
                    program if before else "",
                    program if after else "",
                    tuple(because),
                )
            )


def _why_moved(
    program: str,
    before: bool,
    base: RuleSet,
    proposed: RuleSet,
    a,
    b,
    missed_a: dict[str, list[str]],
    missed_b: dict[str, list[str]],
) -> tuple[str, ...]:
    """Why a partner enters or leaves a program, from the side that decided:
    the proposed rules' failures for one that leaves; for one that enters,
    what kept it out under the base rules and no longer does (a higher
    member of its group it no longer gets, conditions it now meets)."""
    in_base = any(p.id == program for p in base.programs)
    in_proposed = any(p.id == program for p in proposed.programs)
    if not in_base:
        return ("a new program in the proposed rules; the partner meets it",)
    if not in_proposed:
        return ("no longer a program in the proposed rules",)
    reasons_a, reasons_b = missed_a.get(program, []), missed_b.get(program, [])
    if before:  # leaves: what fails under the proposed rules, new failures first
        new = [r for r in reasons_b if r not in reasons_a]
        kept = a.kept.get(program)
        unkept = []
        if kept is not None and program not in b.kept:
            unkept = [f"no longer kept by memory ({kept.describe()} under the base rules)"]
        return tuple(unkept + (new or reasons_b))
    if program in b.kept:  # enters: memory keeps it under the proposed rules
        return (f"kept by memory: {b.kept[program].describe()}",)
    group = base.program(program).group
    winners = [
        p.id
        for p in base.programs
        if group and p.group == group and p.id != program and p.id in a.enrolled
    ]
    because = []
    for winner in winners:
        if winner not in b.enrolled:
            lost = "; ".join(missed_b.get(winner, []))
            because.append(f"no longer {winner}" + (f" ({lost})" if lost else ""))
    ranked = {f"{w} ranks higher in group {group}" for w in winners}
    because += [f"missed before: {r}" for r in reasons_a if r not in ranked]
    return tuple(because) or ("meets the proposed rules",)


def _rows_moved(a, b, table: str) -> str:
    def row(decision) -> str:
        index = decision.rows.get(table, -1)
        return "the default" if index < 0 else f"row {index + 1}"

    return f"decided by {row(b)} instead of {row(a)}"


def _count(impact: Impact, kind: str, subject: str, before, after) -> None:
    for value, side in ((before, 0), (after, 1)):
        if value is not None:
            impact.counts.setdefault((kind, subject, value), [0, 0])[side] += 1
    if before != after:
        if after is not None:
            impact.entered[(kind, subject, after)] += 1
        if before is not None:
            impact.left[(kind, subject, before)] += 1


def write_moves_csv(impact: Impact, path: str | Path) -> None:
    """Every move with its reason, as CSV (written atomically)."""
    from engine.data.outputs import CsvOutput

    with CsvOutput(Path(path), CSV_COLUMNS) as output:
        for move in impact.moves:
            output.write(move.as_row())


def impact_rows(impact: Impact) -> list[tuple]:
    """(kind, subject, value, base count, proposed count, entered, left), changed ones first."""
    rows = []
    for (kind, subject, value), (before, after) in impact.counts.items():
        key = (kind, subject, value)
        rows.append((kind, subject, value, before, after, impact.entered[key], impact.left[key]))
    rows.sort(key=lambda r: (r[5] + r[6] == 0, r[0], r[1], str(r[2])))
    return rows


@contextmanager
def load_rule_sets(base_spec: str, proposed_spec: str) -> Iterator[tuple[RuleSet, RuleSet]]:
    """Both rule sets, loaded (git ones from a temporary copy)."""
    with rules_folder(base_spec) as base_folder, rules_folder(proposed_spec) as proposed_folder:
        yield load_rules(base_folder), load_rules(proposed_folder)
