"""Handing letters to a mail server over SMTP, one connection reused.

:class:`MailServer` connects (plain, STARTTLS or implicit TLS), logs in
when a user is given (never over a connection in clear), and delivers one
message at a time with :meth:`MailServer.deliver`, which says exactly how
far the message got: this is what lets the send pass promise at most one
delivery per letter (see :mod:`engine.run.sending`).

Until the server has been given the message's last line, a failure cannot
have delivered it: a dropped connection is reconnected and the message
tried again. After that, only the server's reply tells, so a connection
lost while waiting for it leaves the message *unconfirmed*: perhaps
delivered, never tried again without being asked. Replies in 4xx are
temporary (tried again after a wait that doubles each time), 5xx permanent.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import time
from dataclasses import dataclass
from typing import NamedTuple

from engine.errors import DeliveryError

SENT, REFUSED, DEFERRED, UNCONFIRMED = "sent", "refused", "deferred", "unconfirmed"
TIMEOUT_SECONDS = 60.0
_LEADING_DOT = re.compile(rb"(?m)^\.")


@dataclass(frozen=True)
class ServerOptions:
    host: str
    port: int
    security: str = "none"  # "none", "starttls" or "ssl"
    user: str | None = None
    password: str | None = None
    cafile: str | None = None  # a CA to trust besides the system's (a test certificate)
    retries: int = 3  # tries again after a temporary failure or a lost connection
    retry_wait: float = 5.0  # seconds before the first retry; doubled for each next one
    timeout: float = TIMEOUT_SECONDS

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


class Outcome(NamedTuple):
    status: str  # SENT, REFUSED, DEFERRED or UNCONFIRMED
    detail: str  # the server's reply, or what happened


def parse_server(text: str, security: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``HOST``: port 465 with SSL, else 587 with STARTTLS,
    else 25), an IPv6 address in brackets."""
    if text.startswith("["):  # [IPv6]:PORT
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
        valid = not rest or rest.startswith(":")
    else:
        host, _, port = text.partition(":")
        valid = ":" not in port
    if not valid or not host or any(c.isspace() or c in "[]/@" for c in host):
        raise ValueError(f"'{text}' is not a mail server; write it as HOST:PORT")
    if not port:
        return host, {"ssl": 465, "starttls": 587}.get(security, 25)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{port}' is not a port number; write the server as HOST:PORT")
    return host, int(port)


