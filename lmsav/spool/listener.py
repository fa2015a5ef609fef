"""`lmsav spool listen`: the spool's SMTP/LMTP front door for an MTA's content filter transport.

Postfix (``content_filter = lmsav:[127.0.0.1]:10025``) and Exim (an smtp or lmtp transport) hand
each message over one long-lived connection instead of starting ``lmsav enqueue`` per message.
The listener writes the message into ``nqueue/`` as it arrives, exactly like ``lmsav enqueue``
(same entry, fsynced, renamed into ``new/``, ``new/`` fsynced) and only then answers 250 — per
recipient under LMTP. Anything that keeps the entry from being durable is answered 4xx, so the
MTA keeps the message; a connection lost mid-DATA leaves nothing behind. The watcher scans and
reinjects the entry as it does every other.

Line endings are stored as LF, as the MTA's pipe gives them, so the mail policy sees one form
whatever the door. The SMTP machinery (commands, pipelining, timeouts) is aiosmtpd's; only DATA
is read here, streamed to the spool file so memory stays bounded whatever the message size.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, syntax

from ..config import SPOOL_LISTEN_RE
from ..mail.envelope import Envelope
from .nqueue import MAX_ADDRESS, Incoming, Spool, SpoolError

log = logging.getLogger("lmsav.spool")

DEFAULT_LISTEN = "smtp:127.0.0.1:10025"
# Not the host's own name: Postfix's smtp client refuses a server that greets with its own
# myhostname ("mail loops back to myself").
GREETING_NAME = "lmsav.filter"
MAX_RECIPIENTS = 1000  # per message, as Postfix's smtpd_recipient_limit
IDLE_TIMEOUT = 300.0  # RFC 5321 4.5.3.2.7: the server waits five minutes for a command
STOP_GRACE = 30.0  # SIGTERM: transfers in progress may finish for this long
UNIX_SOCKET_MODE = 0o666  # the MTA's delivery agent connects as its own user
_LINES_PER_TIMER = 512  # DATA lines between idle-timer resets (a reset allocates a timer)


class ListenError(Exception):
    """The listener cannot start (bad address, port in use); one line saying why."""


@dataclass(frozen=True)
class Address:
    """One parsed ``[spool] listen`` entry."""

    protocol: str  # "smtp" or "lmtp"
    host: str = ""
    port: int = 0
    path: str = ""  # a unix socket instead of host and port

    def __str__(self) -> str:
        if self.path:
            return f"{self.protocol}:unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.protocol}:{host}:{self.port}"


def parse_listen(text: str) -> Address:
    match = SPOOL_LISTEN_RE.fullmatch(text.strip())
    if not match:
        raise ListenError(f"listen address {text!r}: expected smtp:HOST:PORT, lmtp:HOST:PORT "
                          "or lmtp:unix:/PATH (HOST an IP address, [IPv6] or localhost)")
    if match["path"]:
        return Address(match["protocol"], path=match["path"])
    port = int(match["port"])
    if not 0 < port < 65536:
        raise ListenError(f"listen address {text!r}: port {port} out of range")
    return Address(match["protocol"], host=match["host"].strip("[]"), port=port)


@dataclass(frozen=True)
class Policy:
    """What the door accepts."""

    max_message_size: int = 100 << 20
    oversize: str = "defer"  # or "reject"

    def too_big(self) -> str:
        if self.oversize == "reject":
            return f"552 5.3.4 Message too big for lmsav (over {self.max_message_size} bytes)"
        return f"452 4.3.4 Message too big for lmsav (over {self.max_message_size} bytes)"


class Handler:
    """aiosmtpd's hooks: the envelope checks; DATA itself is read by the session."""

    def __init__(self, spool: Spool, policy: Policy):
        self.spool = spool
        self.policy = policy
        self.accepted = 0
        self.in_data = 0  # sessions between DATA and its reply

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        # aiosmtpd reads commands strictly in order, so pipelined commands are safe to announce.
        extra = ["250-PIPELINING", "250-ENHANCEDSTATUSCODES"]
        if self.policy.max_message_size:
            extra.append(f"250-SIZE {self.policy.max_message_size}")
        return responses[:1] + extra + responses[1:]  # the last is aiosmtpd's "250 HELP"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if address == "<>":
            address = ""  # the null sender of a bounce, as the spool writes it
        if _bad_address(address):
            return "553 5.1.7 Bad sender address syntax"
        for option in mail_options:
            name, _, value = option.partition("=")
            if name == "SIZE" and value.isdigit() and self.policy.max_message_size \
                    and int(value) > self.policy.max_message_size:
                return self.policy.too_big()
        envelope.mail_from = address or "<>"  # aiosmtpd takes "" for "no MAIL yet"
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not address or _bad_address(address):
            return "553 5.1.3 Bad recipient address syntax"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    def open_entry(self, envelope) -> Incoming:
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from
        return self.spool.incoming(Envelope(sender=sender,
                                            recipients=tuple(envelope.rcpt_tos)))


def _bad_address(address: str | None) -> bool:
    return address is None or len(address) > MAX_ADDRESS or any(c in address for c in "\r\n\0")


