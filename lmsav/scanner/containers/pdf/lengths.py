"""Indirect stream lengths (``/Length 12 0 R``): the integer the referenced object holds.

Writers that stream their output (pdfTeX, Ghostscript) put the length object after the stream,
so it cannot come from the objects read so far; every object header in the file is indexed once,
on the first indirect length. A header inside some stream's data may be indexed too, which is why
a candidate only counts when it lands on ``endstream`` (the caller checks that)."""

from __future__ import annotations

import re

from .syntax import Ref, parse_at

_HEADER = re.compile(
    rb"(?<![0-9])([0-9]{1,10})[ \t\r\n\f\x00]+([0-9]{1,5})[ \t\r\n\f\x00]+obj(?![A-Za-z])"
)
MAX_DEFINITIONS = 8  # of one object number tried, the last in the file first (incremental updates)
_VALUE_SPAN = 64  # an integer object's body fits in this many bytes


class LengthResolver:
    """The candidate lengths an indirect ``/Length`` names, from the objects the file defines."""

    def __init__(self, data: bytes):
        self.data = data
        self._bodies: dict[tuple[int, int], list[int]] | None = None
        self._values: dict[Ref, list[int]] = {}

    def candidates(self, ref: Ref) -> list[int]:
        """Non-negative integers the object ``ref`` is defined as: none when it holds anything
        else (a reference to another object included, so nothing chains)."""
        if ref not in self._values:
            bodies = self._index().get((ref.num, ref.gen), [])
            found: list[int] = []
            for body in reversed(bodies[-MAX_DEFINITIONS:]):
                value = parse_at(self.data, body, min(len(self.data), body + _VALUE_SPAN))
                if type(value) is int and value >= 0 and value not in found:
                    found.append(value)
            self._values[ref] = found
        return self._values[ref]

    def _index(self) -> dict[tuple[int, int], list[int]]:
        if self._bodies is None:
            self._bodies = {}
            for m in _HEADER.finditer(self.data):
                key = (int(m.group(1)), int(m.group(2)))
                self._bodies.setdefault(key, []).append(m.end())
        return self._bodies
