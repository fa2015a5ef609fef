"""What the SQLite and PostgreSQL stores share: one batch of rows written in one transaction
(rows, roll-ups, pruning at most once a minute), and reads. A dialect connects, runs
statements and tells what kind of failure it met."""

from __future__ import annotations

from collections import defaultdict

from . import schema
from .events import EventRow, MessageRow, counters


class StoreUnavailable(Exception):
    """The store cannot be written or read now (locked, down, unwritable, damaged)."""


class SchemaTooNew(StoreUnavailable):
    """The store was written by a newer lmsav: left alone."""


def rollup_rows(rows: list[MessageRow | EventRow]) -> list[tuple[str, tuple]]:
    """(upsert statement, parameters) adding up every row's counters, in one order every
    writer follows, so that concurrent writers lock roll-up rows in the same order."""
    sums: dict[tuple, int] = defaultdict(int)
    for row in rows:
        for metric, label, value in counters(row):
            for table, (width, _kept) in schema.ROLLUPS.items():
                sums[(table, int(row.time // width * width), row.node, metric, label)] += value
    return [(_UPSERTS[key[0]], key[1:] + (value,)) for key, value in sorted(sums.items())]


_UPSERTS = {table: schema.upsert(table) for table in schema.ROLLUPS}
_INSERT_MESSAGE = schema.insert("messages", schema.MESSAGE_COLUMNS)
_INSERT_EVENT = schema.insert("events", schema.EVENT_COLUMNS)


class SqlBackend:
    """A store reached with SQL; subclasses provide the connection and the dialect."""

    description = ""
    row_id = ""

    def __init__(self):
        self._last_prune = float("-inf")

    # -- what a dialect provides ----------------------------------------------------------------
    def _connection(self):
        raise NotImplementedError

    def _execute(self, sql: str, params: tuple = ()):
        raise NotImplementedError

    def _executemany(self, sql: str, params: list[tuple]):
        raise NotImplementedError

    def _begin(self):
        raise NotImplementedError

    def _commit(self):
        raise NotImplementedError

    def _rollback(self):
        raise NotImplementedError

    def close(self):
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Create the tables or bring them up to date (inside the caller's transaction)."""
        for statement in schema.tables(self.row_id):
            self._execute(statement)
        found = self._execute("SELECT value FROM meta WHERE key = ?",
                              ("schema_version",)).fetchone()
        if found is None:
            self._execute("INSERT INTO meta (key, value) VALUES (?, ?)",
                          ("schema_version", str(schema.VERSION)))
            return
        version = int(found[0])
        if version > schema.VERSION:
            raise SchemaTooNew(f"schema version {version} is newer than this lmsav's "
                               f"({schema.VERSION})")
        while version < schema.VERSION:
            for statement in schema.MIGRATIONS[version]:
                self._execute(statement)
            version += 1
        self._execute("UPDATE meta SET value = ? WHERE key = ?", (str(version), "schema_version"))

    def write(self, rows: list[MessageRow | EventRow], now: float) -> None:
        """Every row, its roll-ups and, when due, pruning: all or nothing."""
        self._connection()
        self._begin()
        try:
            # Field order is column order (events.MessageRow, events.EventRow).
            messages = [tuple(vars(r).values()) for r in rows if isinstance(r, MessageRow)]
            events = [tuple(vars(r).values()) for r in rows if isinstance(r, EventRow)]
            if messages:
                self._executemany(_INSERT_MESSAGE, messages)
            if events:
                self._executemany(_INSERT_EVENT, events)
            by_statement: dict[str, list[tuple]] = defaultdict(list)
            for statement, params in rollup_rows(rows):
                by_statement[statement].append(params)
            for statement, params in by_statement.items():
                self._executemany(statement, params)
            pruned = now - self._last_prune >= schema.PRUNE_INTERVAL
            if pruned:
                self._prune(now)
            self._commit()
        except BaseException:
            self._rollback()
            raise
        if pruned:
            self._last_prune = now

    def _prune(self, now: float) -> None:
        for table, (_width, kept) in schema.ROLLUPS.items():
            if kept is not None:
                self._execute(f"DELETE FROM {table} WHERE bucket < ?", (int(now - kept),))
        for table in ("messages", "events"):
            self._execute(f"DELETE FROM {table} WHERE time < ?", (now - schema.DETAIL_KEPT,))

    def fetchall(self, sql: str, params: tuple = ()) -> list[tuple]:
        raise NotImplementedError
