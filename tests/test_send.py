"""`eligibility send` against a real SMTP server on 127.0.0.1 (aiosmtpd).

Every test runs the example roster, then sends its letters: all delivered
and parsed back, refused and deferred recipients, a server that drops the
connection before and after a message, a kill in the middle and a resume,
STARTTLS and SMTPS with a test certificate, a login, rate limits, opt-out
lists, --only-changed and --to-test.
"""

from __future__ import annotations

import asyncio
import csv
import email
import email.policy
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from conftest import AS_OF, ROOT, example_run_options
from engine.letters.smtp import ServerOptions, parse_server
from engine.run.driver import RunLetters, run_batch
from engine.run.sending import SendOptions, send_letters

TEMPLATES = ROOT / "templates"
USER, PASSWORD = "mailer", "s3cret pass"


class Mailbox:
    """An aiosmtpd handler that keeps what it accepts and misbehaves on request."""

    def __init__(self):
        self.messages: list[tuple[list[str], bytes]] = []
        self.refuse: set[str] = set()  # recipients answered 550
        self.defer: dict[str, int] = {}  # recipient -> how many more times to answer 451
        self.drop_at_rcpt: set[int] = set()  # message numbers whose connection drops at RCPT
        self.drop_after_data: set[int] = set()  # ... after taking the message, before replying
        self.delay = 0.0  # seconds before answering each message
        self.hold_at = 0  # this message is kept, and not answered until `release` is set
        self.release = threading.Event()
        self.rcpts = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            self.rcpts += 1
            number = self.rcpts
        if number in self.drop_at_rcpt:
            server.transport.close()
            return "421 closing"
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: no such mailbox"
        if self.defer.get(address):
            self.defer[address] -= 1
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), envelope.original_content))
            number = len(self.messages)
        if number in self.drop_after_data:
            server.transport.close()
        while number == self.hold_at and not self.release.is_set():
            await asyncio.sleep(0.01)
        return "250 2.0.0 queued"

    def parsed(self):
        return [
            (rcpts, email.message_from_bytes(raw, policy=email.policy.default))
            for rcpts, raw in self.messages
        ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _authenticate(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server():
    """Start a real SMTP server on 127.0.0.1: smtp_server(**Controller options)
    returns (mailbox, port); every server is stopped after the test."""
    started = []

    def start(**kwargs):
        mailbox = Mailbox()
        port = _free_port()
        controller = Controller(mailbox, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        started.append(controller)
        return mailbox, port

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A test CA and a certificate for 127.0.0.1 signed by it."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    return folder / "ca.pem", server


@pytest.fixture
def letters_run(tmp_path):
    """The example run with letters, in tmp_path/out; its run history."""
    from engine.ruleset.loader import load_rules

    ruleset = load_rules(ROOT / "rules")
    run_batch(ruleset, example_run_options(tmp_path, letters=RunLetters(TEMPLATES)))
    return tmp_path / "out", tmp_path / "runs.sqlite"


def _addressed(out: Path) -> dict[str, str]:
    """Partner -> To address of every letter that has one."""
    with (out / "letters" / "index.csv").open(newline="", encoding="utf-8") as handle:
        return {row["partner_id"]: row["to"] for row in csv.DictReader(handle) if row["to"]}


def _send(out, db, port, **options):
    server_keys = {"security", "user", "password", "cafile", "retries", "retry_wait"}
    server = {k: options.pop(k) for k in list(options) if k in server_keys}
    server.setdefault("retry_wait", 0.0)
    return send_letters(SendOptions(out, db, ServerOptions("127.0.0.1", port, **server), **options))


def _sends(db: Path) -> list[tuple]:
    connection = sqlite3.connect(db)
    try:
        return connection.execute(
            "SELECT partner_id, address, test, outcome, message_id FROM sends ORDER BY id"
        ).fetchall()
    finally:
        connection.close()


def test_every_letter_is_delivered_once_and_parses(letters_run, smtp_server):
    out, db = letters_run
    mailbox, port = smtp_server()
    report = _send(out, db, port)
    addressed = _addressed(out)
    assert report.outcomes == {"sent": len(addressed)} and report.connections == 1
    assert report.skipped == {"no address": 1}
    parsed = mailbox.parsed()
    assert len(parsed) == len(addressed) == 31
    ids = {message["Message-ID"] for _, message in parsed}
    assert len(ids) == len(parsed)
    for rcpts, message in parsed:
        assert not message.defects
        assert rcpts == [message["To"].addresses[0].addr_spec]
        assert message.get_body(preferencelist=("plain",)).get_content().startswith("# ")
    assert {rcpts[0] for rcpts, _ in parsed} == set(addressed.values())
    recorded = _sends(db)
    assert [r[3] for r in recorded] == ["sent"] * 31 and {r[4] for r in recorded} == ids

    again = _send(out, db, port)  # a second send sends nothing new
    assert again.outcomes == {} and again.skipped == {"sent before": 31, "no address": 1}
    assert len(mailbox.messages) == 31


def test_refused_recipients_are_recorded_listed_and_not_tried_again(letters_run, smtp_server):
    out, db = letters_run
    mailbox, port = smtp_server()
    addressed = _addressed(out)
    mailbox.refuse = {addressed["P-1003"], addressed["P-1010"]}
    report = _send(out, db, port)
    assert report.outcomes == {"sent": 29, "refused": 2}
    listed = {(p, what) for p, _, what, _ in report.problems}
    assert {("P-1003", "refused"), ("P-1010", "refused")} <= listed
    assert any("550 5.1.1" in detail for *_, detail in report.problems)
    assert report.connections == 1  # one connection, reused after a refusal
    again = _send(out, db, port)
    assert again.outcomes == {} and again.skipped["refused before"] == 2
    assert len(mailbox.messages) == 29


def test_temporary_failures_are_retried_then_left_for_the_next_send(letters_run, smtp_server):
    out, db = letters_run
    mailbox, port = smtp_server()
    addressed = _addressed(out)
    mailbox.defer = {addressed["P-1002"]: 1, addressed["P-1004"]: 10}
    report = _send(out, db, port, retries=2)
    assert report.outcomes == {"sent": 30, "deferred": 1}  # P-1002 on the second try
    assert [p for p, _, what, _ in report.problems if what == "deferred"] == ["P-1004"]
    mailbox.defer.clear()
    again = _send(out, db, port)
    assert again.outcomes == {"sent": 1} and again.skipped["sent before"] == 30
    delivered = [rcpts[0] for rcpts, _ in mailbox.messages]
    assert sorted(delivered) == sorted(addressed.values())  # each exactly once


def test_a_connection_dropped_before_a_message_is_reopened(letters_run, smtp_server):
    out, db = letters_run
    mailbox, port = smtp_server()
    mailbox.drop_at_rcpt = {5, 20}
    report = _send(out, db, port)
    assert report.outcomes == {"sent": 31} and report.connections == 3
    assert sorted(r[0] for r, _ in mailbox.messages) == sorted(_addressed(out).values())


def test_a_connection_lost_before_the_reply_leaves_the_letter_unconfirmed(letters_run, smtp_server):
    """The server took the 7th message, then closed without answering: it
    may have been delivered, so it is not sent again without being asked."""
    out, db = letters_run
    mailbox, port = smtp_server()
    mailbox.drop_after_data = {7}
    report = _send(out, db, port)
    assert report.outcomes == {"sent": 30, "unconfirmed": 1}
    (unconfirmed,) = [p for p in report.problems if p[2] == "unconfirmed"]
    assert "before the server confirmed it" in unconfirmed[3]
    again = _send(out, db, port)
    assert again.outcomes == {} and again.skipped == {
        "sent before": 30,
        "unconfirmed": 1,
        "no address": 1,
    }
    assert "--retry-unconfirmed" in again.problems[0][3] or any(
        "--retry-unconfirmed" in p[3] for p in again.problems
    )
    assert len(mailbox.messages) == 31  # the server did take it
    retried = _send(out, db, port, retry_unconfirmed=True)
    assert retried.outcomes == {"sent": 1}
    assert _send(out, db, port).outcomes == {}


def test_a_send_killed_midway_resumes_without_loss_or_duplicates(letters_run, smtp_server):
    """`eligibility send` killed outright (SIGKILL) at the worst moment: the
    server has taken the 10th letter but not yet said so. The next send
    sends the rest and lists that one letter to check, without sending it
    again: every partner has its letter exactly once."""
    out, db = letters_run
    mailbox, port = smtp_server()
    mailbox.delay, mailbox.hold_at = 0.02, 10
    command = [sys.executable, "-c", "from cli import main; main()", "send", str(out)]
    command += ["--smtp", f"127.0.0.1:{port}", "--confirm", "--db", str(db)]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while len(mailbox.messages) < 10 and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    mailbox.release.set()
    assert len(mailbox.messages) == 10
    in_flight = mailbox.messages[-1][0][0]
    assert [r[1] for r in _sends(db) if r[3] == "sending"] == [in_flight]

    mailbox.delay = 0.0
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Sent 21 letters of run 1" in result.stdout
    assert in_flight in result.stdout and "--retry-unconfirmed" in result.stdout
    delivered = sorted(rcpts[0] for rcpts, _ in mailbox.messages)
    assert delivered == sorted(_addressed(out).values())  # each exactly once


def test_starttls_with_a_test_certificate_and_a_login(
    letters_run, smtp_server, certificates, monkeypatch, cli_run
):
    out, db = letters_run
    ca, server_context = certificates
    mailbox, port = smtp_server(
        tls_context=server_context,
        require_starttls=True,
        authenticator=_authenticate,
        auth_require_tls=True,
        auth_required=True,
    )
    base = ["send", str(out), "--db", str(db), "--smtp", f"127.0.0.1:{port}", "--confirm"]
    untrusted = cli_run(*base, "--starttls")
    assert untrusted.exit_code == 1 and "certificate is not trusted" in untrusted.stderr
    assert "--cafile" in untrusted.stderr
    anonymous = cli_run(*base, "--starttls", "--cafile", str(ca))  # the server wants a login
    assert anonymous.exit_code == 1 and "refused the sender" in anonymous.stderr
    assert "530" in anonymous.stderr and "send again to send the rest" in anonymous.stderr
    assert [r[3] for r in _sends(db)] == ["deferred"]  # no partner's letter marked refused
    monkeypatch.setenv("ELIGIBILITY_SMTP_USER", USER)
    monkeypatch.setenv("ELIGIBILITY_SMTP_PASSWORD", "wrong")
    wrong = cli_run(*base, "--starttls", "--cafile", str(ca))
    assert wrong.exit_code == 1 and "refused the login of user 'mailer'" in wrong.stderr
    plain = cli_run(*base)
    assert plain.exit_code == 1 and "in clear" in plain.stderr
    monkeypatch.setenv("ELIGIBILITY_SMTP_PASSWORD", PASSWORD)
    sent = cli_run(*base, "--starttls", "--cafile", str(ca))
    assert sent.exit_code == 0, sent.stderr
    assert f"Sent 31 letters of run 1 to partners through 127.0.0.1:{port}" in sent.output
    assert "sent:        31 sent (to partners" in cli_run("history", "1", "--db", str(db)).output
    assert sorted(r[0] for r, _ in mailbox.messages) == sorted(_addressed(out).values())


def test_smtps_from_the_start(letters_run, smtp_server, certificates):
    out, db = letters_run
    ca, server_context = certificates
    mailbox, port = smtp_server(ssl_context=server_context)
    report = _send(out, db, port, security="ssl", cafile=str(ca))
    assert report.outcomes == {"sent": 31} and len(mailbox.messages) == 31


def test_the_rate_limit_spaces_letters(letters_run, smtp_server):
    out, db = letters_run
    mailbox, port = smtp_server()
    started = time.perf_counter()
    report = _send(out, db, port, per_minute=3000)  # one every 20 ms
    assert report.outcomes == {"sent": 31}
    assert time.perf_counter() - started >= 30 * 0.02


def test_opt_outs_test_mailbox_and_only_changed(letters_run, smtp_server, tmp_path):
    out, db = letters_run
    mailbox, port = smtp_server()
    addressed = _addressed(out)
    opt_out = tmp_path / "opt-out.csv"
    opt_out.write_text(f"Email,reason\n{addressed['P-1002'].upper()},asked\n", encoding="utf-8")
    by_id = tmp_path / "by-id.csv"
    by_id.write_text("partner_id\nP-1005\n", encoding="utf-8")

    test = _send(out, db, port, to_test="qa@nimbus.example", suppress=(opt_out, by_id))
    assert test.outcomes == {"sent": 32}  # every letter, the one without an address too
    assert {tuple(r) for r, _ in mailbox.messages} == {("qa@nimbus.example",)}
    assert all(r[2] == 1 for r in _sends(db))  # recorded as test sends

    mailbox.messages.clear()
    report = _send(out, db, port, suppress=(opt_out, by_id))
    assert report.outcomes == {"sent": 29} and report.skipped["suppressed"] == 2
    delivered = {r[0] for r, _ in mailbox.messages}
    assert addressed["P-1002"] not in delivered and addressed["P-1005"] not in delivered
    assert {r[0] for r in _sends(db) if r[3] == "suppressed"} == {"P-1002", "P-1005"}

    changed_only = _send(out, db, port, only_changed=True)  # a first run: nobody changed
    assert changed_only.outcomes == {} and changed_only.skipped == {"unchanged": 32}


def test_only_changed_sends_the_partners_that_moved(tmp_path, smtp_server):
    from engine.ruleset.loader import load_rules

    ruleset = load_rules(ROOT / "rules")
    letters = RunLetters(TEMPLATES)
    run_batch(ruleset, example_run_options(tmp_path, as_of=AS_OF.replace(month=8), letters=letters))
    run_batch(ruleset, example_run_options(tmp_path, letters=letters))
    out, db = tmp_path / "out", tmp_path / "runs.sqlite"
    mailbox, port = smtp_server()
    with (out / "changes.csv").open(newline="", encoding="utf-8") as handle:
        changed = {row["partner_id"] for row in csv.DictReader(handle)}
    report = _send(out, db, port, only_changed=True)
    addressed = _addressed(out)
    expected = {addressed[p] for p in changed if p in addressed}
    assert expected and {r[0] for r, _ in mailbox.messages} == expected
    assert report.skipped["unchanged"] == 32 - len(changed)


def test_a_dry_run_says_what_would_go_and_sends_nothing(letters_run, cli_run):
    out, db = letters_run
    result = cli_run("send", str(out), "--db", str(db))
    assert result.exit_code == 0, result.stderr
    assert "Dry run (nothing sent" in result.output
    assert "31 letters would go to partners; not sent: 1 no address" in result.output
    assert "P-1001  partners@p-1001.example.com" in result.output
    assert "Subject: Your partner status on 26 November 2026" in result.output
    assert "P-1030  (no address)" in result.output
    assert _sends(db) == []


def test_what_send_refuses(letters_run, cli_run, tmp_path, smtp_server):
    out, db = letters_run
    base = ["send", str(out), "--db", str(db)]
    no_server = cli_run(*base, "--confirm")
    assert no_server.exit_code == 2 and "--smtp HOST:PORT" in no_server.stderr
    both = cli_run(*base, "--smtp", "x", "--ssl", "--starttls", "--confirm")
    assert both.exit_code == 2 and "not both" in both.stderr
    bad_port = cli_run(*base, "--smtp", "mail:99999", "--confirm")
    assert bad_port.exit_code == 2 and "not a port number" in bad_port.stderr
    closed = cli_run(*base, "--smtp", f"127.0.0.1:{_free_port()}", "--confirm")
    assert closed.exit_code == 1 and "cannot reach the mail server" in closed.stderr
    assert _sends(db) == []
    test_box = cli_run(*base, "--to-test", "not an address")
    assert test_box.exit_code == 2 and "not an email address" in test_box.stderr
    other_db = cli_run("send", str(out), "--db", str(tmp_path / "other.sqlite"))
    assert other_db.exit_code == 2 and "no run history" in other_db.stderr
    index = out / "letters" / "index.csv"
    lines = index.read_text(encoding="utf-8").splitlines(keepends=True)
    index.write_text("".join(lines[:-3]), encoding="utf-8")  # letters not all there
    unfinished = cli_run(*base)
    assert unfinished.exit_code == 2 and "letters are unfinished" in unfinished.stderr

    text_only = tmp_path / "text"
    from engine.ruleset.loader import load_rules

    run_batch(
        load_rules(ROOT / "rules"),
        example_run_options(
            tmp_path, out_dir=text_only, letters=RunLetters(TEMPLATES, formats=("text",))
        ),
    )
    no_eml = cli_run("send", str(text_only), "--db", str(db))
    assert no_eml.exit_code == 2 and "no email format" in no_eml.stderr


def test_a_held_run_is_not_sent(cli_run, tmp_path):
    out, db = tmp_path / "out", str(tmp_path / "h.sqlite")
    base = ["run", "--out", str(out), "--db", db, "--workers", "1", "-q"]
    assert cli_run(*base, "--as-of", "2026-08-20").exit_code == 0
    assert cli_run(*base, "--as-of", "2026-11-26", "--max-moves", "1").exit_code == 0
    refused = cli_run("send", str(out), "--db", db)
    assert refused.exit_code == 2 and "run 2 is held" in refused.stderr
    assert "eligibility release 2" in refused.stderr


def test_parse_server():
    assert parse_server("mail.example.com", "starttls") == ("mail.example.com", 587)
    assert parse_server("mail.example.com", "ssl") == ("mail.example.com", 465)
    assert parse_server("mail.example.com:2525", "none") == ("mail.example.com", 2525)
    assert parse_server("[::1]:25", "none") == ("::1", 25)
    assert parse_server("[::1]", "none") == ("::1", 25)
    for bad in ("", ":25", "mail:x", "mail:0", "two words:25"):
        with pytest.raises(ValueError):
            parse_server(bad, "none")


def test_two_sends_at_once_do_not_both_send(letters_run, smtp_server):
    """The second send stops at once: two senders could both send a letter
    that neither had recorded yet."""
    from engine.data.locks import held

    out, db = letters_run
    _, port = smtp_server()
    with held(db.with_name(db.name + ".send.lock"), "x", "y"):
        with pytest.raises(Exception) as raised:
            _send(out, db, port)
    assert "wait for that send to finish" in str(raised.value)


def test_a_letter_changed_since_it_was_sent_is_listed_not_sent_again(tmp_path, smtp_server):
    """The run is made again for the same day with a corrected roster: the
    same Message-IDs, but one partner's letter now says something else. It
    is not sent a second time under the same Message-ID (mail systems would
    drop it, or the partner would get two letters), and it is not silently
    counted as sent either: it is listed."""
    from engine.ruleset.loader import load_rules

    ruleset = load_rules(ROOT / "rules")
    letters = RunLetters(TEMPLATES)
    roster = tmp_path / "roster.csv"
    shutil.copy(ROOT / "examples" / "roster.csv", roster)
    run_batch(ruleset, example_run_options(tmp_path, roster=roster, letters=letters))
    out, db = tmp_path / "out", tmp_path / "runs.sqlite"
    mailbox, port = smtp_server()
    assert _send(out, db, port).outcomes == {"sent": 31}
    text = roster.read_text(encoding="utf-8")
    roster.write_text(text.replace("2015-11-02,12,15,3,4,8,1", "2015-11-02,12,15,3,4,9,1"))
    run_batch(ruleset, example_run_options(tmp_path, roster=roster, letters=letters))
    again = _send(out, db, port)
    assert again.outcomes == {} and again.skipped["changed since sent"] == 1
    assert again.skipped["sent before"] == 30
    (listed,) = [p for p in again.problems if p[2] == "changed since sent"]
    assert listed[0] == "P-1006" and "write to this partner yourself" in listed[3]
    assert len(mailbox.messages) == 31
