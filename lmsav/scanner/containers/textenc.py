"""Decodes files carried as text inside plain text: uuencode, yEnc and base64 blocks, and
what HTML written into the text carries (``data:`` URIs, script blobs).

Every plain-text file of a filesystem sweep has the type "text", so the cost on a text file
without a payload is one Hyperscan pass of a few necessary conditions (a "begin NNN" or
"ybegin" literal, a run of 60 base64 characters, a ";base64," or "<script"), about three times
faster than Python's ``re`` on the same text; only a file passing it is searched with the
precise pattern.

HTML that starts after the first kilobyte of a text file is still HTML to ClamAV, which then
decodes its ``data:`` URIs; the text handler does the same (html_encoded.py; the HTML handler,
in turn, decodes the blocks this module finds in a page).

uuencoded blocks in a text part of a mail are already decoded by the mail handler (its members
sit next to the part, ``mail.eml//1.1:name``); a text member that is a mail part (named
``<n>:…`` by the mail handler) is therefore not searched for uuencode again, only for yEnc and
base64 blocks, so one payload is reported once.
"""

from __future__ import annotations

import binascii
import os
import re
from collections.abc import Iterator

import hyperscan

from ..limits import Context
from ..objects import PATH_SEP, Child, ScanObject
from . import uu
from .html_encoded import html_files

# The first line of a payload: after a newline, or at offset 0 (the second pattern).
_START = (
    rb"(?:(b(?i:egin)(?:-base64)?[ \t]+[0-9]{3,4}[ \t]+)"
    rb"|(=ybegin )"
    rb"|((?:[A-Za-z0-9+/]{60,76}+\r?\n){4}))"
)
_PAYLOAD = re.compile(rb"\n" + _START)
_PAYLOAD_AT_START = re.compile(_START)

_YENC_NAME = re.compile(rb"name=([^\r\n]*)")
_YENC_END = re.compile(rb"^=yend", re.MULTILINE)
_BASE64_LINE = re.compile(rb"[A-Za-z0-9+/]+={0,2}\r?\n?")
_MAIL_PART = re.compile(r"[0-9]+(?:\.[0-9]+)*:")

# Necessary for any payload above (the first three) or for HTML's encoded files (the last
# two). Chosen by measurement: these scan the stdlib's .py files about twice as fast as the
# exact literals ("=ybegin ", "begin(-base64)? [0-7]{3}").
_PREFILTER = (rb"ybegin", rb"b(?i)egin[ \t-][0-9 \tb]", rb"[A-Za-z0-9+/]{60}",
              rb"(?i);base64,", rb"(?i)<script")
_ENCODED_IDS = frozenset({0, 1, 2})
_HTML_IDS = frozenset({3, 4})

# yEnc: every byte is stored as (byte + 42) mod 256; "=" escapes a byte stored as (+ 64).
_YENC_TABLE = bytes((i - 42) & 0xFF for i in range(256))


