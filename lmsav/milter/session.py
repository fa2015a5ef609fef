"""One milter connection: the envelope, headers and body of each message the MTA passes, the
recipient-group check at RCPT time, and the answer at the end of the body.

It fails closed: whatever goes wrong while deciding is a temporary failure (4xx), so the client
retries and nothing is accepted unscanned. A body larger than ``spill`` bytes goes to a private
temporary file; one larger than ``max_message`` is deferred as qmail's wrapper defers it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from typing import ClassVar

from ..mail.envelope import Envelope
from . import policy, protocol
from .protocol import ProtocolError

log = logging.getLogger("lmsav.milter")

TEMPFAIL_REPLY = "451 4.3.0 Anti-virus check failed, try again later"
TOO_LARGE_REPLY = "452 4.3.4 Message too large for the anti-virus check"


@dataclass(frozen=True)
class Limits:
    spill: int = 1 << 20  # bytes of a message kept in memory; the rest goes to a private file
    max_message: int = 100 << 20
    tmp_dir: str | None = None


class Quit(Exception):
    """The MTA closed the conversation (SMFIC_QUIT)."""


class Session:
    """The state of one connection; ``handle(packet)`` → the packets to send back."""

    def __init__(self, backend, limits: Limits = Limits()):
        self.backend = backend
        self.limits = limits
        self.macros: dict[str, str] = {}
        self.client = ""
        self.actions = protocol.WANTED_ACTIONS  # until the MTA negotiates fewer
        self._message = None
        self._reset_message()

    # -- message state --

    def _reset_message(self) -> None:
        if self._message is not None:
            self._message.close()
        self.sender: str | None = None
        self.recipients: list[str] = []
        self.group: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.size = 0
        self.body_offset: int | None = None
        self._message = None

    def close(self) -> None:
        self._reset_message()

    def _spool(self):
        if self._message is None:
            # Closed (and its file removed) by _reset_message, per message.
            self._message = tempfile.SpooledTemporaryFile(  # noqa: SIM115
                max_size=self.limits.spill, dir=self.limits.tmp_dir, prefix="lmsav-milter-")
        return self._message

    # -- commands --

    def handle(self, packet: protocol.Packet) -> list[bytes]:
        handler = self._HANDLERS.get(packet.command)
        if handler is None:
            raise ProtocolError(f"unknown command {packet.command!r}")
        return handler(self, packet.data)

    def _optneg(self, data: bytes) -> list[bytes]:
        version, actions, steps = protocol.parse_optneg(data)
        if version < 2:
            raise ProtocolError(f"milter protocol version {version} is too old")
        self.actions = protocol.WANTED_ACTIONS & actions  # what we may do to a message
        return [protocol.optneg_reply(actions, steps)]

    def _macro(self, data: bytes) -> list[bytes]:
        _command, pairs = protocol.parse_macros(data)
        self.macros.update(pairs)
        return []

    def _connect(self, data: bytes) -> list[bytes]:
        host, address = protocol.parse_connect(data)
        self.client = f"{address} {host}".strip()
        return [_continue()]

    def _mail(self, data: bytes) -> list[bytes]:
        self._reset_message()
        self.sender = protocol.address_of(protocol.strings(data, 1)[0])
        return [_continue()]

    def _rcpt(self, data: bytes) -> list[bytes]:
        if self.sender is None:
            raise ProtocolError("RCPT before MAIL")
        recipient = protocol.address_of(protocol.strings(data, 1)[0])
        try:
            group = self.backend.group_of(self.sender, recipient)
        except Exception:  # fail closed, whatever it is
            log.exception("cannot resolve the group of <%s>", recipient)
            return [protocol.reply_code(TEMPFAIL_REPLY)]
        if self.group is not None and group != self.group:
            # One transaction, one answer: this recipient's group may decide otherwise, so it
            # comes back in a transaction of its own.
            log.info("client=%s from=<%s> to=<%s> group=%s deferred: the transaction is for "
                     "group %s", self.client, self.sender, recipient, group, self.group)
            return [protocol.reply_code(policy.MIXED_GROUPS_REPLY)]
        self.group = group
        self.recipients.append(recipient)
        return [_continue()]

    def _header(self, data: bytes) -> list[bytes]:
        name, value = protocol.parse_header(data)
        self.headers.append((name, value))
        self._add(f"{name}: {value}\r\n".replace("\r\n", "\n").replace("\n", "\r\n")
                  .encode("utf-8", "surrogateescape"))
        return [_continue()]

    def _eoh(self, _data: bytes) -> list[bytes]:
        self._add(b"\r\n")
        self.body_offset = self.size
        return [_continue()]

    def _body(self, data: bytes) -> list[bytes]:
        if self.body_offset is None:
            self._eoh(b"")  # no EOH step: the header block ends before the first body chunk
        self._add(data)
        return [_continue()]

    def _add(self, data: bytes) -> None:
        self.size += len(data)
        if self.size <= self.limits.max_message:
            self._spool().write(data)

    def _end_of_body(self, data: bytes) -> list[bytes]:
        if data:
            self._body(data)
        try:
            return self._decide()
        finally:
            self._reset_message()

    def _decide(self) -> list[bytes]:
        queue_id = self.macros.get("i", "")
        if self.sender is None or not self.recipients:
            raise ProtocolError("end of message without MAIL and RCPT")
        if self.size > self.limits.max_message:
            log.warning("queue=%s size=%d over the limit of %d: deferred", queue_id or "-",
                        self.size, self.limits.max_message)
            return [protocol.reply_code(TOO_LARGE_REPLY)]
        spool = self._spool()
        spool.seek(0)
        raw = spool.read()
        start = time.monotonic()
        try:
            plan = self.backend.decide(raw, Envelope(self.sender, tuple(self.recipients),
                                                     client=self.client), queue_id)
            body = raw[self.body_offset:] if self.body_offset is not None else b""
            answer = policy.answer(plan, self.headers, body, self.recipients)
            if answer.notices:
                self.backend.send(answer.notices)
        except Exception as err:  # fail closed, whatever it is
            log.error("queue=%s from=<%s> cannot decide, deferred: %s: %s", queue_id or "-",
                      self.sender, type(err).__name__, err, exc_info=log.isEnabledFor(logging.DEBUG))
            return [protocol.reply_code(TEMPFAIL_REPLY)]
        log.debug("queue=%s answer=%s in %.1f ms", queue_id or "-", answer.summary,
                  (time.monotonic() - start) * 1000)
        missing = protocol.actions_needed(answer.packets) & ~self.actions
        if missing:
            # Sending a modification the MTA did not allow breaks the session (Postfix drops
            # it); the policy cannot be applied here, so the message waits rather than pass.
            log.error("queue=%s from=<%s> deferred: the policy needs milter actions 0x%02x "
                      "the MTA did not allow (%s)", queue_id or "-", self.sender, missing,
                      answer.summary)
            return [protocol.reply_code(TEMPFAIL_REPLY)]
        return answer.packets

    def _abort(self, _data: bytes) -> list[bytes]:
        self._reset_message()
        return []

    def _quit(self, _data: bytes) -> list[bytes]:
        raise Quit

    def _quit_new_connection(self, _data: bytes) -> list[bytes]:
        self._reset_message()
        self.macros.clear()
        self.client = ""
        return []

    def _continue_only(self, _data: bytes) -> list[bytes]:
        return [_continue()]

    _HANDLERS: ClassVar[dict] = {
        protocol.OPTNEG: _optneg,
        protocol.MACRO: _macro,
        protocol.CONNECT: _connect,
        protocol.HELO: _continue_only,
        protocol.MAIL: _mail,
        protocol.RCPT: _rcpt,
        protocol.DATA: _continue_only,
        protocol.HEADER: _header,
        protocol.EOH: _eoh,
        protocol.BODY: _body,
        protocol.BODYEOB: _end_of_body,
        protocol.ABORT: _abort,
        protocol.QUIT: _quit,
        protocol.QUIT_NC: _quit_new_connection,
        protocol.UNKNOWN: _continue_only,
    }


def _continue() -> bytes:
    return protocol.encode(protocol.CONTINUE)
