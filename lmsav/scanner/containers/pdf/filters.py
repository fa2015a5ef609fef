"""PDF stream filters, each a generator that turns an iterator of blocks into an iterator of
blocks, so the context can stop a decompression bomb one block after its limit."""

from __future__ import annotations

import base64
import re
import zlib
from collections.abc import Callable, Iterator

from .damage import Damage
from .predictors import predicted
from .syntax import WHITESPACE, unhex

BLOCK = 1 << 16

Decoder = Callable[[Iterator[bytes], dict, Damage], Iterator[bytes]]


def decode_chain(raw: bytes, filters: list[str], parms: list[dict], errors: Damage):
    blocks: Iterator[bytes] = iter((raw,))
    for name, parm in zip(filters, parms):
        if name in ("Crypt",):
            continue
        decoder = _DECODERS.get(name)
        if decoder is None:
            # An unknown filter: hand on what is decoded so far, as ClamAV does.
            errors.add(f"unsupported filter {name}")
            break
        blocks = decoder(blocks, parm, errors)
        if name in ("FlateDecode", "LZWDecode"):
            blocks = predicted(blocks, parm, errors)
    return blocks


def _flate(blocks: Iterator[bytes], _parm: dict, errors: Damage) -> Iterator[bytes]:
    d = zlib.decompressobj()
    seen: list[bytes] = []  # input so far, for the careful second pass after an error
    produced = 0
    for block in blocks:
        seen.append(block)
        data = block
        while data:
            try:
                out = d.decompress(data, BLOCK)
            except zlib.error as err:
                # zlib drops a failing call's output: redo the stream carefully from the start.
                yield from _flate_salvage(b"".join(seen), produced, err, errors)
                return
            if out:
                produced += len(out)
                yield out
            if d.eof:
                return
            data = d.unconsumed_tail
    if not d.eof:
        errors.add("FlateDecode: truncated")


def _flate_salvage(data: bytes, skip: int, err: zlib.error, errors: Damage) -> Iterator[bytes]:
    """Raw deflate in small steps: a headerless stream decodes in full, a damaged one up to the
    damage; output already handed on (``skip`` bytes) is not repeated."""
    start = 2 if len(data) > 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0 else 0
    d = zlib.decompressobj(-15)
    done = 0
    for pos in range(start, len(data), 512):
        try:
            out = d.decompress(data[pos:pos + 512])
        except zlib.error:
            break
        if done + len(out) > skip:
            yield out[max(0, skip - done):]
        done += len(out)
        if d.eof:
            if start:  # the zlib layer itself failed (bad checksum): the content is suspect
                errors.add(f"FlateDecode: {err}")
            return  # else: deflate data without the zlib header, as some writers produce
    errors.add(f"FlateDecode: {err}" if done else f"FlateDecode: {err} (nothing decoded)")


def _ascii_hex(blocks: Iterator[bytes], _parm: dict, errors: Damage) -> Iterator[bytes]:
    carry = b""
    for block in blocks:
        close = block.find(b">")
        digits = carry + block[: close if close >= 0 else len(block)].translate(None, WHITESPACE)
        keep = len(digits) & ~1
        out, bad = unhex(digits[:keep])
        if bad:
            errors.add("ASCIIHexDecode: invalid digit")
        carry = digits[keep:]
        if out:
            yield out
        if close >= 0:
            break
    if carry:
        yield unhex(carry + b"0")[0]


_A85_GROUPS = re.compile(rb"(?:z|[!-u]{5})*")


def _ascii85(blocks: Iterator[bytes], _parm: dict, errors: Damage) -> Iterator[bytes]:
    buf = b""
    started = False
    for block in blocks:
        block = block.translate(None, WHITESPACE)
        if not started and block:
            started = True
            block = block[2:] if block.startswith(b"<~") else block
        close = block.find(b"~")
        buf += block[: close if close >= 0 else len(block)]
        whole = _A85_GROUPS.match(buf).end()
        if whole < len(buf) - 4:  # something other than a pending partial group
            bad = buf[whole]
            errors.add(f"ASCII85Decode: invalid byte 0x{bad:02x}")
            buf = buf[:whole]
            close = 0
        if whole:
            try:
                yield base64.a85decode(buf[:whole])
            except ValueError as err:  # a group above 2**32
                errors.add(f"ASCII85Decode: {err}")
                return
            buf = buf[whole:]
        if close >= 0:
            break
    if buf:
        if len(buf) == 1:
            errors.add("ASCII85Decode: stray final byte")
        else:
            try:
                yield base64.a85decode(buf)
            except ValueError as err:
                errors.add(f"ASCII85Decode: {err}")


def _lzw(blocks: Iterator[bytes], parm: dict, errors: Damage) -> Iterator[bytes]:
    data = b"".join(blocks)  # LZW input is never larger than its (already bounded) source
    early = parm.get("EarlyChange", 1)
    early = 0 if early == 0 else 1
    table: list[bytes] = [bytes([i]) for i in range(256)] + [b"", b""]
    width = 9
    previous: bytes | None = None
    out: list[bytes] = []
    pending = 0
    bits = 0
    nbits = 0
    for byte in data:
        bits = (bits << 8) | byte
        nbits += 8
        while nbits >= width:
            nbits -= width
            code = (bits >> nbits) & ((1 << width) - 1)
            bits &= (1 << nbits) - 1
            if code == 256:
                del table[258:]
                width = 9
                previous = None
                continue
            if code == 257:
                if out:
                    yield b"".join(out)
                return
            if code < len(table):
                entry = table[code]
                if previous is not None:
                    table.append(previous + entry[:1])
            elif previous is not None and code == len(table):
                entry = previous + previous[:1]
                table.append(entry)
            else:
                errors.add("LZWDecode: invalid code")
                if out:
                    yield b"".join(out)
                return
            out.append(entry)
            pending += len(entry)
            previous = entry
            if len(table) + early >= (1 << width) and width < 12:
                width += 1
            if pending >= BLOCK:
                yield b"".join(out)
                out, pending = [], 0
    if out:
        yield b"".join(out)


def _run_length(blocks: Iterator[bytes], _parm: dict, errors: Damage) -> Iterator[bytes]:
    data = b"".join(blocks)  # input is bounded by its source; output grows at most 64x
    out = bytearray()
    pos, size = 0, len(data)
    while pos < size:
        n = data[pos]
        pos += 1
        if n == 128:
            break
        if n < 128:
            out += data[pos:pos + n + 1]
            if pos + n + 1 > size:
                errors.add("RunLengthDecode: truncated")
            pos += n + 1
        else:
            if pos >= size:
                errors.add("RunLengthDecode: truncated")
                break
            out += data[pos:pos + 1] * (257 - n)
            pos += 1
        if len(out) >= BLOCK:
            yield bytes(out)
            out.clear()
    if out:
        yield bytes(out)


_DECODERS: dict[str, Decoder] = {
    "FlateDecode": _flate,
    "ASCIIHexDecode": _ascii_hex,
    "ASCII85Decode": _ascii85,
    "LZWDecode": _lzw,
    "RunLengthDecode": _run_length,
}
