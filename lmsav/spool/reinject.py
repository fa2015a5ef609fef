"""Reinjection: hand a scanned message (or a notice) back to the MTA with its own envelope.

Three targets, chosen by ``[spool] reinject``: an SMTP listener that does not filter again
(``smtp:HOST:PORT``, Postfix's reinjection port, Exim with a received protocol its router skips),
the MTA's ``sendmail`` command (``sendmail:/path``, run with ``-G -i``), or a directory
(``dir:/path``) that tests and benchmarks use as a sink. Every failure is a ``ReinjectError``
that says whether trying again later can help; none is ever reported as success.
"""

from __future__ import annotations

import json
import os
import re
import smtplib
import subprocess
import time
from pathlib import Path
from typing import Protocol

from ..hostname import host_name

EX_TEMPFAIL = 75  # sysexits.h: the MTA's "try again later"
_LINE_ENDS = re.compile(rb"\r?\n")


class ReinjectError(Exception):
    """Reinjection failed, for some or all recipients.

    ``temporary``: trying again later may succeed (4xx replies, connection problems, exit 75).
    ``refused``: recipient → reply, for the recipients the MTA did not take.
    ``delivered``: recipients the MTA did take although others were refused; the caller must not
    hand the message to these again.
    """

    def __init__(self, message: str, temporary: bool, refused: dict[str, str] | None = None,
                 delivered: tuple[str, ...] = ()):
        super().__init__(message)
        self.temporary = temporary
        self.refused = dict(refused or {})
        self.delivered = tuple(delivered)


class Reinjector(Protocol):
    def deliver(self, sender: str, recipients: list[str], message: bytes) -> None: ...

    def close(self) -> None: ...


# -- SMTP ----------------------------------------------------------------------------------------

def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}".strip()


def _needs_utf8(addresses) -> bool:
    return any(not a.isascii() for a in addresses)


# Exim delivers at once only the first smtp_accept_queue_per_connection (default 10) messages of
# a connection and merely queues the rest until its next queue run (30 minutes on Debian): a
# connection is used for this many messages, then a new one is opened.
MESSAGES_PER_CONNECTION = 10


class SmtpReinjector:
    """Delivers over one SMTP connection, kept open between messages (up to
    MESSAGES_PER_CONNECTION) and reopened after a failure; one instance per worker process."""

    def __init__(self, host: str, port: int, helo: str | None = None, timeout: float = 60.0):
        self.host = host
        self.port = port
        self.helo = host_name(helo or "")
        self.timeout = timeout
        self._smtp: smtplib.SMTP | None = None
        self._sent = 0  # messages over the current connection

    def __repr__(self) -> str:
        return f"SmtpReinjector({self.host}:{self.port})"

    def _connect(self) -> smtplib.SMTP:
        try:
            smtp = smtplib.SMTP(timeout=self.timeout, local_hostname=self.helo)
            code, text = smtp.connect(self.host, self.port)
            if code != 220:
                smtp.close()
                raise ReinjectError(f"{self.host}:{self.port}: greeting {_reply(code, text)}",
                                    temporary=code < 500)
            code, text = smtp.ehlo()
            if code != 250:
                code, text = smtp.helo()
                if code != 250:
                    smtp.close()
                    raise ReinjectError(f"{self.host}:{self.port}: HELO {_reply(code, text)}",
                                        temporary=code < 500)
        except (OSError, smtplib.SMTPException) as err:
            raise ReinjectError(f"{self.host}:{self.port}: cannot connect: {err}",
                                temporary=True) from None
        return smtp

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    def deliver(self, sender: str, recipients: list[str], message: bytes) -> None:
        if not recipients:
            return
        try:
            self._deliver(sender, recipients, message)
        except ReinjectError:
            raise
        except (OSError, smtplib.SMTPException) as err:
            self._drop()
            raise ReinjectError(f"{self.host}:{self.port}: {err}", temporary=True) from None
        self._sent += 1
        if self._sent >= MESSAGES_PER_CONNECTION:
            self.close()

    def _deliver(self, sender, recipients, message) -> None:
        # A connection kept open may have been closed by the server meanwhile. Until DATA has
        # been sent nothing was accepted, so one fresh attempt is safe; after it, it is not.
        for fresh in (self._smtp is None, True):
            if self._smtp is None:
                self._smtp = self._connect()
                self._sent = 0
            try:
                return self._transaction(sender, recipients, message)
            except smtplib.SMTPServerDisconnected:
                self._drop()
                if fresh:
                    raise ReinjectError(f"{self.host}:{self.port}: connection closed before "
                                        "the message was sent", temporary=True) from None

    def _transaction(self, sender, recipients, message) -> None:
        smtp = self._smtp
        options = []
        if "8bitmime" in smtp.esmtp_features and any(b > 127 for b in message[:1 << 16]):
            options.append("BODY=8BITMIME")
        if _needs_utf8([sender, *recipients]):
            if not smtp.has_extn("smtputf8"):
                raise ReinjectError(f"{self.host}:{self.port}: non-ASCII address and no "
                                    "SMTPUTF8", temporary=False)
            options.append("SMTPUTF8")
        code, text = smtp.mail(sender, options)
        if code == 421:  # the server is closing this connection (idle timeout, shutdown)
            raise smtplib.SMTPServerDisconnected(_reply(code, text))
        if code != 250:
            self._reset()
            raise ReinjectError(f"MAIL FROM:<{sender}>: {_reply(code, text)}",
                                temporary=code < 500)
        refused: dict[str, str] = {}
        temporary = False
        accepted = []
        for rcpt in recipients:
            code, text = smtp.rcpt(rcpt)
            if code == 421:
                raise smtplib.SMTPServerDisconnected(_reply(code, text))
            if code in (250, 251):
                accepted.append(rcpt)
            else:
                refused[rcpt] = _reply(code, text)
                temporary |= code < 500
        if not accepted:
            self._reset()
            raise ReinjectError("all recipients refused: " + "; ".join(
                f"<{r}>: {t}" for r, t in refused.items()), temporary=temporary, refused=refused)
        try:
            code, text = smtp.data(_LINE_ENDS.sub(b"\r\n", message))
        except (OSError, smtplib.SMTPServerDisconnected) as err:
            # The message may or may not have been taken; retrying risks a duplicate, which is
            # preferable to a loss.
            self._drop()
            raise ReinjectError(f"{self.host}:{self.port}: connection lost during DATA: {err}",
                                temporary=True) from None
        if code != 250:
            self._reset()
            raise ReinjectError(f"DATA: {_reply(code, text)}", temporary=code < 500)
        if refused:
            raise ReinjectError("recipients refused: " + "; ".join(
                f"<{r}>: {t}" for r, t in refused.items()), temporary=temporary,
                refused=refused, delivered=tuple(accepted))

    def _reset(self) -> None:
        try:
            self._smtp.rset()
        except (OSError, smtplib.SMTPException):
            self._drop()


