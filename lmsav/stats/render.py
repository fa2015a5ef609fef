"""``lmsav stats`` as an administrator reads it: labelled totals and aligned tables, UTC."""

from __future__ import annotations

from .queries import SERIES_COLUMNS
from .timespec import iso

STATUS_COLUMNS = ("infected", "suspicious", "protected", "corrupted", "error", "filtered")
_HEADINGS = {"error": "errors"}


def table(header: tuple[str, ...], rows: list[tuple], right: set[int] = frozenset()) -> list[str]:
    """Columns aligned: text to the left, the columns in ``right`` (numbers) to the right."""
    cells = [tuple(header)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                      for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in cells]


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _ms(value) -> str:
    return "-" if value is None else f"{value:g} ms"


def summary_lines(data: dict, store: str) -> list[str]:
    totals = data["totals"]
    title = (f"Statistics from {iso(data['since'], 60)} to {iso(data['until'], 60)} UTC "
             f"({store})")
    lines = [title, ""]
    rows = [("Messages", totals["messages"])]
    rows += [(f"  {name}", totals[name]) for name in
             ("infected", "suspicious", "protected", "corrupted", "errors", "filtered")]
    rows += [("Bytes", f"{totals['bytes']} ({human_bytes(totals['bytes'])})"),
             ("Scan time", f"p50 {_ms(data['scan_ms']['p50'])}, p99 {_ms(data['scan_ms']['p99'])}"),
             ("Files scanned", totals["files_scanned"])]
    width = max(len(label) for label, _ in rows)
    lines += [f"{label.ljust(width)}  {value}" for label, value in rows]
    if data["by_group"]:
        lines += ["", *table(
            ("GROUP", "MESSAGES", *(_HEADINGS.get(s, s).upper() for s in STATUS_COLUMNS),
             "ACTIONS"),
            [(group, g["messages"], *(g["statuses"].get(s, 0) for s in STATUS_COLUMNS),
              ", ".join(f"{a} {n}" for a, n in sorted(g["actions"].items(),
                                                      key=lambda kv: (-kv[1], kv[0]))))
             for group, g in sorted(data["by_group"].items())],
            right=set(range(1, 2 + len(STATUS_COLUMNS))))]
    if data["by_action"]:
        lines += ["", *table(("ACTION", "MESSAGES"), list(data["by_action"].items()), {1})]
    if data["top_threats"]:
        lines += ["", *table(("TOP THREATS", "FOUND IN"),
                             [(t["threat"], t["count"]) for t in data["top_threats"]], {1})]
    if data["top_infected_senders"]:
        lines += ["", *table(("TOP SENDERS OF INFECTED MAIL", "MESSAGES"),
                             [(t["sender"], t["count"]) for t in data["top_infected_senders"]],
                             {1})]
    if data["events"]:
        lines += ["", *table(("EVENT", "COUNT"), list(data["events"].items()), {1})]
    if "series" in data:
        width = 86400 if data.get("by") == "day" else 3600
        lines += ["", *table(
            ("TIME (UTC)", *(c.upper() for c in SERIES_COLUMNS)),
            [(iso(r["time"], width), *(r[c] for c in SERIES_COLUMNS)) for r in data["series"]],
            right=set(range(1, 1 + len(SERIES_COLUMNS))))]
    return lines


def messages_lines(records: list[dict]) -> list[str]:
    """The header and one line per message (the header alone for none)."""
    return table(
        ("DATE (UTC)", "STATUS", "ACTION", "SIZE", "SCAN MS", "SENDER", "RECIPIENTS", "THREATS"),
        [(iso(r["time"]), r["status"], r["action"] or "-", r["size"], f"{r['scan_ms']:g}",
          r["sender"] or "<>", ", ".join(r["recipients"]) or "-",
          ", ".join(r["threats"]) or "-") for r in records],
        right={3, 4})
