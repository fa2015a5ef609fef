"""Decodes BinHex 4.0 files into their data fork and resource fork."""

from __future__ import annotations

import binascii
import re
from typing import Iterator

from ..limits import CHUNK, Context
from ..objects import Child, ScanObject
from .base import Corrupted

_BANNER = b"(This file must be converted with BinHex"
_HQX = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# BinHex's 6-bit alphabet maps one to one onto base64's, so binascii does the bit packing.
_TO_B64 = bytes.maketrans(_HQX, _B64)
_NOT_HQX = re.compile(b"[^" + re.escape(_HQX) + b"]")
_WHITESPACE = b" \t\r\n\f\v"
_RUN = 0x90  # run-length marker: 0x90 n repeats the previous byte to n copies; 0x90 0 is 0x90


class BinhexHandler:
    """Yields the data fork under the stored file name and a non-empty resource fork as .rsrc."""

    types = frozenset({"binhex"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        raw, problem = _six_bit_decode(obj.data)
        stream = _Stream(_run_length_decode(raw))
        problems = [problem] if problem else []
        header = stream.read(1)
        # name length, name, version, type, creator, flags, data length, resource length
        header += stream.read(header[0] + 19) if header else b""
        if not header or len(header) != header[0] + 20:
            raise Corrupted(problem or "truncated header")
        name = _fork_name(header[1:1 + header[0]])
        body = header[1 + header[0]:]
        data_len = int.from_bytes(body[11:15], "big")
        rsrc_len = int.from_bytes(body[15:19], "big")
        stored_crc = stream.read(2)
        if len(stored_crc) < 2:
            raise Corrupted(problem or "truncated header")
        if binascii.crc_hqx(header, 0) != int.from_bytes(stored_crc, "big"):
            problems.append("header CRC mismatch")
        forks = [(name, data_len)]
        if rsrc_len:
            forks.append((f"{name}.rsrc", rsrc_len))
        for fork_name, length in forks:
            fork = _Fork(stream, length)
            child = ctx.member(fork_name, fork.blocks(), declared_size=length,
                               packed_size=obj.size)
            if child.status is not None:
                yield child  # a limit stopped this fork mid-stream: what follows is out of reach
                break
            if fork.read < length:
                if fork.read:
                    yield child
                raise Corrupted(problem or "truncated fork")
            yield child
            if not fork.check_crc():
                problems.append(f"{'data' if fork_name == name else 'resource'} fork CRC mismatch")
        if problems:
            raise Corrupted("; ".join(problems))


def _six_bit_decode(data) -> tuple[bytes, str]:
    """The 8-bit bytes between the colons after the banner, and what was wrong, if anything."""
    banner = data.find(_BANNER)
    start = data.find(b":", banner + len(_BANNER)) if banner >= 0 else -1
    if start < 0:
        raise Corrupted("no BinHex 4.0 data")
    end = data.find(b":", start + 1)
    problem = ""
    if end < 0:
        end = len(data)
        problem = "truncated: no closing colon"
    text = bytes(data[start + 1:end]).translate(None, _WHITESPACE)
    bad = _NOT_HQX.search(text)
    if bad is not None:
        text = text[:bad.start()]
        problem = f"invalid character {bytes([bad.group()[0]])!r}"
    cut = len(text) & ~3
    tail = text[cut:]
    if len(tail) == 1:
        tail = b""  # six bits cannot make a byte
    elif tail:
        tail += b"=" * (4 - len(tail))
    try:
        return binascii.a2b_base64((text[:cut] + tail).translate(_TO_B64)), problem
    except binascii.Error as err:  # not expected after the alphabet check
        raise Corrupted(f"bad 6-bit data: {err}") from None


def _run_length_decode(raw: bytes) -> Iterator[bytes]:
    """Undoes BinHex's run-length coding, one bounded block at a time."""
    pos = 0
    end = len(raw)
    previous = -1
    while pos < end:
        marker = raw.find(_RUN, pos)
        if marker < 0:
            marker = end
        while pos < marker:
            block = raw[pos:min(marker, pos + CHUNK)]
            pos += len(block)
            previous = block[-1]
            yield block
        if marker >= end:
            return
        if marker + 1 >= end:
            return  # a marker without its count: truncated, the fork length check reports it
        count = raw[marker + 1]
        pos = marker + 2
        if count == 0:
            previous = _RUN
            yield bytes([_RUN])
        elif previous >= 0 and count > 1:
            yield bytes([previous]) * (count - 1)


class _Stream:
    """Reads exact byte counts from a block generator."""

    def __init__(self, blocks: Iterator[bytes]):
        self._blocks = blocks
        self._buffer = b""

    def read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            block = next(self._blocks, None)
            if block is None:
                break
            self._buffer += block
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def blocks(self, n: int) -> Iterator[bytes]:
        """Up to ``n`` bytes in blocks of at most CHUNK."""
        while n > 0:
            block = self.read(min(n, CHUNK))
            if not block:
                return
            n -= len(block)
            yield block


class _Fork:
    """One fork: its bytes streamed with their CRC-16, then the stored CRC that follows."""

    def __init__(self, stream: _Stream, length: int):
        self._stream = stream
        self._length = length
        self.read = 0
        self._crc = 0

    def blocks(self) -> Iterator[bytes]:
        for block in self._stream.blocks(self._length):
            self.read += len(block)
            self._crc = binascii.crc_hqx(block, self._crc)
            yield block

    def check_crc(self) -> bool:
        stored = self._stream.read(2)
        return len(stored) == 2 and int.from_bytes(stored, "big") == self._crc


def _fork_name(raw: bytes) -> str:
    name = raw.decode("mac_roman").replace("/", "_").replace("\x00", "").strip()
    return name or "data"