class MailServer:
    """One SMTP connection, opened on first use and opened again when lost."""

    def __init__(self, options: ServerOptions, sleep=time.sleep):
        if options.user and options.security == "none":
            raise DeliveryError(
                "a mail server user is set, but the connection would not be encrypted and "
                "the password would cross the network in clear; add --starttls or --ssl"
            )
        self.options = options
        self._sleep = sleep
        self._smtp: smtplib.SMTP | None = None
        self.connections = 0

    # --- the connection ----------------------------------------------------------

    def connect(self) -> None:
        """Open the connection now (the send pass does before the first letter,
        so that a wrong server, certificate or password stops it at once)."""
        if self._smtp is not None:
            return
        options = self.options
        try:
            context = ssl.create_default_context(cafile=options.cafile)
        except (OSError, ValueError) as error:
            raise DeliveryError(f"{options.cafile}: not a CA certificate ({error})") from None
        smtp: smtplib.SMTP | None = None
        try:
            if options.security == "ssl":
                smtp = smtplib.SMTP_SSL(
                    options.host, options.port, timeout=options.timeout, context=context
                )
            else:
                smtp = smtplib.SMTP(options.host, options.port, timeout=options.timeout)
            smtp.ehlo()
            if options.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(
                        f"the mail server {options.name} does not offer STARTTLS; "
                        "use --ssl, or leave --starttls out if the network is trusted"
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
            if options.user:
                smtp.login(options.user, options.password or "")
        except BaseException as error:
            if smtp is not None:
                smtp.close()
            raise _connection_error(error, options) from None
        self._smtp = smtp
        self.connections += 1

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (OSError, smtplib.SMTPException):
                self._smtp.close()
            self._smtp = None

    def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    # --- one message ----------------------------------------------------------------

    def deliver(self, sender: str, recipient: str, message: bytes) -> Outcome:
        """Hand one message to the server (see the module docstring)."""
        wait = self.options.retry_wait
        last = ""
        for attempt in range(self.options.retries + 1):
            if attempt:
                self._sleep(wait)
                wait *= 2
            try:
                self.connect()
            except DeliveryError as error:
                if attempt == self.options.retries:
                    raise
                last = str(error)
                continue
            outcome = self._try(sender, recipient, message)
            if outcome.status != DEFERRED:
                return outcome
            last = outcome.detail
        return Outcome(DEFERRED, f"{last} (tried {self.options.retries + 1} times)")

    def _try(self, sender: str, recipient: str, message: bytes) -> Outcome:
        smtp = self._smtp
        assert smtp is not None
        try:
            code, reply = smtp.docmd(f"MAIL FROM:<{sender}>")
            if code != 250:
                if code >= 500:  # the sender, not this letter: no letter could go
                    raise DeliveryError(
                        f"the mail server {self.options.name} refused the sender {sender} "
                        f"({_reply(code, reply)})"
                    )
                return self._refused(code, reply)
            code, reply = smtp.docmd(f"RCPT TO:<{recipient}>")
            if code not in (250, 251):
                return self._refused(code, reply)
            code, reply = smtp.docmd("DATA")
            if code != 354:
                return self._refused(code, reply)
        except (OSError, smtplib.SMTPServerDisconnected) as error:
            self._drop()  # nothing delivered yet: safe to try again
            return Outcome(DEFERRED, f"connection lost before the message ({error})")
        body = _LEADING_DOT.sub(b"..", message)
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        try:
            smtp.send(body + b".\r\n")
            code, reply = smtp.getreply()
        except (OSError, smtplib.SMTPServerDisconnected) as error:
            self._drop()
            return Outcome(
                UNCONFIRMED,
                f"the connection was lost after the message was handed over, before the "
                f"server confirmed it ({error}); it may have been delivered",
            )
        if code == 250:
            return Outcome(SENT, _reply(code, reply))
        return self._refused(code, reply)

    def _refused(self, code: int, reply: bytes) -> Outcome:
        """A reply other than the one expected: the transaction is reset, and
        the failure is temporary (4xx; the server closing, 421) or permanent."""
        if code == 421 or code < 0:  # closing, or nothing readable
            self._drop()
            return Outcome(DEFERRED, _reply(code, reply))
        try:
            self._smtp.rset()
        except (OSError, smtplib.SMTPException):
            self._drop()
        status = DEFERRED if 400 <= code < 500 else REFUSED
        return Outcome(status, _reply(code, reply))


def _connection_error(error: BaseException, options: ServerOptions) -> BaseException:
    """What stopped a connection from opening, said for the user."""
    if isinstance(error, smtplib.SMTPAuthenticationError):
        return DeliveryError(
            f"the mail server {options.name} refused the login of user "
            f"{options.user!r} ({_reply(error.smtp_code, error.smtp_error)}); check "
            "ELIGIBILITY_SMTP_USER and ELIGIBILITY_SMTP_PASSWORD"
        )
    if isinstance(error, ssl.SSLCertVerificationError):
        return DeliveryError(
            f"the mail server {options.name}'s certificate is not trusted "
            f"({error.verify_message}); give its CA with --cafile"
        )
    if isinstance(error, (OSError, smtplib.SMTPException)):
        return DeliveryError(f"cannot reach the mail server {options.name}: {error}")
    return error  # DeliveryError, KeyboardInterrupt


def _reply(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"{code} {' '.join(text.split())}"


__all__ = [
    "DEFERRED",
    "REFUSED",
    "SENT",
    "UNCONFIRMED",
    "MailServer",
    "Outcome",
    "ServerOptions",
    "parse_server",
]
