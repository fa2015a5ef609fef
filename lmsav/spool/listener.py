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
is read here, in pieces of up to 64 KiB, kept in memory up to 1 MiB and then streamed to the
spool file, so memory stays bounded whatever the message size.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
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
        extra = ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250-XFORWARD NAME ADDR IDENT"]
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


def _bad_address(address: str | None) -> bool:
    return address is None or len(address) > MAX_ADDRESS or any(c in address for c in "\r\n\0")


END = b"\r\n.\r\n"  # RFC 5321 4.1.1.4: the line "." ends the data
SPILL = 1 << 20  # bytes of a message kept in memory before its spool file is opened


def unstuff(raw: bytes) -> bytes:
    """SMTP data (CRLF lines, leading dots doubled) as the spool stores it: LF lines, dots
    undone. ``raw`` holds whole CRLFs: a cut never falls between CR, LF and a leading dot."""
    return raw.replace(b"\r\n.", b"\n").replace(b"\r\n", b"\n")


class _Store:
    """Where one message's bytes go: memory first, the spool file past SPILL; the spool's
    blocking calls (create, fsync, rename) run in worker threads, never on the event loop."""

    def __init__(self, handler: Handler, envelope):
        self.handler = handler
        self.sender = "" if envelope.mail_from == "<>" else envelope.mail_from
        self.recipients = tuple(envelope.rcpt_tos)
        forwarded = getattr(envelope, "xforward", {})
        self.queue_id = forwarded.get("IDENT", "")
        self.client = " ".join(v for v in (forwarded.get("ADDR"), forwarded.get("NAME")) if v)
        self.limit = handler.policy.max_message_size
        self.pieces: list[bytes] = []
        self.buffered = 0
        self.size = 0
        self.entry: Incoming | None = None
        self.failure = ""
        self.oversize = False
        self.committed = False
        self._busy = None  # the worker thread's future while it writes

    async def add(self, data: bytes) -> None:
        self.size += len(data)
        if self.failure or self.oversize or not data:
            return
        if self.limit and self.size > self.limit:
            self.oversize = True
            self.drop()
            return
        self.pieces.append(data)
        self.buffered += len(data)
        if self.buffered >= SPILL:
            await self._in_thread(self._write_out)

    async def commit(self) -> str:
        return await self._in_thread(self._commit)

    def _write_out(self) -> None:
        if self.entry is None:
            self.entry = self.handler.spool.incoming(
                Envelope(self.sender, self.recipients, client=self.client), self.queue_id)
        pieces, self.pieces, self.buffered = self.pieces, [], 0
        for piece in pieces:
            self.entry.write(piece)

    def _commit(self) -> str:
        self._write_out()
        entry_id = self.entry.commit()
        self.committed = True
        return entry_id

    async def _in_thread(self, work):
        # Shielded: a cancelled session (connection lost, shutdown) must not abort the file
        # under a thread still writing it; drop() waits for the thread instead.
        self._busy = asyncio.get_running_loop().run_in_executor(None, work)
        try:
            return await asyncio.shield(self._busy)
        except SpoolError as err:
            self.failure = str(err)
            self.drop()
            return None

    def drop(self) -> None:
        """Forget the message (refused, or its session ended before the reply)."""
        if self._busy is not None and not self._busy.done():
            self._busy.add_done_callback(lambda _future: self.drop())
            return
        self.pieces, self.buffered = [], 0
        entry, self.entry = self.entry, None
        if entry is not None and not self.committed:
            # A committed entry stays: the MTA, without its 250, hands the message over again
            # (one duplicate at most, never a loss).
            entry.abort()


