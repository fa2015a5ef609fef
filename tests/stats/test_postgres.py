"""The PostgreSQL store against Debian's real server (private port and data directory): the
same tables and answers as SQLite, and mail flowing while the server is stopped."""

from __future__ import annotations

import logging
import time

import psycopg
import pytest
from click.testing import CliRunner

from lmsav import paths
from lmsav.config import load_settings
from lmsav.mail.envelope import Envelope
from lmsav.mail.service import MailService
from lmsav.stats import schema
from lmsav.stats.commands import stats_group
from lmsav.stats.postgres_store import PostgresBackend, redacted
from lmsav.stats.store import Store, open_store
from tests.conftest import EICAR

from .conftest import GROUPS, NOW, message, message_event, wait_for

pytestmark = pytest.mark.integration


def count(url: str, table: str = "messages") -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_round_trip_rollups_and_queries(pg_url, clock):
    store = Store(PostgresBackend(pg_url), "mx1", 100, clock=clock, quiet=0)
    for i in range(10):
        store.record(message_event(NOW - 100 + i, scan_ms=float(i + 1)))
    store.record(message_event(NOW - 1, status="infected", action="reject",
                               threats=["Eicar-Test-Signature"], sender="evil@x.example"))
    store.record({"kind": "file_scan", "time": NOW, "files": 9})
    other = Store(PostgresBackend(pg_url), "mx2", 100, clock=clock, quiet=0)  # a second node
    other.record(message_event(NOW - 2, recipients=["z@b.example"]))
    assert store.totals() == {"messages": 12, "infected": 1, "suspicious": 0, "protected": 0,
                              "corrupted": 0, "errors": 0, "filtered": 0, "bytes": 12000,
                              "files_scanned": 9}
    data = store.summary(NOW - 3600, NOW + 1)
    assert data["top_infected_senders"] == [{"sender": "evil@x.example", "count": 1}]
    assert data["by_action"] == {"skip": 11, "reject": 1}
    assert data["scan_ms"] == {"p50": 5.0, "p99": 10.0}
    assert [m["node"] for m in store.messages(limit=2)] == ["mx1", "mx2"]
    assert [m["sender"] for m in store.messages(threat="eicar*")] == ["evil@x.example"]
    assert [m["node"] for m in store.messages(rcpt="*@b.example")] == ["mx2"]
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'"
                            ).fetchall() == [(str(schema.VERSION),)]
        assert conn.execute("SELECT COUNT(DISTINCT node) FROM rollup_day").fetchone() == (2,)
    store.close()
    other.close()


def test_pruning_is_the_same(pg_url, clock):
    store = Store(PostgresBackend(pg_url), "mx1", 100, clock=clock, quiet=0)
    clock.now = NOW - 100 * 86400
    store.record(message_event(clock.now))
    clock.now = NOW
    store.record(message_event(NOW))
    assert count(pg_url) == 1
    with psycopg.connect(pg_url) as conn:
        for table, kept in (("rollup_minute", 1), ("rollup_hour", 1), ("rollup_day", 2)):
            assert conn.execute(f"SELECT COUNT(DISTINCT bucket) FROM {table}").fetchone() == (
                kept,)
    assert store.totals()["messages"] == 2
    store.close()


def test_unreachable_server_buffers_and_logs_once(clock, caplog):
    # Nothing listens on port 1: refused at once.
    store = Store(PostgresBackend("postgresql://lmsav:secret@127.0.0.1:1/lmsav"), "mx", 4,
                  clock=clock)
    started = time.monotonic()
    for i in range(6):
        clock.now += 10  # past the retry interval: every event tries again
        store.record(message_event(NOW + i))
    assert time.monotonic() - started < 5
    assert (store.buffered, store.dropped) == (4, 2)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "postgresql://lmsav:***@127.0.0.1:1/lmsav" in warning and "secret" not in warning
    assert redacted("postgresql://u@h/db") == "postgresql://u@h/db"
    store.close()


