"""lmsav.status: snapshots of real state directories, a real daemon and a real spool watcher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmsav import paths, status
from lmsav.config import load_settings
from lmsav.mail.backup import BackupStore
from lmsav.mail.envelope import Envelope
from lmsav.quarantine.store import FileStore
from lmsav.spool.nqueue import Spool
from lmsav.update import state as update_state
from lmsav.update.store import CURRENT, META

DAY = 86400.0


def settings_for(tmp: Path, extra: str = ""):
    config = tmp / "lmsav.toml"
    config.write_text(f'[paths]\nstate_dir = "{tmp / "state"}"\nrun_dir = "{tmp / "run"}"\n'
                      + extra)
    return load_settings(config)


def install_database(state: Path, built_at: float, label: str = "daily-27001_main-62") -> Path:
    """A version directory as `lmsav update` leaves it (lmsav.update.store's layout)."""
    root = paths.bases_dir(state)
    version = root / label
    version.mkdir(parents=True)
    meta = {"label": label, "installed_at": built_at + 60, "signatures": 12345,
            "databases": {"daily": {"version": 27001, "built_at": built_at},
                          "main": {"version": 62, "built_at": built_at - 30 * DAY}}}
    (version / META).write_text(json.dumps(meta))
    os.symlink(label, root / CURRENT)
    return root


def test_an_empty_state_directory_is_healthy_and_nothing_runs(tmp_path):
    settings = settings_for(tmp_path)
    snap = status.collect(settings)
    assert snap["daemon"] == {**snap["daemon"], "configured": False, "running": False,
                              "socket": str(tmp_path / "run" / "clamd.sock")}
    assert not snap["watcher"]["running"] and not snap["watcher"]["configured"]
    assert snap["qmail"]["configured"] is False
    assert snap["spool"] == {"directory": str(tmp_path / "state" / "nqueue"),
                             "new": 0, "work": 0, "hold": 0, "depth": 0}
    assert snap["quarantine"]["entries"] == 0 and snap["backup"]["files"]["entries"] == 0
    assert snap["database"]["version"] == "2026112401"  # the bundled database
    assert snap["database"]["age_seconds"] is None
    assert 0 < snap["disk"]["free_percent"] <= 100
    assert status.problems(snap, settings) == []
    json.dumps(snap)  # JSON-ready, as `lmsav ctl status --json` prints it


def test_spool_quarantine_and_backup_are_counted(tmp_path):
    settings = settings_for(tmp_path, "[snmp]\nspool_threshold = 2\n")
    state = tmp_path / "state"
    spool = Spool(paths.nqueue_dir(state))
    spool.ensure()
    ids = [spool.enqueue(Envelope("a@example.org", ("b@example.org",)), b"Subject: %d\n\nx\n" % n)
           for n in range(4)]
    entry = spool.claim(ids[0])
    spool.hold(entry, "held by the test")
    spool.claim(ids[1])  # stays in work/
    quarantine = FileStore(paths.quarantine_dir(state))
    quarantine.put(b"x" * 100, {"path": "/tmp/a"})
    quarantine.put(b"y" * 50, {"path": "/tmp/b"})
    FileStore(paths.backup_files_dir(state), "backup").put(b"z" * 10, {"path": "/tmp/c"})
    BackupStore(paths.backup_dir(state)).save(b"Subject: kept\n\nbody\n", {"group": "default"})

    snap = status.collect(settings)
    assert (snap["spool"]["new"], snap["spool"]["work"], snap["spool"]["hold"]) == (2, 1, 1)
    assert snap["spool"]["depth"] == 3
    assert snap["quarantine"]["entries"] == 2 and snap["quarantine"]["bytes"] >= 150
    assert snap["backup"]["files"]["entries"] == 1
    assert snap["backup"]["messages"]["entries"] == 1  # files/ is not a message entry
    [problem] = status.problems(snap, settings)
    assert "3 messages wait in the spool" in problem and "more than 2" in problem


def test_managed_database_age_and_failed_update(tmp_path):
    now = time.time()
    state = tmp_path / "state"
    root = install_database(state, now - 5 * DAY)
    settings = settings_for(tmp_path, f'database = "{root / CURRENT}"\n'
                                      "[snmp]\ndatabase_max_age = 259200\n")
    update_state.save(root, update_state.State(last_check=now - 60, last_result="failed",
                                               last_error="no mirror answered"), now)
    snap = status.collect(settings, now=now)
    database = snap["database"]
    assert database["managed"] and database["active"] == "daily-27001_main-62"
    assert database["version"] == "daily 27001, main 62"
    assert database["built_at"] == pytest.approx(now - 5 * DAY)
    assert database["age_seconds"] == pytest.approx(5 * DAY)
    assert snap["update"]["failed"] and snap["update"]["last_error"] == "no mirror answered"
    found = status.problems(snap, settings)
    assert any("built 5.0 days ago, more than 3.0 days" in line for line in found)
    assert any(line == "the last update failed: no mirror answered" for line in found)

    never = settings_for(tmp_path, f'database = "{root / CURRENT}"\n'
                                   "[snmp]\ndatabase_max_age = 0\n")
    assert not any("built" in line for line in status.problems(status.collect(never), never))


@pytest.mark.integration
def test_running_daemon_is_reported_and_a_killed_one_is_a_problem(tmp_path):
    from tests.daemon.test_server import Daemon

    settings = settings_for(tmp_path)
    daemon = Daemon(tmp_path)  # its socket is <run_dir>/clamd.sock of these settings
    try:
        snap = status.collect(settings)
        assert snap["daemon"]["running"] and snap["daemon"]["configured"]
        assert snap["daemon"]["version"].startswith("ClamAV lmsav-")
        assert "2026112401" in snap["daemon"]["version"]
        assert status.problems(snap, settings) == []
        daemon.proc.kill()  # no clean exit: the socket stays behind
        daemon.proc.wait()
        snap = status.collect(settings)
        assert snap["daemon"]["configured"] and not snap["daemon"]["running"]
        [problem] = status.problems(snap, settings)
        assert problem.startswith("the daemon is not running (cannot connect to")
    finally:
        daemon.stop()


def test_stale_pid_file_names_the_dead_process(tmp_path):
    settings = settings_for(tmp_path)
    (tmp_path / "run").mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "run" / "lmsav.pid").write_text(f"{dead.pid}\n")
    snap = status.collect(settings)
    assert snap["daemon"]["configured"] and snap["daemon"]["pid"] is None
    assert f"names pid {dead.pid}, which is gone" in snap["daemon"]["detail"]


