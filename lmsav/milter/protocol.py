"""The milter protocol, version 6, as Postfix and Sendmail speak it: packet framing, the
commands the MTA sends and the replies and modifications a filter sends back.

A packet is a 32-bit length in network order, a command byte, then the command's data. This
module only frames and decodes; what to answer is the session's business (session.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VERSION = 6
MAX_PACKET = 1 << 20  # Postfix sends body chunks of at most 64 KiB; anything far larger is abuse

# Commands from the MTA.
OPTNEG, MACRO, CONNECT, HELO, MAIL, RCPT = b"O", b"D", b"C", b"H", b"M", b"R"
DATA, HEADER, EOH, BODY, BODYEOB, ABORT, QUIT = b"T", b"L", b"N", b"B", b"E", b"A", b"Q"
QUIT_NC, UNKNOWN = b"K", b"U"

# Replies and modifications to the MTA.
ACCEPT, CONTINUE, DISCARD, REJECT, TEMPFAIL = b"a", b"c", b"d", b"r", b"t"
REPLYCODE, QUARANTINE, PROGRESS = b"y", b"q", b"p"
ADDHEADER, CHGHEADER, INSHEADER, REPLBODY = b"h", b"m", b"i", b"b"
ADDRCPT, DELRCPT = b"+", b"-"

# Actions the filter asks to be allowed (SMFIF_*).
ADD_HEADERS, CHANGE_BODY, ADD_RCPT, DEL_RCPT, CHANGE_HEADERS, QUARANTINE_ACTION = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20)
WANTED_ACTIONS = (ADD_HEADERS | CHANGE_BODY | DEL_RCPT | CHANGE_HEADERS | QUARANTINE_ACTION)

# The action each modification needs the MTA to have allowed at option negotiation.
_ACTION_OF = {ADDHEADER: ADD_HEADERS, INSHEADER: ADD_HEADERS, CHGHEADER: CHANGE_HEADERS,
              REPLBODY: CHANGE_BODY, ADDRCPT: ADD_RCPT, DELRCPT: DEL_RCPT,
              QUARANTINE: QUARANTINE_ACTION}

BODY_CHUNK = 65535  # the largest REPLBODY chunk libmilter sends; Postfix takes any size


class ProtocolError(Exception):
    """The peer broke the protocol: the connection is closed, nothing is accepted."""


@dataclass(frozen=True)
class Packet:
    command: bytes
    data: bytes


def encode(command: bytes, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(data) + 1) + command + data


def read_packet(read_exactly) -> Packet | None:
    """The next packet through ``read_exactly(n)`` (returns fewer bytes only at end of
    stream); None on a clean end of stream between packets."""
    head = read_exactly(4)
    if not head:
        return None
    if len(head) < 4:
        raise ProtocolError("connection closed inside a packet header")
    (length,) = struct.unpack("!I", head)
    if length == 0 or length > MAX_PACKET:
        raise ProtocolError(f"packet length {length} out of range")
    body = read_exactly(length)
    if len(body) < length:
        raise ProtocolError("connection closed inside a packet")
    return Packet(body[:1], body[1:])


def strings(data: bytes, count: int | None = None) -> list[bytes]:
    """NUL-terminated strings; ``count`` of them at least when given."""
    if data and not data.endswith(b"\0"):
        raise ProtocolError("string not terminated by NUL")
    parts = data[:-1].split(b"\0") if data else []
    if count is not None and len(parts) < count:
        raise ProtocolError(f"expected {count} strings, got {len(parts)}")
    return parts


def parse_optneg(data: bytes) -> tuple[int, int, int]:
    """(version, actions, protocol steps) the MTA offers."""
    if len(data) < 12:
        raise ProtocolError("option negotiation shorter than 12 bytes")
    return struct.unpack("!III", data[:12])


def optneg_reply(mta_actions: int, mta_protocol: int) -> bytes:
    """Our answer: version 6, the actions we need that the MTA offers, and no steps skipped
    (every step is answered, so the protocol mask asks for nothing the MTA must support)."""
    return encode(OPTNEG, struct.pack("!III", VERSION, WANTED_ACTIONS & mta_actions, 0))


def parse_macros(data: bytes) -> tuple[bytes, dict[str, str]]:
    """The command the macros are for and the macros, names without braces."""
    if not data:
        raise ProtocolError("empty macro packet")
    parts = strings(data[1:])
    pairs = {}
    for i in range(0, len(parts) - 1, 2):
        pairs[_text(parts[i]).strip("{}")] = _text(parts[i + 1])
    return data[:1], pairs


def parse_connect(data: bytes) -> tuple[str, str]:
    """(host name, address) of the SMTP client."""
    host, _, rest = data.partition(b"\0")
    if not rest:
        raise ProtocolError("connect without address family")
    family, rest = rest[:1], rest[1:]
    if family in (b"4", b"6") and len(rest) >= 2:
        address = strings(rest[2:], 1)[0]
    elif family == b"L" and len(rest) >= 2:
        address = strings(rest[2:], 1)[0] if rest[2:] else b""
    else:
        address = b""
    return _text(host), _text(address)


def parse_header(data: bytes) -> tuple[str, str]:
    name, value = strings(data, 2)[:2]
    return _text(name), _text(value)


def address_of(argument: bytes) -> str:
    """``<a@b>`` (MAIL or RCPT's first argument) → ``a@b``; ``<>`` → ``""``."""
    text = _text(argument).strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text


def reply_code(reply: str) -> bytes:
    return encode(REPLYCODE, _bytes(" ".join(reply.split())) + b"\0")


def add_header(name: str, value: str) -> bytes:
    return encode(ADDHEADER, _bytes(name) + b"\0" + _bytes(value) + b"\0")


def change_header(name: str, index: int, value: str) -> bytes:
    """Replace the ``index``-th (from 1) header ``name``; an empty value removes it."""
    return encode(CHGHEADER, struct.pack("!I", index) + _bytes(name) + b"\0" + _bytes(value)
                  + b"\0")


def delete_recipient(address: str) -> bytes:
    return encode(DELRCPT, _bytes(f"<{address}>") + b"\0")


def actions_needed(packets: list[bytes]) -> int:
    """The SMFIF_* actions the encoded ``packets`` use."""
    needed = 0
    for packet in packets:
        needed |= _ACTION_OF.get(packet[4:5], 0)
    return needed


def quarantine(reason: str) -> bytes:
    return encode(QUARANTINE, _bytes(" ".join(reason.split())) + b"\0")


def replace_body(body: bytes) -> list[bytes]:
    return [encode(REPLBODY, body[i:i + BODY_CHUNK])
            for i in range(0, len(body), BODY_CHUNK)] or [encode(REPLBODY, b"")]


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")