def test_stopped_mid_run_mail_keeps_flowing_then_events_are_flushed(postgres, pg_url, tmp_path,
                                                                    caplog):
    caplog.set_level(logging.INFO, logger="lmsav.stats")
    config = tmp_path / "lmsav.toml"
    (tmp_path / "groups.d").mkdir()
    for name, text in GROUPS.items():
        (tmp_path / "groups.d" / name).write_text(text)
    config.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n'
                      f'[stats]\nurl = "{pg_url}"\n')
    settings = load_settings(config)
    svc = MailService.from_settings(settings, config, database_dir=paths.bundled_database_dir(),
                                    backup=False)
    svc.processor.stats = open_store(settings)  # the store [stats] url names
    svc.processor.stats.recorder.retry_interval = 0.5

    def deliver(n: int, attachment=None):
        plan = svc.decide(message(attachment, n), Envelope("a@example.org",
                                                           ("bob@strict.example",)))
        return plan.outcome.status

    assert [deliver(n) for n in range(3)] == ["clean"] * 3
    assert wait_for(lambda: count(pg_url) == 3)
    postgres.stop()
    started = time.monotonic()
    statuses = [deliver(n, EICAR if n % 2 else None) for n in range(3, 13)]
    assert statuses == ["infected", "clean"] * 5  # mail decided as ever
    assert time.monotonic() - started < 10
    assert wait_for(lambda: svc.processor.stats.recorder.failing_since is not None)
    assert svc.processor.stats.buffered == 10
    postgres.start()
    assert wait_for(lambda: svc.processor.stats.buffered == 0)
    assert count(pg_url) == 13
    assert deliver(13) == "clean"
    assert wait_for(lambda: count(pg_url) == 14)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "statistics store unavailable" in warnings[0]
    assert any("10 waiting events written, 0 dropped" in r.getMessage()
               for r in caplog.records)
    # And the report reads the shared store.
    result = CliRunner().invoke(stats_group, ["--json"], env={"LMSAV_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    assert '"messages":14,"infected":5' in result.output
    svc.processor.stats.close()


def table_rows(fetch, table: str, columns: tuple[str, ...]) -> list[tuple]:
    return fetch(f"SELECT {', '.join(columns)} FROM {table} ORDER BY time, id")


def test_rows_copied_in_hold_the_same_text_as_in_sqlite(pg_url, tmp_path, clock):
    from lmsav.stats import schema
    from lmsav.stats.sqlite_store import SQLiteBackend

    # What COPY's text format escapes (tab, newline, carriage return, backslash), quotes,
    # text that is not ASCII, bytes that were not UTF-8, and a batch of many rows.
    odd = "tab\there, new\nline, cr\r, back\\slash \\N, \"q\" 'q', \u00e9\u20ac\U0001f600"
    events = [message_event(NOW - 100, sender=f"{odd}@x", recipients=[odd, "b@x"],
                            group=f"g {odd}", threats=[odd], status="infected",
                            action="reject", scan_ms=1.0 / 3),
              message_event(NOW - 99, sender="s\udcff@x"),
              {"kind": "file_scan", "time": NOW - 98, "status": odd, "files": 3,
               "threats": [odd], "size": 2**40, "duration_ms": 0.1,
               "detail": {"path": odd, "n": [1, 2]}}]
    events += [message_event(NOW - 90 + i / 10, size=i) for i in range(300)]
    stores = [Store(PostgresBackend(pg_url), f"mx {odd}", 1000, clock=clock, quiet=3600),
              Store(SQLiteBackend(tmp_path / "stats.sqlite"), f"mx {odd}", 1000, clock=clock,
                    quiet=3600)]
    for store in stores:
        for event in events:
            store.record(event)
        assert store.flush() and store.buffered == 0
    pg, lite = stores
    for table, columns in (("messages", schema.MESSAGE_COLUMNS),
                           ("events", schema.EVENT_COLUMNS)):
        got = table_rows(pg._fetch, table, columns)
        assert got == table_rows(lite._fetch, table, columns)
    assert len(got) == 1 and got[0][3] == odd and got[0][8] == (
        '{"path":"tab\\there, new\\nline, cr\\r, back\\\\slash \\\\N, \\"q\\" \'q\', '
        '\u00e9\u20ac\U0001f600","n":[1,2]}')
    for table in ("rollup_minute", "rollup_hour", "rollup_day"):
        rollup = f"SELECT bucket, node, metric, label, value FROM {table} ORDER BY 1, 2, 3, 4"
        assert pg._fetch(rollup) == lite._fetch(rollup)
    assert sorted(label for (label,) in pg._fetch(
        "SELECT label FROM rollup_minute WHERE metric LIKE ?", ("group_%",))
        if label.startswith("g ")) == [f"g {odd}\tinfected", f"g {odd}\treject"]
    assert pg.messages(limit=1000) == lite.messages(limit=1000)
    assert pg.messages(sender="*@x")[-1]["sender"] == f"{odd}@x"
    assert pg.totals() == lite.totals() and pg.totals()["messages"] == 302
    for store in stores:
        store.close()


def frontend_messages(conn, write) -> list[str]:
    """The protocol messages the client sends while ``write()`` runs (libpq's trace)."""
    import os
    import tempfile

    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        try:
            write()
        finally:
            conn.pgconn.untrace()
        os.fsync(trace.fileno())
        trace.seek(0)
        return [line.split("\t")[3].split()[0] for line in trace.read().splitlines()
                if line.split("\t")[1:2] == ["F"]]


def test_a_batch_after_its_copy_is_one_round_trip(pg_url, clock):
    store = Store(PostgresBackend(pg_url), "mx1", 1000, clock=clock, quiet=3600)
    for batch in range(7):  # past psycopg's threshold for preparing statements
        for i in range(5):
            store.record(message_event(NOW - 3000 + batch * 10 + i))
        assert store.flush()
    for i in range(200):
        store.record(message_event(NOW - 100 + i / 10, status="infected" if i % 3 else "clean"))
    store.record({"kind": "file_scan", "time": NOW, "files": 9})
    sent = frontend_messages(store.backend._conn, store.flush)
    # BEGIN; COPY messages; COPY events; then the three roll-ups and COMMIT with one Sync.
    after_copies = sent[len(sent) - sent[::-1].index("CopyDone"):]
    assert sent.count("Query") == 2 and after_copies.count("Execute") == 4
    assert after_copies.count("Sync") == 1 and sent.count("Sync") == 2
    assert count(pg_url) == 235 and count(pg_url, "events") == 1
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT value FROM rollup_day WHERE metric = 'messages'"
                            ).fetchall() == [(235,)]
    store.close()


def test_a_roll_up_refused_in_the_pipeline_writes_nothing_of_its_batch(pg_url, clock):
    store = Store(PostgresBackend(pg_url), "mx1", 1000, clock=clock, quiet=3600,
                  retry_interval=3600)
    store.record(message_event(NOW - 10))
    assert store.flush()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # The last roll-up of the batch (tables in name order) fails after the rows and the
        # other roll-ups went in.
        conn.execute("ALTER TABLE rollup_minute ADD CONSTRAINT small CHECK (value < 2) "
                     "NOT VALID")
        for i in range(3):
            store.record(message_event(NOW - 5 + i))
        assert not store.flush() and store.buffered == 3
        assert count(pg_url) == 1
        assert conn.execute("SELECT SUM(value) FROM rollup_day WHERE metric = 'messages'"
                            ).fetchone() == (1,)
        conn.execute("ALTER TABLE rollup_minute DROP CONSTRAINT small")
    assert store.flush() and store.buffered == 0  # a new connection, the same rows
    assert count(pg_url) == 4
    with psycopg.connect(pg_url) as conn:
        for table in ("rollup_minute", "rollup_hour", "rollup_day"):
            assert conn.execute(f"SELECT SUM(value) FROM {table} WHERE metric = 'messages'"
                                ).fetchone() == (4,)
    store.close()


def test_without_pipelines_the_same_rows_and_roll_ups(pg_url, clock):
    stores = [Store(PostgresBackend(pg_url), node, 1000, clock=clock, quiet=3600)
              for node in ("piped", "plain")]
    stores[1].backend._connection()
    stores[1].backend._pipelines = False  # as with a libpq older than 14
    for store in stores:
        for i in range(40):
            store.record(message_event(NOW - 3 * 86400 * (i % 2) - i * 100,
                                       status="infected" if i % 4 else "clean",
                                       action="reject" if i % 4 else "skip"))
    for store in stores:
        # Pruning due: the minutes of the half that is three days old go in the same
        # transaction as they came.
        store.backend._last_prune = float("-inf")
        assert store.flush()
    with psycopg.connect(pg_url) as conn:
        for table, rows in (("rollup_minute", 20), ("rollup_hour", 40), ("rollup_day", 40)):
            piped, plain = (conn.execute(f"SELECT bucket, metric, label, value FROM {table} "
                                         "WHERE node = %s ORDER BY 1, 2, 3", (node,)).fetchall()
                            for node in ("piped", "plain"))
            assert piped == plain
            assert sum(value for _b, metric, _l, value in piped if metric == "messages") == rows
        assert conn.execute("SELECT node, COUNT(*) FROM messages GROUP BY node ORDER BY node"
                            ).fetchall() == [("piped", 40), ("plain", 40)]
    for store in stores:
        store.close()
