"""Functionality levels: which signature lines this engine takes, as ClamAV decides it."""

from __future__ import annotations

from .errors import SignatureError

# The ClamAV functionality level whose signature features lmsav implements.
FUNCTIONALITY_LEVEL = 216


def skip_reason(levels: list[str], source: str, lineno: int) -> str:
    """Why a line with these ``MinFL[:MaxFL]`` fields is skipped, or "" when it is taken.

    An empty field means no bound; anything else but digits makes the database unusable, as
    ClamAV refuses it.
    """
    for level in levels:
        if level and not (level.isdigit() and level.isascii()):
            raise SignatureError(source, lineno, f"bad functionality level {level!r}: need a number")
    if levels and int(levels[0] or 0) > FUNCTIONALITY_LEVEL:
        return f"needs engine level {levels[0]} (lmsav: {FUNCTIONALITY_LEVEL})"
    if len(levels) > 1 and levels[1] and int(levels[1]) < FUNCTIONALITY_LEVEL:
        return f"retired at engine level {levels[1]}"
    return ""