@pytest.mark.integration
def test_spool_watcher_is_found_by_its_lock_without_taking_it(tmp_path):
    settings = settings_for(tmp_path, '[spool]\nreinject = "dir:' + str(tmp_path / "out")
                            + '"\nworkers = 1\n')
    (tmp_path / "out").mkdir()
    env = dict(os.environ, LMSAV_CONFIG=str(tmp_path / "lmsav.toml"))
    with open(tmp_path / "watch.log", "w") as log:
        watcher = subprocess.Popen([sys.executable, "-m", "lmsav.launcher", "spool", "watch"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    lock = tmp_path / "state" / "nqueue" / "watch.lock"
    try:
        deadline = time.monotonic() + 60
        while not status.collect(settings)["watcher"]["running"]:
            assert watcher.poll() is None, (tmp_path / "watch.log").read_text()
            assert time.monotonic() < deadline, "the watcher never took its lock"
            time.sleep(0.2)
        snap = status.collect(settings)
        assert snap["watcher"]["pid"] == watcher.pid
        assert snap["watcher"]["detail"] == f"holds {lock}"
    finally:
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(30) == 0
    snap = status.collect(settings)
    assert not snap["watcher"]["running"] and snap["watcher"]["detail"] == \
        f"nobody holds {lock}"
    # Not installed as a service by `lmsav setup`: stopped is not a problem.
    assert status.problems(snap, settings) == []


def test_units_and_qmail_rules_recorded_by_setup(tmp_path):
    settings = settings_for(tmp_path)
    rules = tmp_path / "tcp.smtp"
    rules.write_text('127.:allow,RELAYCLIENT=""\n'
                     ':allow,QMAILQUEUE="/usr/local/bin/lmsav-qmail-queue"\n')
    setup = paths.setup_dir(tmp_path / "state")
    setup.mkdir(parents=True)
    (setup / "manifest.json").write_text(json.dumps({"format": 1, "entries": [
        {"kind": "unit", "key": "unit:lmsav-daemon.service", "name": "lmsav-daemon.service"},
        {"kind": "unit", "key": "unit:lmsav-spool.service", "name": "lmsav-spool.service"},
        {"kind": "mta", "key": "mta:qmail", "name": "qmail",
         "config": {"qmail_rules": str(rules)}}]}))
    snap = status.collect(settings)
    assert snap["qmail"]["configured"] and snap["qmail"]["rules"] == str(rules)
    found = status.problems(snap, settings)
    assert [line.split(" (")[0] for line in found] == [
        "the daemon is not running", "the spool watcher is not running"]
    rules.write_text("127.:allow\n")
    assert not status.collect(settings)["qmail"]["configured"]


def test_disk_threshold(tmp_path, monkeypatch):
    settings = settings_for(tmp_path)

    class Almost:
        f_blocks, f_frsize, f_bavail = 1000, 4096, 40

    monkeypatch.setattr(status.os, "statvfs", lambda path: Almost)
    snap = status.collect(settings)
    assert snap["disk"]["free_percent"] == 4.0
    assert status.problems(snap, settings) == [
        f"4.0% free on the file system of {snap['disk']['path']} (less than 5%)"]
