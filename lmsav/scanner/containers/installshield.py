"""Extracts InstallShield setup executables: the files their stub carries after its image.

Two layouts, as InstallShield writes them and ClamAV reads them:

* Setups of Windows Installer packages (``InstallShield\\0`` stream, the ``installshield``
  type): a 32-byte header with the file count, then per file a 312-byte block (its name in a
  260-byte field, its packed size) and its data, zlib-compressed and obfuscated with a key made
  from the name (each byte's nibbles swapped, then XORed with the key).
* Older setups: the overlay holds the files one after the other, each after four NUL-ended
  strings (name, path, version, decimal size). Among them ``data1.hdr`` lists what the
  InstallShield cabinets ``dataN.cab`` hold (``ISc(`` format: per file a cabinet number, an
  offset and a packed size; the data a run of deflate chunks with 16-bit sizes).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from ..limits import CHUNK, Context
from ..objects import Child, ScanObject, Status
from .base import Corrupted
from .slices import inflated_blocks

MAGIC = b"InstallShield\x00"
_MSI_HEADER = 0x20
_MSI_BLOCK = 312
_MSI_NAME = 260
_NAME_KEY = bytes((0xEC, 0xCA, 0x79, 0xF8))
_KEY_PERIOD = 0x400  # the key index wraps every 1 KiB of data

_MAX_STRING = 2048  # the older layout's strings, as ClamAV bounds them
_CAB_MAGIC = 0x28635349  # "ISc("
_FILE_ITEM = 87
_INTERNAL = 4  # a file item stored in a cabinet


class InstallShieldHandler:
    """Yields each file of an InstallShield setup's ``InstallShield`` stream."""

    types = frozenset({"installshield"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        data, size = obj.data, obj.size
        head = len(MAGIC)
        if size < head + _MSI_HEADER or bytes(data[:head]) != MAGIC:
            raise Corrupted("no InstallShield header")
        count, = struct.unpack_from("<I", data, head)
        pos = head + _MSI_HEADER
        damage = []
        for number in range(1, count + 1):
            if pos + _MSI_BLOCK > size:
                raise Corrupted(f"file {number} of {count}: header cut short")
            name = bytes(data[pos:pos + _MSI_NAME]).split(b"\0", 1)[0]
            packed, = struct.unpack_from("<Q", data, pos + 268)
            pos += _MSI_BLOCK
            if not name:
                raise Corrupted(f"file {number} of {count}: no name")
            if packed > size - pos:
                raise Corrupted(f"{_text(name)}: {packed} bytes announced, {size - pos} left")
            ctx.check_time()
            yield _inflated(ctx, _text(name), _deobfuscated(data, pos, packed, name), packed,
                            damage)
            pos += packed
        if damage:
            raise Corrupted("; ".join(damage))


def is_msi_stream(data, at: int, size: int) -> bool:
    """An ``InstallShield`` stream header at ``at``: a file count, zeros, and a first block
    whose fixed fields hold what InstallShield writes there."""
    block = at + len(MAGIC) + _MSI_HEADER
    if block + _MSI_BLOCK > size:
        return False
    header = bytes(data[at + len(MAGIC):block])
    count, = struct.unpack_from("<I", header)
    if not count or header[8:] != bytes(_MSI_HEADER - 8):
        return False
    kind, zero, _packed, zero2, one = struct.unpack_from("<IIQII", data, block + _MSI_NAME)
    return kind == 6 and zero == 0 and zero2 == 0 and one & 0xFF == 1


def _deobfuscated(data, pos: int, packed: int, name: bytes) -> bytes:
    import numpy as np  # here: loading numpy costs every scan's start ~0.1 s

    key = np.frombuffer(name, np.uint8) ^ np.resize(np.frombuffer(_NAME_KEY, np.uint8), len(name))
    raw = np.frombuffer(bytes(data[pos:pos + packed]), np.uint8)
    swapped = (raw >> 4) | (raw << 4)
    index = (np.arange(packed) & (_KEY_PERIOD - 1)) % len(name)
    return (swapped ^ key[index]).astype(np.uint8).tobytes()


def _inflated(ctx: Context, name: str, stream: bytes, packed: int,
              damage: list[str]) -> Child:
    """One zlib stream decompressed within the limits; a damaged one keeps what it gave and
    appends to ``damage``."""
    return ctx.member(name, inflated_blocks(stream, 0, len(stream), name, damage),
                      packed_size=packed)


# -- the older layout, in an executable's overlay ----------------------------------------------

def overlay_files(data, start: int, size: int) -> list[tuple[str, int, int]]:
    """(name, offset, size) of each file the older layout stores from ``start``; empty when
    the overlay does not start with that layout."""
    found = []
    pos = start
    while True:
        fields = []
        at = pos
        for _ in range(4):
            end = data.find(b"\0", at, min(at + _MAX_STRING, size))
            if end < 0:
                return found
            fields.append(bytes(data[at:end]))
            at = end + 1
        name, _path, _version, length = fields
        if not name or not length.isdigit() or int(length) > size - at:
            return found
        found.append((_text(name), at, int(length)))
        pos = at + int(length)


def explode_overlay(data, files: list[tuple[str, int, int]], ctx: Context,
                    prefix: str) -> Iterator[Child]:
    """Each stored file (named ``prefix`` + its name), then the files of the cabinets that
    ``data1.hdr`` describes (``prefix`` + ``dataN.cab/`` + their name)."""
    for name, offset, length in files:
        ctx.check_time()
        yield ctx.member(prefix + name, _blocks(data, offset, offset + length),
                         declared_size=length)
    by_name = {name.lower(): (offset, length) for name, offset, length in files}
    header = by_name.get("data1.hdr")
    if header is not None:
        damage: list[str] = []
        yield from _cabinet_files(data, header, by_name, ctx, prefix, damage)
        if damage:
            raise Corrupted("; ".join(damage))


def _cabinet_files(data, header: tuple[int, int], files: dict[str, tuple[int, int]],
                   ctx: Context, prefix: str, damage: list[str]) -> Iterator[Child]:
    hdr = bytes(data[header[0]:header[0] + header[1]])
    if len(hdr) < 20 or struct.unpack_from("<I", hdr)[0] != _CAB_MAGIC:
        return
    data_off, = struct.unpack_from("<I", hdr, 12)
    if data_off + 48 > len(hdr):
        raise Corrupted("data1.hdr: file table out of bounds")
    dirs_off, = struct.unpack_from("<I", hdr, data_off + 12)
    count, = struct.unpack_from("<I", hdr, data_off + 40)
    dirs_size, = struct.unpack_from("<I", hdr, data_off + 44)
    names = data_off + dirs_off
    item = names + dirs_size
    for _ in range(count):
        if item + _FILE_ITEM > len(hdr):
            raise Corrupted("data1.hdr: file table cut short")
        flags, unpacked, packed, stream = struct.unpack_from("<HQQQ", hdr, item)
        name_off, = struct.unpack_from("<I", hdr, item + 58)
        duplicate = hdr[item + 84] & 1
        cabinet, = struct.unpack_from("<H", hdr, item + 85)
        item += _FILE_ITEM
        if flags != _INTERNAL or duplicate or not unpacked:
            continue
        name = _text(hdr[names + name_off:].split(b"\0", 1)[0]) if names + name_off < len(hdr) \
            else ""
        cab_name = f"data{cabinet}.cab"
        where = files.get(cab_name)
        label = f"{prefix}{cab_name}/{name or 'file'}"
        if where is None or stream + packed > where[1]:
            yield Child(label, status=Status.CORRUPTED, reason=f"corrupted: not in {cab_name}",
                        size=packed)
            continue
        ctx.check_time()
        start = where[0] + stream
        yield _chunks(ctx, label, data, start, start + packed, packed, damage)


def _chunks(ctx: Context, name: str, data, pos: int, end: int, packed: int,
            damage: list[str]) -> Child:
    """A cabinet file: raw deflate chunks, each after its 16-bit size."""

    def blocks() -> Iterator[bytes]:
        nonlocal pos
        while pos + 2 <= end:
            length, = struct.unpack_from("<H", data, pos)
            pos += 2
            if pos + length > end:
                damage.append(f"{name}: chunk beyond the file's data")
                return
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                block = inflater.decompress(bytes(data[pos:pos + length]), CHUNK * 16)
                yield block
                while inflater.unconsumed_tail:
                    yield inflater.decompress(inflater.unconsumed_tail, CHUNK * 16)
            except zlib.error as err:
                damage.append(f"{name}: {err}")
                return
            pos += length

    return ctx.member(name, blocks(), packed_size=packed)


def _blocks(data, start: int, stop: int) -> Iterator[bytes]:
    with memoryview(data) as view:
        for i in range(start, stop, CHUNK):
            yield bytes(view[i:min(i + CHUNK, stop)])


def _text(name: bytes) -> str:
    text = name.decode("latin-1").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c if c.isprintable() else f"[{ord(c)}]" for c in text) or "[unnamed]"
