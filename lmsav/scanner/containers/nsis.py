"""Extracts NSIS installers (the data a Nullsoft stub carries after its image) with 7-Zip."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from ..limits import Context
from ..objects import Child, ScanObject
from .sevenzip import explode_7z

# NSIS's first header: flags (u32), then this signature, then the header and data sizes.
SIGNATURE = b"\xef\xbe\xad\xdeNullsoftInst"
_FLAGS_BEFORE = 4
_KNOWN_FLAGS = 0x0F  # uninstaller, silent, no CRC, forced CRC


class NsisHandler:
    """Yields the installer's files as 7-Zip extracts them."""

    types = frozenset({"nsis"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        yield from explode_7z(obj, ctx, "nsis")


def find_first_header(data, start: int, end: int) -> int | None:
    """Offset of the NSIS first header (its flags word) between ``start`` and ``end``."""
    at = data.find(SIGNATURE, start + _FLAGS_BEFORE, end)
    while at >= 0:
        flags, = struct.unpack_from("<I", data, at - _FLAGS_BEFORE)
        if not flags & ~_KNOWN_FLAGS:
            return at - _FLAGS_BEFORE
        at = data.find(SIGNATURE, at + 1, end)
    return None
