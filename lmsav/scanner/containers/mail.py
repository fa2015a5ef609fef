"""Explodes a MIME message into its decoded parts, attached messages and uuencoded files."""

from __future__ import annotations

import binascii
import email
import email.parser
import email.policy
import re
from email.header import decode_header, make_header
from email.message import Message
from typing import Iterator

from ..limits import Context
from ..objects import Child, ScanObject
from .base import Corrupted

# "begin 644 name" … "end": a uuencoded file inside a text body (RFC-less but still common).
_UU_BEGIN = re.compile(rb"^begin(?:-base64)? +([0-7]{3,4}) +([^\r\n]+?)\r?$", re.M)
_UU_END = re.compile(rb"^end\r?$", re.M)


class MailHandler:
    """Yields every leaf part decoded, attached messages whole, and uuencoded blocks in text.

    Headers are parsed by the stdlib ``email`` package; bodies are split at MIME boundaries with
    ``bytes.find`` and decoded with ``binascii``. Feeding whole messages through the stdlib's
    line-by-line feed parser cost most of a mail scan's time on large attachments.
    """

    types = frozenset({"mail"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        raw = bytes(obj.data)
        try:
            leaves = list(_leaves(raw, 0))
        except RecursionError:
            raise Corrupted("multipart nesting too deep") from None
        for n, (part, body) in enumerate(leaves, 1):
            name = f"{n}:{_filename(part) or _generated_name(part, n)}"
            data = _decode(part, body)
            yield ctx.member(name, [data], declared_size=len(data))
            if _maintype(part) == "text":
                for index, (uu_name, uu_data) in enumerate(_uudecode_blocks(data), 1):
                    yield ctx.member(f"{n}.{index}:{uu_name}", [uu_data])


_HEADER_END = re.compile(rb"\r?\n\r?\n")
MAX_NESTING = 64
_HEADER_PARSER = email.parser.BytesParser(policy=email.policy.compat32)


def _split_headers(raw: bytes) -> tuple[Message, bytes]:
    """The entity's headers parsed by ``email``, and its raw body."""
    if raw[:1] in (b"\n", b"\r"):  # no headers at all: the whole entity is body
        return Message(), raw.lstrip(b"\r")[1:]
    m = _HEADER_END.search(raw)
    head, body = (raw[:m.start()], raw[m.end():]) if m else (raw, b"")
    return _HEADER_PARSER.parsebytes(head + b"\n\n", headersonly=True), body


def _leaves(raw: bytes, depth: int) -> Iterator[tuple[Message, bytes]]:
    """(headers, raw body) of each leaf in order; an attached message is one leaf."""
    part, body = _split_headers(raw)
    if _maintype(part) == "multipart" and depth < MAX_NESTING:
        boundary = _boundary(part)
        if boundary:
            for sub in _split_multipart(body, boundary):
                yield from _leaves(sub, depth + 1)
            return
    yield part, body


def _boundary(part: Message) -> bytes:
    try:
        b = part.get_boundary()
    except Exception:
        return b""
    return str(b).encode("utf-8", "surrogateescape") if b else b""


def _split_multipart(body: bytes, boundary: bytes) -> Iterator[bytes]:
    """Bodies between ``--boundary`` delimiter lines; a missing close ends at the data's end."""
    delim = b"--" + boundary
    pos = 0
    start = None
    while True:
        i = body.find(delim, pos)
        if i < 0:
            break
        line_start = i == 0 or body[i - 1:i] == b"\n"
        if not line_start:
            pos = i + len(delim)
            continue
        if start is not None:
            end = i - 1
            if end > start and body[end - 1:end] == b"\r":
                end -= 1
            yield body[start:max(end, start)]
        after = i + len(delim)
        if body[after:after + 2] == b"--":
            return  # the closing delimiter
        nl = body.find(b"\n", after)
        if nl < 0:
            return
        start = pos = nl + 1
    if start is not None and start < len(body):
        yield body[start:]


def _maintype(part: Message) -> str:
    try:
        return part.get_content_maintype()
    except Exception:
        return "text"


def _decode(part: Message, body: bytes) -> bytes:
    """The body decoded by its transfer encoding; bad encodings decode as far as possible."""
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    try:
        if cte == "base64":
            return _a2b_base64_lenient(body)
        if cte == "quoted-printable":
            return binascii.a2b_qp(body)
        if cte in ("x-uuencode", "uuencode", "x-uue", "uue"):
            blocks = list(_uudecode_blocks(body))
            return blocks[0][1] if blocks else _uudecode(body)
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
        yield name, _uudecode(data[start:stop])
        pos = end.end() if end else len(data)


def _uudecode(body: bytes) -> bytes:
    out = []
    for line in body.splitlines():
        if not line.strip() or line.strip() == b"`":
            continue
        try:
            out.append(binascii.a2b_uu(line))
        except binascii.Error:
            # Broken encoders pad lines oddly: trust the length character instead.
            nbytes = (((line[0] - 32) & 63) * 4 + 5) // 3
            try:
                out.append(binascii.a2b_uu(line[:nbytes]))
            except binascii.Error:
                continue
    return b"".join(out)
