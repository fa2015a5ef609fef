"""A SQLite index of the three stores of kept originals, so that a list page never reads 100,000
``info.json`` files: quarantine (``quarantine/``), sweep backups (``backup/files/``) and mail
backups (``backup/``).

Entries are immutable once they appear (an entry directory is renamed into place complete, and
only ever deleted), so ``sync`` reads a record once: it stats each store's directory and, when
its mtime (or the directory itself) changed, lists the entry ids, reads ``info.json`` of the new
ones only and drops the rows of vanished ones. An mtime younger than ``SETTLE_SECONDS`` is not
trusted (a change in the same clock tick would not move it), so the next sync looks again. The
file is a cache: a damaged one or one of another schema version is started afresh.

Lists are newest first with keyset pagination: a cursor names the last row shown
(``<created µs>-<kind>-<id>``), and the next page starts below it whatever was added meanwhile.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..mail.backup import ID_RE
from .kept_row import FILE, KINDS, MAIL, QUARANTINE, KeptRow, read_row

log = logging.getLogger("lmsav.quarantine")

SCHEMA_VERSION = 2
SETTLE_SECONDS = 2.0
BATCH = 2000  # rows per write transaction: readers see a long first sync progress
MAX_LIMIT = 500
BUSY_TIMEOUT_MS = 5000
_CURSOR_RE = re.compile(r"\A(\d{1,20})-(quarantine|file|mail)-(\d{8}T\d{6}Z-[0-9a-f]{12})\Z")
_SEP = "\n"  # between names in one column; a name never holds a line break that matters

_SCHEMA = """
CREATE TABLE entries (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    size INTEGER NOT NULL,
    status TEXT NOT NULL,
    threats TEXT NOT NULL,
    action TEXT NOT NULL,
    original_path TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipients TEXT NOT NULL,
    subject TEXT NOT NULL,
    groups TEXT NOT NULL,
    haystack TEXT NOT NULL,  -- casefolded id, path, addresses, subject, threats: the text filter
    threat_key TEXT NOT NULL,  -- casefolded threats: the threat filter
    PRIMARY KEY (created_us, kind, id)  -- the table itself in list order: pages scan it
) WITHOUT ROWID;
CREATE UNIQUE INDEX entries_by_id ON entries (kind, id);
CREATE INDEX entries_by_kind_time ON entries (kind, created_us);
CREATE INDEX entries_by_status_time ON entries (status, created_us);
CREATE TABLE roots (
    kind TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    stamp TEXT  -- device, inode and mtime of the directory when last listed (NULL: list again)
);
"""

_COLUMNS = ("kind, id, created_us, size, status, threats, action, original_path, sender, "
            "recipients, subject, groups")


class IndexUnavailable(Exception):
    """The index cannot be used (its file cannot be opened or written); one line."""


def _guarded(method):
    """SQLite's errors as IndexUnavailable; a file found damaged is started afresh next time."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as err:
            if _is_corrupt(err):
                log.warning("stores index %s damaged (%s): starting it afresh", self.db_path, err)
                self._remove_file()
            raise IndexUnavailable(f"stores index {self.db_path}: {err}") from None
        except OSError as err:
            raise IndexUnavailable(f"stores index {self.db_path}: {err.strerror or err}") \
                from None
    return wrapper


