"""Extracts the files of a compiled AutoIt script (EA05 and EA06): the script and FileInstall'd
files the AutoIt stub carries after its image.

Layout (AutoIt 3's own, documented by the tools that read it): a 16-byte marker, ``AU3!EA05`` or
``AU3!EA06``, 16 bytes of key material, then one entry per file: a tag, the entry's kind as an
obfuscated string (``>>>AUTOIT SCRIPT<<<`` for the script), the original path, a flag for
compression, the packed and unpacked sizes (each XORed with a constant), a checksum, two
timestamps and the data. Strings and data are XORed with a key stream: EA05 uses MT19937 seeded
per field, EA06 a lagged generator (also seeded per field) and UTF-16 strings. Compressed data
starts with ``EA05``/``EA06`` and the big-endian unpacked size, then an LZSS bit stream.
The EA06 script is yielded in its tokenised form; ClamAV also renders it back into source
text, which lmsav does not (yet): signatures written against that text do not match it here.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ..limits import Context
from ..objects import Child, ScanObject, Status
from .base import Corrupted

TYPE_CHECKING = False
if TYPE_CHECKING:
    import numpy

MARKER = b"\xa3\x48\x4b\xbe\x98\x6c\x4a\xa9\x99\x4c\x53\x0a\x86\xd6\x48\x7d"
_HEADER = len(MARKER) + 8  # marker, "AU3!EA0" and the version digit
_KEY_MATERIAL = 16
_ENTRY_FIXED = 13 + 16  # compression flag, three numbers, two timestamps


@dataclass(frozen=True)
class _Version:
    """The constants one AutoIt format version obfuscates its entries with."""

    tag: int
    kind_len_xor: int
    kind_seed: int
    path_len_xor: int
    path_seed: int
    size_xor: int
    data_seed: int
    compressed_magic: bytes
    literal_bit: int  # the flag bit value that announces a literal in the LZSS stream
    wide: bool  # strings are UTF-16


_EA05 = _Version(0xCEB06DFF, 0x29BC, 0xA25E, 0x29AC, 0xF25E, 0x45AA, 0x22AF, b"EA05", 0, False)
_EA06 = _Version(0x52CA436B, 0xADBC, 0xB33F, 0xF820, 0xF479, 0x87BC, 0x2477, b"EA06", 1, True)
_VERSIONS = {b"5": _EA05, b"6": _EA06}

_SCRIPT_KIND = ">>>AUTOIT SCRIPT<<<"
_MAX_STRING = 0x10000  # an entry's kind or path longer than this is not AutoIt's
_CLOCK_EVERY = 1 << 16


class AutoitHandler:
    """Yields each file of the compiled script, decrypted and decompressed."""

    types = frozenset({"autoit"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        data = obj.data
        size = obj.size
        if size < _HEADER + _KEY_MATERIAL or bytes(data[:len(MARKER)]) != MARKER:
            raise Corrupted("no AutoIt marker")
        version = _VERSIONS.get(bytes(data[_HEADER - 1:_HEADER]))
        if version is None:
            raise Unreadable(f"AutoIt format {bytes(data[16:24])!r}")
        key_sum = sum(bytes(data[_HEADER:_HEADER + _KEY_MATERIAL]))
        pos = _HEADER + _KEY_MATERIAL
        number = 0
        while pos + 8 <= size:
            tag, = struct.unpack_from("<I", data, pos)
            if tag != version.tag:
                if number == 0:
                    raise Corrupted("no file entry after the AutoIt header")
                return  # the entries have ended
            number += 1
            ctx.check_time()
            pos, child = _entry(data, size, pos + 4, version, key_sum, number, ctx)
            if child is not None:
                yield child


class Unreadable(Corrupted):
    """A version of the format this handler does not know."""


def _entry(data, size: int, pos: int, version: _Version, key_sum: int, number: int,
           ctx: Context) -> tuple[int, Child | None]:
    """Read the entry whose fields start at ``pos``: (where the next entry starts, its file)."""
    kind, pos = _string(data, size, pos, version, version.kind_len_xor, version.kind_seed)
    path, pos = _string(data, size, pos, version, version.path_len_xor, version.path_seed)
    if pos + _ENTRY_FIXED > size:
        raise Corrupted(f"entry {number}: header cut short")
    compressed = data[pos] == 1
    packed, = struct.unpack_from("<I", data, pos + 1)
    packed ^= version.size_xor
    pos += _ENTRY_FIXED
    name = _member_name(kind, path, number)
    if packed > size - pos:
        raise Corrupted(f"{name}: {packed} bytes announced, {size - pos} left")
    if not packed:
        return pos, None
    seed = version.data_seed + (key_sum if version is _EA05 else 0)
    payload = _decrypt(bytes(data[pos:pos + packed]), version, seed, ctx)
    pos += packed
    if not compressed:
        return pos, ctx.member(name, [payload], declared_size=len(payload))
    if payload[:4] != version.compressed_magic or len(payload) < 8:
        return pos, Child(name, status=Status.CORRUPTED, reason="corrupted: bad compressed data",
                          size=packed)
    unpacked, = struct.unpack_from(">I", payload, 4)
    lim = ctx.limits
    if lim.max_file_size and unpacked > lim.max_file_size:
        return pos, ctx.member(name, [], declared_size=unpacked)
    out, damage = _lzss(payload, unpacked or packed, version.literal_bit, ctx)
    child = ctx.member(name, [out], declared_size=len(out), packed_size=packed)
    if damage and child.status is None and not out:
        return pos, Child(name, status=Status.CORRUPTED, reason=f"corrupted: {damage}",
                          size=packed)
    return pos, child


def _string(data, size: int, pos: int, version: _Version, len_xor: int,
            seed_base: int) -> tuple[str, int]:
    """One obfuscated string field: its text and where the next field starts."""
    if pos + 4 > size:
        raise Corrupted("entry cut short")
    length, = struct.unpack_from("<I", data, pos)
    length ^= len_xor
    nbytes = length * 2 if version.wide else length
    pos += 4
    if length > _MAX_STRING or pos + nbytes > size:
        raise Corrupted("entry string out of bounds")
    raw = _decrypt(bytes(data[pos:pos + nbytes]), version, seed_base + length, None)
    text = raw.decode("utf-16-le" if version.wide else "latin-1", "replace")
    return text, pos + nbytes


def _member_name(kind: str, path: str, number: int) -> str:
    if kind == _SCRIPT_KIND:
        return "script.au3"
    base = path.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable()).strip()
    return base or f"file{number}"


# -- key streams --------------------------------------------------------------------------------

def _decrypt(data: bytes, version: _Version, seed: int, ctx: Context | None) -> bytes:
    import numpy as np  # here, not at load: numpy costs every scan's start ~0.1 s

    if not data:
        return data
    if version is _EA05:
        stream = _mt_stream(seed & 0xFFFFFFFF, len(data))
    else:
        stream = _lame_stream(seed & 0xFFFF, len(data), ctx)
    return (np.frombuffer(data, np.uint8) ^ stream).tobytes()


def _mt_stream(seed: int, n: int) -> numpy.ndarray:
    """Bits 1-8 of each MT19937 output (seeded the reference way, init_genrand)."""
    state = [seed]
    for i in range(1, 624):
        prev = state[-1]
        state.append((0x6C078965 * (prev ^ prev >> 30) + i) & 0xFFFFFFFF)
    gen = random.Random()
    gen.setstate((3, (*state, 624), None))
    import numpy as np

    words = np.frombuffer(gen.getrandbits(32 * n).to_bytes(4 * n, "little"), "<u4")
    return (words >> 1 & 0xFF).astype(np.uint8)


def _lame_stream(seed: int, n: int, ctx: Context | None) -> numpy.ndarray:
    """EA06's generator: 17 words mixed by rotations, each byte the top of every second word."""
    words = []
    for _ in range(17):
        seed = (1 - seed * 0x53A9B4FB) & 0xFFFFFFFF
        words.append(seed)
    c0, c1 = 0, 10

    def step() -> int:
        nonlocal c0, c1
        a, b = words[c0], words[c1]
        rolled = ((a << 9 | a >> 23) + (b << 13 | b >> 19)) & 0xFFFFFFFF
        words[c0] = rolled
        c0 = c0 - 1 if c0 else 16
        c1 = c1 - 1 if c1 else 16
        return rolled

    for _ in range(9):
        step()
    import numpy as np

    out = np.empty(n, np.uint8)
    for i in range(n):
        step()
        out[i] = step() >> 24
        if ctx is not None and not i & (_CLOCK_EVERY - 1):
            ctx.check_time()
    return out


