"""Byte-compare subsignatures of .ldb signatures: ``N(offset#options#comparisons)``.

A byte compare reads a number near the last match of subsignature N — raw binary, or ASCII hex
or decimal text — and compares it. Reading follows ClamAV's rules exactly, including the ones
that surprise: leading whitespace is skipped (and then the ``e`` "exact" option fails), a text
number ends at the first non-digit, ``h`` or ``i`` without ``l``/``b`` never matches, ``a``
(auto) on fewer than three bytes never matches, and the read position must be past offset 0.
"""

from __future__ import annotations

from dataclasses import dataclass

HEX, DEC, BIN, AUTO, LE, BE, EXACT = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x100
_LONG_MAX = (1 << 63) - 1
_SPACE = b" \t\n\v\f\r"
_MAX_BIN = 8
_MAX_HEX = 18


class ByteCompareError(ValueError):
    """Not a byte-compare subsignature ClamAV accepts."""


@dataclass(frozen=True, slots=True)
class ByteCompare:
    ref: int  # the subsignature whose last match the offset counts from
    offset: int  # signed distance from that match's start
    options: int
    length: int
    comparisons: tuple[tuple[str, int], ...]  # ("<" | ">" | "=", value), all must hold

    def to_row(self) -> list:
        comparisons = [list(c) for c in self.comparisons]
        return [self.ref, self.offset, self.options, self.length, comparisons]

    @classmethod
    def from_row(cls, row) -> ByteCompare:
        return cls(row[0], row[1], row[2], row[3], tuple((c[0], c[1]) for c in row[4]))


def looks_like(text: str) -> bool:
    """ClamAV's test for "this subsignature is a byte compare": a '(' and two distinct '#'."""
    return "(" in text and "#" in text and text.index("#") != text.rindex("#")


def parse(text: str) -> ByteCompare:
    ref, pos = _parse_ref(text)
    close = text.find(")", pos)
    if close < 0:
        raise ByteCompareError("closing parenthesis not found")
    fields = text[pos + 1:close].split("#")
    if len(fields) != 3:
        raise ByteCompareError(f"{len(fields)} fields between the parentheses, 3 expected")
    offset = _parse_offset(fields[0])
    options, length = _parse_options(fields[1])
    return ByteCompare(ref, offset, options, length, _parse_comparisons(fields[2]))


def _parse_ref(text: str) -> tuple[int, int]:
    value, end = strtol(text, 10)
    if end >= len(text) or text[end] != "(":
        raise ByteCompareError("the referenced subsignature must be a decimal number before '('")
    if value > 64 or value < 0:
        raise ByteCompareError(f"referenced subsignature {value} is out of range")
    return value, end


def _parse_offset(field: str) -> int:
    if field[:2] in ("<<", ">>"):
        value, end = strtol(field[2:], 0)
        if end != len(field) - 2:
            raise ByteCompareError(f"bad offset {field!r}")
        return -value if field[0] == "<" else value
    if not field or field[0] == "0":
        return 0
    raise ByteCompareError(f"bad offset {field!r}: need >>n, <<n or 0")


def _parse_options(field: str) -> tuple[int, int]:
    options, i = 0, 0
    conflicts = {"h": DEC | BIN | AUTO, "d": HEX | BIN | AUTO | LE, "i": HEX | DEC | AUTO,
                 "a": HEX | DEC | BIN, "l": BE | DEC, "b": LE, "e": 0}
    sets = {"h": HEX, "d": DEC | BE, "i": BIN, "a": AUTO, "l": LE, "b": BE, "e": EXACT}
    while i < len(field) and not field[i].isdigit():
        ch = field[i]
        if ch not in sets or options & conflicts[ch]:
            raise ByteCompareError(f"bad option {ch!r} in {field!r}")
        options |= sets[ch]
        i += 1
    if i == len(field):
        raise ByteCompareError(f"no byte length in {field!r}")
    length, end = strtol(field[i:], 0)
    if end != len(field) - i or length <= 0:
        raise ByteCompareError(f"bad byte length in {field!r}")
    if options & BIN and (length > _MAX_BIN or _MAX_BIN % length):
        raise ByteCompareError(f"binary length must be 1, 2, 4 or 8, not {length}")
    if options & HEX and length > _MAX_HEX:
        raise ByteCompareError(f"hex length {length} is over {_MAX_HEX}")
    return options, length


def _parse_comparisons(field: str) -> tuple[tuple[str, int], ...]:
    parts = field.split(",")
    if len(parts) > 2:
        raise ByteCompareError(f"too many comparisons in {field!r}")
    out = []
    for part in parts:
        if not part or part[0] not in "<>=":
            raise ByteCompareError(f"bad comparison {part!r}: need <n, >n or =n")
        value, end = strtol(part[1:], 0)
        if end != len(part) - 1:
            raise ByteCompareError(f"bad comparison value in {part!r}")
        out.append((part[0], value))
    return tuple(out)


