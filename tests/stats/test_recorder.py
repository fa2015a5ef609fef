"""Recording never raises and never holds up mail: a locked, damaged or unwritable store
buffers events (bounded), drops and counts the rest, and says so once per episode."""

from __future__ import annotations

import json
import logging
import os
import pwd
import sqlite3
import tempfile
import time
from pathlib import Path

import pytest

from lmsav.stats.events import row_of as real_row_of
from lmsav.stats.sqlite_store import SQLiteBackend
from lmsav.stats.store import StatsError, Store

from .conftest import NOW, message_event, wait_for


def stored(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "lmsav.stats" and r.levelno >= logging.WARNING]


def test_a_locked_store_buffers_quickly_then_flushes(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="lmsav.stats")
    path = tmp_path / "stats.sqlite"
    store = Store(SQLiteBackend(path), "mx", 100, retry_interval=0.3)
    store.record(message_event(NOW))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    time.sleep(1.1)  # a quiet store: the next event is written at once, and meets the lock
    started = time.monotonic()
    for i in range(50):
        store.record(message_event(NOW + i))
    # One wait of the busy timeout (0.2 s), not one per message.
    assert time.monotonic() - started < 1.0
    assert store.buffered == 50
    time.sleep(0.7)  # tried again in the background meanwhile, still locked
    assert store.buffered == 50 and stored(path) == 1
    [warning] = warnings(caplog)
    assert "statistics store unavailable" in warning and "database is locked" in warning
    assert "mail is not affected" in warning
    holder.execute("COMMIT")
    holder.close()
    assert wait_for(lambda: store.buffered == 0)
    assert stored(path) == 51
    assert store.totals(NOW, NOW + 120)["messages"] == 51
    assert len(warnings(caplog)) == 1
    assert any("available again" in r.getMessage() and "50 waiting events written, 0 dropped"
               in r.getMessage() for r in caplog.records)
    store.close()


def test_beyond_the_buffer_events_are_dropped_and_counted(tmp_path, caplog):
    path = tmp_path / "stats.sqlite"
    store = Store(SQLiteBackend(path), "mx", 5, retry_interval=0.3, quiet=0)
    store.record(message_event(NOW))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    for i in range(12):
        store.record(message_event(NOW + i))
    assert (store.buffered, store.dropped) == (5, 7)
    assert len(warnings(caplog)) == 1
    holder.execute("COMMIT")
    holder.close()
    assert wait_for(lambda: stored(path) == 6 and store.buffered == 0)
    assert store.dropped == 7
    assert wait_for(lambda: len(events(path)) == 1)
    assert events(path) == [("stats_dropped", '{"dropped":7}')]
    store.record(message_event(NOW + 30))
    assert stored(path) == 7
    store.close()


