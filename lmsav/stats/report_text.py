"""A report as plain text: its title, then the tables of ``lmsav stats`` (UTC)."""

from __future__ import annotations

from .render import summary_lines, table
from .report import title
from .timespec import iso


def no_traffic_line(data: dict) -> str:
    return (f"No mail traffic: no message was recorded from {iso(data['since'], 60)} to "
            f"{iso(data['until'], 60)} UTC ({data['store']}).")


def report_text(data: dict) -> str:
    lines = [title(data), ""]
    if data["totals"]["messages"]:
        lines += summary_lines(data, data["store"])
    else:
        lines.append(no_traffic_line(data))
        if data["events"]:
            lines += ["", *table(("EVENT", "COUNT"), list(data["events"].items()), {1})]
    return "\n".join(lines) + "\n"
