"""MIME structure by byte offsets: entities, multipart splitting, transfer decoding, uuencode.

Headers are parsed by the stdlib ``email`` package; bodies are located with ``bytes.find`` and
decoded with ``binascii``, so the mail handler, the cure code (rebuild.py) and the ClamAV reading
(mail_clamav.py) share one view of where each part lies in the raw message.
"""

from __future__ import annotations

import binascii
import email
import email.parser
import email.policy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message

from .uu import uudecode

# "begin 644 name" … "end": a uuencoded file inside a text body (RFC-less but still common).
_UU_BEGIN = re.compile(rb"^begin(?:-base64)? +([0-7]{3,4}) +([^\r\n]+?)\r?$", re.MULTILINE)
_UU_END = re.compile(rb"^end\r?$", re.MULTILINE)



@dataclass(slots=True)
class Entity:
    """One MIME entity located in the message by byte offsets (``raw[start:end]`` is all of it).

    ``raw[start:header_end]`` are its header lines, ``raw[body_start:end]`` its body. Inside a
    multipart, ``delimiter`` is where its ``--boundary`` line starts and ``line_break`` where the
    line break before that line starts (the break belongs to the delimiter, RFC 2046 5.1.1).
    ``children`` is None for a leaf, the parts in order for a multipart that was split.
    """

    part: Message
    start: int
    header_end: int
    body_start: int
    end: int
    delimiter: int = -1
    line_break: int = -1
    children: list[Entity] | None = None


def leaf_name(part: Message, n: int) -> str:
    """The child name of leaf ``n``: "2:invoice.zip", or "1:part1.plain" when it has no name."""
    return f"{n}:{_filename(part) or _generated_name(part, n)}"


def leaf_entities(root: Entity) -> list[Entity]:
    """The leaves in message order; an attached message is one leaf. Leaf n is ``[n - 1]``."""
    out: list[Entity] = []
    stack = [root]
    while stack:
        entity = stack.pop()
        if entity.children is None:
            out.append(entity)
        else:
            stack.extend(reversed(entity.children))
    return out


_HEADER_END = re.compile(rb"\r?\n\r?\n")
MAX_NESTING = 64
_HEADER_PARSER = email.parser.BytesParser(policy=email.policy.compat32)


def _split_headers(raw: bytes) -> tuple[Message, int, int]:
    """The entity's headers parsed by ``email``, where they end, and where its body starts."""
    if raw[:1] in (b"\n", b"\r"):  # no headers at all: the whole entity is body
        return Message(), 0, min(len(raw), len(raw) - len(raw.lstrip(b"\r")) + 1)
    m = _HEADER_END.search(raw)
    header_end, body_start = (m.start(), m.end()) if m else (len(raw), len(raw))
    return _HEADER_PARSER.parsebytes(raw[:header_end] + b"\n\n", headersonly=True), \
        header_end, body_start


def parse_entity(raw: bytes, base: int = 0, depth: int = 0) -> Entity:
    """The entity ``raw`` (found at ``base`` in the message) with its multipart tree split."""
    part, header_end, body_start = _split_headers(raw)
    entity = Entity(part, base, base + header_end, base + body_start, base + len(raw))
    if _maintype(part) == "multipart" and depth < MAX_NESTING:
        boundary = _boundary(part)
        if boundary:
            body = raw[body_start:]
            at = base + body_start
            entity.children = []
            for delimiter, line_break, start, end in _split_multipart(body, boundary):
                child = parse_entity(body[start:end], at + start, depth + 1)
                child.delimiter, child.line_break = at + delimiter, at + line_break
                entity.children.append(child)
    return entity


def _boundary(part: Message) -> bytes:
    try:
        b = part.get_boundary()
    except Exception:
        return b""
    return str(b).encode("utf-8", "surrogateescape") if b else b""


def _split_multipart(body: bytes, boundary: bytes) -> Iterator[tuple[int, int, int, int]]:
    """Each part between ``--boundary`` delimiter lines as offsets into ``body``: (delimiter
    line start, start of the line break before it, part start, part end). A missing close ends
    the last part at the data's end."""
    delim = b"--" + boundary
    pos = 0
    start = None
    opened = opened_break = 0
    while True:
        i = body.find(delim, pos)
        if i < 0:
            break
        line_start = i == 0 or body[i - 1:i] == b"\n"
        if not line_start:
            pos = i + len(delim)
            continue
        line_break = i - 1 if i > 0 else 0
        if line_break > 0 and body[line_break - 1:line_break] == b"\r":
            line_break -= 1
        if start is not None:
            yield opened, opened_break, start, max(line_break, start)
        after = i + len(delim)
        if body[after:after + 2] == b"--":
            return  # the closing delimiter
        nl = body.find(b"\n", after)
        if nl < 0:
            return
        opened, opened_break = i, line_break
        start = pos = nl + 1
    if start is not None and start < len(body):
        yield opened, opened_break, start, len(body)


def _maintype(part: Message) -> str:
    try:
        return part.get_content_maintype()
    except Exception:
        return "text"


def _transfer_encoding(part: Message) -> str:
    return str(part.get("content-transfer-encoding", "")).strip().lower()


def _decode(part: Message, body: bytes) -> bytes:
    """The body decoded by its transfer encoding; bad encodings decode as far as possible."""
    cte = _transfer_encoding(part)
    try:
        if cte == "base64":
            return _a2b_base64_lenient(body)
        if cte == "quoted-printable":
            return binascii.a2b_qp(body)
        if cte in ("x-uuencode", "uuencode", "x-uue", "uue"):
            # Without a "begin" line there is no file: the body is text, as ClamAV reads it.
            blocks = list(_uudecode_blocks(body))
            return blocks[0][1] if blocks else body
    except (binascii.Error, ValueError):
        pass
    return body


def _a2b_base64_lenient(body: bytes) -> bytes:
    try:
        return binascii.a2b_base64(body)
    except binascii.Error:
        # Bad padding or a truncated quantum: decode the whole quanta that are there.
        clean = re.sub(rb"[^A-Za-z0-9+/]", b"", body)
        return binascii.a2b_base64(clean[: len(clean) // 4 * 4] or b"")


def _filename(part: Message) -> str:
    try:
        name = part.get_filename()
    except Exception:
        return ""
    if not name:
        return ""
    name = str(name)
    if "=?" in name:
        try:
            name = str(make_header(decode_header(name)))
        except Exception:
            pass
    return name.replace("\r", "").replace("\n", "").strip()


def _generated_name(part: Message, n: int) -> str:
    try:
        subtype = part.get_content_subtype()
    except Exception:
        subtype = "bin"
    return f"part{n}.{re.sub(r'[^A-Za-z0-9.+-]', '_', subtype) or 'bin'}"


def _uudecode_blocks(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Every ``begin <mode> <name>`` … ``end`` block in ``data``, decoded line by line."""
    pos = 0
    while True:
        begin = _UU_BEGIN.search(data, pos)
        if begin is None:
            return
        start = begin.end()
        end = _UU_END.search(data, start)
        stop = end.start() if end else len(data)
        name = begin.group(2).decode("latin-1").strip()
        yield name, uudecode(data[start:stop])
        pos = end.end() if end else len(data)


# -- how ClamAV reads a message ---------------------------------------------------------------
