"""Splits an mbox mailbox into its messages."""

from __future__ import annotations

import re
from collections.abc import Iterator

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
        n = 0
        body_start = None
        # One separator ahead: a message ends where the next one starts (never a list of all).
        for m in _SEPARATOR.finditer(data):
            if body_start is not None:
                n += 1
                yield _message(ctx, data, n, body_start, m.start())
            body_start = m.end()
        if body_start is not None:
            yield _message(ctx, data, n + 1, body_start, len(data))


def _message(ctx: Context, data, n: int, start: int, end: int) -> Child:
    ctx.check_time()
    return ctx.member(f"msg{n}", _slices(data, start, end), declared_size=end - start)


def _slices(data, start: int, end: int) -> Iterator[bytes]:
    for pos in range(start, end, CHUNK):
        yield bytes(data[pos:min(pos + CHUNK, end)])
