"""The SQLite store: one file under the state directory, in WAL mode so that readers never wait
for writers, with a short busy timeout so that a writer never holds up mail. A damaged file is
set aside (``stats.sqlite.corrupt-<time>``) and a new one started."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path

from .backend import SqlBackend, StoreUnavailable

log = logging.getLogger("lmsav.stats")

FILE_NAME = "stats.sqlite"
_CORRUPT = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB


def is_corrupt(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _CORRUPT


class SQLiteBackend(SqlBackend):
    row_id = "INTEGER PRIMARY KEY"
    keyed_table = " WITHOUT ROWID"

    def __init__(self, path: Path, busy_timeout: float = 0.2):
        super().__init__()
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.description = str(self.path)
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._inode: int | None = None  # of the file this process opened, to set aside only it

    def readable(self) -> bool:
        return self.path.exists()

    # -- connection ------------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # A connection inherited across fork() must not be used by the child (SQLite's rule).
        self._conn = None
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660)
        except FileExistsError:
            pass
        else:
            # Group-writable whatever the umask: the watcher (root), enqueue and qmail's users
            # share the file, all in the service group; WAL files get the same mode.
            os.fchmod(fd, 0o660)
            os.close(fd)
        self._inode = os.stat(self.path).st_ino
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        self._conn, self._pid = conn, os.getpid()
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            if self.schema_current():
                return conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                self.ensure_schema()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except BaseException:
            self._forget()
            raise
        return conn

    def _forget(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def close(self) -> None:
        self._forget()

    def _execute(self, sql: str, params: tuple = ()):
        return self._conn.execute(sql, params)

    def _executemany(self, sql: str, params: list[tuple]):
        return self._conn.executemany(sql, params)

    def _begin(self):
        self._conn.execute("BEGIN IMMEDIATE")

    def _commit(self):
        self._conn.execute("COMMIT")

    def _rollback(self):
        if self._conn is not None and self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    # -- guarded entry points --------------------------------------------------------------------
    def write(self, rows, now: float) -> None:
        try:
            super().write(rows, now)
            return
        except sqlite3.DatabaseError as err:
            if not is_corrupt(err):
                self._forget()
                raise StoreUnavailable(f"{self.path}: {err}") from None
            self._set_aside(err)
        except OSError as err:
            self._forget()
            raise StoreUnavailable(f"{self.path}: {err.strerror or err}") from None
        try:  # into the new file
            super().write(rows, now)
        except (sqlite3.Error, OSError) as err:
            self._forget()
            raise StoreUnavailable(f"{self.path}: {err}") from None

    def _set_aside(self, err: sqlite3.Error) -> None:
        """Move the damaged file away (unless another process already did) for a new one."""
        self._forget()
        try:
            if os.stat(self.path).st_ino != self._inode:
                return  # already replaced by another writer
            aside = self.path.with_name(
                f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
            os.rename(self.path, aside)
        except OSError as move_err:
            raise StoreUnavailable(f"{self.path}: {err}; cannot set it aside: "
                                   f"{move_err.strerror}") from None
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.rename(f"{self.path}{suffix}", f"{aside}{suffix}")
        log.warning("statistics store %s is damaged (%s): set aside as %s, a new one started",
                    self.path, err, aside.name)

    def index_keys(self, limit: int | None = None) -> int:
        try:
            return super().index_keys(limit)
        except sqlite3.Error as err:
            self._forget()
            raise StoreUnavailable(f"{self.path}: {err}") from None
        except OSError as err:
            raise StoreUnavailable(f"{self.path}: {err.strerror or err}") from None

    def fetchall(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            self._connection()
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as err:
            self._forget()
            damaged = " (damaged file)" if is_corrupt(err) else ""
            raise StoreUnavailable(f"{self.path}: {err}{damaged}") from None
        except OSError as err:
            raise StoreUnavailable(f"{self.path}: {err.strerror or err}") from None
