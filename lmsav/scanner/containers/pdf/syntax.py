"""PDF object syntax: a small parser for dictionaries, arrays, strings, names, numbers and
references, tolerant of the junk damaged files carry."""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

WHITESPACE = b" \t\r\n\f\x00"
_DELIMITERS = b"()<>[]{}/%"
NOT_REGULAR = frozenset(WHITESPACE + _DELIMITERS)
MAX_NESTING = 32


class Name(str):
    """A PDF name object (``/Type``), without the slash."""


@dataclass(frozen=True)
class Ref:
    num: int
    gen: int


class ParseError(Exception):
    pass


END = object()  # a closing delimiter where a value was expected
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("f"): 12}


class Parser:
    def __init__(self, data: bytes, end: int):
        self.data = data
        self.end = end
        self.depth = 0

    def skip(self, pos: int) -> int:
        data, end = self.data, self.end
        while pos < end:
            c = data[pos]
            if c in WHITESPACE:
                pos += 1
            elif c == 0x25:  # % comment to end of line
                while pos < end and data[pos] not in (10, 13):
                    pos += 1
            else:
                break
        return pos

    def value(self, pos: int):
        data, end = self.data, self.end
        pos = self.skip(pos)
        if pos >= end:
            raise ParseError("end of data")
        c = data[pos]
        if c == 0x2F:  # /
            return self.name(pos + 1)
        if c == 0x3C:  # <
            if data[pos + 1:pos + 2] == b"<":
                return self.dictionary(pos + 2)
            close = data.find(b">", pos, end)
            if close < 0:
                raise ParseError("unterminated hex string")
            digits = bytes(b for b in data[pos + 1:close] if b not in WHITESPACE)
            return unhex(digits)[0], close + 1
        if c == 0x5B:  # [
            return self.array(pos + 1)
        if c == 0x28:  # (
            return self.literal(pos + 1)
        if c in (0x5D, 0x3E, 0x29, 0x7B, 0x7D):  # ] > ) { }
            return END, pos + (2 if data[pos:pos + 2] == b">>" else 1)
        token_end = pos
        while token_end < end and data[token_end] not in NOT_REGULAR:
            token_end += 1
        token = data[pos:token_end]
        if not token:
            raise ParseError("unexpected byte")
        number = _number(token)
        if isinstance(number, int) and number >= 0:
            ref = self.reference(number, token_end)
            if ref is not None:
                return ref
        if number is not None:
            return number, token_end
        keywords = {b"true": True, b"false": False, b"null": None}
        return keywords.get(token, Name(token.decode("latin-1"))), token_end

    def reference(self, num: int, pos: int):
        """``N G R`` after an integer N, else None."""
        data = self.data
        p = self.skip(pos)
        q = p
        while q < self.end and 0x30 <= data[q] <= 0x39:
            q += 1
        if q == p or q - p > 5:
            return None
        r = self.skip(q)
        if data[r:r + 1] == b"R" and (r + 1 >= self.end or data[r + 1] in NOT_REGULAR):
            return Ref(num, int(data[p:q])), r + 1
        return None

    def name(self, pos: int):
        data, end = self.data, self.end
        stop = pos
        while stop < end and data[stop] not in NOT_REGULAR:
            stop += 1
        raw = data[pos:stop]
        if b"#" in raw:
            raw = re.sub(rb"#([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), raw)
        return Name(raw.decode("latin-1")), stop

    def nested(self):
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ParseError("nesting too deep")

    def dictionary(self, pos: int):
        self.nested()
        out: dict = {}
        while True:
            key, pos = self.value(pos)
            if key is END:
                break
            if not isinstance(key, Name):
                continue  # junk where a key belongs: skip it, keep reading
            value, pos = self.value(pos)
            if value is END:
                break
            out[str(key)] = value
        self.depth -= 1
        return out, pos

    def array(self, pos: int):
        self.nested()
        out: list = []
        while True:
            value, pos = self.value(pos)
            if value is END:
                break
            out.append(value)
        self.depth -= 1
        return out, pos

    def literal(self, pos: int):
        data, end = self.data, self.end
        out = bytearray()
        level = 1
        while pos < end:
            c = data[pos]
            pos += 1
            if c == 0x5C:  # backslash
                if pos >= end:
                    break
                e = data[pos]
                pos += 1
                if e in _ESCAPES:
                    out.append(_ESCAPES[e])
                elif 0x30 <= e <= 0x37:
                    octal = bytes([e])
                    while len(octal) < 3 and pos < end and 0x30 <= data[pos] <= 0x37:
                        octal += data[pos:pos + 1]
                        pos += 1
                    out.append(int(octal, 8) & 0xFF)
                elif e == 13:
                    if data[pos:pos + 1] == b"\n":
                        pos += 1
                elif e != 10:
                    out.append(e)
                continue
            if c == 0x28:
                level += 1
            elif c == 0x29:
                level -= 1
                if level == 0:
                    return bytes(out), pos
            out.append(c)
        raise ParseError("unterminated string")


def _number(token: bytes):
    try:
        return int(token)
    except ValueError:
        pass
    if re.fullmatch(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)", token):
        return float(token)
    return None


def unhex(digits: bytes) -> tuple[bytes, bool]:
    """Hex digits to bytes; non-hex bytes are dropped (and reported)."""
    if len(digits) & 1:
        digits += b"0"
    try:
        return binascii.unhexlify(digits), False
    except (binascii.Error, ValueError):
        clean = re.sub(rb"[^0-9A-Fa-f]", b"", digits)
        if len(clean) & 1:
            clean += b"0"
        return binascii.unhexlify(clean), True


def parse_at(data: bytes, pos: int, end: int):
    try:
        return Parser(data, end).value(pos)[0]
    except (ParseError, IndexError, ValueError, RecursionError):
        return None
