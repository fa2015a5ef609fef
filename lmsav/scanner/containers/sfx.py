"""Archives after other bytes: appended to an executable (self-extractors), or behind junk.

An archive found after text or data of no known type (``filetype.locate`` gives its offset)
becomes two members: ``prefix``, the bytes before it, when they are text (which may carry
encoded files), and ``embedded.<type>``, the archive from its first byte.
"""

from __future__ import annotations

import struct
from typing import Iterator

from ..filetype import sniff
from ..limits import CHUNK, Context
from ..objects import Child, ScanObject

# How many leading bytes tell whether the bytes before an archive are worth a scan of their own,
# and the types that are: text, which can carry encoded files its handlers decode.
_PREFIX_HEAD = 4096
_TEXT = frozenset({"text", "html"})

# Magic → the child's name; the child is sniffed again and goes to the archive handler.
_ARCHIVES: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "sfx.zip"),
    (b"Rar!\x1a\x07", "sfx.rar"),
    (b"7z\xbc\xaf\x27\x1c", "sfx.7z"),
    (b"MSCF\x00\x00\x00\x00", "sfx.cab"),
)
_DOS_HEADER = 0x40
_SECTION = 40


class SfxHandler:
    """Yields the archive found in an executable's overlay (the bytes after its image)."""

    types = frozenset({"pe", "msdos"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        data = obj.data
        size = len(data)
        start = _overlay_start(data, size)
        if start >= size:
            return  # the common case: nothing appended, a few header reads spent
        found = _first_archive(data, start)
        if found is None:
            return
        offset, name = found
        yield _slice(ctx, name, data, offset, size)


def explode_embedded(obj: ScanObject, ctx: Context, ftype: str, offset: int) -> Iterator[Child]:
    """The bytes before an archive that starts at ``offset`` (when they are text), then the
    archive itself, each a member scanned on its own."""
    data = obj.data
    if sniff(bytes(data[:min(offset, _PREFIX_HEAD)])) in _TEXT:
        yield _slice(ctx, "prefix", data, 0, offset)
    yield _slice(ctx, f"embedded.{ftype}", data, offset, obj.size)


def _slice(ctx: Context, name: str, data, start: int, stop: int) -> Child:
    """``data[start:stop]`` read into a member block by block (it may be a large mmap)."""
    with memoryview(data) as view:
        blocks = (bytes(view[i:min(i + CHUNK, stop)]) for i in range(start, stop, CHUNK))
        return ctx.member(name, blocks, declared_size=stop - start)


def _overlay_start(data, size: int) -> int:
    """Where the executable's own image ends: after the PE's last section, or the DOS image."""
    if size < _DOS_HEADER:
        return size
    e_lfanew = struct.unpack_from("<I", data, 0x3C)[0]
    if data[e_lfanew:e_lfanew + 4] == b"PE\x00\x00" and e_lfanew + 24 <= size:
        nsections, = struct.unpack_from("<H", data, e_lfanew + 6)
        opt_size, = struct.unpack_from("<H", data, e_lfanew + 20)
        table = e_lfanew + 24 + opt_size
        if nsections and table + nsections * _SECTION <= size:
            end = table + nsections * _SECTION
            for i in range(nsections):
                raw_size, raw_ptr = struct.unpack_from("<II", data, table + i * _SECTION + 16)
                if raw_size:
                    end = max(end, raw_ptr + raw_size)
            return end
        return _DOS_HEADER  # headers not parseable: search everything after the DOS header
    last_page, pages = struct.unpack_from("<HH", data, 2)
    if pages:
        image = (pages - 1) * 512 + (last_page or 512)
        if _DOS_HEADER <= image:
            return image
    return _DOS_HEADER


def _first_archive(data, start: int) -> tuple[int, str] | None:
    """The earliest archive magic at or after ``start``."""
    best: tuple[int, str] | None = None
    for magic, name in _ARCHIVES:
        at = data.find(magic, start, best[0] if best else len(data))
        if at >= 0 and (best is None or at < best[0]):
            best = (at, name)
    return best