def _is_corrupt(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB


def store_roots(state_dir: Path | str) -> dict[str, Path]:
    """Where each kind's entries live under the state directory."""
    return {QUARANTINE: paths.quarantine_dir(state_dir),
            FILE: paths.backup_files_dir(state_dir),
            MAIL: paths.backup_dir(state_dir)}


@dataclass(frozen=True)
class SyncReport:
    """What one ``sync`` did: kinds whose directory was listed, rows added and dropped, and
    the stores it could not read (one line each)."""

    listed: tuple[str, ...]
    added: int
    dropped: int
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Filters:
    """What a list shows: every field optional; ``text`` and ``threat`` match substrings,
    case-insensitively; ``since``/``until`` are epoch seconds (until exclusive)."""

    kind: str | None = None
    status: str | None = None
    text: str | None = None
    threat: str | None = None
    since: float | None = None
    until: float | None = None

    def __post_init__(self):
        if self.kind not in (None, *KINDS):
            raise ValueError(f"unknown kind {self.kind!r}: expected one of {', '.join(KINDS)}")

    def where(self) -> tuple[list[str], list]:
        clauses, params = [], []
        # With a text filter every row is looked at anyway: one scan of the table in list
        # order beats an index whose every hit costs a lookup ("+" keeps SQLite off it).
        scan = "+" if self.text or self.threat else ""
        if self.kind:
            clauses.append(f"{scan}kind = ?")
            params.append(self.kind)
        if self.status:
            clauses.append(f"{scan}status = ?")
            params.append(self.status)
        if self.text:
            clauses.append("instr(haystack, ?) > 0")
            params.append(_fold(self.text))
        if self.threat:
            clauses.append("instr(threat_key, ?) > 0")
            params.append(_fold(self.threat))
        if self.since is not None:
            clauses.append("created_us >= ?")
            params.append(_micros(self.since))
        if self.until is not None:
            clauses.append("created_us < ?")
            params.append(_micros(self.until))
        return clauses, params


def parse_cursor(cursor: str) -> tuple[int, str, str]:
    """(created µs, kind, id) of a cursor ``search`` returned; ValueError for anything else."""
    m = _CURSOR_RE.match(cursor or "")
    if not m:
        raise ValueError(f"invalid page cursor {cursor[:80]!r}")
    return int(m.group(1)), m.group(2), m.group(3)


def cursor_of(row: KeptRow) -> str:
    return f"{_micros(row.created)}-{row.kind}-{row.id}"


class StoresIndex:
    """The index file ``db_path`` of the stores under ``state_dir``; safe to share between
    threads (one SQLite connection per thread) and between processes (WAL, busy timeout)."""

    def __init__(self, db_path: Path | str, state_dir: Path | str, *,
                 clock=time.time):
        self.db_path = Path(db_path)
        self.roots = store_roots(state_dir)
        self._clock = clock
        self._local = threading.local()
        self._sync_lock = threading.Lock()
        self._troubles: dict[str, str | None] = {}
        self._generation = 0  # moves when the file is started afresh: every thread reopens

    # -- the connection ------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid() \
                and self._local.generation == self._generation:
            return conn
        if conn is not None and self._local.pid == os.getpid():
            conn.close()  # of a file set aside by another thread
        try:
            try:
                conn = self._open()
            except sqlite3.DatabaseError as err:
                if not _is_corrupt(err):
                    raise
                # A cache: a damaged file is not worth keeping, the stores are the truth.
                log.warning("stores index %s damaged (%s): starting it afresh", self.db_path, err)
                self._remove_file()
                conn = self._open()
        except sqlite3.Error as err:
            raise IndexUnavailable(f"cannot open {self.db_path}: {err}") from None
        except OSError as err:
            raise IndexUnavailable(f"cannot open {self.db_path}: {err.strerror or err}") from None
        self._local.conn, self._local.pid = conn, os.getpid()
        self._local.generation = self._generation
        return conn

    def _open(self) -> sqlite3.Connection:
        self.db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileExistsError):
            # Subjects and addresses of people's mail: readable by the owner only.
            os.close(os.open(self.db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             0o600))
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = OFF")  # rebuilt from the stores if lost
            conn.execute("PRAGMA mmap_size = 268435456")  # a text filter scans the table
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                self._create(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _create(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                for (name,) in conn.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                    conn.execute(f'DROP TABLE IF EXISTS "{name}"')
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _remove_file(self) -> None:
        self.close()
        self._generation += 1
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.db_path}{suffix}")

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None and self._local.pid == os.getpid():
            conn.close()

    # -- keeping up with the stores ------------------------------------------------------------

    @_guarded
    def sync(self) -> SyncReport:
        """Bring the index up to date with the stores; cheap when nothing changed (three stats)."""
        with self._sync_lock:
            listed, added, dropped = [], 0, 0
            for kind, root in self.roots.items():
                result = self._sync_kind(kind, root)
                if result is not None:
                    listed.append(kind)
                    added += result[0]
                    dropped += result[1]
            problems = tuple(p for p in self._troubles.values() if p)
            return SyncReport(tuple(listed), added, dropped, problems)

    def _sync_kind(self, kind: str, root: Path) -> tuple[int, int] | None:
        conn = self._db()
        known = conn.execute("SELECT path, stamp FROM roots WHERE kind = ?", (kind,)).fetchone()
        try:
            st = os.stat(root)
            stamp = f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}"
        except FileNotFoundError:
            st, stamp = None, "absent"  # no store yet: no entries
        except OSError as err:
            self._trouble(kind, f"cannot read {root}: {err.strerror or err}")
            return None
        if known is not None and tuple(known) == (str(root), stamp):
            return None
        if known is not None and known[0] != str(root):
            self._write(lambda c: c.execute("DELETE FROM entries WHERE kind = ?", (kind,)))
        try:
            on_disk = set(_entry_ids(root)) if st is not None else set()
        except FileNotFoundError:
            on_disk = set()
        except OSError as err:
            self._trouble(kind, f"cannot list {root}: {err.strerror or err}")
            return None
        self._trouble(kind, None)
        indexed = {i for (i,) in conn.execute("SELECT id FROM entries WHERE kind = ?", (kind,))}
        gone = indexed - on_disk
        if gone:
            self._write(lambda c: c.executemany(
                "DELETE FROM entries WHERE kind = ? AND id = ?", [(kind, i) for i in gone]))
        added = 0
        new = sorted(on_disk - indexed)
        for start in range(0, len(new), BATCH):
            rows = [r for r in (read_row(kind, root, i) for i in new[start:start + BATCH]) if r]
            self._write(lambda c, rows=rows: _insert(c, rows))
            added += len(rows)
        # A directory changed within the last tick may change again without its mtime moving.
        if st is not None and self._clock() - st.st_mtime_ns / 1e9 <= SETTLE_SECONDS:
            stamp = None
        self._write(lambda c: c.execute(
            "INSERT OR REPLACE INTO roots (kind, path, stamp) VALUES (?, ?, ?)",
            (kind, str(root), stamp)))
        return added, len(gone)

    def _trouble(self, kind: str, message: str | None) -> None:
        """Log a store that cannot be read once, not at every sync; None: it can be again."""
        if message is not None and self._troubles.get(kind) != message:
            log.warning("%s", message)
        self._troubles[kind] = message

    def _write(self, fn) -> None:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    @_guarded
    def forget(self, kind: str, entry_id: str) -> None:
        """Drop one row at once (after the console deleted or restored the entry)."""
        self._write(lambda c: c.execute("DELETE FROM entries WHERE kind = ? AND id = ?",
                                        (kind, entry_id)))

    @_guarded
    def refresh(self, kind: str, entry_id: str) -> KeptRow | None:
        """Read one entry again from its store; its row, or None (and no row) if it is gone."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        row = read_row(kind, self.roots[kind], entry_id)
        if row is None:
            self.forget(kind, entry_id)
        else:
            self._write(lambda c: _insert(c, [row]))
        return row

    # -- reading -------------------------------------------------------------------------------

    @_guarded
    def search(self, filters: Filters | None = None, *, before: str | None = None,
               after: str | None = None, limit: int = 50,
               **fields) -> tuple[list[KeptRow], str | None]:
        """One page, newest first, and the cursor to go on with (None at the end).

        ``before``: the ``limit`` rows older than that cursor (from the newest when None); the
        cursor given back leads to older rows. ``after``: the ``limit`` rows just newer than
        that cursor, for going back; the cursor given back leads to newer rows still.
        ``fields`` are Filters'."""
        filters = filters or Filters(**fields)
        limit = max(1, min(int(limit), MAX_LIMIT))
        clauses, params = filters.where()
        cursor = before or after
        if cursor:
            clauses.append(f"(created_us, kind, id) {'<' if before else '>'} (?, ?, ?)")
            params += list(parse_cursor(cursor))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "ASC" if after and not before else "DESC"
        cur = self._db().execute(
            f"SELECT {_COLUMNS} FROM entries {where} "
            f"ORDER BY created_us {order}, kind {order}, id {order} LIMIT ?",
            (*params, limit + 1))
        rows = [_row(r) for r in cur]
        more = len(rows) > limit
        rows = rows[:limit]
        if order == "ASC":
            rows.reverse()
            return rows, cursor_of(rows[0]) if more else None
        return rows, cursor_of(rows[-1]) if more else None

    @_guarded
    def count(self, filters: Filters | None = None, **fields) -> int:
        """How many rows ``search`` would page through with the same filters."""
        filters = filters or Filters(**fields)
        clauses, params = filters.where()
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._db().execute(f"SELECT count(*) FROM entries {where}", params).fetchone()[0]

    @_guarded
    def usage(self) -> dict[str, tuple[int, int]]:
        """(entries, bytes of the originals) per kind, as the index last saw the stores."""
        found = {kind: (0, 0) for kind in KINDS}
        for kind, entries, size in self._db().execute(
                "SELECT kind, count(*), coalesce(sum(size), 0) FROM entries GROUP BY kind"):
            found[kind] = (int(entries), int(size))
        return found

    @_guarded
    def get(self, kind: str, entry_id: str) -> KeptRow | None:
        """The indexed row of one entry, or None."""
        r = self._db().execute(f"SELECT {_COLUMNS} FROM entries WHERE kind = ? AND id = ?",
                               (kind, entry_id)).fetchone()
        return _row(r) if r else None

    @_guarded
    def statuses(self) -> list[str]:
        """The statuses present, for the filter's choices."""
        return [s for (s,) in self._db().execute(
            "SELECT DISTINCT status FROM entries ORDER BY status")]


