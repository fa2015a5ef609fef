"""The store's tables, the same for SQLite and PostgreSQL but for the row id, and their version.

``meta`` holds ``schema_version``: a store written by a newer lmsav is left alone, an older
one is brought up to date by ``MIGRATIONS`` (version → statements reaching the next one).

Searching the per-message records must not read the whole table for a rare match, so
messages also have search keys in ``message_keys`` (see ``message_keys``): the sender and
recipients, each as a whole address and as a domain, lower case. They are added by readers
(``SqlBackend.index_keys``), not by the writers of mail, to the messages above
``meta.keys_upto``; a search reads the messages above it directly. Messages that are not clean
and messages with threats have partial indexes of their own (a few per cent of the rows).
"""

from __future__ import annotations

VERSION = 2

MINUTE, HOUR, DAY = 60, 3600, 86400
# Roll-up table → (bucket width, seconds kept; None: forever).
ROLLUPS = {"rollup_minute": (MINUTE, 2 * DAY), "rollup_hour": (HOUR, 90 * DAY),
           "rollup_day": (DAY, None)}
# Per-message and per-event rows are kept as long as the hourly roll-ups.
DETAIL_KEPT = 90 * DAY
PRUNE_INTERVAL = 60.0

MESSAGE_COLUMNS = ("time", "node", "queue_id", "message_id", "sender", "recipients", "groups",
                   "status", "action", "outcomes", "threats", "size", "scan_ms")
KEY_COLUMNS = ("message", "key", "time")
EVENT_COLUMNS = ("time", "node", "kind", "status", "files", "threats", "size", "duration_ms",
                 "detail")


def tables(row_id: str, keyed_table: str = "") -> list[str]:
    """CREATE statements; ``row_id`` is the dialect's auto-numbered primary key,
    ``keyed_table`` what follows a table stored in its primary key's order (SQLite's
    ``WITHOUT ROWID``)."""
    statements = [
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS messages (
            id {row_id}, time DOUBLE PRECISION NOT NULL, node TEXT NOT NULL,
            queue_id TEXT NOT NULL, message_id TEXT NOT NULL, sender TEXT NOT NULL,
            recipients TEXT NOT NULL, groups TEXT NOT NULL, status TEXT NOT NULL,
            action TEXT NOT NULL, outcomes TEXT NOT NULL, threats TEXT NOT NULL,
            size BIGINT NOT NULL, scan_ms DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS messages_time ON messages (time)",
        *search_tables(keyed_table),
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


def search_tables(keyed_table: str = "") -> list[str]:
    """What per-message search reads (version 2): the keys, the partial indexes."""
    return [
        f"""CREATE TABLE IF NOT EXISTS message_keys (
            message BIGINT NOT NULL, key TEXT NOT NULL, time DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (message, key)){keyed_table}""",
        "CREATE INDEX IF NOT EXISTS message_keys_key ON message_keys (key, time, message)",
        # The condition is repeated word for word in the queries: SQLite uses a partial
        # index only for a WHERE that contains it.
        (f"CREATE INDEX IF NOT EXISTS messages_flagged ON messages (status, time, id) "
         f"WHERE {FLAGGED}"),
        f"CREATE INDEX IF NOT EXISTS messages_threats ON messages (time, id) WHERE {THREATS}",
    ]


FLAGGED = "status <> 'clean'"
THREATS = "threats <> '[]'"

# The highest message id below which every message has its search keys.
KEYS_UPTO = "keys_upto"
KEYS_STATE = ("SELECT (SELECT value FROM meta WHERE key = 'keys_upto'), "
              "(SELECT MAX(id) FROM messages)")

# Statements taking a store from version N to N + 1 (the new tables and indexes are made by
# ``tables``; the messages already stored get their keys as the new ones do).
MIGRATIONS: dict[int, list[str]] = {
    1: [f"INSERT INTO meta (key, value) VALUES ('{KEYS_UPTO}', '0')"],
}


def message_keys(sender: str, recipients: list[str]) -> set[str]:
    """A message's search keys: ``from:ADDR``, ``from@DOMAIN``, ``to:ADDR``, ``to@DOMAIN``."""
    keys = {"from:" + sender.lower()}
    if "@" in sender:
        keys.add("from@" + sender.rpartition("@")[2].lower())
    for rcpt in recipients:
        keys.add("to:" + rcpt.lower())
        if "@" in rcpt:
            keys.add("to@" + rcpt.rpartition("@")[2].lower())
    return keys


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