# -- sendmail ------------------------------------------------------------------------------------

class SendmailReinjector:
    """Runs the MTA's sendmail command once per delivery: ``-G`` (not a submission: no header
    fix-ups), ``-i`` (a lone dot is not the end), ``-f`` the envelope sender, the recipients after
    ``--``; the message on standard input. Exit 75 (EX_TEMPFAIL) is a temporary failure."""

    def __init__(self, path: str | os.PathLike, timeout: float = 300.0):
        self.path = str(path)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"SendmailReinjector({self.path})"

    def close(self) -> None:
        pass

    def deliver(self, sender: str, recipients: list[str], message: bytes) -> None:
        if not recipients:
            return
        # "<>" is how both Postfix's and Exim's sendmail take the null sender.
        argv = [self.path, "-G", "-i", "-f", sender or "<>", "--", *recipients]
        try:
            done = subprocess.run(argv, input=message, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ReinjectError(f"{self.path}: no answer in {self.timeout:g}s",
                                temporary=True) from None
        except OSError as err:
            raise ReinjectError(f"{self.path}: cannot run: {err.strerror or err}",
                                temporary=True) from None
        if done.returncode == 0:
            return
        said = " ".join(done.stderr.decode("utf-8", "replace").split())[:300]
        if done.returncode < 0:
            raise ReinjectError(f"{self.path}: killed by signal {-done.returncode}",
                                temporary=True)
        raise ReinjectError(f"{self.path}: exit {done.returncode}" + (f": {said}" if said else ""),
                            temporary=done.returncode == EX_TEMPFAIL)


# -- directory sink ------------------------------------------------------------------------------

class DirReinjector:
    """Writes each delivery as ``<n>.eml`` (the message) and ``<n>.env`` (its envelope as JSON),
    each fsynced and renamed into place, the envelope last: a ``.env`` file means a complete
    delivery. Names sort by time and never collide between processes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._count = 0

    def __repr__(self) -> str:
        return f"DirReinjector({self.path})"

    def close(self) -> None:
        pass

    def deliver(self, sender: str, recipients: list[str], message: bytes) -> None:
        if not recipients:
            return
        self._count += 1
        name = f"{time.time_ns():020d}.{os.getpid()}.{self._count}"
        envelope = json.dumps({"sender": sender, "recipients": list(recipients)}).encode()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            for suffix, data in ((".eml", message), (".env", envelope)):
                tmp = self.path / f".{name}{suffix}.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(tmp, self.path / f"{name}{suffix}")
            dfd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as err:
            raise ReinjectError(f"{self.path}: {err.strerror or err}", temporary=True) from None


# -- from the setting ----------------------------------------------------------------------------

_SMTP = re.compile(r"smtp:(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})")


def from_setting(text: str, helo: str | None = None) -> Reinjector:
    """The reinjector for a ``[spool] reinject`` value (already validated by the config)."""
    text = text.strip()
    match = _SMTP.fullmatch(text)
    if match:
        return SmtpReinjector(match.group(1).strip("[]"), int(match.group(2)), helo)
    kind, _, rest = text.partition(":")
    if kind == "sendmail" and rest.startswith("/"):
        return SendmailReinjector(rest)
    if kind == "dir" and rest.startswith("/"):
        return DirReinjector(rest)
    raise ValueError(f"reinject = {text!r}: expected \"smtp:HOST:PORT\", \"sendmail:/path\" "
                     "or \"dir:/path\"")