def _entry_ids(root: Path) -> Iterator[str]:
    """The entry directories of ``root`` (d_type from scandir: no stat per entry)."""
    with os.scandir(root) as it:
        for entry in it:
            if ID_RE.match(entry.name):
                try:
                    if entry.is_dir(follow_symlinks=False):
                        yield entry.name
                except OSError:
                    continue


def _insert(conn: sqlite3.Connection, rows: Iterable[KeptRow]) -> None:
    conn.executemany(
        f"INSERT OR REPLACE INTO entries ({_COLUMNS}, haystack, threat_key) "
        f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(r.kind, r.id, _micros(r.created), r.size, r.status, _SEP.join(r.threats), r.action,
          r.original_path, r.sender, _SEP.join(r.recipients), r.subject, _SEP.join(r.groups),
          _haystack(r), _fold(_SEP.join(r.threats))) for r in rows])


def _row(r: tuple) -> KeptRow:
    (kind, entry_id, created_us, size, status, threats, action, original_path, sender,
     recipients, subject, groups) = r
    return KeptRow(kind=kind, id=entry_id, created=created_us / 1e6, size=size, status=status,
                   threats=_split(threats), action=action, original_path=original_path,
                   sender=sender, recipients=_split(recipients), subject=subject,
                   groups=_split(groups))


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split(_SEP)) if text else ()


def _haystack(r: KeptRow) -> str:
    return _fold(_SEP.join((r.id, r.original_path, r.sender, *r.recipients, r.subject,
                            *r.threats)))


def _fold(text: str) -> str:
    return text.casefold()


def _micros(seconds: float) -> int:
    return max(0, round(seconds * 1_000_000))

