"""A report as one HTML page: the numbers of the text form in tables, and the chart as an
image whose source the caller gives (a ``data:`` URI in a file, a ``cid:`` in a mail)."""

from __future__ import annotations

from html import escape

from .queries import SERIES_COLUMNS
from .render import STATUS_COLUMNS, human_bytes
from .report import threats_in, title
from .report_text import no_traffic_line
from .timespec import iso

_STYLE = ("body{font-family:sans-serif;color:#222;max-width:60em}"
          "table{border-collapse:collapse;margin:0 0 1.2em}"
          "th,td{border:1px solid #ccc;padding:.2em .6em}th{background:#eee;text-align:left}"
          "td.n{text-align:right}")


def _table(header: tuple[str, ...], rows: list[tuple], numbers: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{escape(str(c))}</td>' if i in numbers
                         else f"<td>{escape(str(c))}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _ms(value) -> str:
    return "-" if value is None else f"{value:g} ms"


def _totals(data: dict) -> str:
    totals = data["totals"]
    rows = [("Messages", totals["messages"])]
    rows += [(name, totals[name]) for name in
             ("infected", "suspicious", "protected", "corrupted", "errors", "filtered")]
    rows += [("Bytes", f"{totals['bytes']} ({human_bytes(totals['bytes'])})"),
             ("Scan time p50", _ms(data["scan_ms"]["p50"])),
             ("Scan time p99", _ms(data["scan_ms"]["p99"])),
             ("Files scanned", totals["files_scanned"])]
    return _table(("Totals", ""), rows, {1})


def _sections(data: dict) -> list[str]:
    out = []
    if data["by_group"]:
        out += ["<h2>Recipient groups</h2>", _table(
            ("Group", "Messages", *(s.capitalize() for s in STATUS_COLUMNS), "Actions"),
            [(group, g["messages"], *(g["statuses"].get(s, 0) for s in STATUS_COLUMNS),
              ", ".join(f"{a} {n}" for a, n in sorted(g["actions"].items(),
                                                      key=lambda kv: (-kv[1], kv[0]))))
             for group, g in sorted(data["by_group"].items())],
            set(range(1, 2 + len(STATUS_COLUMNS))))]
    if data["by_action"]:
        out += ["<h2>Actions</h2>",
                _table(("Action", "Messages"), list(data["by_action"].items()), {1})]
    if data["top_threats"]:
        out += ["<h2>Top threats</h2>", _table(
            ("Threat", "Found in"), [(t["threat"], t["count"]) for t in data["top_threats"]],
            {1})]
    if data["top_infected_senders"]:
        out += ["<h2>Top senders of infected mail</h2>", _table(
            ("Sender", "Messages"),
            [(t["sender"], t["count"]) for t in data["top_infected_senders"]], {1})]
    if data["events"]:
        out += ["<h2>Other events</h2>",
                _table(("Event", "Count"), list(data["events"].items()), {1})]
    width = 86400 if data["by"] == "day" else 3600
    out += [f"<h2>Per {data['by']}</h2>", _table(
        ("Time (UTC)", *(c.capitalize() for c in SERIES_COLUMNS), "With threats"),
        [(iso(r["time"], width), *(r[c] for c in SERIES_COLUMNS), threats_in(r))
         for r in data["series"]], set(range(1, 2 + len(SERIES_COLUMNS))))]
    return out


def report_html(data: dict, chart_src: str | None) -> str:
    """The page; ``chart_src`` is where the chart's image is, None for no chart."""
    heading = escape(title(data))
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{heading}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{heading}</h1>",
             (f"<p>From {iso(data['since'], 60)} to {iso(data['until'], 60)} UTC, every node "
              f"of the store {escape(data['store'])}.</p>")]
    if not data["totals"]["messages"]:
        parts.append(f"<p><strong>{escape(no_traffic_line(data))}</strong></p>")
        if data["events"]:
            parts += ["<h2>Events</h2>",
                      _table(("Event", "Count"), list(data["events"].items()), {1})]
    else:
        parts.append(_totals(data))
        if chart_src is not None:
            step = "hour" if data["by"] == "hour" else "day"
            parts.append(f'<p><img src="{escape(chart_src)}" width="800" height="300" '
                         f'alt="Messages and messages with threats per {step}"></p>')
        parts += _sections(data)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
