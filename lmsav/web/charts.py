"""Charts drawn on the server as SVG, with no script: bars of counts per hour (or any bucket)
for one or more series, each bar with a tooltip (its ``<title>``), the largest value on the
axis, a label every few buckets and a legend. Every text is escaped; the markup is a string
for the page to insert as it is."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from html import escape

# Series colours, in order: the console's accent, then its "bad" red, then an amber.
COLOURS = ("#1f5fa8", "#b3261e", "#9a6700", "#1a7f37")
WIDTH, HEIGHT = 720, 200
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 48, 8, 24, 28
MAX_LABELS = 12


def hour_label(bucket: float) -> str:
    """The start of an hour in the server's zone, as ``14:00``."""
    return time.strftime("%H:%M", time.localtime(bucket))


def _nice_max(value: float) -> int:
    """The axis' top: the value rounded up to 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return int(step * power) if step * power >= 1 else 1
    return int(10 * power)


def _number(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0


def bar_chart(rows: Sequence[dict], series: Sequence[tuple[str, str]], *, title: str,
              time_key: str = "time", label: Callable[[float], str] = hour_label,
              width: int = WIDTH, height: int = HEIGHT, element_id: str = "") -> str:
    """SVG bars of ``rows`` (one dict a bucket, oldest first): for each (key, name) of
    ``series``, a bar of ``row[key]`` in each bucket, side by side."""
    plot_w = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - MARGIN_BOTTOM
    top = _nice_max(max((_number(row.get(key)) for row in rows for key, _n in series),
                        default=0))
    slot = plot_w / max(len(rows), 1)
    bar = max(slot * 0.8 / max(len(series), 1), 0.5)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
           f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet"'
           + (f' id="{escape(element_id)}"' if element_id else "")
           + f' aria-label="{escape(title)}">',
           f"<title>{escape(title)}</title>",
           # The axes and the largest value.
           (f'<line x1="{MARGIN_LEFT}" y1="{MARGIN_TOP}" x2="{MARGIN_LEFT}" '
           f'y2="{MARGIN_TOP + plot_h}" stroke="#d7dce2"/>'),
           (f'<line x1="{MARGIN_LEFT}" y1="{MARGIN_TOP + plot_h}" x2="{MARGIN_LEFT + plot_w}" '
           f'y2="{MARGIN_TOP + plot_h}" stroke="#d7dce2"/>'),
           (f'<text x="{MARGIN_LEFT - 4}" y="{MARGIN_TOP + 4}" text-anchor="end" '
           f'font-size="11" fill="#5b6470">{top}</text>'),
           (f'<text x="{MARGIN_LEFT - 4}" y="{MARGIN_TOP + plot_h}" text-anchor="end" '
           f'font-size="11" fill="#5b6470">0</text>')]
    every = max(1, math.ceil(len(rows) / MAX_LABELS))
    for i, row in enumerate(rows):
        x0 = MARGIN_LEFT + i * slot + slot * 0.1
        try:
            when = label(float(row.get(time_key)))
        except (TypeError, ValueError, OverflowError, OSError):
            when = str(row.get(time_key, ""))
        for s, (key, name) in enumerate(series):
            value = _number(row.get(key))
            h = plot_h * value / top
            x = x0 + s * bar
            out.append(f'<rect x="{x:.1f}" y="{MARGIN_TOP + plot_h - h:.1f}" '
                       f'width="{bar:.1f}" height="{h:.1f}" fill="{COLOURS[s % len(COLOURS)]}">'
                       f"<title>{escape(when)} {escape(name)}: {value:g}</title></rect>")
        if i % every == 0:
            out.append(f'<text x="{x0 + slot * 0.4:.1f}" y="{height - MARGIN_BOTTOM + 14}" '
                       f'text-anchor="middle" font-size="11" fill="#5b6470">'
                       f"{escape(when)}</text>")
    # The legend, along the top.
    x = MARGIN_LEFT
    for s, (_key, name) in enumerate(series):
        out.append(f'<rect x="{x}" y="6" width="10" height="10" '
                   f'fill="{COLOURS[s % len(COLOURS)]}"/>')
        out.append(f'<text x="{x + 14}" y="15" font-size="11" fill="#1d232a">'
                   f"{escape(name)}</text>")
        x += 24 + 7 * len(name)
    if not rows:
        out.append(f'<text x="{MARGIN_LEFT + plot_w / 2:.0f}" y="{MARGIN_TOP + plot_h / 2:.0f}" '
                   f'text-anchor="middle" font-size="12" fill="#5b6470">no data</text>')
    out.append("</svg>")
    return "".join(out)


def threats_per_row(rows: Sequence[dict]) -> list[dict]:
    """The rows of ``queries.series`` with ``threats``: the messages found infected or
    suspicious in each bucket."""
    return [{**row, "threats": _number(row.get("infected")) + _number(row.get("suspicious"))}
            for row in rows]
