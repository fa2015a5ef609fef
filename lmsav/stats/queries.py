"""What ``lmsav stats`` and ``lmsav stats messages`` ask the store: totals and breakdowns from
the roll-ups, scan time percentiles and per-message records from the message rows. The same
statements serve SQLite and PostgreSQL (``?`` placeholders, no dialect functions)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable

from . import schema
from .events import STATUSES
from .spans import _ceil, _floor, pieces, widen

Fetch = Callable[[str, tuple], list[tuple]]

# Totals every reader gets (``Store.totals``), the message statuses by their report name.
TOTAL_STATUSES = {"infected": "infected", "suspicious": "suspicious", "protected": "protected",
                  "corrupted": "corrupted", "errors": "error", "filtered": "filtered"}
TOP = 10


def counters(fetch: Fetch, since: float, until: float, now: float) -> dict[tuple[str, str], int]:
    """Every (metric, label) summed over [since, until), widened to whole buckets."""
    lo, hi = widen(since, until, now)
    sums: dict[tuple[str, str], int] = defaultdict(int)
    for table, a, b in pieces(lo, hi):
        for metric, label, value in fetch(
                f"SELECT metric, label, SUM(value) FROM {table} "
                "WHERE bucket >= ? AND bucket < ? GROUP BY metric, label", (a, b)):
            sums[(metric, label)] += int(value)
    return sums


def totals_of(sums: dict[tuple[str, str], int]) -> dict[str, int]:
    out = {"messages": sums[("messages", "")]}
    out.update({name: sums[("status", status)] for name, status in TOTAL_STATUSES.items()})
    out["bytes"] = sums[("bytes", "")]
    out["files_scanned"] = sums[("files_scanned", "")]
    return out


def _split(label: str) -> tuple[str, str]:
    first, _, second = label.partition("\t")
    return first, second


def summary(fetch: Fetch, since: float, until: float, now: float, by: str | None = None) -> dict:
    sums = counters(fetch, since, until, now)
    lo, hi = widen(since, until, now)
    statuses = {s: sums[("status", s)] for s in STATUSES if sums[("status", s)]}
    groups: dict[str, dict] = {}
    actions: dict[str, int] = defaultdict(int)
    for (metric, label), value in sorted(sums.items()):
        if metric == "group_status":
            group, status = _split(label)
            entry = groups.setdefault(group, {"messages": 0, "statuses": {}, "actions": {}})
            entry["messages"] += value
            entry["statuses"][status] = value
        elif metric == "group_action":
            group, action = _split(label)
            entry = groups.setdefault(group, {"messages": 0, "statuses": {}, "actions": {}})
            entry["actions"][action] = value
            actions[action] += value
    out = {
        "since": lo, "until": hi,
        "totals": totals_of(sums),
        "statuses": statuses,
        "by_group": groups,
        "by_action": dict(sorted(actions.items(), key=lambda kv: (-kv[1], kv[0]))),
        "top_threats": _top(sums, "threat", "threat"),
        "top_infected_senders": _top(sums, "infected_sender", "sender"),
        "scan_ms": percentiles(fetch, lo, hi),
        "events": {label: v for (metric, label), v in sorted(sums.items()) if metric == "event"},
    }
    if by:
        out["series"] = series(fetch, lo, hi, by)
    return out


def _top(sums, metric: str, key: str) -> list[dict]:
    found = [(label, v) for (m, label), v in sums.items() if m == metric]
    found.sort(key=lambda kv: (-kv[1], kv[0]))
    return [{key: label, "count": v} for label, v in found[:TOP]]


def percentiles(fetch: Fetch, since: float, until: float) -> dict[str, float | None]:
    """Scan time p50/p99 in ms (nearest rank) over the messages still kept in detail."""
    where = "FROM messages WHERE time >= ? AND time < ?"
    rows = fetch(f"SELECT COUNT(*) {where}", (since, until))
    n = int(rows[0][0]) if rows else 0
    out: dict[str, float | None] = {"p50": None, "p99": None}
    if not n:
        return out
    for name, p in (("p50", 50), ("p99", 99)):
        rank = max(math.ceil(p / 100 * n) - 1, 0)
        [(value,)] = fetch(f"SELECT scan_ms {where} ORDER BY scan_ms LIMIT 1 OFFSET ?",
                           (since, until, rank))
        out[name] = round(float(value), 1)
    return out


SERIES_COLUMNS = ("messages", "clean", "infected", "suspicious", "protected", "corrupted",
                  "errors", "filtered", "bytes")


def series(fetch: Fetch, since: float, until: float, by: str) -> list[dict]:
    """One row per hour or day of [since, until), empty ones included."""
    table, width = {"hour": ("rollup_hour", schema.HOUR), "day": ("rollup_day", schema.DAY)}[by]
    start, end = _floor(since, width), _ceil(until, width)
    rows: dict[int, dict] = {b: dict.fromkeys(SERIES_COLUMNS, 0)
                             for b in range(start, end, width)}
    for bucket, metric, label, value in fetch(
            f"SELECT bucket, metric, label, SUM(value) FROM {table} "
            "WHERE bucket >= ? AND bucket < ? AND metric IN (?, ?, ?) "
            "GROUP BY bucket, metric, label", (start, end, "messages", "status", "bytes")):
        column = metric if metric != "status" else "errors" if label == "error" else label
        if column in SERIES_COLUMNS:
            rows[int(bucket)][column] += int(value)
    return [{"time": b, **rows[b]} for b in sorted(rows)]


# -- per-message records ---------------------------------------------------------------------------

def _like(glob: str) -> str:
    """A shell-like pattern (``*``, ``?``) as a LIKE pattern with ``!`` as its escape."""
    escaped = glob.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return escaped.replace("*", "%").replace("?", "_").lower()


def _in_list(glob: str) -> str:
    """A LIKE pattern matching an element of a JSON array stored as text."""
    element = json.dumps(glob, ensure_ascii=False)[1:-1]
    return "%" + _like(f'"{element}"') + "%"


def messages(fetch: Fetch, *, since: float | None = None, until: float | None = None,
             sender: str | None = None, rcpt: str | None = None, status: str | None = None,
             threat: str | None = None, limit: int = 50) -> list[dict]:
    """Per-message records, newest first."""
    where, params = [], []
    if since is not None:
        where.append("time >= ?")
        params.append(since)
    if until is not None:
        where.append("time < ?")
        params.append(until)
    if sender is not None:
        where.append("LOWER(sender) LIKE ? ESCAPE '!'")
        params.append(_like(sender))
    if rcpt is not None:
        where.append("LOWER(recipients) LIKE ? ESCAPE '!'")
        params.append(_in_list(rcpt))
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if threat is not None:
        where.append("LOWER(threats) LIKE ? ESCAPE '!'")
        params.append(_in_list(threat))
    sql = ("SELECT time, node, queue_id, message_id, sender, recipients, groups, status, "
           "action, outcomes, threats, size, scan_ms FROM messages"
           + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY time DESC, id DESC LIMIT ?")
    out = []
    for (t, node, queue_id, message_id, sender_, recipients, groups, status_, action, outcomes,
         threats, size, scan_ms) in fetch(sql, (*params, limit)):
        out.append({"time": float(t), "node": node, "queue_id": queue_id,
                    "message_id": message_id, "sender": sender_,
                    "recipients": json.loads(recipients), "groups": json.loads(groups),
                    "status": status_, "action": action, "outcomes": json.loads(outcomes),
                    "threats": json.loads(threats), "size": int(size),
                    "scan_ms": round(float(scan_ms), 1)})
    return out
