"""Sending a run's letters: its .eml files handed to a mail server, each once.

``eligibility send`` reads the current run of an output folder (or a run's
own folder): its letters' index, in roster order, and each letter's .eml
file. It refuses a run that is held, that wrote no .eml letters, or whose
letters are unfinished (an index that does not match the run's summary).

**The guarantee: at most one delivery per Message-ID.** A letter's
Message-ID is the same for the same rules, as-of date and partner (see
:func:`engine.letters.emails.message_id`), and every send to a partner is
recorded in the run history (the ``sends`` table: Message-ID, run, partner,
address, times, outcome, the server's reply). The record is committed
*before* the message goes to the server, and updated once the server has
answered. So whenever a send dies (killed, a power cut), each letter is
either recorded as sent, never started, or still ``sending``: the one
letter in flight, perhaps delivered. A later send sends what was never
started and what failed for a while (``deferred``), never what was sent,
and lists the unconfirmed letters for a manual check instead of guessing
(``--retry-unconfirmed`` sends them again once checked). A permanent
refusal (5xx) is not tried again for the same address; a new address (the
roster corrected, the run made again) is.

Sends to a test mailbox (``--to-test``) are recorded too, apart: they never
count as a partner's letter sent. The letters are sent as they are, To
header included; only the envelope goes to the test mailbox.
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import email.parser
import email.policy
import email.utils
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from engine.data.locks import held
from engine.data.outputs import read_cell
from engine.data.readers import text_encoding
from engine.data.run_folders import SUMMARY, current_run
from engine.data.run_history import (
    DEFERRED,
    REFUSED,
    SENDING,
    SENT,
    SUPPRESSED,
    RunHistory,
)
from engine.errors import DataError, DeliveryError, UsageError
from engine.letters.files import INDEX_FILE, LETTERS_FOLDER
from engine.letters.settings import EMAIL
from engine.letters.smtp import UNCONFIRMED, MailServer, ServerOptions
from engine.run.driver import Progress, still_held

BATCH = 500  # letters whose earlier sends are looked up at once
SAMPLE = 5  # recipients shown by a dry run
MAX_PROBLEMS = 100  # problem letters a report keeps (all are in the run history)
_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)
_EMAIL_COLUMNS = ("email", "contact_email", "address", "e-mail", "mail")


@dataclass(frozen=True)
class SendOptions:
    out_dir: Path
    db: Path
    server: ServerOptions | None = None  # None: a dry run
    per_minute: float | None = None  # at most this many letters a minute
    suppress: tuple[Path, ...] = ()  # opt-out lists: CSV files
    only_changed: bool = False
    to_test: str | None = None  # every letter to this mailbox instead
    retry_unconfirmed: bool = False


class Letter(NamedTuple):
    """One letter to send, from the index and its .eml file's headers."""

    partner_id: str
    path: Path
    message_id: str
    sender: str
    address: str  # the To address; "" when the letter has none
    data: bytes  # the message
    digest: str  # identifies the message's bytes