def strtol(text, base: int, limit: int | None = None) -> tuple[int, int]:
    """C's strtol over str or bytes: (value, index where reading stopped; 0 if no digits).

    Overflow saturates as in C; ``limit`` bounds how many characters are read (cli_strntol).
    """
    data = text.encode("latin-1") if isinstance(text, str) else bytes(text)
    n = len(data) if limit is None else min(limit, len(data))
    i = 0
    while i < n and data[i] in _SPACE:
        i += 1
    if i >= n:
        return 0, 0
    neg = data[i] == 0x2D
    signed = data[i] in (0x2B, 0x2D)
    if signed:
        i += 1
        if i >= n:
            return 0, 0
    # After a sign ClamAV's strntol still looks at the sign character: no "0x", no octal.
    if base in (0, 16) and not signed and data[i] == 0x30 and i + 1 < n and data[i + 1] in b"xX":
        if i + 2 >= n:
            return 0, 0
        i, base = i + 2, 16
    if base == 0:
        base = 8 if data[i] == 0x30 and not signed else 10
    acc, start, over = 0, i, False
    while i < n:
        c = data[i]
        if 0x30 <= c <= 0x39:
            d = c - 0x30
        elif 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A:
            d = (c | 0x20) - 0x61 + 10
        else:
            break
        if d >= base:
            break
        acc = acc * base + d
        over = over or acc > _LONG_MAX + (1 if neg else 0)
        i += 1
    if i == start:
        return 0, 0
    if over:
        return (-_LONG_MAX - 1 if neg else _LONG_MAX), i
    return (-acc if neg else acc), i


def check(bc: ByteCompare, data, size: int, match_offset: int) -> bool:
    """Whether the comparison holds reading at ``match_offset`` (the trigger's last match)."""
    length = bc.length
    pos = match_offset + bc.offset
    if pos + length > size or pos <= 0:
        return False
    raw = bytes(data[pos:pos + length])
    options = bc.options
    if options & BIN:
        return _compare(bc, _binary(raw, options))
    pad = len(raw) - len(raw.lstrip(_SPACE))
    text = raw[pad:]
    length -= pad
    if options & AUTO:
        if length < 3:
            return False  # ClamAV leaves "auto" undecided on short input: no case matches
        options = options & ~AUTO | (HEX if text[:2] in (b"0x", b"0X") else DEC)
    kind = options & 0xFF
    if kind == HEX | LE:
        text = _swap_hex(text, length)
        value, end = strtol(text, 16, length if length == 1 else length + length % 2)
    elif kind in (HEX | BE, DEC | BE):
        value, end = strtol(text, 16 if kind & HEX else 10, length)
    else:
        return False  # no endianness, or decimal little-endian: ClamAV never compares these
    if abs(value) >= _LONG_MAX:
        return False  # out of range
    if options & EXACT and (end != length or pad):
        return False
    return _compare(bc, value)


def _binary(raw: bytes, options: int) -> int | None:
    if len(raw) not in (1, 2, 4, 8) or not options & (LE | BE):
        return None
    value = int.from_bytes(raw, "little" if options & LE else "big")
    return value - (1 << 64) if value >= 1 << 63 else value


def _swap_hex(text: bytes, length: int) -> bytes:
    """Little-endian hex text to big-endian, byte pair by byte pair, as ClamAV normalises it."""
    if length == 1:
        return text[:1]
    norm = length + length % 2
    prefixed = length >= 3 and text[:2] in (b"0x", b"0X")
    if norm != length:
        buf = (b"x00" + text[2:length]) if prefixed else b"0" + text[:length]
    else:
        buf = text[:length]
        if prefixed:
            buf = b"x" + buf[1:]
    buf = buf.ljust(norm, b"0")[:norm]
    good = b"0123456789abcdefABCDEFxX"
    out = bytearray(b"0" * norm)
    for i in range(0, norm, 2):
        hi, lo = buf[norm - i - 2], buf[norm - i - 1]
        if hi not in good:
            out = bytearray(b"0" * norm)
            continue
        out[i] = hi
        if lo in good:
            out[i + 1] = lo
        else:
            out = bytearray(b"0" * norm)
    return bytes(out)


def _compare(bc: ByteCompare, value: int | None) -> bool:
    if value is None:
        return False
    for symbol, expected in bc.comparisons:
        if symbol == ">" and not value > expected:
            return False
        if symbol == "<" and not value < expected:
            return False
        if symbol == "=" and value != expected:
            return False
    return True


__all__ = ["ByteCompare", "ByteCompareError", "check", "looks_like", "parse"]