class _StreamedData:
    """DATA read in large pieces straight into the spool, and Postfix's XFORWARD (mixed into
    aiosmtpd's session)."""

    event_handler: Handler

    async def smtp_XFORWARD(self, arg: str) -> None:
        """Postfix's XFORWARD_README: the original client and queue id, for the logs and the
        entry (``smtp_send_xforward_command = yes`` on the content filter transport)."""
        if self.envelope.mail_from:
            await self.push("503 5.5.1 Error: XFORWARD inside a mail transaction")
            return
        attributes = {}
        for word in (arg or "").split():
            name, sep, value = word.partition("=")
            name = name.upper()
            if not sep or name not in ("NAME", "ADDR", "IDENT", "PROTO", "HELO", "SOURCE",
                                       "PORT"):
                await self.push("501 5.5.4 Error: bad XFORWARD attribute")
                return
            value = _xtext(value)
            if value not in ("[UNAVAILABLE]", "[TEMPUNAVAIL]") and not _bad_address(value):
                attributes[name] = value
        forwarded = getattr(self.envelope, "xforward", {})
        forwarded.update(attributes)
        self.envelope.xforward = forwarded  # gone with the envelope after DATA or RSET
        await self.push("250 2.0.0 Ok")

    def eof_received(self):
        """The client closed its sending side. Exim's smtp transport sends the end of the data
        and QUIT, then shuts down its side before it reads the replies: what it sent is still
        read and answered (aiosmtpd would cancel the session here and lose the 250)."""
        self._reader.feed_eof()
        return True  # keep the transport open for the replies

    async def handle_exception(self, error):
        if isinstance(error, asyncio.IncompleteReadError):
            # End of input outside DATA without QUIT: nothing more will come.
            self.transport.close()
            return "421 4.4.2 lmsav closing connection"
        return await super().handle_exception(error)

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
        store = _Store(handler, self.envelope)
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._read_data(store)
            entry_id = None
            if not store.failure and not store.oversize:
                entry_id = await store.commit()
        except ConnectionResetError:
            # The client went away mid-DATA: nothing of this message was accepted. The loop of
            # aiosmtpd ends once the transport is gone.
            store.drop()
            self.transport.close()
            return
        except BaseException:
            # Cancelled (connection lost, idle timeout, shutdown): the same, but the
            # cancellation goes on.
            store.drop()
            raise
        finally:
            handler.in_data -= 1
        self._set_post_data_state()
        replies = [self._reply(store, entry_id)]
        if self._lmtp:
            replies *= len(store.recipients)  # LMTP: one reply per accepted recipient
        for reply in replies:
            await self.push(reply)

    async def _read_data(self, store: _Store) -> None:
        """Read up to the final ".", handing the unstuffed bytes to ``store``."""
        reader = self._reader
        # The data starts at a line start, so "." may end it at once. Until a byte is read that
        # no end marker contains, bytes are taken one at a time after a virtual CRLF; from then
        # on every marker lies wholly in what readuntil() searches.
        head = b"\r\n"
        while True:
            head += await self._read(reader.readexactly(1))
            if head.endswith(END):
                await store.add(unstuff(head[:-3])[1:])
                return
            if head[-1:] not in (b"\r", b"\n", b"."):
                break
        carry = head
        first = True
        while True:
            try:
                data, final = await self._read(reader.readuntil(END)), True
                data = data[:-3]  # the CRLF before "." ends the last line
            except asyncio.LimitOverrunError as err:
                # No marker in the stream's buffer: take all that cannot begin one.
                data, final = await self._read(reader.readexactly(err.consumed)), False
            self._reset_timeout()  # a long transfer is not an idle client
            chunk = carry + data
            if not final:
                keep = 2 if chunk.endswith(b"\r\n") else 1 if chunk.endswith(b"\r") else 0
                chunk, carry = chunk[:len(chunk) - keep], chunk[len(chunk) - keep:]
            out = unstuff(chunk)
            await store.add(out[1:] if first else out)  # [1:]: the virtual line start
            first = False
            if final:
                return

    @staticmethod
    async def _read(pending):
        try:
            return await pending
        except asyncio.IncompleteReadError:
            raise ConnectionResetError("connection closed during DATA") from None

    @staticmethod
    def _reply(store: _Store, entry_id: str | None) -> str:
        recipient = store.recipients[0]
        if store.oversize:
            log.warning("refused a message of more than %d bytes from <%s> for %s",
                        store.limit, store.sender, recipient)
            return store.handler.policy.too_big()
        if store.failure or entry_id is None:
            log.error("deferred a message for %s: %s", recipient, store.failure)
            return f"451 4.3.0 lmsav cannot take the message now: {_one_line(store.failure)}"
        store.handler.accepted += 1
        log.debug("queued %s: %d bytes, %d recipients", entry_id, store.size,
                  len(store.recipients))
        return f"250 2.0.0 Ok: queued as {entry_id}"


def _xtext(value: str) -> str:
    """RFC 3461 xtext: "+" and two hex digits stand for a byte."""
    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m[1], 16)), value)


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
