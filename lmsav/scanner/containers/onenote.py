"""Extracts the files embedded in a OneNote section (``.one``).

[MS-ONESTORE] 2.6.13: every embedded file's bytes are kept in a FileDataStoreObject: a header
GUID, the data's length (64 bits), 12 reserved bytes, the data, padding to 8 bytes and a footer
GUID. The objects are found by their header GUID wherever they are, as ClamAV's fallback
reader finds them, so a section whose object tree does not parse still gives up its files;
their names live in other objects and are not looked up (members are ``file-1``, ``file-2`` …).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from ..limits import Context
from ..objects import Child, ScanObject
from .base import Corrupted
from .slices import archive_inside, slice_member

# {7B5C52E4-D88C-4DA7-AEB1-5378D02996D3}, the file type GUID of a .one section, as stored.
MAGIC = bytes.fromhex("e4525c7b8cd8a74daeb15378d02996d3")
# {BDE316E7-2665-4511-A4C4-8D4D0B7A9EAC}: FileDataStoreObject.guidHeader, as stored.
_DATA_HEADER = bytes.fromhex("e716e3bd65261145a4c48d4d0b7a9eac")
_HEADER_SIZE = 16 + 8 + 4 + 8


class OneNoteHandler:
    """Yields the data of each FileDataStoreObject in the section."""

    types = frozenset({"onenote"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        data, size = obj.data, obj.size
        at = data.find(_DATA_HEADER, len(MAGIC))
        number = 0
        damage = ""
        while at >= 0:
            ctx.check_time()
            if at + _HEADER_SIZE > size:
                damage = f"file data header at {at} cut short"
                break
            length, = struct.unpack_from("<Q", data, at + 16)
            start = at + _HEADER_SIZE
            number += 1
            name = f"file-{number}"
            if length > size - start:
                yield slice_member(ctx, name, data, start, size)
                damage = f"{name}: {length} bytes announced, {size - start} left"
                break
            stop = start + length
            yield slice_member(ctx, name, data, start, stop)
            at = data.find(_DATA_HEADER, stop)
        if not number:  # the files' own bytes are not searched twice
            yield from archive_inside(obj, ctx)
        if damage:
            raise Corrupted(damage)

