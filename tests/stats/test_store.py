"""The SQLite store: what goes in comes out, roll-ups add up, old data is pruned on time."""

from __future__ import annotations

import sqlite3

import pytest

from lmsav.stats import schema
from lmsav.stats.backend import SchemaTooNew
from lmsav.stats.spans import pieces, widen
from lmsav.stats.sqlite_store import SQLiteBackend
from lmsav.stats.store import Store

from .conftest import NOW, message_event

DAY, HOUR = 86400, 3600


def rows(store, sql):
    return sqlite3.connect(store.backend.path).execute(sql).fetchall()


def test_a_message_round_trips_with_every_field(sqlite_store):
    sqlite_store.record(message_event(NOW - 10, status="infected", action="reject",
                                      threats=["Eicar-Test-Signature"], size=1234,
                                      scan_ms=7.25, recipients=["b@x.example", "c@y.example"]))
    [got] = sqlite_store.messages()
    assert got == {
        "time": NOW - 10, "node": "mx.test", "queue_id": "Q1",
        "message_id": "<m@example.org>", "sender": "alice@example.org",
        "recipients": ["b@x.example", "c@y.example"], "groups": ["default"],
        "status": "infected", "action": "reject",
        "outcomes": {"default": {"status": "infected", "action": "reject"}},
        "threats": ["Eicar-Test-Signature"], "size": 1234, "scan_ms": 7.2}
    assert rows(sqlite_store, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(schema.VERSION),)]
    assert rows(sqlite_store, "PRAGMA journal_mode") == [("wal",)]


def test_other_events_count_files_and_kinds(sqlite_store):
    sqlite_store.record({"kind": "file_scan", "time": NOW - 5, "files": 40, "status": "infected",
                         "threats": ["Eicar-Test-Signature"], "detail": {"path": "/srv"}})
    sqlite_store.record({"kind": "update", "time": NOW - 4, "status": "ok"})
    assert sqlite_store.totals()["files_scanned"] == 40
    assert sqlite_store.summary(NOW - HOUR, NOW)["events"] == {"file_scan": 1, "update": 1}
    assert rows(sqlite_store, "SELECT kind, files, detail FROM events ORDER BY id") == [
        ("file_scan", 40, '{"path":"/srv"}'), ("update", 0, "{}")]