class _StreamedData:
    """DATA read line by line straight into the spool entry (mixed into aiosmtpd's session)."""

    event_handler: Handler

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        handler = self.event_handler
        handler.in_data += 1
        try:
            await self._data(handler)
        finally:
            handler.in_data -= 1

    async def _data(self, handler: Handler) -> None:
        entry, failure = None, ""
        try:
            entry = handler.open_entry(self.envelope)
        except SpoolError as err:
            failure = str(err)
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        limit = handler.policy.max_message_size
        size, oversize, lines = 0, False, 0
        at_line_start = True
        try:
            while True:
                try:
                    line = await self._reader.readuntil(b"\r\n")
                except asyncio.LimitOverrunError as err:
                    line = await self._reader.readexactly(err.consumed)  # part of a long line
                except asyncio.IncompleteReadError:
                    raise ConnectionResetError("connection closed during DATA") from None
                if at_line_start:
                    if line == b".\r\n":
                        break
                    if line[:1] == b".":
                        line = line[1:]  # RFC 5321 4.5.2: the client doubled a leading dot
                at_line_start = line[-2:] == b"\r\n"
                if at_line_start:
                    line = line[:-2] + b"\n"
                size += len(line)
                lines += 1
                if lines % _LINES_PER_TIMER == 0:
                    self._reset_timeout()  # a long transfer is not an idle client
                if oversize or entry is None:
                    continue
                if limit and size > limit:
                    oversize = True
                    entry.abort()
                    continue
                try:
                    entry.write(line)
                except SpoolError as err:
                    failure, entry = str(err), None
        except BaseException:
            # Lost connection, timeout, shutdown: nothing of this message was accepted.
            if entry is not None:
                entry.abort()
            raise
        sender, recipients = self.envelope.mail_from, list(self.envelope.rcpt_tos)
        self._set_post_data_state()
        if oversize:
            replies = [handler.policy.too_big()]
            log.warning("refused a message of more than %d bytes from %s for %s", limit,
                        sender, recipients[0])
        elif entry is None:
            replies = [f"451 4.3.0 lmsav cannot take the message now: {_one_line(failure)}"]
            log.error("deferred a message for %s: %s", recipients[0], failure)
        else:
            try:
                entry_id = await asyncio.get_running_loop().run_in_executor(None, entry.commit)
            except SpoolError as err:
                replies = [f"451 4.3.0 lmsav cannot take the message now: {_one_line(err)}"]
                log.error("deferred a message for %s: %s", recipients[0], err)
            else:
                handler.accepted += 1
                replies = [f"250 2.0.0 Ok: queued as {entry_id}"]
                log.debug("queued %s: %d bytes, %d recipients", entry_id, size,
                          len(recipients))
        if self._lmtp:
            replies = replies * len(recipients)  # LMTP: one reply per accepted recipient
        for reply in replies:
            await self.push(reply)


def _one_line(reason) -> str:
    return " ".join(str(reason).split())[:300]


class SmtpSession(_StreamedData, SMTP):
    line_length_limit = 64 << 10  # the stream's buffer; DATA lines of any length are taken
    _lmtp = False


class LmtpSession(_StreamedData, LMTP):
    line_length_limit = 64 << 10
    _lmtp = True


def _session_factory(address: Address, handler: Handler):
    cls = LmtpSession if address.protocol == "lmtp" else SmtpSession

    def make():
        return cls(handler, hostname=GREETING_NAME, ident="lmsav ESMTP content filter",
                   data_size_limit=None, enable_SMTPUTF8=True, decode_data=False,
                   timeout=IDLE_TIMEOUT)

    return make


async def _open(address: Address, handler: Handler, loop) -> asyncio.AbstractServer:
    factory = _session_factory(address, handler)
    try:
        if address.path:
            path = Path(address.path)
            if path.is_socket():
                path.unlink()  # a socket left by an earlier run; anything else is not ours
            old = os.umask(~UNIX_SOCKET_MODE & 0o777)
            try:
                return await loop.create_unix_server(factory, str(path))
            finally:
                os.umask(old)
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        return await loop.create_server(factory, address.host, address.port, family=family,
                                        reuse_address=True)
    except OSError as err:
        raise ListenError(f"{address}: cannot listen: {err.strerror or err}") from None


async def serve(addresses: list[Address], spool: Spool, policy: Policy,
                ready=None) -> int:
    """Listen on ``addresses`` until SIGTERM/SIGINT; returns the number of messages taken.
    ``ready`` (a callable) is told once every address listens."""
    loop = asyncio.get_running_loop()
    handler = Handler(spool, policy)
    servers = []
    try:
        for address in addresses:
            servers.append(await _open(address, handler, loop))
            log.info("listening on %s for %s", address, spool.root)
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        if ready is not None:
            ready()
        await stop.wait()
        log.info("stopping: no new connections; transfers in progress get %.0f s",
                 STOP_GRACE)
    finally:
        for server in servers:
            server.close()
        for address in addresses:
            if address.path and Path(address.path).is_socket():
                Path(address.path).unlink(missing_ok=True)
    # Transfers in progress may finish (their commit included); idle connections are simply
    # closed when the loop ends. A message whose 250 was not sent stays with the MTA.
    deadline = loop.time() + STOP_GRACE
    while handler.in_data and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return handler.accepted


def run(addresses: list[Address], spool_dir: Path, policy: Policy) -> int:
    """The blocking entry of `lmsav spool listen`; 0 on a clean stop."""
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: a line per command
    spool = Spool(spool_dir)
    try:
        spool.ensure()
    except SpoolError as err:
        raise ListenError(str(err)) from None
    for address in addresses:
        if address.path and Path(address.path).exists() \
                and not stat.S_ISSOCK(os.lstat(address.path).st_mode):
            raise ListenError(f"{address.path}: exists and is not a socket")
    accepted = asyncio.run(serve(addresses, spool, policy))
    log.info("stopped: %d messages taken", accepted)
    return 0
