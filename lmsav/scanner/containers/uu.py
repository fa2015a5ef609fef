"""Decodes the body of a uuencoded block (the lines between "begin" and "end")."""

from __future__ import annotations

import binascii


def uudecode(body: bytes) -> bytes:
    """The bytes the lines encode; blank lines and the "`" terminator are skipped."""
    out = []
    for line in body.splitlines():
        if not line.strip() or line.strip() == b"`":
            continue
        try:
            out.append(binascii.a2b_uu(line))
        except binascii.Error:
            # Encoders that strip trailing spaces or pad oddly: trust the length character.
            nbytes = (((line[0] - 32) & 63) * 4 + 5) // 3
            try:
                out.append(binascii.a2b_uu(line[:nbytes].ljust(nbytes, b" ")))
            except binascii.Error:
                continue
    return b"".join(out)
