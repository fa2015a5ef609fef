"""Extracts the embedded objects of a PowerPoint 97-2003 document from its "PowerPoint Document"
stream (the ``powerpoint`` type, sniffed from the stream's first record).

[MS-PPT] 2.3: the stream is a sequence of records, each with an 8-byte header (version and
instance in 16 bits, type, length). An embedded OLE object's storage is an
ExOleObjStg record (type 0x1011) at the top level of the stream: with instance 1 its data is a
32-bit decompressed size and a zlib stream, with instance 0 the storage itself. The storage is
an OLE2 compound file, which the OLE2 handler then explodes (``ExOleObjStg-1//…``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from ..limits import Context
from ..objects import Child, ScanObject
from .base import Corrupted
from .slices import archive_inside, inflated_blocks

_HEADER = 8
_EX_OLE_OBJ_STG = 0x1011
_COMPRESSED = 1

class PowerPointHandler:
    """Yields each embedded OLE object storage (ExOleObjStg), decompressed."""

    types = frozenset({"powerpoint"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        data, size = obj.data, obj.size
        pos = 0
        number = 0
        damage = []
        while pos + _HEADER <= size:
            ver_instance, rec_type, length = struct.unpack_from("<HHI", data, pos)
            body = pos + _HEADER
            if length > size - body:
                damage.append(f"record 0x{rec_type:04x} at {pos} runs past the stream")
                length = size - body
            if rec_type == _EX_OLE_OBJ_STG:
                number += 1
                name = f"ExOleObjStg-{number}"
                if ver_instance >> 4 == _COMPRESSED:
                    child = _inflated(ctx, name, data, body, body + length, damage)
                else:
                    child = ctx.member(name, [bytes(data[body:body + length])],
                                       declared_size=length)
                if child is not None:
                    yield child
            pos = body + length
            ctx.check_time()
        yield from archive_inside(obj, ctx)
        if damage:
            raise Corrupted("; ".join(damage))


def _inflated(ctx: Context, name: str, data, start: int, stop: int,
              damage: list[str]) -> Child | None:
    if stop - start < 4:
        damage.append(f"{name}: no compressed data")
        return None
    # The decompressed size in front is not trusted: the limits apply to what comes out.
    return ctx.member(name, inflated_blocks(data, start + 4, stop, name, damage),
                      packed_size=stop - start)
