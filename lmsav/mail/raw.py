"""Byte-level facts about a raw message that need no parsing (and no heavy imports)."""

from __future__ import annotations


def header_end(raw: bytes) -> int:
    """Offset just past the header block's last line (where the blank line starts)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = raw.find(sep)
        if i >= 0:
            return i + 1
    return len(raw)
