"""Splits an mbox mailbox into its messages."""

from __future__ import annotations

import re
from typing import Iterator

from ..limits import CHUNK, Context
from ..objects import Child, ScanObject

# A message starts at a "From " line at the very start or after an empty line. Requiring the
# empty line keeps an unescaped "From " sentence inside a body from splitting its message.
_SEPARATOR = re.compile(rb"(?:\A|(?<=\n\n)|(?<=\n\r\n))From [^\n]*\n")


class MboxHandler:
    """Yields each message, without its "From " line, as ``msg<n>`` so it is scanned as mail."""

    types = frozenset({"mbox"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        data = obj.data  # bytes or mmap; regex and slices work on both without a full copy
        starts = [(m.start(), m.end()) for m in _SEPARATOR.finditer(data)]
        for n, (_, body_start) in enumerate(starts, 1):
            end = starts[n][0] if n < len(starts) else len(data)
            size = end - body_start
            yield ctx.member(f"msg{n}", _slices(data, body_start, end), declared_size=size)


def _slices(data, start: int, end: int) -> Iterator[bytes]:
    for pos in range(start, end, CHUNK):
        yield bytes(data[pos:min(pos + CHUNK, end)])
