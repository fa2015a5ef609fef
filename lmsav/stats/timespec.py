"""``--since`` and ``--until``: an ISO date or time (UTC unless it names its zone), or a time
back from now: ``90m``, ``24h``, ``7d``, ``2w``; ``now``."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now: float) -> float:
    """The moment ``text`` names, in seconds since the epoch; ValueError with the reason."""
    text = text.strip()
    if text.lower() == "now":
        return now
    relative = _RELATIVE.match(text)
    if relative:
        return now - float(relative.group(1)) * _UNITS[relative.group(2).lower()]
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z")
                                        else text)
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO date or time (2026-12-01, "
                         f"2026-12-01T08:00) nor a time back from now (24h, 7d)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def iso(t: float, width: int = 1) -> str:
    """A UTC time as an admin reads it: to the day, the minute or the second."""
    moment = datetime.fromtimestamp(t, UTC)
    if width >= 86400:
        return moment.strftime("%Y-%m-%d")
    if width >= 60:
        return moment.strftime("%Y-%m-%d %H:%M")
    return moment.strftime("%Y-%m-%d %H:%M:%S")
