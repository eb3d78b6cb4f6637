"""A partner's letter as files: safe names, the formats, the letters folder.

One letter is rendered and written by :func:`write_letter`, the same way in
a run's decide workers (from the values they have just computed) and in the
``eligibility letters`` pass over a finished run (from decisions.jsonl).
Letters are written into a new folder that replaces ``DIR/letters/`` only
when every letter and the index are written (:func:`swap_folder`).

A run of at most BLOCK letters writes them all in ``letters/`` itself. A
bigger run writes them in subfolders of BLOCK letters each, in roster order
(``letters/0001/``, ``letters/0002/``, ...), so that no folder ever holds
more than 3 x BLOCK files, whatever the roster's size: file systems slow
down on folders of hundreds of thousands of files, and so do the tools
people open them with. ``index.csv`` names each letter's files relative to
``letters/`` (:class:`LetterNames`).

File names come from partner ids made safe (:func:`safe_stem`): letters,
digits, ``.``, ``_``, ``-`` and ``~`` only, never a leading dot nor a
Windows device name, and the id's hash whenever anything had to change, so
two partners never share a file and no id can write outside the folder.
"""

from __future__ import annotations

import base64
import collections
import csv
import datetime as dt
import hashlib
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from engine.data.outputs import AtomicFile, CsvOutput, remove_stale_partials
from engine.errors import DataError, UsageError
from engine.evaluate.changes import Change
from engine.letters.emails import email_message, message_id
from engine.letters.facts import KINDS, letter_facts
from engine.letters.rendering import LetterRenderer, describe_template_error
from engine.letters.settings import LetterSettings
from engine.ruleset.model import RuleSet

LETTERS_FOLDER = "letters"
HELD_LETTERS = "held-letters"  # a held run's letters, until it is released
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
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_STEM = 80
_READABLE = 40  # characters of the id kept in a hashed name
_MARK = "~"  # never in a plain name: a hashed name never meets a plain one
BLOCK = 5000  # letters per subfolder of a big run (see the module docstring)

# Names Windows keeps for devices, whatever the extension (CON.txt and
# Com1.txt are the console and a serial port), with the superscript ports.
_DEVICES = frozenset(
    {
        "CON",
        "PRN",
        "AUX",
        "NUL",
        "CONIN$",
        "CONOUT$",
        *(f"{port}{n}" for port in ("COM", "LPT") for n in (*"0123456789", "¹", "²", "³")),
    }
)


def safe_stem(partner_id: str, taken: set[str] | None = None) -> str:
    """The file name (without extension) of a partner's letters: unique by
    construction, and safe on Linux, macOS and Windows.

    A plain id (ASCII letters, digits, ``.``, ``_``, ``-``; not starting
    with a dot nor ending with one, at most MAX_STEM characters, no device
    name before its first dot) is its own name. Any other id is named by
    its readable part, ``~`` and 26 characters of its SHA-256 (130 bits):
    ``~`` is never in a plain name, so a hashed name never equals a plain
    one, and two hashed names are equal only if SHA-256 collides. With
    ``taken`` (the names given so far, case-folded), an id that equals an
    earlier name but for case (``AbC``, ``abc``: two files on Linux, one on
    macOS and Windows) gets the hashed name too.
    """
    if (
        len(partner_id) <= MAX_STEM
        and _PLAIN.match(partner_id)
        and not partner_id.endswith(".")
        and partner_id.split(".", 1)[0].upper() not in _DEVICES
        and (taken is None or partner_id.casefold() not in taken)
    ):
        stem = partner_id
    else:
        digest = hashlib.sha256(partner_id.encode("utf-8", "surrogatepass")).digest()
        code = base64.b32encode(digest).decode("ascii").lower()[:26]
        stem = f"{_UNSAFE.sub('_', partner_id)[:_READABLE] or 'partner'}{_MARK}{code}"
    if taken is not None:
        taken.add(stem.casefold())
    return stem


class LetterNames:
    """Each partner's letter files' path in the letters folder, without
    extension, given in roster order: ``<block>/<stem>``, the block
    (``0001``, ``0002``, ...) holding BLOCK letters. When a run has at most
    BLOCK letters, the block is dissolved at the end (:meth:`NewLetters.commit`).
    Runs and the letters pass call this for the same rows in the same order,
    so a partner's letter has the same path in both."""

    def __init__(self) -> None:
        self._taken: set[str] = set()  # names given, case-folded (about 70 MB at 1M)
        self.count = 0

    def __call__(self, partner_id: str) -> str:
        block = self.count // BLOCK + 1
        self.count += 1
        return f"{block:04d}/{safe_stem(partner_id, self._taken)}"

    @property
    def flat(self) -> bool:
        """Whether every letter fits in one block, written in the folder itself."""
        return self.count <= BLOCK


class LetterWork(NamedTuple):
    """What writing letters needs besides each partner: sent to every worker once."""

    templates: str
    settings: LetterSettings
    formats: tuple[str, ...]
    folder: str  # the new letters folder, being filled
    as_of: dt.date
    previous_run: int | None


