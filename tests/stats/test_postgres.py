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
        assert conn.execute("SELECT value FROM meta").fetchall() == [("1",)]
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