class TextEncodedHandler:
    """Yields uuencoded, yEnc and base64-encoded files found inside a text file."""

    types = frozenset({"text"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        data = obj.data
        found = _PREFILTER_SCAN.conditions(data)
        if not found:
            return  # the hot path: almost every text file ends here
        if found & _ENCODED_IDS:
            yield from _encoded_files(obj, ctx)
        if found & _HTML_IDS:
            yield from html_files(bytes(data), ctx)


def encoded_files(obj: ScanObject, ctx: Context) -> Iterator[Child]:
    """The uuencoded, yEnc and base64-encoded files in the text of ``obj``."""
    if _PREFILTER_SCAN.conditions(obj.data) & _ENCODED_IDS:
        yield from _encoded_files(obj, ctx)


def _encoded_files(obj: ScanObject, ctx: Context) -> Iterator[Child]:
    data = obj.data
    first = _PAYLOAD_AT_START.match(data)
    found = first or _PAYLOAD.search(data)
    if found is None:
        return
    data = bytes(data)
    skip_uu = _MAIL_PART.match(obj.name.rsplit(PATH_SEP, 1)[-1]) is not None
    base64_seq = 0
    m = found
    while m is not None:
        line = m.start() if m.re is _PAYLOAD_AT_START else m.start() + 1
        if m.group(1):
            block = uu.block_at(data, line)
            end = block.end if block is not None else line + 1
            if block is not None and block.data and not skip_uu:
                yield ctx.member(f"uu:{_label(block.name)}", [block.data],
                                 packed_size=end - line)
        elif m.group(2):
            name, payload, end = _yenc_block(data, line)
            if payload:
                yield ctx.member(f"yenc:{name}", [payload], packed_size=end - line)
        else:
            payload, end = _base64_block(data, line)
            if payload:
                base64_seq += 1
                yield ctx.member(f"base64.{base64_seq}", [payload], packed_size=end - line)
        ctx.check_time()
        # The next payload starts on a later line: search from the newline ending this one.
        m = _PAYLOAD.search(data, max(end, line + 1) - 1)


class _Prefilter:
    """One Hyperscan database of the necessary conditions, compiled on first use."""

    def __init__(self):
        self._db = None
        self._scratch = None
        self._pid = 0

    def conditions(self, data) -> frozenset[int]:
        """The ids of the necessary conditions ``data`` meets (each reported once)."""
        if self._db is None:
            db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            db.compile(expressions=list(_PREFILTER), ids=list(range(len(_PREFILTER))),
                       flags=[hyperscan.HS_FLAG_SINGLEMATCH] * len(_PREFILTER))
            self._db = db
        if self._pid != os.getpid():
            # Scratch space is per process: a forked worker must not share its parent's.
            self._scratch = hyperscan.Scratch(self._db)
            self._pid = os.getpid()
        hit: set[int] = set()
        try:
            self._db.scan(data, match_event_handler=_note, context=hit, scratch=self._scratch)
        except hyperscan.ScanTerminated:
            pass
        return frozenset(hit)


def _note(sig_id, _start, _end, _flags, hit) -> bool:
    hit.add(sig_id)
    return len(hit) == len(_PREFILTER)  # stop once every condition is met


_PREFILTER_SCAN = _Prefilter()


def _yenc_block(data: bytes, start: int) -> tuple[str, bytes, int]:
    header_end = data.find(b"\n", start)
    header_end = len(data) if header_end < 0 else header_end + 1
    name_match = _YENC_NAME.search(data, start, header_end)
    name = _label(name_match.group(1)) if name_match else "data"
    body = header_end
    if data.startswith(b"=ypart", body):
        part_end = data.find(b"\n", body)
        body = len(data) if part_end < 0 else part_end + 1
    end = _YENC_END.search(data, body)
    stop = end.start() if end else len(data)
    after = data.find(b"\n", stop)
    after = len(data) if after < 0 or end is None else after + 1
    return name, _ydecode(data[body:stop]), after


def _ydecode(body: bytes) -> bytes:
    body = body.replace(b"\r", b"").replace(b"\n", b"")
    pieces = body.split(b"=")
    out = [pieces[0]]
    for piece in pieces[1:]:
        if piece:
            out.append(bytes([(piece[0] - 64) & 0xFF]) + piece[1:])
    return b"".join(out).translate(_YENC_TABLE)


def _base64_block(data: bytes, start: int) -> tuple[bytes, int]:
    pos = start
    size = len(data)
    while pos < size:
        m = _BASE64_LINE.match(data, pos)
        if m is None or (m.end() < size and data[m.end() - 1] != 0x0A):
            break
        pos = m.end()
        if data[m.end() - 3:m.end()].rstrip(b"\r\n").endswith(b"="):
            break  # padding: the last line of this block
    return _a2b_base64(data[start:pos]), pos


def _a2b_base64(text: bytes) -> bytes:
    clean = re.sub(rb"[^A-Za-z0-9+/]", b"", text)
    clean = clean[: len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean
    try:
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
    except binascii.Error:
        return b""


def _label(raw: bytes) -> str:
    """A member label from a name in the text: the last path component, printable only."""
    text = raw.decode("utf-8", "replace").strip().strip('"')
    text = re.split(r"[\\/]", text)[-1]
    text = "".join(ch for ch in text if ch.isprintable()).strip()
    return text[:255] or "data"
