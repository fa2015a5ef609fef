"""A table of JSON rows read in place: a process decodes only the rows its hits need.

Compiled signature tables hold one row per signature (hundreds of thousands for ClamAV's
database). Decoding them all at the first match cost a second and well over 100 MB per worker;
stored as one JSON line per row followed by the rows' uint32 end offsets, row i is one slice
and one small ``json.loads`` away.
"""

from __future__ import annotations

import itertools
import json
import struct


def pack_rows(rows: list) -> tuple[bytes, int]:
    """(table bytes, index where the end offsets start) for ``RowTable``."""
    lines = [json.dumps(r, separators=(",", ":")).encode() for r in rows]
    ends = itertools.accumulate(len(line) + 1 for line in lines)
    table = b"".join(line + b"\n" for line in lines)
    index = len(table)
    return table + struct.pack(f"<{len(lines)}I", *ends), index


class RowTable:
    """Row i of a packed table, decoded on first use and kept."""

    def __init__(self, table: memoryview, index: int):
        table = memoryview(table)
        self._lines = table[:index]
        self._ends = table[index:].cast("I")
        self._cache: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int):
        row = self._cache.get(i)
        if row is None:
            start = self._ends[i - 1] if i else 0
            row = self._cache[i] = json.loads(bytes(self._lines[start:self._ends[i] - 1]))
        return row
