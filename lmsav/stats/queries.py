"""What ``lmsav stats`` and ``lmsav stats messages`` ask the store: totals and breakdowns from
the roll-ups, scan time percentiles and per-message records from the message rows. The same
statements serve SQLite and PostgreSQL (``?`` placeholders, no dialect functions)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable
from typing import NamedTuple

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


_RECORD_COLUMNS = ("id", *schema.MESSAGE_COLUMNS)
# Messages an interactive search looks at for one page before it stops and says so: a
# search that the indexes cannot answer reads this many rows, not the whole table.
SEARCH_BUDGET = 50000
# Messages given their search keys before a search (``Store.search``): the few recorded since
# the last one, or a part of a store that has none yet.
KEYS_PER_SEARCH = 1000


class Page(NamedTuple):
    """One page of a search, newest first. ``next`` is where the next page starts (the
    (time, id) of the last message looked at), None when nothing is left; ``cut_short`` when
    the search stopped at its budget of messages looked at before the page was full: the
    messages older than ``next`` were not searched yet."""

    records: list[dict]
    next: tuple[float, int] | None
    cut_short: bool


def _address_key(side: str, pattern: str) -> str | None:
    """The search key of a whole address or of ``*@domain``; None for any other pattern."""
    if "*" not in pattern and "?" not in pattern:
        return f"{side}:{pattern.lower()}"
    domain = pattern[2:]
    if pattern.startswith("*@") and domain and not any(c in domain for c in "*?@"):
        return f"{side}@{domain.lower()}"
    return None


Position = tuple[float, int]  # (time, id) of a message in the order of a search


class _Plan:
    """One index read (its rows' time and id columns, its own conditions) and the
    conditions checked on what it yields."""

    sort = ""  # "+": sort what the conditions found rather than read the time index

    def __init__(self, source: str, at: str, id_: str, index_only: str):
        self.source, self.at, self.id, self.index_only = source, at, id_, index_only
        self.served: list[str] = []
        self.served_params: list = []
        self.checked: list[str] = []
        self.checked_params: list = []

    def serve(self, condition: str, *params) -> None:
        self.served.append(condition)
        self.served_params.extend(params)

    def check(self, condition: str, *params) -> None:
        self.checked.append(condition)
        self.checked_params.extend(params)

    def span(self, since: float | None, until: float | None) -> None:
        if since is not None:
            self.serve(f"{self.at} >= ?", since)
        if until is not None:
            self.serve(f"{self.at} < ?", until)

    def _range(self, after: Position | None, to: Position | None) -> tuple[list[str], list]:
        """Conditions for the rows older than ``after``, down to ``to`` included."""
        at, id_ = self.at, self.id
        conditions, params = [], []
        if after is not None:
            conditions.append(f"{at} <= ? AND ({at} < ? OR {id_} < ?)")
            params += [after[0], after[0], after[1]]
        if to is not None:
            conditions.append(f"{at} >= ? AND ({at} > ? OR {id_} >= ?)")
            params += [to[0], to[0], to[1]]
        return conditions, params

    @property
    def order(self) -> str:
        return f" ORDER BY {self.sort}{self.at} DESC, {self.sort}{self.id} DESC"

    def boundary(self, fetch: Fetch, after: Position | None, count: int) -> Position | None:
        """The ``count``-th row older than ``after``, found in the index alone; None when
        there are fewer."""
        conditions, params = self._range(after, None)
        found = fetch(self.index_only + _where([*self.served, *conditions]) + self.order
                      + " LIMIT 1 OFFSET ?", (*self.served_params, *params, count - 1))
        return (float(found[0][0]), int(found[0][1])) if found else None

    def records(self, fetch: Fetch, limit: int, after: Position | None,
                to: Position | None) -> list[tuple]:
        """Up to ``limit`` matching rows older than ``after``, down to ``to`` included."""
        conditions, params = self._range(after, to)
        sql = ("SELECT " + ", ".join(f"m.{c}" for c in _RECORD_COLUMNS)
               + f" FROM {self.source}" + _where([*self.served, *conditions, *self.checked])
               + self.order + " LIMIT ?")
        return fetch(sql, (*self.served_params, *params, *self.checked_params, limit))


def _where(conditions: list[str]) -> str:
    return " WHERE " + " AND ".join(conditions) if conditions else ""


def _scan_plan(status: str | None, threat: str | None) -> _Plan:
    plan = _Plan("messages m", "m.time", "m.id", "SELECT m.time, m.id FROM messages m")
    if status is not None and status != "clean":
        plan.serve(f"m.status = ? AND m.{schema.FLAGGED}", status)
    elif threat is not None:
        plan.serve(f"m.{schema.THREATS}")
    return plan


# The first stretch of an index a page reads; each next one is this many times longer. Each
# stretch is read between two known positions: a planner that misjudges how many rows the
# filters keep (PostgreSQL with LIKE) still reads no more than the stretch.
FIRST_STRETCH, STRETCH_GROWTH = 200, 4


def _read(plan: _Plan, fetch: Fetch, limit: int, before: Position | None,
          budget: int | None) -> tuple[list[tuple], Position | None, bool]:
    """(up to ``limit`` + 1 rows, where the reading stopped, whether the budget stopped
    it): the index read stretch by stretch from ``before`` on."""
    found: list[tuple] = []
    after, read, stretch = before, 0, max(FIRST_STRETCH, 4 * limit)
    while True:
        size = stretch if budget is None else min(stretch, budget - read)
        to = plan.boundary(fetch, after, size)
        found += plan.records(fetch, limit + 1 - len(found), after, to)
        if len(found) > limit or to is None:
            return found, None, False
        read, after, stretch = read + size, to, stretch * STRETCH_GROWTH
        if budget is not None and read >= budget:
            return found, to, True


def search(fetch: Fetch, *, since: float | None = None, until: float | None = None,
           sender: str | None = None, rcpt: str | None = None, status: str | None = None,
           threat: str | None = None, before: Position | None = None,
           limit: int = 50, budget: int | None = None) -> Page:
    """Per-message records matching every filter given, newest first, older than ``before``.

    A whole address or ``*@domain`` is looked up in the search keys (the messages that have
    none yet, normally the last few, are read directly); else the messages of a status other
    than clean, or with threats, are read along their own index, else every message, newest
    first, each checked against the filters. ``budget``: at most that many index entries are
    read (None: no bound)."""
    # Every filter as a condition on the message itself.
    conditions: list[tuple[str, tuple]] = []
    keys = []
    for side, pattern, column, like in (("from", sender, "LOWER(m.sender)", _like),
                                        ("to", rcpt, "LOWER(m.recipients)", _in_list)):
        if pattern is None:
            continue
        key = _address_key(side, pattern)
        condition = (f"{column} LIKE ? ESCAPE '!'", (like(pattern),))
        if key is not None:
            keys.append((key, condition))
        else:
            conditions.append(condition)
    if status is not None:
        conditions.append(("m.status = ?", (status,)))
    if threat is not None:
        conditions.append(("LOWER(m.threats) LIKE ? ESCAPE '!'", (_in_list(threat),)))

    upto = None
    if keys:
        [(upto, top)] = fetch(schema.KEYS_STATE, ())
        upto, top = int(upto or 0), int(top or 0)
        if top - upto > (budget or SEARCH_BUDGET):
            upto = None  # too many messages without keys: every one is read instead
    if upto is None:
        plan = _scan_plan(status, threat)
        for condition, params in [*(c for _k, c in keys), *conditions]:
            plan.check(condition, *params)
        plan.span(since, until)
        found, stopped, cut = _read(plan, fetch, limit, before, budget)
    else:
        # The exact address first: fewer messages than any domain.
        keys.sort(key=lambda k: (":" not in k[0], k[0]))
        plan = _Plan("message_keys c JOIN messages m ON m.id = c.message", "c.time",
                     "c.message", "SELECT c.time, c.message FROM message_keys c")
        plan.serve("c.key = ? AND c.message <= ?", keys[0][0], upto)
        for key, _condition in keys[1:]:
            plan.check("EXISTS (SELECT 1 FROM message_keys k WHERE k.message = m.id "
                       "AND k.key = ?)", key)
        for condition, params in conditions:
            plan.check(condition, *params)
        plan.span(since, until)
        found, stopped, cut = _read(plan, fetch, limit, before, budget)
        # And the messages without keys yet, down to where the reading stopped.
        recent = _scan_plan(None, None)
        recent.serve("m.id > ?", upto)
        recent.sort = "+"  # the few messages above ``upto``, not every one by time
        for condition, params in [*(c for _k, c in keys), *conditions]:
            recent.check(condition, *params)
        recent.span(since, until)
        found = sorted([*found, *recent.records(fetch, limit + 1, before, stopped)],
                       key=lambda row: (row[1], row[0]), reverse=True)[:limit + 1]
    records = [_record(row) for row in found[:limit]]
    if len(found) > limit:
        last = records[-1]
        return Page(records, (last["time"], last["id"]), False)
    # The budget ran out before the page was full (``stopped``); whether anything lies
    # beyond it is for the next page to find out.
    return Page(records, stopped, cut)


def _record(row: tuple) -> dict:
    (id_, t, node, queue_id, message_id, sender, recipients, groups, status, action, outcomes,
     threats, size, scan_ms) = row
    return {"id": int(id_), "time": float(t), "node": node, "queue_id": queue_id,
            "message_id": message_id, "sender": sender, "recipients": json.loads(recipients),
            "groups": json.loads(groups), "status": status, "action": action,
            "outcomes": json.loads(outcomes), "threats": json.loads(threats),
            "size": int(size), "scan_ms": round(float(scan_ms), 1)}


def message(fetch: Fetch, id_: int) -> dict | None:
    """One message's record by its id, None when there is none (any more)."""
    found = fetch("SELECT " + ", ".join(_RECORD_COLUMNS) + " FROM messages WHERE id = ?",
                  (id_,))
    return _record(found[0]) if found else None


def messages(fetch: Fetch, *, limit: int = 50, **filters) -> list[dict]:
    """Per-message records, newest first (every message looked at: no budget)."""
    records = search(fetch, limit=limit, **filters).records
    for record in records:
        del record["id"]
    return records
