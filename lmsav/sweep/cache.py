"""The scan cache of incremental sweeps: files found clean, keyed by inode, valid for one database.

A file is known clean while its device, inode, size, mtime and ctime (nanoseconds) are those
recorded and the sweep runs under the same ``version`` (database, engine, container settings).
Only clean verdicts are recorded. ctime is what makes this safe: no system call sets it (short
of setting the clock), and every change to a file (content, mode, owner, links, rename) moves
it forward, whatever its mtime says.

The cache is one SQLite file (WAL mode, busy timeout) that concurrent sweeps may share. A sweep
reads the rows of its version once into a set, so a lookup is a set hit; writes are buffered
and committed in batches. A connection belongs to the process that opened it, never to a child
forked later. The cache is an optimisation only: when its file is unusable the sweep warns once
and goes on (with a fresh file, or without a cache), scanning everything.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import time
from typing import Self

log = logging.getLogger(__name__)

FLUSH_EVERY = 4096
BUSY_TIMEOUT_MS = 30_000
# A file whose ctime is this close to the cache's opening is not recorded: a later change
# within the same timestamp tick (coarse clocks, 1-2 s on some file systems) would leave its
# ctime unchanged, and the cache would vouch for content it never saw ("racily clean" in git).
RACY_MARGIN_NS = 2_000_000_000

SCHEMA_VERSION = 2  # PRAGMA user_version of a scan cache file
_SCHEMA = (
    """CREATE TABLE versions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: a stray row stays orphaned
        version TEXT NOT NULL UNIQUE
    )""",
    # key: dev, ino, size, mtime_ns, ctime_ns packed as in memory (_pack), so loading a version
    # reads one column: 50,000 rows in ~12 ms instead of ~40 ms for five integer columns.
    """CREATE TABLE files (
        dev INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        key BLOB NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (dev, ino)
    ) WITHOUT ROWID""",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1
# What a file is known by in memory: dev, ino, size, mtime_ns, ctime_ns packed into 40 bytes
# (a third of the memory of a tuple of five ints). A time that does not fit (past 2262, which
# utime can set) raises struct.error: such a file is never recorded, so always scanned.
_pack = struct.Struct("<QQqqq").pack


def _signed(n: int) -> int:
    """SQLite integers are signed 64-bit; st_dev and st_ino are unsigned."""
    return n - _U64 if n > _I64_MAX else n


class ScanCache:
    """Which files were found clean under ``version``; see the module docstring."""

    def __init__(self, path: str | os.PathLike, version: str):
        self.path = os.fspath(path)
        self.version = version
        self._racy_after_ns = time.time_ns() - RACY_MARGIN_NS
        # Every file known clean under this version, packed (see _pack).
        self._clean: set[bytes] = set()
        # (dev, ino) -> the row to record, or None to forget the inode.
        self._pending: dict[tuple[int, int], tuple[int, int, int, int, int] | None] = {}
        self._con: sqlite3.Connection | None = None
        self._con_pid = 0
        self._purge_others = False
        self._disabled = False
        try:
            self._load()
        except (sqlite3.Error, OSError) as err:
            self._recover(err)

    @property
    def known(self) -> int:
        """How many files are known clean under this version."""
        return len(self._clean)

    # -- the per-file calls ------------------------------------------------------------------

    def is_unchanged(self, st: os.stat_result) -> bool:
        """True when the file ``st`` describes was found clean, as it is now, under this version."""
        try:
            return _pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                         st.st_ctime_ns) in self._clean
        except struct.error:
            return False

    def record_clean(self, st: os.stat_result) -> None:
        """Remember that the file ``st`` describes (as stat'ed before it was read) is clean."""
        if st.st_ctime_ns >= self._racy_after_ns or self._disabled:
            return
        row = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        try:
            self._clean.add(_pack(*row))
        except struct.error:
            return
        self._pending[(row[0], row[1])] = row
        if len(self._pending) >= FLUSH_EVERY:
            self.flush()

    def forget(self, st: os.stat_result) -> None:
        """The file ``st`` describes is not clean (any more): drop what is known of its inode."""
        try:
            self._clean.discard(_pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                                      st.st_ctime_ns))
        except struct.error:
            pass
        if not self._disabled:
            self._pending[(st.st_dev, st.st_ino)] = None

    # -- storage -----------------------------------------------------------------------------

    def flush(self) -> None:
        """Commit buffered records in one transaction; on failure warn once and stop caching."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        rows = [(dev, ino, _pack(dev, ino, size, mtime, ctime))
                for dev, ino, size, mtime, ctime in (r for r in pending.values() if r is not None)]
        gone = [(_signed(dev), _signed(ino)) for (dev, ino), row in pending.items() if row is None]
        try:
            con = self._connection()
            with con:
                upsert = ("INSERT OR REPLACE INTO files (dev, ino, key, version) "
                          f"VALUES (?, ?, ?, {self._ensure_version(con)})")
                try:
                    con.executemany(upsert, rows)
                except OverflowError:  # a device or inode number past 2**63: stored wrapped
                    con.executemany(upsert, [(_signed(d), _signed(i), k) for d, i, k in rows])
                if gone:
                    con.executemany("DELETE FROM files WHERE dev = ? AND ino = ?", gone)
        except (sqlite3.Error, OSError) as err:
            self._give_up(f"cannot write: {err}")

    def close(self) -> None:
        """Flush, and close this process's connection."""
        self.flush()
        if self._con is not None and self._con_pid == os.getpid():
            self._con.close()
        self._con = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _load(self) -> None:
        """Read this version's rows once; the connection is closed again before any fork."""
        con = self._open()
        try:
            found = con.execute("SELECT id FROM versions WHERE version = ?",
                                (self.version,)).fetchone()
            if found is not None:
                self._clean = {key for (key,) in con.execute(
                    "SELECT key FROM files WHERE version = ?", found)}
            # Rows of other versions (or orphaned by a concurrent purge) go at the first write.
            total = con.execute("SELECT count(*) FROM files").fetchone()[0]
            self._purge_others = total > len(self._clean)
        finally:
            con.close()

    def _open(self) -> sqlite3.Connection:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        # Created 0600 before SQLite sees it; SQLite gives its -wal and -shm files the same mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = NORMAL")  # losing the last batch costs a rescan
            if con.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                _create_schema(con)
        except BaseException:
            con.close()
            raise
        # `with con:` makes a batch one transaction, taking the write lock up front.
        con.isolation_level = "IMMEDIATE"
        return con

    def _connection(self) -> sqlite3.Connection:
        pid = os.getpid()
        if self._con is None or self._con_pid != pid:
            # A connection inherited across fork is never used (nor closed) by the child.
            self._con, self._con_pid = self._open(), pid
        return self._con

    def _ensure_version(self, con: sqlite3.Connection) -> int:
        # Looked up in every transaction: a concurrent sweep of another version may purge ours.
        con.execute("INSERT OR IGNORE INTO versions (version) VALUES (?)", (self.version,))
        (version_id,) = con.execute("SELECT id FROM versions WHERE version = ?",
                                    (self.version,)).fetchone()
        if self._purge_others:
            # Verdicts of another database are worthless once this one is in use.
            con.execute("DELETE FROM files WHERE version != ?", (version_id,))
            con.execute("DELETE FROM versions WHERE id != ?", (version_id,))
            self._purge_others = False
        return version_id

    def _recover(self, err: Exception) -> None:
        """The file cannot be read: move it aside and start afresh, or run without a cache."""
        if isinstance(err, sqlite3.DatabaseError) and not isinstance(err, sqlite3.OperationalError):
            aside = self.path + ".corrupt"
            try:
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(self.path + suffix):
                        os.replace(self.path + suffix, aside + suffix)
                self._open().close()
            except (sqlite3.Error, OSError) as again:
                self._give_up(f"unreadable ({err}) and cannot be rebuilt: {again}")
                return
            log.warning("scan cache %s: unreadable (%s); moved to %s, starting afresh",
                        self.path, err, aside)
            return
        self._give_up(f"cannot open: {err}")

    def _give_up(self, why: str) -> None:
        if not self._disabled:
            log.warning("scan cache %s: %s; scanning without it", self.path, why)
        self._disabled = True
        self._pending = {}


def _create_schema(con: sqlite3.Connection) -> None:
    """Create the tables in an empty file; a file holding anything else is not a scan cache."""
    con.execute("BEGIN IMMEDIATE")  # checked and created under the write lock: sweeps race here
    try:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            for statement in _SCHEMA:
                con.execute(statement)
        elif version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"not a scan cache (schema version {version})")
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
