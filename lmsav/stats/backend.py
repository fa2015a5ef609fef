"""What the SQLite and PostgreSQL stores share: one batch of rows written in one transaction
(rows, roll-ups, pruning at most once a minute), and reads. A dialect connects, runs
statements and tells what kind of failure it met."""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from itertools import chain

from . import schema
from .events import Row


class StoreUnavailable(Exception):
    """The store cannot be written or read now (locked, down, unwritable, damaged)."""


class SchemaTooNew(StoreUnavailable):
    """The store was written by a newer lmsav: left alone."""


def rollup_rows(rows: list[Row]) -> list[tuple[str, tuple]]:
    """(upsert statement, parameters) adding up every row's counters, in one order every
    writer follows, so that concurrent writers lock roll-up rows in the same order."""
    # Added up per minute first: a batch spans a few minutes, so the hours and days are summed
    # from the few minute keys rather than from every row again (most of the batch's cost).
    minutes: dict[tuple, int] = defaultdict(int)
    for _table, (at, node, *_rest), counts in rows:
        minute = int(at // _MINUTE * _MINUTE)
        for metric, label, value in counts:
            minutes[(minute, node, metric, label)] += value
    sums: dict[tuple, int] = {}
    for table, (width, _kept) in schema.ROLLUPS.items():
        for (minute, *rest), value in minutes.items():
            key = (table, minute // width * width, *rest)
            sums[key] = sums.get(key, 0) + value
    return [(_UPSERTS[key[0]], key[1:] + (value,)) for key, value in sorted(sums.items())]


# Every roll-up width is a whole number of minutes (the narrowest table's width).
_MINUTE = min(width for width, _kept in schema.ROLLUPS.values())
assert all(width % _MINUTE == 0 for width, _kept in schema.ROLLUPS.values())
_UPSERTS = {table: schema.upsert(table) for table in schema.ROLLUPS}
_UPSERT_TABLES = {statement: table for table, statement in _UPSERTS.items()}
# Parameters in one statement: SQLite's historic limit (PostgreSQL's is far higher).
_MAX_PARAMS = 999
# Messages given their search keys in one transaction (a few hundred ms at most).
_KEYS_CHUNK = 5000
_COLUMNS = {"messages": schema.MESSAGE_COLUMNS, "events": schema.EVENT_COLUMNS,
            "message_keys": schema.KEY_COLUMNS}


def key_rows(messages: list[tuple]) -> list[tuple]:
    """(message, key, time) of each (id, time, sender, recipients) message, by key: the
    index is written in its own order, each of its pages once."""
    out = []
    for message, at, sender, recipients in messages:
        # Most messages have one recipient whose address needs no escaping in JSON.
        if '","' not in recipients and "\\" not in recipients and len(recipients) > 4:
            addresses = [recipients[2:-2]]
        else:
            addresses = json.loads(recipients)
        out.extend((message, key, at) for key in schema.message_keys(sender, addresses))
    out.sort(key=lambda row: row[1])
    return out


@functools.lru_cache(maxsize=128)
def _statement(table: str, rows: int) -> str:
    """The INSERT (messages, events) or roll-up upsert of ``rows`` rows into ``table``."""
    if table == "message_keys":  # a message's keys given twice are the same keys
        return schema.insert(table, _COLUMNS[table], rows).replace("INSERT", "INSERT OR IGNORE", 1)
    if table in _COLUMNS:
        return schema.insert(table, _COLUMNS[table], rows)
    return schema.upsert(table, rows)


class SqlBackend:
    """A store reached with SQL; subclasses provide the connection and the dialect."""

    description = ""
    row_id = ""
    keyed_table = ""  # what makes a table stored in its primary key's order
    # Ids below the last one given keys that are looked at again: a row that another node's
    # transaction committed after a later id had been given its keys (PostgreSQL).
    late_ids = 0

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
        for statement in schema.tables(self.row_id, self.keyed_table):
            self._execute(statement)
        found = self._execute("SELECT value FROM meta WHERE key = ?",
                              ("schema_version",)).fetchone()
        if found is None:
            self._execute("INSERT INTO meta (key, value) VALUES (?, ?)",
                          ("schema_version", str(schema.VERSION)))
            self._execute("INSERT INTO meta (key, value) VALUES (?, ?)", (schema.KEYS_UPTO, "0"))
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

    def index_keys(self, limit: int | None = None) -> int:
        """Give search keys to up to ``limit`` messages that have none yet (None: every one),
        oldest first, a transaction per ``_KEYS_CHUNK``; the number given. Done by readers,
        not by the writers of mail, whose every message would cost a few random index
        writes."""
        given = 0
        while limit is None or given < limit:
            size = _KEYS_CHUNK if limit is None else min(_KEYS_CHUNK, limit - given)
            done = self._index_keys(size)
            given += done
            if done < size:
                break
        return given

    def _index_keys(self, limit: int) -> int:
        self._connection()
        [(upto, top)] = self._execute(schema.KEYS_STATE).fetchall()
        upto, top = int(upto or 0), int(top or 0)
        if top <= upto:
            return 0
        self._begin()
        try:
            [(upto, _top)] = self._execute(schema.KEYS_STATE).fetchall()  # now under the lock
            upto = int(upto or 0)
            found = self._execute(
                "SELECT id, time, sender, recipients FROM messages WHERE id > ? ORDER BY id "
                "LIMIT ?", (upto, limit)).fetchall()
            if self.late_ids:
                found += self._execute(
                    "SELECT id, time, sender, recipients FROM messages m WHERE id > ? "
                    "AND id <= ? AND NOT EXISTS (SELECT 1 FROM message_keys k "
                    "WHERE k.message = m.id)", (upto - self.late_ids, upto)).fetchall()
            if found:
                self._insert_rows("message_keys", key_rows(found))
                self._execute("UPDATE meta SET value = ? WHERE key = ?",
                              (str(max(upto, max(int(row[0]) for row in found))),
                               schema.KEYS_UPTO))
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return len(found)

    def schema_current(self) -> bool:
        """Whether the store already holds this version's tables: a read, so that a new
        connection (each worker has its own) neither takes the write lock nor runs DDL."""
        try:
            found = self._execute("SELECT value FROM meta WHERE key = ?",
                                  ("schema_version",)).fetchone()
        except Exception:  # noqa: BLE001 - no meta table yet, or unreadable: ensure_schema says
            return False
        return found is not None and found[0] == str(schema.VERSION)

    def write(self, rows: list[Row], now: float) -> None:
        """Every row, its roll-ups and, when due, pruning: all or nothing."""
        # Everything is prepared before the transaction, so that the write lock is held for
        # the statements alone.
        messages = [row.values for row in rows if row.table == "messages"]
        events = [row.values for row in rows if row.table == "events"]
        rollups: dict[str, list[tuple]] = defaultdict(list)
        for statement, params in rollup_rows(rows):
            rollups[_UPSERT_TABLES[statement]].append(params)
        pruned = now - self._last_prune >= schema.PRUNE_INTERVAL
        self._connection()
        self._begin()
        try:
            self._insert_rows("messages", messages)
            self._insert_rows("events", events)
            self._finish(rollups, now if pruned else None)
        except BaseException:
            self._rollback()
            raise
        if pruned:
            self._last_prune = now

    def _finish(self, rollups: dict[str, list[tuple]], prune_at: float | None) -> None:
        """The end of a batch's transaction: its roll-ups, pruning when due, the commit."""
        for table, params in rollups.items():
            self._insert_rows(table, params)
        if prune_at is not None:
            self._prune(prune_at)
        self._commit()

    def _insert_rows(self, table: str, rows: list[tuple]) -> None:
        """Many rows in a few statements of many VALUES each, not one statement per row: the
        writer thread gives up the interpreter lock around every statement and then waits for
        the mail thread to hand it back (up to sys.getswitchinterval()), so that a statement
        per row made a batch cost hundreds of hand-offs and hold the store's write lock
        meanwhile."""
        if not rows:
            return
        per = max(1, _MAX_PARAMS // len(rows[0]))
        start = 0
        while start < len(rows):
            # A power of two: a handful of statement texts, compiled once per connection.
            size = 1 << (min(per, len(rows) - start).bit_length() - 1)
            chunk = rows[start:start + size]
            self._execute(_statement(table, size), tuple(chain.from_iterable(chunk)))
            start += size

    def _prune(self, now: float) -> None:
        for table, (_width, kept) in schema.ROLLUPS.items():
            if kept is not None:
                self._execute(f"DELETE FROM {table} WHERE bucket < ?", (int(now - kept),))
        for table in ("messages", "events"):
            self._execute(f"DELETE FROM {table} WHERE time < ?", (now - schema.DETAIL_KEPT,))
        # The keys of the messages just pruned: ids below the oldest one kept.
        self._execute("DELETE FROM message_keys WHERE message < "
                      "COALESCE((SELECT MIN(id) FROM messages), ?)", (2**63 - 1,))

    def fetchall(self, sql: str, params: tuple = ()) -> list[tuple]:
        raise NotImplementedError