@dataclass
class SendReport:
    """What a send did, or (a dry run) would do."""

    run_id: int
    total: int = 0  # the run's letters
    letters: int = 0  # letters of the run considered so far
    to_send: int = 0
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    skipped: collections.Counter = field(default_factory=collections.Counter)  # why not sent
    # Letters to look at: (partner, address, what: refused, deferred, unconfirmed, no
    # address, detail), the first MAX_PROBLEMS of them; problem_count counts them all.
    problems: list[tuple[str, str, str, str]] = field(default_factory=list)
    problem_count: int = 0
    sample: list[tuple[str, str]] = field(default_factory=list)
    first_letter: Path | None = None
    seconds: float = 0.0
    connections: int = 0
    dry_run: bool = True
    to_test: str | None = None
    stopped: str = ""  # why a send stopped before the end

    interrupted: bool = False
    in_flight: tuple[str, str] | None = None  # the letter being handed over: partner, address

    def problem(self, partner_id: str, address: str, what: str, detail: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append((partner_id, address, what, detail))


def send_letters(
    options: SendOptions,
    progress: Callable[[Progress], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SendReport:
    """Send the letters of the run in ``options.out_dir`` (see the module
    docstring), or with no server, say what a send would do."""
    folder = current_run(options.out_dir)
    run = _sendable_run(folder)
    if options.to_test is not None and not EMAIL.match(options.to_test):
        raise UsageError(f"--to-test {options.to_test!r} is not an email address")
    suppressed = _suppression(options.suppress)
    changed = _changed_partners(folder) if options.only_changed else None
    if not options.db.exists():
        raise UsageError(f"no run history at {options.db}; give the run's --db")
    lock = held(
        options.db.with_name(options.db.name + ".send.lock"),
        f"the letters of the run history {options.db}",
        "wait for that send to finish",
    )
    with lock:
        history = RunHistory(options.db)
        try:
            run_id = int(run["run"]["id"])
            history.run(run_id)
            if not history.records_folder(folder):
                raise UsageError(
                    f"{folder} is not the folder {options.db} records for run {run_id}; "
                    "give the run history the run was recorded in (--db)"
                )
            report = SendReport(
                run_id,
                run["letters"]["letters"],
                dry_run=options.server is None,
                to_test=options.to_test,
            )
            server = MailServer(options.server, sleep) if options.server else None
            started = time.perf_counter()
            try:
                if server is not None:
                    server.connect()
                _send(
                    options, folder, history, server, report, suppressed, changed, progress, sleep
                )
            except KeyboardInterrupt:  # Ctrl-C, SIGTERM: the report says where it stopped
                report.interrupted = True
                report.stopped = "interrupted"
                if report.in_flight is not None:
                    report.problem(
                        *report.in_flight,
                        UNCONFIRMED,
                        "the send was stopped while this letter was being handed over",
                    )
            finally:
                report.seconds = time.perf_counter() - started
                if server is not None:
                    report.connections = server.connections
                    server.close()
        finally:
            history.close()
    return report


def _send(
    options: SendOptions,
    folder: Path,
    history: RunHistory,
    server: MailServer | None,
    report: SendReport,
    suppressed: tuple[set[str], set[str]],
    changed: set[str] | None,
    progress: Callable[[Progress], None] | None,
    sleep: Callable[[float], None],
) -> None:
    test = options.to_test is not None
    interval = 60.0 / options.per_minute if options.per_minute else 0.0
    clock = time.perf_counter()
    sent = 0
    for batch in _batches(_letters(folder)):
        log = {} if test else history.send_log(letter.message_id for letter in batch)
        for letter in batch:
            report.letters += 1
            reason = _not_to_send(letter, log.get(letter.message_id, ()), options, changed)
            if reason:
                report.skipped[reason[0]] += 1
                if reason[1]:
                    report.problem(letter.partner_id, letter.address, *reason)
                continue
            if not test and (
                letter.address.lower() in suppressed[0] or letter.partner_id in suppressed[1]
            ):
                report.skipped[SUPPRESSED] += 1
                if server is not None:
                    history.record_send(
                        letter.message_id,
                        report.run_id,
                        letter.partner_id,
                        letter.address,
                        SUPPRESSED,
                        "on the suppression list",
                        _now(),
                    )
                continue
            report.to_send += 1
            if report.first_letter is None:
                report.first_letter = letter.path
            if len(report.sample) < SAMPLE:
                report.sample.append((letter.partner_id, options.to_test or letter.address))
            if server is None:
                continue
            if interval:
                wait = clock + sent * interval - time.perf_counter()
                if wait > 0:
                    sleep(wait)
            recipient = options.to_test or letter.address
            send_id = history.start_send(
                letter.message_id,
                report.run_id,
                letter.partner_id,
                recipient,
                test,
                _now(),
                letter.digest,
            )
            report.in_flight = (letter.partner_id, recipient)
            try:
                outcome = server.deliver(letter.sender, recipient, letter.data)
            except DeliveryError as error:
                history.finish_send(send_id, DEFERRED, str(error), _now())
                report.outcomes[DEFERRED] += 1
                report.stopped = str(error)
                return
            history.finish_send(send_id, outcome.status, outcome.detail, _now())
            report.in_flight = None
            report.outcomes[outcome.status] += 1
            if outcome.status != SENT:
                report.problem(letter.partner_id, recipient, outcome.status, outcome.detail)
            sent += 1
            if progress and sent % 100 == 0:
                elapsed = time.perf_counter() - clock
                progress(Progress(sent, report.letters, report.total, elapsed, "letters sent"))


def _not_to_send(
    letter: Letter, earlier: tuple | list, options: SendOptions, changed: set[str] | None
) -> tuple[str, str] | None:
    """Why a letter is not sent: (reason, detail to list it with, or "")."""
    if changed is not None and letter.partner_id not in changed:
        return "unchanged", ""
    if not letter.address and options.to_test is None:
        return "no address", "the letter has no To (see the index's note)"
    sent = [send for send in earlier if send[0] == SENT]
    if sent:
        if all(send[4] != letter.digest for send in sent):
            return (
                "changed since sent",
                f"differs from the letter sent on {sent[-1][3]} under the same Message-ID "
                "(the run was made again with other data or templates); not sent again, "
                "so write to this partner yourself if the change matters",
            )
        return "sent before", ""
    for outcome, address, detail, started_at, _ in earlier:
        if outcome in (SENDING, UNCONFIRMED) and not options.retry_unconfirmed:
            return (
                UNCONFIRMED,
                f"a send on {started_at} did not learn whether the server took it"
                f"{' (' + detail + ')' if detail else ' (the send was stopped)'}; check the "
                "mail server's log, then send with --retry-unconfirmed if it never arrived",
            )
        if outcome == REFUSED and address.lower() == letter.address.lower():
            return REFUSED + " before", f"refused on {started_at}: {detail}"
    return None


def _sendable_run(folder: Path) -> dict:
    """The run's summary, once it is clear that its letters can be sent."""
    run = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
    run_id = run["run"]["id"]
    held_section = still_held(run)
    if held_section is not None:
        raise UsageError(
            f"run {run_id} is held: {held_section['reason']}. Look at its changes, then "
            f"'eligibility release {run_id}' before sending its letters"
        )
    letters = run.get("letters")
    if not letters:
        raise UsageError(
            f"run {run_id} wrote no letters; write them with 'eligibility letters', then send"
        )
    if "eml" not in letters.get("formats", ()):
        raise UsageError(
            f"run {run_id}'s letters have no email format (eml); write them with "
            "'eligibility letters --format eml', then send"
        )
    index = folder / LETTERS_FOLDER / INDEX_FILE
    rows = _index_rows(index)
    if rows is None or rows != letters["letters"]:
        raise UsageError(
            f"run {run_id}'s letters are unfinished ({index} lists "
            f"{'no' if rows is None else rows} of its {letters['letters']} letters); "
            "write them again with 'eligibility letters'"
        )
    return run


def _index_rows(index: Path) -> int | None:
    """How many letters the index lists (rows, not lines: a cell may hold one)."""
    if not index.is_file():
        return None
    with index.open(newline="", encoding="utf-8") as handle:
        return max(sum(1 for _ in csv.reader(handle)) - 1, 0)


def _letters(folder: Path) -> Iterator[Letter]:
    """The run's .eml letters in index order (the roster's), with their headers."""
    letters = folder / LETTERS_FOLDER
    with (letters / INDEX_FILE).open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            name = next((n for n in row["files"].split(";") if n.endswith(".eml")), None)
            if name is None:
                continue
            path = letters / name
            try:
                data = path.read_bytes()
            except OSError as error:
                raise DataError(
                    f"{path}: cannot read the letter ({error.strerror}); write the letters "
                    "again with 'eligibility letters'"
                ) from None
            headers = _HEADERS.parsebytes(data)
            _, sender = email.utils.parseaddr(headers.get("From", ""))
            _, address = email.utils.parseaddr(headers.get("To", ""))
            message_id = headers.get("Message-ID", "").strip()
            if not message_id or not EMAIL.match(sender):
                raise DataError(f"{path}: not a letter this program wrote (no Message-ID or From)")
            yield Letter(
                read_cell(row["partner_id"]),
                path,
                message_id,
                sender,
                address if EMAIL.match(address) else "",
                data,
                hashlib.sha256(data).hexdigest()[:32],
            )


def _batches(letters: Iterator[Letter]) -> Iterator[list[Letter]]:
    batch: list[Letter] = []
    for letter in letters:
        batch.append(letter)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _suppression(paths: tuple[Path, ...]) -> tuple[set[str], set[str]]:
    """The addresses (lower case) and partner ids that must not be written to:
    CSV files (in any encoding a roster may have) with a column ``email`` (or
    contact_email, address, e-mail, mail) or ``partner_id``, or both."""
    addresses: set[str] = set()
    partners: set[str] = set()
    for path in paths:
        if path.suffix.lower() != ".csv":
            raise UsageError(f"{path}: a suppression list is a .csv file")
        with path.open("rb") as binary, text_encoding(path).open(binary) as text:
            rows = csv.reader(text)
            header = [cell.strip().lower() for cell in next(rows, [])]
            email_column = next((header.index(c) for c in _EMAIL_COLUMNS if c in header), None)
            partner_column = header.index("partner_id") if "partner_id" in header else None
            if email_column is None and partner_column is None:
                raise DataError(
                    f"{path}: a suppression list needs a column 'email' or 'partner_id' "
                    f"(its header: {', '.join(header) or 'none'})"
                )
            for row in rows:
                for column, found in ((email_column, addresses), (partner_column, partners)):
                    if column is not None and column < len(row) and row[column].strip():
                        value = row[column].strip()
                        found.add(value.lower() if found is addresses else value)
    return addresses, partners


def _changed_partners(folder: Path) -> set[str]:
    with (folder / "changes.csv").open(newline="", encoding="utf-8") as handle:
        return {read_cell(row["partner_id"]) for row in csv.DictReader(handle)}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
