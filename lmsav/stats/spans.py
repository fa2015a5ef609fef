"""A time range as the roll-up buckets that cover it: whole days from the daily table, whole
hours at its edges from the hourly one, minutes at the very edges from the minute one.

A range is widened to whole buckets of the finest table still holding its ends: minutes within
2 days, hours within 90 days, days beyond.
"""

from __future__ import annotations

from . import schema


def _floor(t: float, width: int) -> int:
    return int(t // width * width)


def _ceil(t: float, width: int) -> int:
    return -_floor(-t, width)


def _resolution(t: float, now: float) -> int:
    for width, kept in schema.ROLLUPS.values():
        if kept is None or t >= now - kept + width:
            return width
    return schema.DAY


def widen(since: float, until: float, now: float) -> tuple[int, int]:
    """[since, until) widened to whole buckets of the finest table that still covers each end."""
    return (_floor(since, _resolution(since, now)), _ceil(until, _resolution(until, now)))


def pieces(since: int, until: int) -> list[tuple[str, int, int]]:
    """(table, first bucket, end) covering [since, until) without overlap; both ends whole
    minutes."""
    out: list[tuple[str, int, int]] = []

    def hours_and_minutes(a: int, b: int) -> None:
        h0, h1 = _ceil(a, schema.HOUR), _floor(b, schema.HOUR)
        if h0 < h1:
            out.extend((("rollup_minute", a, h0), ("rollup_hour", h0, h1),
                        ("rollup_minute", h1, b)))
        else:
            out.append(("rollup_minute", a, b))

    d0, d1 = _ceil(since, schema.DAY), _floor(until, schema.DAY)
    if d0 < d1:
        hours_and_minutes(since, d0)
        out.append(("rollup_day", d0, d1))
        hours_and_minutes(d1, until)
    else:
        hours_and_minutes(since, until)
    return [p for p in out if p[1] < p[2]]