# -- decompression ------------------------------------------------------------------------------

def _lzss(payload: bytes, size: int, literal_bit: int, ctx: Context) -> tuple[bytes, str]:
    """AutoIt's LZSS: after the 8-byte header, MSB-first bits; a flag, then a literal byte or
    a 15-bit distance and a length in growing fields. Returns the output and any damage (the
    output made before damage is kept, as a detection in it still counts)."""
    bits = _BitReader(payload, 8)
    out = bytearray()
    next_clock = _CLOCK_EVERY
    try:
        while len(out) < size:
            if bits.read(1) == literal_bit:
                out.append(bits.read(8))
                continue
            distance = bits.read(15)
            length = _length(bits)
            if not 0 < distance <= len(out) or len(out) + length > size:
                return bytes(out), "match outside the output"
            start = len(out) - distance
            if distance >= length:
                out += out[start:start + length]
            else:
                for i in range(length):
                    out.append(out[start + i])
            if len(out) >= next_clock:
                ctx.check_time()
                next_clock += _CLOCK_EVERY
    except EOFError:
        return bytes(out), "compressed data cut short"
    return bytes(out), ""


def _length(bits: _BitReader) -> int:
    for width, add in ((2, 0), (3, 3), (5, 10), (8, 41)):
        value = bits.read(width)
        if value != (1 << width) - 1:
            return value + 3 + add
    extra = 296
    while (value := bits.read(8)) == 0xFF:
        extra += 0xFF
    return value + 3 + extra


class _BitReader:
    __slots__ = ("acc", "count", "data", "pos")

    def __init__(self, data: bytes, pos: int):
        self.data, self.pos, self.acc, self.count = data, pos, 0, 0

    def read(self, width: int) -> int:
        while self.count < width:
            if self.pos >= len(self.data):
                raise EOFError
            self.acc = self.acc << 8 | self.data[self.pos]
            self.pos += 1
            self.count += 8
        self.count -= width
        value = self.acc >> self.count & ((1 << width) - 1)
        self.acc &= (1 << self.count) - 1
        return value
