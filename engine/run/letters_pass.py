"""Writing every partner's letter for a run: ``DIR/letters/``.

Letters are made from a run's output folder: its decisions.jsonl and
changes.csv (both in roster order), joined with the roster the run read
(checked by fingerprint, so a letter never mixes a run's decisions with
edited data). The metrics come from decisions.jsonl, as the run computed
them: letters do not read the performance history again. Chunks of
partners are rendered in worker processes, which write the letter files
into a temporary folder; the folder replaces ``DIR/letters/`` only when
every letter and the index are written. An interrupted run leaves the
previous letters.

File names come from partner ids made safe: letters, digits, ``.``, ``_``
and ``-`` only, never a leading dot, and a short hash of the real id
whenever anything had to change, so two partners never share a file and
no id can write outside the folder.
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from engine.data.outputs import CsvOutput, read_cell, remove_stale_partials, write_json_atomically
from engine.data.readers import RowReader, file_fingerprint
from engine.errors import DataError, UsageError
from engine.evaluate.changes import Change
from engine.evaluate.decide import recorded_values
from engine.evaluate.records import field_values
from engine.letters.emails import email_message, message_id
from engine.letters.facts import KINDS, LetterSettings, letter_facts
from engine.letters.rendering import describe_template_error, renderer_for
from engine.letters.settings import load_letter_settings
from engine.letters.template_check import check_templates
from engine.ruleset.model import RuleSet
from engine.run.driver import Progress
from engine.run.parallel import ordered_map, workers_inherit_memory

LETTERS_FOLDER = "letters"
INDEX_FILE = "index.csv"
FORMATS = {"text": ".txt", "html": ".html", "eml": ".eml"}
INDEX_COLUMNS = (
    "partner_id",
    "kind",
    "kinds",
    "language",
    "template_language",
    "subject",
    "to",
    "files",
    "note",
)
CHUNK_SIZE = 250
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_STEM = 80


# Names Windows keeps for devices, whatever the extension (CON.txt is the console).
_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"{port}{n}" for port in ("COM", "LPT") for n in range(1, 10))}
)


def safe_stem(partner_id: str, taken: set[str] | None = None) -> str:
    """A file name (without extension) for a partner id that cannot escape a
    folder, nor name a device on Windows. With ``taken`` (the stems given so
    far, case-folded), an id that differs from an earlier one only by case
    (``AbC``, ``abc``: two files on Linux, one on macOS and Windows) gets the
    hash too."""
    stem = _UNSAFE.sub("_", partner_id).lstrip(".")[:MAX_STEM]
    if (
        stem != partner_id
        or not stem
        or stem.upper() in _DEVICES
        or (taken is not None and stem.casefold() in taken)
    ):
        digest = hashlib.sha256(partner_id.encode("utf-8")).hexdigest()[:10]
        stem = f"{stem or 'partner'}-{digest}"
    if taken is not None:
        taken.add(stem.casefold())
    return stem


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
    stem: str  # the letter files' name, without extension (see safe_stem)


@dataclass
class LetterTally:
    written: int = 0
    files: int = 0
    kinds: collections.Counter = field(default_factory=collections.Counter)
    languages: collections.Counter = field(default_factory=collections.Counter)
    fallbacks: collections.Counter = field(default_factory=collections.Counter)
    no_address: int = 0

    def add(self, row: tuple) -> None:
        """Count one index row (see INDEX_COLUMNS)."""
        partner_id, kind, _, language, template_language, _, _, files, note = row
        self.written += 1
        self.files += len(files.split(";")) if files else 0
        self.kinds[kind] += 1
        self.languages[template_language] += 1
        if language != template_language:
            self.fallbacks[language] += 1
        if "no To" in note:
            self.no_address += 1

    def summary(self, options: LetterOptions, skipped: int) -> dict:
        return {
            "folder": str(options.out_dir / LETTERS_FOLDER),
            "formats": list(options.formats),
            "only_changed": options.only_changed,
            "letters": self.written,
            "files": self.files,
            "skipped_unchanged": skipped,
            "by_kind": {k: self.kinds.get(k, 0) for k in KINDS},
            "by_language": dict(sorted(self.languages.items())),
            "fallbacks": dict(sorted(self.fallbacks.items())),
            "without_address": self.no_address,
        }


def write_letters(
    ruleset: RuleSet, options: LetterOptions, progress: Callable[[Progress], None] | None = None
) -> dict:
    """Write the letters of the run in ``options.out_dir``; returns their summary,
    which is also added to the run's summary.json under ``letters``.
    ``progress`` is told after each chunk how many letters are written."""
    for name in options.formats:
        if name not in FORMATS:
            raise UsageError(f"unknown letter format '{name}'; use {', '.join(FORMATS)}")
    summary_path = options.out_dir / "summary.json"
    if not summary_path.is_file():
        raise UsageError(f"{options.out_dir}: no summary.json; give the --out folder of a run")
    run = json.loads(summary_path.read_text(encoding="utf-8"))
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

    target = options.out_dir / LETTERS_FOLDER
    temp = options.out_dir / f".{LETTERS_FOLDER}.{os.getpid()}.partial"
    _restore_interrupted(options.out_dir)
    temp.mkdir()
    tally = LetterTally()
    try:
        selected = _Selection(_jobs(ruleset, options, roster), options.only_changed)
        shared = (
            ruleset,
            str(options.templates),
            settings,
            as_of,
            previous_run,
            options.formats,
            str(temp),
        )
        if options.workers > 1 and workers_inherit_memory():
            # Compiled here once (or already, by the check), not in every worker.
            renderer_for(str(options.templates), settings, ruleset.currency)
        tasks = ((chunk,) for chunk in _chunks(iter(selected)))
        clock = time.perf_counter()
        with CsvOutput(temp / INDEX_FILE, INDEX_COLUMNS) as index:
            for rows in ordered_map(render_chunk, tasks, options.workers, shared=shared):
                for row in rows:
                    index.write(row)
                    tally.add(row)
                if progress:
                    progress(
                        Progress(
                            tally.written,
                            tally.written + selected.skipped,
                            run["partners"]["decided"],
                            time.perf_counter() - clock,
                            "letters",
                        )
                    )
        _swap(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    _remove_leftovers(options.out_dir)
    summary = tally.summary(options, selected.skipped)
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


def _jobs(ruleset: RuleSet, options: LetterOptions, roster: Path) -> Iterator[LetterJob]:
    """Decided partners in roster order, joined with their changes and roster rows."""
    metric_names = {metric.name for metric in ruleset.metrics}
    decisions_path = options.out_dir / "decisions.jsonl"
    changes_path = options.out_dir / "changes.csv"
    rows = iter(RowReader(roster, ruleset.fields))
    stems: set[str] = set()  # file names given, case-folded (about 70 MB at 1M partners)
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
            for row in rows:
                if row.row == decision["row"]:
                    break
            else:
                raise DataError(
                    f"{roster}: no row {decision['row']} for partner "
                    f"{decision['partner_id']}; the roster does not match the run"
                )
            yield LetterJob(
                decision, partner_changes, row.record, safe_stem(decision["partner_id"], stems)
            )
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


def render_chunk(
    ruleset: RuleSet,
    templates: str,
    settings: LetterSettings,
    as_of: dt.date,
    previous_run: int | None,
    formats: Sequence[str],
    folder: str,
    jobs: Sequence[LetterJob],
) -> list[tuple]:
    """Render and write the letters of one chunk; returns their index rows.

    A pure function of its arguments but for the files it writes into
    ``folder``, each named after its own partner.
    """
    renderer = renderer_for(templates, settings, ruleset.currency)
    rows = []
    for job in jobs:
        partner_id = job.decision["partner_id"]
        fields, _ = field_values(ruleset, job.record)
        values = recorded_values(ruleset, fields, job.decision["metrics"])
        facts = letter_facts(
            ruleset, settings, values, job.decision, job.changes, as_of, previous_run
        )
        try:
            letter = renderer.render(facts)
        except Exception as error:  # noqa: BLE001 - any error in a template names its line
            raise DataError(
                f"letter for partner {partner_id}: {describe_template_error(error)}"
            ) from None
        stem = job.stem
        written, note, to = [], "", ""
        for name in formats:
            file_name = f"{stem}{FORMATS[name]}"
            if name == "text":
                data = letter.text_utf8
            elif name == "html":
                data = letter.html_utf8
            else:
                data, note = email_message(
                    letter,
                    settings,
                    facts.context["partner"],
                    as_of,
                    message_id(ruleset.fingerprint, as_of, partner_id, settings.sender_email),
                )
            _write_new_file(os.path.join(folder, file_name), data)
            written.append(file_name)
        if not note:
            to = facts.context["partner"].get("contact_email") or ""
        rows.append(
            (
                partner_id,
                facts.kinds[0],
                " ".join(facts.kinds),
                facts.context["partner"].get("language") or settings.default_language,
                letter.language,
                letter.subject,
                to,
                ";".join(written),
                note,
            )
        )
    return rows


def _write_new_file(path: str, data: bytes) -> None:
    """Create a file that must not exist yet (the folder is new) and write it.

    Three system calls, where ``open(path, "w")`` makes seven (truncation, a
    terminal check, seeks); and ``O_EXCL`` makes sure that no letter ever
    replaces another.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
    finally:
        os.close(descriptor)


def _swap(temp: Path, target: Path) -> None:
    """Put the new letters folder in place of the old one, which is moved aside
    (``.old``: put back if the run dies here) and then marked to be deleted last."""
    old = target.with_name(f".{LETTERS_FOLDER}.{os.getpid()}.old")
    if target.exists():
        os.replace(target, old)
    os.replace(temp, target)
    if old.exists():
        os.replace(old, old.with_suffix(".stale"))


def _remove_leftovers(folder: Path) -> None:
    """Old letters and what killed runs left, deleted last: deleting files just
    before creating many slows ext4 down (see batch.remove_derived_outputs)."""
    remove_stale_partials(folder)
    for path in folder.glob(f".{LETTERS_FOLDER}.*.old"):
        shutil.rmtree(path, ignore_errors=True)


def _restore_interrupted(folder: Path) -> None:
    """An old letters folder whose replacement never arrived (a letters run
    killed between the two renames of :func:`_swap`) is put back."""
    if (folder / LETTERS_FOLDER).exists():
        return
    for path in sorted(folder.glob(f".{LETTERS_FOLDER}.*.old")):
        os.replace(path, folder / LETTERS_FOLDER)
        return
