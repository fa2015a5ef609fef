"""Expands MS compress.exe files (SZDD and KWAJ) into the one file they hold."""

from __future__ import annotations

import posixpath
import zlib
from typing import Iterator

from ..limits import CHUNK, Context
from ..objects import PATH_SEP, Child, ScanObject
from .base import Corrupted, Unsupported

SZDD_MAGIC = b"SZDD\x88\xf0\x27\x33"
KWAJ_MAGIC = b"KWAJ\x88\xf0\x27\xd1"

_SZDD_HEADER = 14  # magic, mode 'A', missing last character, uint32 unpacked length
_KWAJ_HEADER = 14  # magic, uint16 method, uint16 data offset, uint16 optional-header flags

# The LZSS window of compress.exe: 4 KiB, filled with spaces, first write 16 bytes before its end.
_WINDOW = 4096
_WINDOW_START = _WINDOW - 16

# KWAJ methods (libmspack's names); 3 is a Huffman-coded LZ variant nothing else uses.
_KWAJ_STORED, _KWAJ_XOR, _KWAJ_SZDD, _KWAJ_LZH, _KWAJ_MSZIP = range(5)


class SzddHandler:
    """Streams the expanded file through the context, so size and ratio limits stop bombs."""

    types = frozenset({"szdd"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        data = obj.data
        magic = bytes(data[:8])
        if magic == SZDD_MAGIC:
            decoder, name = _szdd(obj)
        elif magic == KWAJ_MAGIC:
            decoder, name = _kwaj(obj)
        else:
            raise Corrupted("not an SZDD or KWAJ file")
        child = ctx.member(name, decoder.blocks(), packed_size=obj.size)
        if decoder.error is None:
            yield child
            return
        if decoder.produced:
            yield child  # a detection in the readable part still counts
        raise Corrupted(decoder.error)


class _Decoder:
    """Runs one block generator; a format error ends the data and is kept for the caller."""

    def __init__(self, generator: Iterator[bytes], expected: int | None = None):
        self._generator = generator
        self.expected = expected
        self.error: str | None = None
        self.produced = 0

    def blocks(self) -> Iterator[bytes]:
        try:
            for block in self._generator:
                self.produced += len(block)
                yield block
        except _Damaged as err:
            self.error = str(err)
            return
        if self.expected is not None and self.produced < self.expected:
            self.error = f"truncated: {self.produced} of {self.expected} bytes"


class _Damaged(Exception):
    pass


def _szdd(obj: ScanObject) -> tuple[_Decoder, str]:
    head = obj.head(_SZDD_HEADER)
    if len(head) < _SZDD_HEADER:
        raise Corrupted("truncated SZDD header")
    if head[8:9] != b"A":
        raise Unsupported(f"szdd mode {head[8:9]!r}")
    expected = int.from_bytes(head[10:14], "little")
    name = _expanded_name(obj, head[9])
    return _Decoder(_lzss(obj.data, _SZDD_HEADER), expected), name


def _kwaj(obj: ScanObject) -> tuple[_Decoder, str]:
    data = obj.data
    head = bytes(data[:_KWAJ_HEADER])
    if len(head) < _KWAJ_HEADER:
        raise Corrupted("truncated KWAJ header")
    method = int.from_bytes(head[8:10], "little")
    offset = int.from_bytes(head[10:12], "little")
    flags = int.from_bytes(head[12:14], "little")
    expected, stored_name = _kwaj_optional_headers(bytes(data[_KWAJ_HEADER:offset]), flags)
    if offset < _KWAJ_HEADER or offset > obj.size:
        raise Corrupted(f"KWAJ data offset {offset} outside the file")
    name = stored_name or _expanded_name(obj, 0)
    if method == _KWAJ_STORED:
        return _Decoder(_slices(data, offset), expected), name
    if method == _KWAJ_XOR:
        return _Decoder(_xor_slices(data, offset), expected), name
    if method == _KWAJ_SZDD:
        return _Decoder(_lzss(data, offset), expected), name
    if method == _KWAJ_MSZIP:
        return _Decoder(_mszip(data, offset), expected), name
    if method == _KWAJ_LZH:
        raise Unsupported("kwaj lzh")
    raise Unsupported(f"kwaj method {method}")


def _kwaj_optional_headers(extra: bytes, flags: int) -> tuple[int | None, str]:
    """The unpacked length and the stored file name, from the headers ``flags`` announces."""
    pos = 0
    expected = None

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(extra):
            raise Corrupted("truncated KWAJ header")
        pos += n
        return extra[pos - n:pos]

    if flags & 0x01:
        expected = int.from_bytes(take(4), "little")
    if flags & 0x02:
        take(2)
    if flags & 0x04:
        take(int.from_bytes(take(2), "little"))
    stem = ext = ""
    if flags & 0x08:
        stem = _kwaj_string(extra, pos, 9)
        pos += min(len(stem) + 1, 9)
    if flags & 0x10:
        ext = _kwaj_string(extra, pos, 4)
    name = f"{stem}.{ext}" if ext else stem
    return expected, posixpath.basename(name.replace("\\", "/"))


def _kwaj_string(extra: bytes, pos: int, limit: int) -> str:
    field = extra[pos:pos + limit]
    end = field.find(b"\x00")
    return (field if end < 0 else field[:end]).decode("latin-1")


def _expanded_name(obj: ScanObject, last_char: int) -> str:
    """``setup.ex_`` holds ``setup.exe``: the header keeps the character the underscore hides."""
    base = posixpath.basename(obj.name.rsplit(PATH_SEP, 1)[-1])
    if len(base) < 2 or not base.endswith("_"):
        return "data"
    stem = base[:-1]
    if not last_char or last_char in (0x2F, 0x5C):
        return stem  # mscompress appends "_" instead of replacing a character
    char = chr(last_char)
    return stem + (char.lower() if stem == stem.lower() else char)


def _lzss(data, start: int) -> Iterator[bytes]:
    """compress.exe's LZSS: a flag byte, then 8 items; bit set = literal, clear = 2-byte match."""
    window = bytearray(b" " * _WINDOW)
    wpos = _WINDOW_START
    end = len(data)
    pos = start
    out = bytearray()
    while pos < end:
        flags = data[pos]
        pos += 1
        for bit in range(8):
            if pos >= end:
                break
            if flags >> bit & 1:
                byte = data[pos]
                pos += 1
                out.append(byte)
                window[wpos] = byte
                wpos = (wpos + 1) & (_WINDOW - 1)
                continue
            if pos + 1 >= end:
                if out:
                    yield bytes(out)
                raise _Damaged("truncated LZSS match")
            lo, hi = data[pos], data[pos + 1]
            pos += 2
            mpos = lo | (hi & 0xF0) << 4
            for _ in range((hi & 0x0F) + 3):
                byte = window[mpos]
                mpos = (mpos + 1) & (_WINDOW - 1)
                out.append(byte)
                window[wpos] = byte
                wpos = (wpos + 1) & (_WINDOW - 1)
        if len(out) >= CHUNK:
            yield bytes(out)
            out.clear()
    if out:
        yield bytes(out)


def _slices(data, start: int) -> Iterator[bytes]:
    for pos in range(start, len(data), CHUNK):
        yield bytes(data[pos:pos + CHUNK])


_INVERT = bytes(range(255, -1, -1))


def _xor_slices(data, start: int) -> Iterator[bytes]:
    for block in _slices(data, start):
        yield block.translate(_INVERT)


def _mszip(data, start: int) -> Iterator[bytes]:
    """KWAJ MS-ZIP: blocks of ``uint16 length, "CK", deflate``; each sees the 32 KiB before it."""
    pos = start
    history = b""
    end = len(data)
    while pos + 2 <= end:
        if int.from_bytes(bytes(data[pos:pos + 2]), "little") == 0:
            return
        if bytes(data[pos + 2:pos + 4]) != b"CK":
            raise _Damaged("MS-ZIP block without its CK signature")
        # The length field is advisory (libmspack ignores it too): a block ends where its
        # deflate stream ends, and the next block header follows on the next byte.
        inflater = zlib.decompressobj(-15, zdict=history) if history else zlib.decompressobj(-15)
        at = pos + 4
        try:
            while not inflater.eof and at < end:
                chunk = bytes(data[at:at + CHUNK])
                at += len(chunk)
                while chunk:  # bounded output per call: a deflate bomb meets the limits
                    out = inflater.decompress(chunk, CHUNK)
                    if out:
                        history = (history + out)[-32768:]
                        yield out
                    chunk = inflater.unconsumed_tail
        except zlib.error as err:
            raise _Damaged(f"MS-ZIP: {err}") from None
        if not inflater.eof:
            raise _Damaged("truncated MS-ZIP block")
        pos = at - len(inflater.unused_data)
    if pos < end:
        raise _Damaged("truncated MS-ZIP block header")
