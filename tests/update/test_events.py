"""Each update and rollback is one ``update`` event in the statistics store: ok or failed, the
versions it brought, the version active before."""

from __future__ import annotations

import json
import sqlite3

from lmsav import config as config_mod
from lmsav.metrics.recording import EventRecorder
from lmsav.stats.store import open_store, sqlite_path
from lmsav.update.updater import rollback, update

from ..scanner.signatures.test_cvd import write_cud
from .conftest import TEST_CERTS, md5_line, options


def test_updates_and_a_rollback_are_recorded(tmp_path, mirror, trust_test_root):
    # An unsigned .cud beside the genuine test database, whose first versions hold no
    # signature (a database without any is refused), as test_updater does.
    extra = write_cud(tmp_path / "extra.cud",
                      {"extra.hdb": md5_line(b"lmsav update event sample\n", "Lmsav.Extra")})
    config = tmp_path / "lmsav.toml"
    config.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    settings = config_mod.load_settings(config)
    root = tmp_path / "bases"
    recorder = EventRecorder(settings)
    wanted = {"databases": ("test", "extra.cud"), "trust_dirs": (TEST_CERTS,)}

    mirror.files["extra.cud"] = extra.read_bytes()
    mirror.publish_genuine(1, cdiffs=False)
    assert update(root, options(mirror.url, **wanted), record=recorder.record).ok
    mirror.publish_genuine(2)
    assert update(root, options(mirror.url, **wanted), record=recorder.record).ok
    mirror.faults["test.cvd"] = "404"
    failed = update(root, options(mirror.url, **wanted), record=recorder.record)
    assert not failed.ok
    assert rollback(root, None, record=recorder.record).ok
    recorder.close()

    store = open_store(settings)
    try:
        assert store.summary(0, 4e9)["events"] == {"update": 4}
    finally:
        store.close()
    with sqlite3.connect(sqlite_path(settings.paths.state_dir)) as conn:
        rows = [(status, json.loads(detail)) for status, detail in conn.execute(
            "SELECT status, detail FROM events WHERE kind = 'update' ORDER BY id")]
    assert [(status, d["result"], d["active"], d["previous"]) for status, d in rows] == [
        ("ok", "updated", "test-1_extra-7", None),
        ("ok", "updated", "test-2_extra-7", "test-1_extra-7"),
        ("failed", "failed", "test-2_extra-7", None),
        ("ok", "rolled back", "test-1_extra-7", "test-2_extra-7")]
    assert rows[0][1]["versions"] == {"test": 1, "extra": 7}
    assert rows[1][1]["versions"] == {"test": 2, "extra": 7}
    assert rows[1][1]["source"] == mirror.url
    assert rows[2][1]["errors"] and "404" in rows[2][1]["errors"][0]


def test_lmsav_update_records_its_run(tmp_path, monkeypatch):
    """The command, not only the updater: a run whose source is missing is one failed event."""
    from click.testing import CliRunner

    from lmsav.cli import main

    config = tmp_path / "lmsav.toml"
    config.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    monkeypatch.setenv("LMSAV_CONFIG", str(config))
    result = CliRunner().invoke(main, ["update", "--source", str(tmp_path / "no-mirror")])
    assert result.exit_code == 1, result.output
    settings = config_mod.load_settings(config)
    with sqlite3.connect(sqlite_path(settings.paths.state_dir)) as conn:
        assert [row[0] for row in conn.execute(
            "SELECT status FROM events WHERE kind = 'update'")] == ["failed"]
