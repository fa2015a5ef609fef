"""The index kept in step by a background thread: a reader asking for fresh rows gets them at
once when the round is short, and is never held up long by a long one."""

from __future__ import annotations

import threading
import time

from lmsav import paths
from lmsav.quarantine.index import StoresIndex, SyncReport
from lmsav.quarantine.index_sync import IndexSyncer
from lmsav.quarantine.store import FileStore


def test_fresh_rows_at_once_and_a_stop(tmp_path):
    state = tmp_path / "state"
    store = FileStore(paths.quarantine_dir(state))
    syncer = IndexSyncer(StoresIndex(tmp_path / "stores.sqlite", state), interval=60)
    syncer.start()
    try:
        assert syncer.fresh(5) and syncer.ready.is_set()
        entry_id = store.put(b"x", {"status": "infected"})
        assert syncer.fresh(5)  # no waiting for the 60 s round
        assert [r.id for r in syncer.index.search()[0]] == [entry_id]
    finally:
        syncer.stop()
    assert not syncer._thread.is_alive()


def test_a_long_round_does_not_hold_the_reader(tmp_path, monkeypatch):
    index = StoresIndex(tmp_path / "stores.sqlite", tmp_path / "state")
    release = threading.Event()
    monkeypatch.setattr(index, "sync", lambda: release.wait(10) and SyncReport((), 0, 0))
    syncer = IndexSyncer(index, interval=60)
    syncer.start()
    try:
        started = time.monotonic()
        assert not syncer.fresh(0.1)
        assert time.monotonic() - started < 2
        assert not syncer.ready.is_set()
    finally:
        release.set()
        syncer.stop()


def test_a_failing_round_is_an_error_to_show_not_a_dead_thread(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    syncer = IndexSyncer(StoresIndex(blocker / "stores.sqlite", tmp_path / "state"), 60)
    syncer.start()
    try:
        assert syncer.fresh(5)
        assert "stores.sqlite" in syncer.error
        assert syncer.fresh(5) and syncer._thread.is_alive()
    finally:
        syncer.stop()
