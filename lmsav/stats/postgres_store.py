"""The PostgreSQL store several mail nodes share (``[stats] url = "postgresql://…"``): the same
tables and statements as SQLite, with timeouts short enough that a server down or unreachable
never holds up mail for long."""

from __future__ import annotations

import contextlib
import os
from urllib.parse import urlsplit, urlunsplit

from . import schema
from .backend import SqlBackend, StoreUnavailable

# Any constant: the key of the lock serialising schema creation between nodes.
_SCHEMA_LOCK = 0x6C6D7361
# Rows of these tables are inserted by COPY: psycopg parses the text of a statement longer
# than 4 KB again on every call, so that a multi-row INSERT cost ~24 µs of CPU per message
# row, COPY ~2 µs.
_COPY = {table: f"COPY {table} ({', '.join(columns)}) FROM STDIN"
         for table, columns in (("messages", schema.MESSAGE_COLUMNS),
                                ("events", schema.EVENT_COLUMNS))}
# Roll-ups are added with one statement per table whatever the number of rows (a column per
# array, rows in the order given: the order every writer locks them in), so that its text is
# parsed once per process and prepared by the server once per connection.
_UPSERT = {table: f"INSERT INTO {table} (bucket, node, metric, label, value) "
                  "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], "
                  "%s::bigint[]) ON CONFLICT (bucket, node, metric, label) "
                  f"DO UPDATE SET value = {table}.value + excluded.value"
           for table in schema.ROLLUPS}
# Search keys the same way: one statement whatever their number.
_UPSERT["message_keys"] = ("INSERT INTO message_keys (message, key, time) "
                           "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::float8[]) "
                           "ON CONFLICT DO NOTHING")


def redacted(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresBackend(SqlBackend):
    row_id = "BIGSERIAL PRIMARY KEY"
    late_ids = 10000  # several nodes' transactions take ids from one sequence

    def __init__(self, url: str, connect_timeout: int = 2, statement_timeout_ms: int = 5000):
        super().__init__()
        self.url = url
        self.description = redacted(url)
        self.connect_timeout = connect_timeout
        self.statement_timeout_ms = statement_timeout_ms
        self._conn = None
        self._pid = 0
        self._pipelines = False
        # Imported now, in the process that builds the store: the watcher and the daemon fork
        # their workers after that, and each of them importing psycopg on its first event
        # would cost ~0.1 s of CPU per worker. Missing, it is one more failure to record then.
        with contextlib.suppress(ImportError):
            import psycopg  # noqa: F401

    def readable(self) -> bool:
        return True

    def _connection(self):
        if self._conn is not None and self._pid == os.getpid() and not self._conn.closed:
            return self._conn
        import psycopg

        self._conn = None
        conn = psycopg.connect(
            self.url, autocommit=True, connect_timeout=self.connect_timeout,
            options=f"-c statement_timeout={self.statement_timeout_ms} -c lock_timeout=2000",
            # A server that vanishes without closing the connection is noticed in seconds.
            keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=2,
            tcp_user_timeout=self.statement_timeout_ms)
        self._conn, self._pid = conn, os.getpid()
        self._pipelines = psycopg.Pipeline.is_supported()  # libpq 14 or later
        if self.schema_current():
            return conn
        try:
            self._begin()
            try:
                self._execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
                # Bringing a large store up to date builds indexes over every message: once,
                # longer than any statement of recording may take.
                self._execute("SET LOCAL statement_timeout = 0")
                self.ensure_schema()
                self._commit()
            except BaseException:
                self._rollback()
                raise
        except BaseException:
            self._forget()
            raise
        return conn

    def _forget(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):  # closing a broken connection
                conn.close()

    def close(self) -> None:
        self._forget()

    @staticmethod
    def _dialect(sql: str) -> str:
        return sql.replace("?", "%s")

    def _execute(self, sql: str, params: tuple = ()):
        return self._conn.execute(self._dialect(sql), params)

    def _executemany(self, sql: str, params: list[tuple]):
        with self._conn.cursor() as cur:
            cur.executemany(self._dialect(sql), params)

    def _insert_rows(self, table: str, rows: list[tuple]) -> None:
        if not rows:
            return
        if table in _UPSERT:
            self._conn.execute(_UPSERT[table], [list(column) for column in zip(*rows)])
            return
        with self._conn.cursor() as cursor, cursor.copy(_COPY[table]) as copy:
            for row in rows:
                copy.write_row(row)

    def _finish(self, rollups, prune_at) -> None:
        # Sent together and answered together: one round trip to the server for the roll-ups,
        # the pruning and the commit, not one each (COPY cannot join a pipeline).
        if not self._pipelines:
            super()._finish(rollups, prune_at)
            return
        with self._conn.pipeline():
            super()._finish(rollups, prune_at)

    def _begin(self):
        self._conn.execute("BEGIN")

    def _commit(self):
        self._conn.execute("COMMIT")

    def _rollback(self):
        if self._conn is not None and not self._conn.closed:
            with contextlib.suppress(Exception):  # the connection is dropped anyway
                self._conn.execute("ROLLBACK")

    def write(self, rows, now: float) -> None:
        import psycopg

        try:
            super().write(rows, now)
        except psycopg.Error as err:
            self._forget()
            raise StoreUnavailable(f"{self.description}: {_one_line(err)}") from None

    def index_keys(self, limit: int | None = None) -> int:
        import psycopg

        try:
            return super().index_keys(limit)
        except psycopg.Error as err:
            self._forget()
            raise StoreUnavailable(f"{self.description}: {_one_line(err)}") from None

    def fetchall(self, sql: str, params: tuple = ()) -> list[tuple]:
        import psycopg

        try:
            self._connection()
            return self._execute(sql, params).fetchall()
        except psycopg.Error as err:
            self._forget()
            raise StoreUnavailable(f"{self.description}: {_one_line(err)}") from None


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__