def test_rollups_add_up_per_minute_hour_and_day(sqlite_store, clock):
    clock.now = NOW + 3 * HOUR
    for i in range(6):
        sqlite_store.record(message_event(NOW + i * 20, size=100))  # 16:00:00 … 16:01:40
    sqlite_store.record(message_event(NOW + 2 * HOUR, status="infected", size=50,
                                      threats=["T1"]))
    minute = dict(rows(sqlite_store, "SELECT bucket, value FROM rollup_minute "
                                     "WHERE metric = 'messages'"))
    assert minute == {int(NOW): 3, int(NOW) + 60: 3, int(NOW) + 2 * HOUR: 1}
    hour = dict(rows(sqlite_store, "SELECT bucket, value FROM rollup_hour "
                                   "WHERE metric = 'messages'"))
    assert hour == {int(NOW): 6, int(NOW) + 2 * HOUR: 1}
    assert rows(sqlite_store, "SELECT bucket, value FROM rollup_day WHERE metric = 'bytes'") \
        == [(int(NOW) // DAY * DAY, 650)]
    totals = sqlite_store.totals()
    assert (totals["messages"], totals["infected"], totals["bytes"]) == (7, 1, 650)
    assert sqlite_store.totals(NOW, NOW + 60)["messages"] == 3
    assert sqlite_store.totals(NOW + HOUR, NOW + 3 * HOUR)["messages"] == 1


def test_pruning_keeps_minutes_two_days_hours_ninety_days_days_forever(tmp_path, clock):
    store = Store(SQLiteBackend(tmp_path / "s.sqlite"), "mx", 100, clock=clock, quiet=0)
    old, recent = NOW - 100 * DAY, NOW - 3 * DAY

    def buckets(table):
        return {b for (b,) in rows(store, f"SELECT DISTINCT bucket FROM {table}")}

    clock.now = old
    store.record(message_event(old))
    clock.now = old + 30  # pruned at most once a minute: not now, whatever is recorded
    store.record(message_event(recent))
    assert buckets("rollup_minute") == {int(old), int(recent)}
    clock.now = NOW
    store.record(message_event(NOW))
    assert buckets("rollup_minute") == {int(NOW)}
    assert buckets("rollup_hour") == {int(recent), int(NOW)}
    assert buckets("rollup_day") == {int(old) // DAY * DAY, int(recent) // DAY * DAY,
                                     int(NOW) // DAY * DAY}
    assert [t for (t,) in rows(store, "SELECT time FROM messages ORDER BY time")] == [
        recent, NOW]
    clock.now = NOW + 59
    store.record(message_event(recent))
    assert buckets("rollup_minute") == {int(recent), int(NOW)}
    clock.now = NOW + 61
    store.record(message_event(NOW + 61))
    assert buckets("rollup_minute") == {int(NOW), int(NOW) + 60}
    # What is gone in detail still counts in the days.
    assert store.totals()["messages"] == 5
    store.close()


def test_ranges_are_read_from_the_coarsest_whole_buckets():
    since, until = widen(NOW - 2 * DAY - 90 * 60 + 17, NOW + 125, NOW + 125)
    assert (since, until) == (int(NOW) - 2 * DAY - 2 * HOUR, int(NOW) + 180)
    assert pieces(since, until) == [
        ("rollup_minute", since, since),
        ("rollup_hour", since, int(NOW) - DAY - 16 * HOUR),
        ("rollup_day", int(NOW) - DAY - 16 * HOUR, int(NOW) - 16 * HOUR),
        ("rollup_hour", int(NOW) - 16 * HOUR, int(NOW)),
        ("rollup_minute", int(NOW), int(NOW) + 180)][1:]
    assert widen(NOW - 200 * DAY + 5, NOW, NOW)[0] == (int(NOW) - 200 * DAY) // DAY * DAY


def test_summary_breaks_down_by_group_action_threat_and_sender(sqlite_store):
    for i in range(100):
        sqlite_store.record(message_event(NOW - 100 + i, scan_ms=float(i + 1)))
    sqlite_store.record(message_event(NOW, status="infected", group="strict", action="reject",
                                      threats=["Eicar-Test-Signature"], sender="evil@x.example"))
    sqlite_store.record(message_event(NOW, status="infected", group="lax", action="warn",
                                      threats=["Eicar-Test-Signature", "Other"],
                                      sender="evil@x.example"))
    sqlite_store.record(message_event(NOW, status="filtered", group="strict", action="delete"))
    data = sqlite_store.summary(NOW - HOUR, NOW + 1)
    assert data["totals"]["messages"] == 103 and data["totals"]["infected"] == 2
    assert data["totals"]["filtered"] == 1
    assert data["by_group"]["strict"] == {"messages": 2, "statuses": {"infected": 1,
                                                                      "filtered": 1},
                                          "actions": {"reject": 1, "delete": 1}}
    assert data["by_action"] == {"skip": 100, "delete": 1, "reject": 1, "warn": 1}
    assert data["top_threats"] == [{"threat": "Eicar-Test-Signature", "count": 2},
                                   {"threat": "Other", "count": 1}]
    assert data["top_infected_senders"] == [{"sender": "evil@x.example", "count": 2}]
    # Nearest rank over 103 times: 1 … 100 ms and three of 5 ms.
    assert data["scan_ms"] == {"p50": 49.0, "p99": 99.0}


def test_messages_filters(sqlite_store):
    sqlite_store.record(message_event(NOW - 30, sender="Alice@Example.org",
                                      recipients=["bob@a.example", "carol@b.example"]))
    sqlite_store.record(message_event(NOW - 20, status="infected", threats=["Win.Test_1%"],
                                      sender="x@evil.example", recipients=["dan@a.example"]))
    sqlite_store.record(message_event(NOW - 10, sender="y_z@c.example",
                                      recipients=["carol@b.example"]))

    def senders(**filters):
        return [m["sender"] for m in sqlite_store.messages(**filters)]

    assert senders() == ["y_z@c.example", "x@evil.example", "Alice@Example.org"]
    assert senders(sender="alice@example.org") == ["Alice@Example.org"]
    assert senders(sender="*@evil.example") == ["x@evil.example"]
    assert senders(sender="y_z@*") == ["y_z@c.example"]
    assert senders(sender="yxz@*") == []  # _ is no wildcard
    assert senders(rcpt="carol@b.example") == ["y_z@c.example", "Alice@Example.org"]
    assert senders(rcpt="*@a.example") == ["x@evil.example", "Alice@Example.org"]
    assert senders(rcpt="arol@b.example") == []  # a whole address, not a part of one
    assert senders(status="infected") == ["x@evil.example"]
    assert senders(threat="win.test_1%") == ["x@evil.example"]
    assert senders(threat="Win.*") == ["x@evil.example"]
    assert senders(since=NOW - 25, until=NOW - 15) == ["x@evil.example"]
    assert senders(limit=1) == ["y_z@c.example"]


def test_a_store_of_a_newer_lmsav_is_left_alone(tmp_path, clock):
    path = tmp_path / "s.sqlite"
    Store(SQLiteBackend(path), "mx", 10, clock=clock, quiet=0).record(message_event(NOW))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    backend = SQLiteBackend(path)
    with pytest.raises(SchemaTooNew, match="schema version 99 is newer"):
        backend.write([], NOW)
    store = Store(backend, "mx", 10, clock=clock, quiet=0)
    store.record(message_event(NOW))
    assert store.buffered == 1
    assert len(rows(store, "SELECT * FROM messages")) == 1


def test_reading_a_store_never_written_creates_nothing(tmp_path, clock):
    store = Store(SQLiteBackend(tmp_path / "stats" / "stats.sqlite"), "mx", 10, clock=clock, quiet=0)
    assert store.totals() == dict.fromkeys(
        ("messages", "infected", "suspicious", "protected", "corrupted", "errors", "filtered",
         "bytes", "files_scanned"), 0)
    assert store.messages() == []
    assert store.summary(NOW - DAY, NOW)["scan_ms"] == {"p50": None, "p99": None}
    assert not (tmp_path / "stats").exists()


def test_the_file_is_group_writable_whatever_the_umask(tmp_path, sqlite_store):
    import os

    old = os.umask(0o077)
    try:
        sqlite_store.record(message_event(NOW))
    finally:
        os.umask(old)
    assert sqlite_store.backend.path.stat().st_mode & 0o777 == 0o660
