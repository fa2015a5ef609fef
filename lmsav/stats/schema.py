"""The store's tables, the same for SQLite and PostgreSQL but for the row id, and their version.

``meta`` holds ``schema_version``: a store written by a newer lmsav is left alone, an older
one is brought up to date by ``MIGRATIONS`` (version → statements reaching the next one).
"""

from __future__ import annotations

VERSION = 1

MINUTE, HOUR, DAY = 60, 3600, 86400
# Roll-up table → (bucket width, seconds kept; None: forever).
ROLLUPS = {"rollup_minute": (MINUTE, 2 * DAY), "rollup_hour": (HOUR, 90 * DAY),
           "rollup_day": (DAY, None)}
# Per-message and per-event rows are kept as long as the hourly roll-ups.
DETAIL_KEPT = 90 * DAY
PRUNE_INTERVAL = 60.0

MESSAGE_COLUMNS = ("time", "node", "queue_id", "message_id", "sender", "recipients", "groups",
                   "status", "action", "outcomes", "threats", "size", "scan_ms")
EVENT_COLUMNS = ("time", "node", "kind", "status", "files", "threats", "size", "duration_ms",
                 "detail")


def tables(row_id: str) -> list[str]:
    """CREATE statements; ``row_id`` is the dialect's auto-numbered primary key."""
    statements = [
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS messages (
            id {row_id}, time DOUBLE PRECISION NOT NULL, node TEXT NOT NULL,
            queue_id TEXT NOT NULL, message_id TEXT NOT NULL, sender TEXT NOT NULL,
            recipients TEXT NOT NULL, groups TEXT NOT NULL, status TEXT NOT NULL,
            action TEXT NOT NULL, outcomes TEXT NOT NULL, threats TEXT NOT NULL,
            size BIGINT NOT NULL, scan_ms DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS messages_time ON messages (time)",
        f"""CREATE TABLE IF NOT EXISTS events (
            id {row_id}, time DOUBLE PRECISION NOT NULL, node TEXT NOT NULL,
            kind TEXT NOT NULL, status TEXT NOT NULL, files BIGINT NOT NULL,
            threats TEXT NOT NULL, size BIGINT NOT NULL, duration_ms DOUBLE PRECISION NOT NULL,
            detail TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS events_time ON events (time)",
    ]
    for name in ROLLUPS:
        statements.append(
            f"""CREATE TABLE IF NOT EXISTS {name} (
                bucket BIGINT NOT NULL, node TEXT NOT NULL, metric TEXT NOT NULL,
                label TEXT NOT NULL, value BIGINT NOT NULL,
                PRIMARY KEY (bucket, node, metric, label))""")
    return statements


# Statements taking a store from version N to N + 1 (none yet: version 1 is the first).
MIGRATIONS: dict[int, list[str]] = {}


def insert(table: str, columns: tuple[str, ...], rows: int = 1) -> str:
    """One INSERT of ``rows`` rows (one VALUES group each)."""
    values = f"({', '.join('?' for _ in columns)})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([values] * rows)}"


def upsert(table: str, rows: int = 1) -> str:
    """Add ``rows`` (bucket, node, metric, label, value) to a roll-up table; each key at most
    once per statement (PostgreSQL refuses to update a row twice in one)."""
    values = ", ".join(["(?, ?, ?, ?, ?)"] * rows)
    return (f"INSERT INTO {table} (bucket, node, metric, label, value) VALUES {values} "
            f"ON CONFLICT (bucket, node, metric, label) "
            f"DO UPDATE SET value = {table}.value + excluded.value")