def events(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT kind, detail FROM events").fetchall()


def test_under_load_events_are_written_in_batches_by_a_writer_thread(tmp_path):
    path = tmp_path / "stats.sqlite"
    store = Store(SQLiteBackend(path), "mx", 10000)
    for i in range(2000):
        store.record(message_event(NOW + i))
    assert wait_for(lambda: store.buffered == 0)
    assert stored(path) == 2000
    store.close()


def test_a_damaged_file_is_set_aside_and_a_new_one_started(tmp_path, clock, caplog):
    stats = tmp_path / "stats"
    stats.mkdir()
    path = stats / "stats.sqlite"
    path.write_bytes(b"this is no SQLite database, just bytes\n" * 200)
    store = Store(SQLiteBackend(path), "mx", 10, clock=clock, quiet=0)
    store.record(message_event(NOW))
    store.record(message_event(NOW + 1))
    [aside] = stats.glob("stats.sqlite.corrupt-*")
    assert aside.read_bytes().startswith(b"this is no SQLite database")
    assert stored(path) == 2 and store.buffered == 0
    [warning] = warnings(caplog)
    assert "is damaged" in warning and f"set aside as {aside.name}" in warning
    store.close()


def test_a_file_damaged_while_in_use_is_set_aside_too(tmp_path, clock, caplog):
    path = tmp_path / "stats.sqlite"
    store = Store(SQLiteBackend(path), "mx", 10, clock=clock, quiet=0)
    store.record(message_event(NOW))
    store.close()
    with open(path, "r+b") as f:  # the header and the first pages overwritten
        f.write(b"\xff" * 8192)
    store.record(message_event(NOW + 1))
    assert len(list(tmp_path.glob("stats.sqlite.corrupt-*"))) == 1
    assert stored(path) == 1
    assert len(warnings(caplog)) == 1


def test_a_reader_reports_a_damaged_file_and_leaves_it(tmp_path, clock):
    path = tmp_path / "stats.sqlite"
    path.write_bytes(b"garbage" * 1000)
    store = Store(SQLiteBackend(path), "mx", 10, clock=clock, quiet=0)
    with pytest.raises(StatsError, match="file is not a database"):
        store.totals()
    assert path.read_bytes() == b"garbage" * 1000


def _unprivileged(fn) -> dict:
    """Run ``fn`` in a child as an ordinary user (nobody when the tests run as root); its
    result comes back as JSON."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            if os.geteuid() == 0:
                nobody = pwd.getpwnam("nobody")
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
            os.write(write, json.dumps(fn()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_an_unwritable_directory_buffers_and_says_so_once(clock):
    base = Path(tempfile.mkdtemp(prefix="lmsav-unwritable-"))
    base.chmod(0o555)  # owned by the test user (root: readable, not writable for nobody)
    path = base / "stats" / "stats.sqlite"

    def record_there():
        seen = []
        handler = logging.Handler()
        handler.emit = lambda r: seen.append(r.getMessage())
        logging.getLogger("lmsav.stats").addHandler(handler)
        store = Store(SQLiteBackend(path), "mx", 3, clock=lambda: NOW)
        started = time.monotonic()
        for i in range(10):
            store.record(message_event(NOW + i))
        return {"buffered": store.buffered, "dropped": store.dropped, "log": seen,
                "seconds": time.monotonic() - started}

    result = _unprivileged(record_there)
    assert (result["buffered"], result["dropped"]) == (3, 7)
    [line] = result["log"]
    assert "statistics store unavailable" in line and "Permission denied" in line
    assert result["seconds"] < 1.0
    assert not path.parent.exists()
    base.chmod(0o755)
    base.rmdir()


def test_invalid_events_are_counted_and_logged_once(sqlite_store, caplog):
    sqlite_store.record({"no": "kind"})
    sqlite_store.record({"kind": "message", "recipients": "not a list"})
    sqlite_store.record(None)
    sqlite_store.record(message_event(NOW))
    assert sqlite_store.recorder.invalid == 3
    assert stored(sqlite_store.backend.path) == 1
    [warning] = warnings(caplog)
    assert "an event was not recorded" in warning


def test_a_child_after_fork_opens_its_own_connection(sqlite_store):
    sqlite_store.record(message_event(NOW))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            sqlite_store.record(message_event(NOW + 1))
            code = 0 if sqlite_store.buffered == 0 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    sqlite_store.record(message_event(NOW + 2))
    assert stored(sqlite_store.backend.path) == 3


class Unprintable:
    def __str__(self):
        raise RuntimeError("no text for this one")


def test_events_become_rows_when_written_and_a_bad_one_stops_no_other(tmp_path, caplog):
    path = tmp_path / "stats.sqlite"
    # Long quiet: after the first event, every one waits for its batch.
    store = Store(SQLiteBackend(path), "mx", 100, quiet=3600)
    store.record(message_event(NOW))
    assert stored(path) == 1
    store.record({"kind": "update", "detail": {"odd": Unprintable()}})
    store.record({"kind": "message", "size": "big"})
    store.record(message_event(NOW + 1))
    assert store.buffered == 3 and store.recorder.invalid == 0  # not made rows yet
    assert store.flush()
    assert stored(path) == 2 and store.buffered == 0
    assert store.recorder.invalid == 2
    [warning] = warnings(caplog)
    assert "an event was not recorded" in warning and "no text for this one" in warning
    assert events(path) == []
    store.close()


def test_an_event_without_a_time_is_dated_when_recorded_not_when_written(tmp_path):
    path = tmp_path / "stats.sqlite"
    store = Store(SQLiteBackend(path), "mx", 100, quiet=3600)
    store.record(message_event(NOW))
    event = {"kind": "update", "status": "ok"}
    recorded = time.time()
    store.record(event)
    assert event == {"kind": "update", "status": "ok"}  # the caller's own left as it was
    time.sleep(0.8)  # its batch written meanwhile, half a second later at the earliest
    store.flush()
    with sqlite3.connect(path) as conn:
        [(written,)] = conn.execute("SELECT time FROM events").fetchall()
    assert recorded <= written < recorded + 0.2
    store.close()


def test_rows_wait_made_once_while_the_store_is_locked(tmp_path, monkeypatch):
    from lmsav.stats import recorder

    made = []
    monkeypatch.setattr(recorder, "row_of",
                        lambda event, node: made.append(event) or real_row_of(event, node))
    path = tmp_path / "stats.sqlite"
    store = Store(SQLiteBackend(path), "mx", 100, retry_interval=0.2, quiet=0)
    store.record(message_event(NOW))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    for i in range(5):
        store.record(message_event(NOW + 1 + i))
    time.sleep(0.7)  # tried again in the background, still locked
    assert store.buffered == 5 and stored(path) == 1
    holder.execute("COMMIT")
    holder.close()
    assert wait_for(lambda: store.buffered == 0)
    assert stored(path) == 6 and len(made) == 6
    store.close()