def write_letter(
    ruleset: RuleSet,
    renderer: LetterRenderer,
    work: LetterWork,
    values: Mapping[str, Any],
    decision: Mapping[str, Any],
    changes: Sequence[Change],
    stem: str,
) -> tuple:
    """Render one partner's letter, write its files into ``work.folder``, and
    return its index row (see INDEX_COLUMNS).

    ``values`` are the partner's fields and metrics, typed; ``decision`` its
    record in decisions.jsonl (see :func:`engine.evaluate.decide.decision_record`);
    ``stem`` the path of its files in the folder, without extension (see
    :class:`LetterNames`).
    """
    settings, as_of = work.settings, work.as_of
    partner_id = decision["partner_id"]
    facts = letter_facts(ruleset, settings, values, decision, changes, as_of, work.previous_run)
    try:
        letter = renderer.render(facts)
    except Exception as error:  # noqa: BLE001 - any error in a template names its line
        raise DataError(
            f"letter for partner {partner_id}: {describe_template_error(error)}"
        ) from None
    written, note, to = [], "", ""
    for name in work.formats:
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
        _write_new_file(os.path.join(work.folder, file_name), data)
        written.append(file_name)
    if not note:
        to = facts.context["partner"].get("contact_email") or ""
    return (
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

    def summary(
        self, out_dir: Path, formats: Sequence[str], only_changed: bool, skipped: int
    ) -> dict:
        return {
            "folder": str(out_dir / LETTERS_FOLDER),
            "formats": list(formats),
            "only_changed": only_changed,
            "letters": self.written,
            "files": self.files,
            "skipped_unchanged": skipped,
            "by_kind": {k: self.kinds.get(k, 0) for k in KINDS},
            "by_language": dict(sorted(self.languages.items())),
            "fallbacks": dict(sorted(self.fallbacks.items())),
            "without_address": self.no_address,
        }


def _write_new_file(path: str, data: bytes) -> None:
    """Create a file that must not exist yet (the folder is new) and write it.

    Three system calls, where ``open(path, "w")`` makes seven (truncation, a
    terminal check, seeks); and ``O_EXCL`` makes sure that no letter ever
    replaces another. The first letter of a block makes the block's folder
    (several workers may try at once).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        descriptor = os.open(path, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
    finally:
        os.close(descriptor)


def swap_folder(temp: Path, target: Path) -> None:
    """Put the new letters folder in place of the old one, which is moved aside
    (``.old``: put back if the run dies here) and then marked to be deleted last."""
    old = target.with_name(f".{LETTERS_FOLDER}.{os.getpid()}.old")
    if target.exists():
        os.replace(target, old)
    os.replace(temp, target)
    if old.exists():
        os.replace(old, old.with_suffix(".stale"))


def remove_leftovers(folder: Path) -> None:
    """Old letters and what killed runs left, deleted last: deleting files just
    before creating many slows ext4 down (see engine.run.driver.remove_derived_outputs)."""
    remove_stale_partials(folder)
    for path in folder.glob(f".{LETTERS_FOLDER}.*.old"):
        shutil.rmtree(path, ignore_errors=True)


def restore_interrupted(folder: Path) -> None:
    """An old letters folder whose replacement never arrived (a letters run
    killed between the two renames of :func:`_swap`) is put back."""
    if (folder / LETTERS_FOLDER).exists():
        return
    for path in sorted(folder.glob(f".{LETTERS_FOLDER}.*.old")):
        os.replace(path, folder / LETTERS_FOLDER)
        return


def _dissolve_block(folder: Path) -> None:
    """A run of one block: its letters moved into the folder itself, and the
    index to match (at most BLOCK rows)."""
    block = folder / f"{1:04d}"
    if not block.is_dir():
        return
    for path in block.iterdir():
        os.replace(path, folder / path.name)
    block.rmdir()
    index = folder / INDEX_FILE
    with index.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    files = INDEX_COLUMNS.index("files")
    prefix = block.name + "/"
    with AtomicFile(index) as output:  # rows as read: their cells are safe already
        writer = csv.writer(output.handle)
        writer.writerow(rows[0])
        for row in rows[1:]:
            row[files] = ";".join(name.removeprefix(prefix) for name in row[files].split(";"))
            writer.writerow(row)


def check_formats(formats: Sequence[str]) -> None:
    """Every letter format asked for is one this program writes."""
    for name in formats:
        if name not in FORMATS:
            raise UsageError(f"unknown letter format '{name}'; use {', '.join(FORMATS)}")


class NewLetters:
    """A new letters folder in ``out_dir``, filled by the workers, with its
    index written here in the order given; it replaces ``letters/`` on
    :meth:`commit` (an interrupted run leaves the previous letters), and is
    removed on :meth:`discard`. The summary names the folder as
    ``shown_as/letters`` (default ``out_dir``): the path users read."""

    def __init__(self, out_dir: Path, formats: Sequence[str], shown_as: Path | None = None):
        self.out_dir = out_dir
        self.shown_as = shown_as or out_dir
        self.formats = tuple(formats)
        restore_interrupted(out_dir)
        self.folder = out_dir / f".{LETTERS_FOLDER}.{os.getpid()}.partial"
        self.folder.mkdir()
        self.index = CsvOutput(self.folder / INDEX_FILE, INDEX_COLUMNS)
        self.tally = LetterTally()
        self.names = LetterNames()

    def add(self, rows: Sequence[tuple]) -> None:
        """Index the letters of one chunk (their index rows)."""
        for row in rows:
            self.index.write(row)
            self.tally.add(row)

    def summary(self, only_changed: bool = False, skipped: int = 0) -> dict:
        return self.tally.summary(self.shown_as, self.formats, only_changed, skipped)

    def commit(self) -> None:
        self.index.commit()
        if self.names.flat:
            _dissolve_block(self.folder)
        swap_folder(self.folder, self.out_dir / LETTERS_FOLDER)
        remove_leftovers(self.out_dir)

    def discard(self) -> None:
        self.index.discard()
        shutil.rmtree(self.folder, ignore_errors=True)
