"""Finds and decodes uuencoded files: "begin <mode> <name>" … "end" blocks, and the base64 form
"begin-base64 <mode> <name>" … "====" that ``uuencode -m`` writes.

Decoding is byte-exact: whole-file hash signatures match the decoded file only if not one byte
is added or lost. Each line says how many bytes it carries (its first character); trailing
spaces an encoder or a mail transport dropped are read as the zeros they stood for.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass

# The begin line. ClamAV reads "b" then "egin" in any case, and any three-digit mode.
BEGIN = re.compile(rb"^b(?i:egin)(-base64)?[ \t]+[0-9]{3,4}[ \t]+([^\r\n]*)", re.MULTILINE)
_END_LINE = frozenset({b"end", b"END", b"End"})
_BASE64_END = b"===="
_BASE64_LINE = re.compile(rb"[A-Za-z0-9+/= \t]*")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
# A uuencoded line holds only the characters 0x20-0x60 (space to backquote).
_UU_LINE = re.compile(rb"[ -`]+")
# Where the data of a line is taken from: each character's value is its code minus 32, six
# bits; characters outside the alphabet are read as GNU uudecode reads them (modulo 64).
_SIX_BITS = bytes(((c - 32) & 0x3F) + 32 for c in range(256))


@dataclass(frozen=True, slots=True)
class UuBlock:
    """One encoded file: its name as written, its decoded bytes, and where its text lies
    (``start`` is the begin line, ``end`` is after its last line)."""

    name: bytes
    data: bytes
    start: int
    end: int


def blocks(text: bytes, pos: int = 0) -> Iterator[UuBlock]:
    """Every uuencoded (or ``uuencode -m``) block in ``text``, in order, from ``pos``."""
    while True:
        begin = BEGIN.search(text, pos)
        if begin is None:
            return
        block = block_at(text, begin.start())
        if block is None:
            pos = begin.end()
            continue
        yield block
        pos = max(block.end, begin.end())


def block_at(text: bytes, start: int) -> UuBlock | None:
    """The block whose begin line starts at ``start``, or None when there is none."""
    begin = BEGIN.match(text, start)
    if begin is None:
        return None
    name = begin.group(2).strip()
    body = _next_line(text, begin.end())
    if begin.group(1):
        data, end = _base64_body(text, body)
    else:
        data, end = _uu_body(text, body)
    return UuBlock(name, data, start, end)


def uudecode(body: bytes) -> bytes:
    """The bytes the uuencoded lines of ``body`` carry (the lines between begin and end)."""
    return _uu_body(body + b"\nend\n", 0)[0]


def _next_line(text: bytes, pos: int) -> int:
    nl = text.find(b"\n", pos)
    return len(text) if nl < 0 else nl + 1


def _lines(text: bytes, pos: int) -> Iterator[tuple[bytes, int]]:
    """(line without its line break, where the next line starts) from ``pos`` on."""
    size = len(text)
    while pos < size:
        nxt = _next_line(text, pos)
        yield text[pos:nxt].rstrip(b"\r\n"), nxt
        pos = nxt


def _uu_body(text: bytes, pos: int) -> tuple[bytes, int]:
    """The data from ``pos`` up to the "end" line, and where the block ends. Blank lines are
    passed over; a line of length zero ends the data; a line that is not uuencoded text ends
    the block (the file was cut, or "end" is missing)."""
    out = []
    done = False
    end = pos
    for line, nxt in _lines(text, pos):
        stripped = line.rstrip(b" \t")
        if stripped in _END_LINE:
            return b"".join(out), nxt
        if not stripped:
            done = done or line.startswith(b" ")  # " ": length zero, as old encoders wrote it
            end = nxt
            continue
        if done or line[0] == 0x60:  # "`": length zero; after it only "end" is expected
            if _UU_LINE.fullmatch(line) is None:
                break
            done = True
            end = nxt
            continue
        try:
            decoded = binascii.a2b_uu(line)  # the usual line, decoded in one call
        except binascii.Error:
            if _UU_LINE.fullmatch(line) is None:
                break  # not uuencoded text: the file was cut, or "end" is missing
            decoded = _uu_line(line, (line[0] - 32) & 0x3F)
        out.append(decoded)
        end = nxt
    return b"".join(out), end


def _uu_line(line: bytes, length: int) -> bytes:
    """Exactly ``length`` bytes from one line: missing characters (spaces stripped in
    transit) are zeros, characters past the data (a checksum) are ignored."""
    chars = (length * 4 + 2) // 3
    data = line[1:1 + chars].ljust(chars, b" ")
    try:
        return binascii.a2b_uu(bytes([32 + length]) + data)
    except binascii.Error:  # characters outside the alphabet: their low six bits
        return binascii.a2b_uu(bytes([32 + length]) + data.translate(_SIX_BITS))


def _base64_body(text: bytes, pos: int) -> tuple[bytes, int]:
    """The data of a "begin-base64" block up to its "====" line, and where the block ends."""
    start = end = pos
    for line, nxt in _lines(text, pos):
        if line.rstrip(b" \t") == _BASE64_END:
            return _a2b_base64(text[start:end]), nxt
        if _BASE64_LINE.fullmatch(line) is None:
            break
        end = nxt
    return _a2b_base64(text[start:end]), end


def _a2b_base64(text: bytes) -> bytes:
    """Base64 digits decoded, up to the first padding; a short last group as far as it goes."""
    text = text.split(b"=", 1)[0]
    digits = _NOT_BASE64.sub(b"", text)
    if len(digits) % 4 == 1:
        digits = digits[:-1]
    return binascii.a2b_base64(digits + b"=" * (-len(digits) % 4))
