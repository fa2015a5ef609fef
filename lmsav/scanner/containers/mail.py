"""Explodes a MIME message into its decoded parts, attached messages and uuencoded files."""

from __future__ import annotations

import binascii
import email
import email.policy
import re
from email.generator import BytesGenerator
from email.header import decode_header, make_header
from email.message import Message
from io import BytesIO
from typing import Iterator

from ..limits import Context
from ..objects import Child, ScanObject
from .base import Corrupted

# "begin 644 name" … "end": a uuencoded file inside a text body (RFC-less but still common).
_UU_BEGIN = re.compile(rb"^begin(?:-base64)? +([0-7]{3,4}) +([^\r\n]+?)\r?$", re.M)
_UU_END = re.compile(rb"^end\r?$", re.M)


class MailHandler:
    """Yields every leaf part decoded, attached messages whole, and uuencoded blocks in text."""

    types = frozenset({"mail"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        raw = bytes(obj.data)
        try:
            message = email.message_from_bytes(raw, policy=email.policy.compat32)
            leaves = list(_leaves(message))
        except Exception as err:  # the stdlib parser is lenient; this is a last resort
            for index, (uu_name, data) in enumerate(_uudecode_blocks(raw), 1):
                yield ctx.member(f"0.{index}:{uu_name}", [data])
            raise Corrupted(f"unparsable MIME: {type(err).__name__}") from None
        for n, part in enumerate(leaves, 1):
            name = f"{n}:{_filename(part) or _generated_name(part, n)}"
            data = _content(part)
            yield ctx.member(name, [data], declared_size=len(data))
            if part.get_content_maintype() == "text":
                for index, (uu_name, uu_data) in enumerate(_uudecode_blocks(data), 1):
                    yield ctx.member(f"{n}.{index}:{uu_name}", [uu_data])


def _leaves(part: Message) -> Iterator[Message]:
    """Leaf parts in order; an attached message is a leaf (scanned whole, then recursed into)."""
    if part.get_content_type() == "message/rfc822" and _is_nested(part):
        yield part
        return
    if part.is_multipart():
        payload = part.get_payload()
        for sub in payload if isinstance(payload, list) else [payload]:
            if isinstance(sub, Message):
                yield from _leaves(sub)
        return
    yield part


def _is_nested(part: Message) -> bool:
    """A message/rfc822 part the parser turned into a nested message (not the top message)."""
    payload = part.get_payload()
    return isinstance(payload, list) and payload and isinstance(payload[0], Message)


def _content(part: Message) -> bytes:
    """The part's body decoded; bad encodings decode as far as possible, else stay raw."""
    if part.get_content_type() == "message/rfc822" and part.is_multipart():
        return _attached_message(part)
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if data is None:
        data = _raw_body(part)
    return data


def _attached_message(part: Message) -> bytes:
    inner = part.get_payload()[0]
    try:
        buf = BytesIO()
        BytesGenerator(buf, mangle_from_=False, policy=email.policy.compat32).flatten(inner)
        data = buf.getvalue()
    except Exception:
        data = str(inner).encode("utf-8", "surrogateescape")
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if cte in ("base64", "quoted-printable"):
        # Not allowed by RFC 2046, but sent anyway: the parser read the encoded text as a
        # header-less message, so decode its body here.
        body = data.split(b"\n\n", 1)[-1] if not data.startswith(b"\n") else data[1:]
        try:
            if cte == "base64":
                return binascii.a2b_base64(body)
            return binascii.a2b_qp(body)
        except (binascii.Error, ValueError):
            return data
    return data


def _raw_body(part: Message) -> bytes:
    payload = part.get_payload()
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogateescape")
    return b""


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
